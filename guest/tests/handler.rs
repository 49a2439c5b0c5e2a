//! One test per row of the response table: status and exact body, plus what
//! reached the store and the log.

mod common;

use common::*;
use gitgazer_ws_guest::{
    ConnectRequest, DisconnectRequest, Level, RecordKey, Rejection, Response, StoreError,
    handle_connect, handle_disconnect,
};
use serde_json::json;

const CONNECTION: &str = "L0SM9cOFvHcCIhw=";

fn connect_request(token: Option<String>) -> ConnectRequest {
    ConnectRequest {
        connection_id: CONNECTION.into(),
        id_token: token,
        now: NOW,
        settings: settings(),
        endpoint: None,
    }
}

fn connect(token: Option<String>, host: &mut FakeHost) -> Response {
    handle_connect(&connect_request(token), host)
}

fn disconnect(connection_id: &str, host: &mut FakeHost) -> Response {
    handle_disconnect(
        &DisconnectRequest {
            connection_id: connection_id.into(),
        },
        host,
    )
}

fn response(status: u16, body: &str) -> Response {
    Response {
        status,
        body: body.into(),
        rejection: None,
    }
}

/// A refusal because of the token: the class rides along for the host.
fn refused(status: u16, body: &str, rejection: Rejection) -> Response {
    Response {
        rejection: Some(rejection),
        ..response(status, body)
    }
}

/// The token never appears in any log line, whole or in part.
fn assert_token_not_logged(host: &FakeHost, token: &str) {
    for segment in token.split('.').filter(|s| s.len() > 8) {
        assert!(!host.logged(segment), "a token segment was logged");
    }
}

#[test]
fn connected_stores_one_record_per_group_in_one_call() {
    let mut host = FakeHost::new();
    let token = valid_token();
    assert_eq!(
        connect(Some(token.clone()), &mut host),
        response(200, "Connected.")
    );
    assert_eq!(host.put_all_calls, 1);
    let records: Vec<_> = host.records.values().cloned().collect();
    assert_eq!(records.len(), 2, "duplicate group collapsed");
    for (record, group) in records.iter().zip(["integration-1", "integration-2"]) {
        assert_eq!(record.integration_id, group);
        assert_eq!(record.connection_id, CONNECTION);
        assert_eq!(record.sub, "5f3c8a2e-1111-2222-3333-444455556666");
        assert_eq!(record.connected_at, NOW_RFC3339);
        assert_eq!(record.expires_at, NOW + u64::from(TTL));
        assert_eq!(record.endpoint, None);
        assert_eq!(record.auth_expires_at, Some(NOW + 3500), "the token's exp");
    }
    assert_token_not_logged(&host, &token);
}

#[test]
fn a_fractional_exp_is_stored_rounded_down() {
    let mut host = FakeHost::new();
    let claims = claims_with(json!({ "exp": (NOW + 90) as f64 + 0.75 }));
    let token = sign(key_a(), &header(KID_A), &claims);
    assert_eq!(connect(Some(token), &mut host), response(200, "Connected."));
    for record in host.records.values() {
        assert_eq!(record.auth_expires_at, Some(NOW + 90));
    }
}

#[test]
fn every_record_carries_the_requests_endpoint() {
    let mut host = FakeHost::new();
    let endpoint = "http://10.0.0.5:8082/n/3f9c0a1b2c3d4e5f";
    let request = ConnectRequest {
        endpoint: Some(endpoint.into()),
        ..connect_request(Some(valid_token()))
    };
    assert_eq!(
        handle_connect(&request, &mut host),
        response(200, "Connected.")
    );
    assert_eq!(host.records.len(), 2);
    for record in host.records.values() {
        assert_eq!(record.endpoint.as_deref(), Some(endpoint));
    }
}

#[test]
fn no_token_or_empty_token() {
    for token in [None, Some(String::new())] {
        let mut host = FakeHost::new();
        assert_eq!(
            connect(token, &mut host),
            refused(
                401,
                "Unauthorized: No authentication token provided",
                Rejection::Missing
            )
        );
        assert!(host.key_set_calls.is_empty());
        assert_eq!(host.put_all_calls, 0);
        assert!(host.logged_at(Level::Info, "missing"));
    }
}

#[test]
fn any_invalid_token_is_the_same_401() {
    let expired = sign(
        key_a(),
        &header(KID_A),
        &claims_with(json!({ "exp": NOW - 3600 })),
    );
    let forged = sign(key_b(), &header(KID_A), &claims());
    let unknown = sign(key_b(), &header(KID_B), &claims());
    let hs256 = sign(key_a(), &json!({ "alg": "HS256", "kid": KID_A }), &claims());
    let cases = [
        (expired, "expired"),
        (forged, "bad-signature"),
        (unknown, "unknown-key"),
        (hs256, "unsupported-algorithm"),
        ("x.y".to_owned(), "malformed"),
        ("a".repeat(20_000), "too-large"),
    ];
    for (token, class) in cases {
        let mut host = FakeHost::new();
        let reply = connect(Some(token.clone()), &mut host);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, "Unauthorized: Invalid authentication token"),
            "{class}"
        );
        assert_eq!(reply.rejection.map(Rejection::as_str), Some(class));
        assert_eq!(host.put_all_calls, 0, "{class}");
        assert!(
            host.logged_at(Level::Info, class),
            "rejection class {class} logged"
        );
        assert_token_not_logged(&host, &token);
    }
}

#[test]
fn no_groups_is_denied() {
    for groups in [json!(null), json!([]), json!(["ok", 5])] {
        let mut host = FakeHost::new();
        let token = sign(
            key_a(),
            &header(KID_A),
            &claims_with(json!({ "cognito:groups": groups })),
        );
        assert_eq!(
            connect(Some(token), &mut host),
            response(401, "Connection denied: No authorized groups found"),
            "{groups}"
        );
        assert_eq!(host.put_all_calls, 0);
        assert!(host.records.is_empty());
    }
}

const SUB: &str = "5f3c8a2e-1111-2222-3333-444455556666";

#[test]
fn a_token_issued_at_or_before_its_users_revocation_is_refused() {
    // `iat` is NOW - 100; a revocation at that very second refuses it too.
    for revoked_before in [NOW - 100, NOW - 1, NOW + 5] {
        let mut host = FakeHost::new();
        host.revocations.insert(SUB.into(), revoked_before);
        assert_eq!(
            connect(Some(valid_token()), &mut host),
            refused(401, "Unauthorized: Access revoked", Rejection::Revoked),
            "revoked before {revoked_before}"
        );
        assert_eq!(host.put_all_calls, 0);
        assert!(host.records.is_empty());
        assert!(host.logged("connect denied: token revoked"));
    }
}

#[test]
fn a_token_issued_after_the_revocation_or_of_another_user_connects() {
    for (sub, revoked_before) in [(SUB, NOW - 101), ("someone-else", NOW)] {
        let mut host = FakeHost::new();
        host.revocations.insert(sub.into(), revoked_before);
        assert_eq!(
            connect(Some(valid_token()), &mut host),
            response(200, "Connected.")
        );
        assert_eq!(host.revoked_before_calls, 1, "one read per CONNECT");
        assert_eq!(host.records.len(), 2);
    }
}

#[test]
fn a_token_without_iat_is_refused_once_its_user_is_revoked() {
    let mut claims = claims();
    claims.as_object_mut().unwrap().remove("iat");
    let token = sign(key_a(), &header(KID_A), &claims);
    let mut host = FakeHost::new();
    assert_eq!(
        connect(Some(token.clone()), &mut host),
        response(200, "Connected.")
    );
    let mut host = FakeHost::new();
    host.revocations.insert(SUB.into(), 0);
    assert_eq!(
        connect(Some(token), &mut host),
        refused(401, "Unauthorized: Access revoked", Rejection::Revoked)
    );
}

#[test]
fn a_failed_revocation_read_stores_nothing() {
    for (error, status, body, _) in store_errors() {
        let mut host = FakeHost::new();
        host.revoked_before_error = Some(error.clone());
        assert_eq!(
            connect(Some(valid_token()), &mut host),
            response(status, body),
            "{error:?}"
        );
        assert_eq!(host.put_all_calls, 0);
        assert!(host.logged(detail(&error)));
    }
}

#[test]
fn key_set_unavailable_is_a_server_error() {
    let mut host = FakeHost::with_key_set(Err("jwks fetch timed out".into()));
    assert_eq!(
        connect(Some(valid_token()), &mut host),
        refused(500, "Internal server error.", Rejection::KeySetUnavailable)
    );
    assert!(host.logged_at(Level::Error, "jwks fetch timed out"));
    assert!(host.logged_at(Level::Info, "key-set-unavailable"));
    assert_eq!(host.put_all_calls, 0);
}

fn store_errors() -> Vec<(StoreError, u16, &'static str, Level)> {
    vec![
        (
            StoreError::Validation("item too large: detail-1".into()),
            400,
            "Bad request.",
            Level::Warn,
        ),
        (
            StoreError::Throttled("ProvisionedThroughputExceeded: detail-2".into()),
            429,
            "Too many requests. Try again later.",
            Level::Warn,
        ),
        (
            StoreError::NotFound("table missing: detail-3".into()),
            404,
            "Not found.",
            Level::Error,
        ),
        (
            StoreError::Unavailable("connection refused: detail-4".into()),
            500,
            "Internal server error.",
            Level::Error,
        ),
        (
            StoreError::Other("something odd: detail-5".into()),
            500,
            "Internal server error.",
            Level::Error,
        ),
    ]
}

fn detail(error: &StoreError) -> &str {
    match error {
        StoreError::Validation(d)
        | StoreError::Throttled(d)
        | StoreError::NotFound(d)
        | StoreError::Unavailable(d)
        | StoreError::Other(d) => d,
    }
}

#[test]
fn store_errors_on_connect_map_to_generic_bodies() {
    for (error, status, body, level) in store_errors() {
        let mut host = FakeHost::new();
        host.put_all_error = Some(error.clone());
        let got = connect(Some(valid_token()), &mut host);
        assert_eq!(got, response(status, body), "{error:?}");
        assert!(!got.body.contains(detail(&error)));
        assert!(host.logged_at(level, detail(&error)), "{error:?} logged");
    }
}

#[test]
fn store_errors_on_disconnect_map_to_generic_bodies() {
    for (error, status, body, level) in store_errors() {
        // Failing lookup: nothing deleted.
        let mut host = FakeHost::new();
        host.insert("integration-1", CONNECTION);
        host.keys_of_error = Some(error.clone());
        assert_eq!(
            disconnect(CONNECTION, &mut host),
            response(status, body),
            "{error:?}"
        );
        assert_eq!(host.delete_calls, 0);
        assert!(host.logged_at(level, detail(&error)));

        // Failing delete.
        let mut host = FakeHost::new();
        host.insert("integration-1", CONNECTION);
        host.delete_error = Some(error.clone());
        assert_eq!(
            disconnect(CONNECTION, &mut host),
            response(status, body),
            "{error:?}"
        );
        assert!(host.logged_at(level, detail(&error)));
    }
}

#[test]
fn disconnected_removes_every_record_of_the_connection() {
    let mut host = FakeHost::new();
    for group in ["integration-1", "integration-2", "integration-3"] {
        host.insert(group, CONNECTION);
    }
    host.insert("integration-1", "other-connection");
    assert_eq!(
        disconnect(CONNECTION, &mut host),
        response(200, "Disconnected. Removed 3 records.")
    );
    assert_eq!(host.delete_calls, 1);
    let left: Vec<RecordKey> = host.records.keys().cloned().collect();
    assert_eq!(
        left,
        vec![RecordKey {
            integration_id: "integration-1".into(),
            connection_id: "other-connection".into(),
        }]
    );
}

#[test]
fn disconnect_reports_what_delete_says_it_removed() {
    // Records found, then gone before the delete (another disconnect won):
    // the count comes from delete, not from the lookup.
    struct Raced(FakeHost);
    impl gitgazer_ws_guest::Capabilities for Raced {
        fn key_set(&mut self, refresh: bool) -> Result<String, String> {
            self.0.key_set(refresh)
        }
        fn put_all(&mut self, r: &[gitgazer_ws_guest::ConnectionRecord]) -> Result<(), StoreError> {
            self.0.put_all(r)
        }
        fn keys_of(&mut self, id: &str) -> Result<Vec<RecordKey>, StoreError> {
            let keys = self.0.keys_of(id);
            self.0.records.clear();
            keys
        }
        fn delete(&mut self, keys: &[RecordKey]) -> Result<u32, StoreError> {
            self.0.delete(keys)
        }
        fn revoked_before(&mut self, sub: &str) -> Result<Option<u64>, StoreError> {
            self.0.revoked_before(sub)
        }
        fn log(&mut self, level: Level, message: &str) {
            self.0.log(level, message)
        }
    }
    let mut host = Raced(FakeHost::new());
    host.0.insert("integration-1", CONNECTION);
    host.0.insert("integration-2", CONNECTION);
    let got = handle_disconnect(
        &DisconnectRequest {
            connection_id: CONNECTION.into(),
        },
        &mut host,
    );
    assert_eq!(got, response(200, "Disconnected. Removed 0 records."));
}

#[test]
fn nothing_to_disconnect() {
    let mut host = FakeHost::new();
    host.insert("integration-1", "other-connection");
    assert_eq!(
        disconnect(CONNECTION, &mut host),
        response(200, "No records to disconnect.")
    );
    assert_eq!(host.keys_of_calls, 1);
    assert_eq!(host.delete_calls, 0);
    assert_eq!(host.records.len(), 1);
}

#[test]
fn invalid_connection_ids_are_refused_before_any_work() {
    let too_long = "c".repeat(129);
    for id in [
        "",
        too_long.as_str(),
        "abc\n",
        "a\u{0}b",
        "tab\there",
        "del\u{7f}",
        "c1\u{85}",
        "a b",
        "nbsp\u{a0}",
        "revoked 5f3c8a2e-1111-2222-3333-444455556666",
    ] {
        let mut host = FakeHost::new();
        let mut request = connect_request(Some(valid_token()));
        request.connection_id = id.into();
        assert_eq!(
            handle_connect(&request, &mut host),
            response(400, "Invalid connection id."),
            "{id:?}"
        );
        assert!(host.key_set_calls.is_empty());
        assert_eq!(host.put_all_calls, 0);

        assert_eq!(
            disconnect(id, &mut host),
            response(400, "Invalid connection id."),
            "{id:?}"
        );
        assert_eq!(host.keys_of_calls, 0);
    }
}

#[test]
fn longest_and_unusual_but_valid_connection_ids_are_accepted() {
    let longest = "c".repeat(128);
    for id in [longest.as_str(), "Zm9v=", "ünïcödé-id"] {
        let mut host = FakeHost::new();
        let mut request = connect_request(Some(valid_token()));
        request.connection_id = id.into();
        assert_eq!(
            handle_connect(&request, &mut host),
            response(200, "Connected."),
            "{id:?}"
        );
        assert_eq!(
            disconnect(id, &mut host),
            response(200, "Disconnected. Removed 2 records."),
            "{id:?}"
        );
    }
}

#[test]
fn clock_past_year_9999_is_a_server_error() {
    // Such a clock cannot be written as RFC 3339: refused, not wrapped.
    let mut host = FakeHost::new();
    let token = sign(
        key_a(),
        &header(KID_A),
        &claims_with(json!({ "exp": u64::MAX, "iat": null, "auth_time": null })),
    );
    let mut request = connect_request(Some(token));
    request.now = u64::MAX - 5;
    assert_eq!(
        handle_connect(&request, &mut host),
        response(500, "Internal server error.")
    );
    assert_eq!(host.put_all_calls, 0);
}
