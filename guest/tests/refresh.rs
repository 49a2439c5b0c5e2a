//! In-band refresh: the new token verified as at CONNECT and checked against
//! the current one; records brought in line with its groups; a refusal
//! deletes the connection's records and names the close code.

mod common;

use common::*;
use gitgazer_ws_guest::{
    ConnectRequest, RefreshRequest, RefreshResponse, Rejection, StoreError, handle_connect,
    handle_refresh,
};
use serde_json::{Value, json};

const CONNECTION: &str = "L0SM9cOFvHcCIhw=";

fn token(changes: Value) -> String {
    sign(key_a(), &header(KID_A), &claims_with(changes))
}

/// A host holding the records of a CONNECT at NOW with `current`.
fn connected(current: &str) -> FakeHost {
    let mut host = FakeHost::new();
    let response = handle_connect(
        &ConnectRequest {
            connection_id: CONNECTION.into(),
            id_token: Some(current.into()),
            now: NOW,
            settings: settings(),
            endpoint: Some("http://node/n/1".into()),
        },
        &mut host,
    );
    assert_eq!(response.status, 200, "{response:?}");
    host
}

fn refresh(current: &str, new: Option<&str>, now: u64, host: &mut FakeHost) -> RefreshResponse {
    handle_refresh(
        &RefreshRequest {
            connection_id: CONNECTION.into(),
            id_token: new.map(str::to_owned),
            current_token: Some(current.into()),
            current_record: None,
            now,
            connected_at: NOW_RFC3339.into(),
            settings: settings(),
            endpoint: Some("http://node/n/1".into()),
        },
        host,
    )
}

fn groups_of(host: &FakeHost) -> Vec<String> {
    host.records
        .values()
        .map(|r| r.integration_id.clone())
        .collect()
}

#[test]
fn a_newer_token_moves_auth_expires_at_and_brings_the_groups_in_line() {
    let current = valid_token(); // integration-1, integration-2; exp NOW + 3500
    let mut host = connected(&current);
    let new = token(json!({
        "iat": NOW + 10, "exp": NOW + 3610,
        "cognito:groups": ["integration-1", "integration-3"],
    }));
    let response = refresh(&current, Some(&new), NOW + 10, &mut host);
    assert_eq!(
        response,
        RefreshResponse {
            code: 1000,
            body: format!(
                r#"{{"type":"refreshed","expiresAt":{},"added":["integration-3"],"removed":["integration-2"]}}"#,
                NOW + 3610
            ),
            rejection: None,
            expires_at: Some(NOW + 3610),
        }
    );
    assert_eq!(groups_of(&host), ["integration-1", "integration-3"]);
    for record in host.records.values() {
        assert_eq!(record.auth_expires_at, Some(NOW + 3610));
        assert_eq!(
            record.connected_at, NOW_RFC3339,
            "when the connection was made"
        );
        assert_eq!(record.endpoint.as_deref(), Some("http://node/n/1"));
    }
    for segment in new.split('.').filter(|s| s.len() > 8) {
        assert!(!host.logged(segment), "a token segment was logged");
    }
}

#[test]
fn a_refresh_after_exp_within_the_grace_is_accepted_with_the_same_iat_too() {
    let current = token(json!({ "exp": NOW + 5 }));
    let mut host = connected(&current);
    // Issued the same second as the current one, but another token.
    let new = token(json!({ "exp": NOW + 3605, "jti": "another" }));
    let response = refresh(&current, Some(&new), NOW + 20, &mut host);
    assert_eq!(response.code, 1000, "{response:?}");
    assert!(
        response.body.contains(r#""added":[],"removed":[]"#),
        "{}",
        response.body
    );
    assert_eq!(groups_of(&host), ["integration-1", "integration-2"]);
}

fn assert_refused(response: &RefreshResponse, code: u16, reason: &str, host: &FakeHost) {
    assert_eq!(
        (response.code, response.body.as_str()),
        (code, reason),
        "{response:?}"
    );
    assert_eq!(response.expires_at, None);
    assert!(host.records.is_empty(), "the connection's records deleted");
}

#[test]
fn another_users_token_or_one_without_groups_closes_4003() {
    let current = valid_token();
    for (new, class) in [
        (
            token(json!({ "sub": "someone-else", "iat": NOW })),
            "another sub",
        ),
        (
            token(json!({ "cognito:groups": null, "iat": NOW })),
            "no authorized groups",
        ),
    ] {
        let mut host = connected(&current);
        let response = refresh(&current, Some(&new), NOW, &mut host);
        assert_refused(&response, 4003, "forbidden", &host);
        assert!(
            host.logged(&format!("refresh refused: {class}")),
            "{:?}",
            host.logs
        );
    }
}

#[test]
fn a_token_issued_before_its_users_revocation_closes_4003() {
    let current = valid_token(); // iat NOW - 100
    let sub = "5f3c8a2e-1111-2222-3333-444455556666";
    // Revoked at NOW - 50: a newer token issued before it is refused; one
    // issued after it is not.
    let before = token(json!({ "iat": NOW - 50 }));
    let mut host = connected(&current);
    host.revocations.insert(sub.into(), NOW - 50);
    let response = refresh(&current, Some(&before), NOW, &mut host);
    assert_refused(&response, 4003, "forbidden", &host);
    assert_eq!(response.rejection, Some(Rejection::Revoked));
    assert!(host.logged("refresh refused: token revoked"));

    let after = token(json!({ "iat": NOW - 49 }));
    let mut host = connected(&current);
    host.revocations.insert(sub.into(), NOW - 50);
    let response = refresh(&current, Some(&after), NOW, &mut host);
    assert_eq!(response.code, 1000, "{response:?}");
    assert_eq!(groups_of(&host), ["integration-1", "integration-2"]);
}

#[test]
fn a_failed_revocation_read_closes_1011_and_deletes_the_records() {
    let current = valid_token();
    let mut host = connected(&current);
    host.revoked_before_error = Some(StoreError::Unavailable("down".into()));
    let response = refresh(
        &current,
        Some(&token(json!({ "iat": NOW }))),
        NOW,
        &mut host,
    );
    assert_refused(&response, 1011, "internal error", &host);
}

#[test]
fn an_older_token_or_the_same_one_again_closes_4001() {
    let current = valid_token(); // iat NOW - 100
    for (new, class) in [
        (current.clone(), "the current token again"),
        (
            token(json!({ "iat": NOW - 101 })),
            "older than the current token",
        ),
        (
            token(json!({ "iat": null })),
            "older than the current token",
        ),
    ] {
        let mut host = connected(&current);
        let response = refresh(&current, Some(&new), NOW, &mut host);
        assert_refused(&response, 4001, "token invalid", &host);
        assert!(host.logged(class), "{:?}", host.logs);
    }
}

#[test]
fn an_expired_forged_or_missing_token_closes_4001_and_logs_no_token() {
    let current = valid_token();
    let mut forged = token(json!({ "iat": NOW }));
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    for (new, reason, rejection) in [
        (
            Some(token(json!({ "iat": NOW, "exp": NOW - 61 }))),
            "token expired",
            Rejection::Expired,
        ),
        (Some(forged), "token invalid", Rejection::BadSignature),
        (None, "token invalid", Rejection::Missing),
        (
            Some("x".repeat(16 * 1024 + 1)),
            "token invalid",
            Rejection::TooLarge,
        ),
    ] {
        let mut host = connected(&current);
        let response = refresh(&current, new.as_deref(), NOW, &mut host);
        assert_refused(&response, 4001, reason, &host);
        assert_eq!(response.rejection, Some(rejection));
        assert!(host.logged(&format!("refresh refused: token {}", rejection.as_str())));
        for token in [new.as_deref().unwrap_or(""), current.as_str()] {
            for segment in token.split('.').filter(|s| s.len() > 8) {
                assert!(!host.logged(segment), "a token segment was logged");
            }
        }
    }
}

#[test]
fn a_store_failure_closes_1011_and_changes_nothing_it_could_undo() {
    let current = valid_token();
    let new = token(json!({ "iat": NOW, "cognito:groups": ["integration-3"] }));
    let mut host = connected(&current);
    host.put_all_error = Some(StoreError::Throttled("slow down".into()));
    let response = refresh(&current, Some(&new), NOW, &mut host);
    assert_eq!(
        (response.code, response.body.as_str()),
        (1011, "internal error")
    );
    assert!(
        host.records.is_empty(),
        "the connection is closed: its records go"
    );
    assert!(host.logged("refresh failed: store throttled error"));
}

/// API Gateway: the host keeps no token, so one of the connection's records
/// stands for it (its sub, iat and exp).
fn refresh_by_record(new: &str, now: u64, host: &mut FakeHost) -> RefreshResponse {
    let record = host.records.values().next().cloned();
    handle_refresh(
        &RefreshRequest {
            connection_id: CONNECTION.into(),
            id_token: Some(new.into()),
            current_token: None,
            current_record: record,
            now,
            connected_at: NOW_RFC3339.into(),
            settings: settings(),
            endpoint: Some("http://node/n/1".into()),
        },
        host,
    )
}

#[test]
fn without_the_current_token_its_records_stand_for_it() {
    let current = valid_token(); // iat NOW - 100, exp NOW + 3500
    let mut host = connected(&current);
    for record in host.records.values() {
        assert_eq!(record.auth_issued_at, Some(NOW - 100), "the token's iat");
    }
    let same = token(json!({ "jti": "re-signed" }));
    let response = refresh_by_record(&same, NOW, &mut host);
    assert_refused(&response, 4001, "token invalid", &host);
    assert!(host.logged("the current token again"));

    let mut host = connected(&current);
    let older = token(json!({ "iat": NOW - 101, "exp": NOW + 3600 }));
    assert_refused(
        &refresh_by_record(&older, NOW, &mut host),
        4001,
        "token invalid",
        &host,
    );

    let mut host = connected(&current);
    let other = token(json!({ "sub": "someone-else", "iat": NOW }));
    assert_refused(
        &refresh_by_record(&other, NOW, &mut host),
        4003,
        "forbidden",
        &host,
    );

    let mut host = connected(&current);
    let newer = token(json!({ "iat": NOW, "exp": NOW + 3600 }));
    let response = refresh_by_record(&newer, NOW, &mut host);
    assert_eq!(response.code, 1000, "{response:?}");
    for record in host.records.values() {
        assert_eq!(
            (record.auth_issued_at, record.auth_expires_at),
            (Some(NOW), Some(NOW + 3600))
        );
    }

    // No records at all (never connected, or already gone): refused.
    let mut host = FakeHost::new();
    let response = refresh_by_record(&newer, NOW, &mut host);
    assert_refused(&response, 4001, "token invalid", &host);
    assert!(host.logged("the connection has no records"));
}
