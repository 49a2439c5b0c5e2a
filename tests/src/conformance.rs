//! The generator of the policy's conformance set,
//! `tests/conformance/cases.json`: one file of cases as data, run by the
//! `conformance` area of the end-to-end tests against the component under
//! wasmtime (through the host's own `PolicyRuntime`) and by
//! `tests/jco/run.mjs` against the very same `.wasm` under jco on Node.
//!
//! The checked-in file is the source of truth. To regenerate it (new keys,
//! new tokens, same expectations):
//!
//! ```sh
//! cargo test --release -p gitgazer-ws-tests --test e2e -- --ignored conformance::generate_conformance_cases
//! ```
//!
//! Every case carries a fixed `now`, so its tokens never expire in the file.

use std::path::{Path, PathBuf};

use gitgazer_ws::dev::DevSigner;
use serde_json::{Value, json};

use crate::hand_made_token;

/// The `now` of every case: 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;
const NOW_RFC3339: &str = "2027-01-15T08:00:00Z";
const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Conform";
const AUDIENCE: &str = "conformance-client";
/// A second app client of the same pool (a mobile app beside the web one).
const SECOND_AUDIENCE: &str = "conformance-mobile-client";
const LEEWAY: u32 = 60;
const RECORD_TTL: u32 = 7200;

const CONNECTED: &str = "Connected.";
const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
const INVALID_TOKEN: &str = "Unauthorized: Invalid authentication token";
const NO_GROUPS: &str = "Connection denied: No authorized groups found";
const REVOKED: &str = "Unauthorized: Access revoked";
const NOTHING_TO_DISCONNECT: &str = "No records to disconnect.";
const INVALID_CONNECTION_ID: &str = "Invalid connection id.";
const INTERNAL_ERROR: &str = "Internal server error.";

/// The store-error variants with the response each maps to.
const STORE_ERRORS: &[(&str, u16, &str)] = &[
    ("validation", 400, "Bad request."),
    ("throttled", 429, "Too many requests. Try again later."),
    ("not-found", 404, "Not found."),
    ("unavailable", 500, INTERNAL_ERROR),
    ("other", 500, INTERNAL_ERROR),
];

/// The conformance set.
pub fn cases_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/cases.json")
}

fn settings_json() -> Value {
    json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE, SECOND_AUDIENCE],
        "leeway-seconds": LEEWAY,
        "record-ttl-seconds": RECORD_TTL,
    })
}

fn claims(sub: &str, groups: Option<Value>) -> Value {
    let mut claims = json!({
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "token_use": "id",
        "auth_time": NOW - 60,
        "iat": NOW - 60,
        "exp": NOW + 3600,
        "cognito:username": sub,
    });
    if let Some(groups) = groups {
        claims["cognito:groups"] = groups;
    }
    claims
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

/// A record as a CONNECT at `NOW` stores it, for a token of [`claims`]
/// (`auth-expires-at`: its `exp`; `auth-issued-at`: its `iat`).
fn record(group: &str, connection_id: &str, sub: &str) -> Value {
    json!({
        "integration-id": group,
        "connection-id": connection_id,
        "sub": sub,
        "connected-at": NOW_RFC3339,
        "expires-at": NOW + u64::from(RECORD_TTL),
        "auth-expires-at": NOW + 3600,
        "auth-issued-at": NOW - 60,
    })
}

/// [`record`] for a token whose `exp` was `exp`.
fn record_until(group: &str, connection_id: &str, sub: &str, exp: u64) -> Value {
    let mut record = record(group, connection_id, sub);
    record["auth-expires-at"] = json!(exp);
    record
}

/// A record stored by an earlier connection (other time, other TTL, and
/// written before records carried `auth-expires-at`).
fn old_record(group: &str, connection_id: &str, sub: &str) -> Value {
    json!({
        "integration-id": group,
        "connection-id": connection_id,
        "sub": sub,
        "connected-at": "2027-01-15T07:00:00Z",
        "expires-at": NOW - 3600 + u64::from(RECORD_TTL),
    })
}

fn sorted(mut records: Vec<Value>) -> Vec<Value> {
    records.sort_by(|a, b| {
        let key = |r: &Value| {
            (
                r["integration-id"].as_str().unwrap_or("").to_owned(),
                r["connection-id"].as_str().unwrap_or("").to_owned(),
            )
        };
        key(a).cmp(&key(b))
    });
    records
}

/// Builds cases with sensible defaults: the signer's key set, an empty
/// store, no failure.
struct Builder {
    jwks: String,
    cases: Vec<Value>,
}

struct Case {
    name: String,
    description: String,
    call: Value,
    key_set: Value,
    refreshed_key_set: Option<Value>,
    store_before: Vec<Value>,
    store_failure: Option<Value>,
    expect: Value,
    key_set_requests: Vec<bool>,
    store_after: Option<Vec<Value>>,
    /// Users' revocations: (sub, revoked-before).
    revocations: Vec<(String, u64)>,
}

impl Builder {
    fn case(&self, name: &str, description: &str, call: Value, expect: Value) -> Case {
        Case {
            name: name.into(),
            description: description.into(),
            call,
            key_set: json!({ "ok": self.jwks }),
            refreshed_key_set: None,
            store_before: Vec::new(),
            store_failure: None,
            expect,
            key_set_requests: Vec::new(),
            store_after: None,
            revocations: Vec::new(),
        }
    }

    fn push(&mut self, case: Case) {
        let store_after = case
            .store_after
            .unwrap_or_else(|| case.store_before.clone());
        let mut value = json!({
            "name": case.name,
            "description": case.description,
            "call": case.call,
            "key-set": case.key_set,
            "store-before": sorted(case.store_before),
            "expect": case.expect,
            "expect-key-set-requests": case.key_set_requests,
            "expect-store-after": sorted(store_after),
        });
        if let Some(refreshed) = case.refreshed_key_set {
            value["refreshed-key-set"] = refreshed;
        }
        if let Some(failure) = case.store_failure {
            value["store-failure"] = failure;
        }
        if !case.revocations.is_empty() {
            value["revocations"] = case
                .revocations
                .iter()
                .map(|(sub, before)| json!({ "sub": sub, "revoked-before": before }))
                .collect();
        }
        assert!(
            !self.cases.iter().any(|c| c["name"] == value["name"]),
            "duplicate case name {}",
            value["name"]
        );
        self.cases.push(value);
    }
}

fn connect(connection_id: &str, token: Option<&str>) -> Value {
    json!({
        "op": "connect",
        "connection-id": connection_id,
        "id-token": token,
        "now": NOW,
        "settings": settings_json(),
    })
}

fn disconnect(connection_id: &str) -> Value {
    json!({ "op": "disconnect", "connection-id": connection_id })
}

fn verify(token: &str) -> Value {
    json!({ "op": "verify-token", "token": token, "now": NOW, "settings": settings_json() })
}

fn response(status: u16, body: &str) -> Value {
    json!({ "response": { "status": status, "body": body } })
}

fn valid(sub: &str, groups: &[&str]) -> Value {
    json!({ "verify": { "ok": { "sub": sub, "groups": groups } } })
}

fn rejected(reason: &str) -> Value {
    json!({ "verify": { "error": reason } })
}

fn store_failure(operation: &str, kind: &str) -> Value {
    json!({ "operation": operation, "kind": kind, "detail": format!("injected {kind} on {operation}") })
}

/// The signer's key set with one field of its key changed.
fn tampered_jwks(jwks: &str, field: &str, value: Value) -> String {
    let mut set: Value = serde_json::from_str(jwks).unwrap();
    set["keys"][0][field] = value;
    set.to_string()
}

/// Replaces the signature of a token with another one.
fn with_signature_of(token: &str, other: &str) -> String {
    let (head, _) = token.rsplit_once('.').unwrap();
    let (_, signature) = other.rsplit_once('.').unwrap();
    format!("{head}.{signature}")
}

fn build_cases() -> Vec<Value> {
    let signer = DevSigner::generate().unwrap();
    let other = DevSigner::generate().unwrap();
    let jwks = signer.jwks().to_owned();
    let other_jwks = other.jwks().to_owned();
    let kid = signer.kid().to_owned();
    let both_jwks = {
        let mut set: Value = serde_json::from_str(&other_jwks).unwrap();
        let mine: Value = serde_json::from_str(&jwks).unwrap();
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(mine["keys"][0].clone());
        set.to_string()
    };
    let mut b = Builder {
        jwks: jwks.clone(),
        cases: Vec::new(),
    };

    let one_group = signer.sign(&claims("alice", Some(json!(["acme"]))));
    let thirty: Vec<String> = (1..=30).map(|i| format!("integration-{i:02}")).collect();
    let thirty_groups = signer.sign(&claims("bob", Some(json!(thirty))));
    let duplicates = signer.sign(&claims("carol", Some(json!(["b", "a", "b", "c", "a"]))));
    let two_groups = signer.sign(&claims("alice", Some(json!(["acme", "globex"]))));

    // --- CONNECT: accepted ---------------------------------------------------
    let mut c = b.case(
        "connect-valid-one-group",
        "a valid token with one group stores one record",
        connect("c1", Some(&one_group)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![record("acme", "c1", "alice")]);
    b.push(c);

    let endpoint = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod";
    let mut call = connect("c2", Some(&two_groups));
    call["endpoint"] = json!(endpoint);
    let mut c = b.case(
        "connect-stores-the-endpoint",
        "the request's endpoint goes into every record, as given",
        call,
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    let with_endpoint = |mut record: Value| {
        record["endpoint"] = json!(endpoint);
        record
    };
    c.store_after = Some(vec![
        with_endpoint(record("acme", "c2", "alice")),
        with_endpoint(record("globex", "c2", "alice")),
    ]);
    b.push(c);

    let mut c = b.case(
        "connect-valid-thirty-groups",
        "thirty groups: thirty records in one put-all",
        connect("c30", Some(&thirty_groups)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(thirty.iter().map(|g| record(g, "c30", "bob")).collect());
    b.push(c);

    let mut c = b.case(
        "connect-duplicate-groups",
        "duplicate groups collapse: one record per distinct group",
        connect("cd", Some(&duplicates)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![
        record("a", "cd", "carol"),
        record("b", "cd", "carol"),
        record("c", "cd", "carol"),
    ]);
    b.push(c);

    let mut c = b.case(
        "connect-keeps-other-connections",
        "records of other connections are left alone",
        connect("c2", Some(&two_groups)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_before = vec![
        old_record("acme", "c1", "alice"),
        old_record("initech", "c9", "dave"),
    ];
    c.store_after = Some(vec![
        old_record("acme", "c1", "alice"),
        old_record("initech", "c9", "dave"),
        record("acme", "c2", "alice"),
        record("globex", "c2", "alice"),
    ]);
    b.push(c);

    let mut c = b.case(
        "connect-overwrites-same-key",
        "a reconnect with the same connection id replaces its record",
        connect("c1", Some(&one_group)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_before = vec![old_record("acme", "c1", "alice")];
    c.store_after = Some(vec![record("acme", "c1", "alice")]);
    b.push(c);

    let second_client = signer.sign(&with(
        claims("alice", Some(json!(["acme"]))),
        "aud",
        json!(SECOND_AUDIENCE),
    ));
    let mut c = b.case(
        "connect-second-audience",
        "aud is the second of the accepted app clients",
        connect("c1", Some(&second_client)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![record("acme", "c1", "alice")]);
    b.push(c);

    let within_leeway = signer.sign(&with(
        claims("alice", Some(json!(["acme"]))),
        "exp",
        json!(NOW - 30),
    ));
    let mut c = b.case(
        "connect-expired-within-leeway",
        "exp 30 s ago with 60 s leeway is still accepted (auth-expires-at: that exp)",
        connect("c1", Some(&within_leeway)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![record_until("acme", "c1", "alice", NOW - 30)]);
    b.push(c);

    let fractional_exp = signer.sign(&with(
        claims("alice", Some(json!(["acme"]))),
        "exp",
        json!((NOW + 90) as f64 + 0.75),
    ));
    let mut c = b.case(
        "connect-auth-expires-at-rounds-exp-down",
        "every record carries the token's exp as auth-expires-at, a fraction rounded down",
        connect("c1", Some(&fractional_exp)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![record_until("acme", "c1", "alice", NOW + 90)]);
    b.push(c);

    let mut c = b.case(
        "connect-unknown-kid-refresh-finds-it",
        "the kid is not in the cached set; the refreshed set has it",
        connect("c1", Some(&one_group)),
        response(200, CONNECTED),
    );
    c.key_set = json!({ "ok": other_jwks });
    c.refreshed_key_set = Some(json!({ "ok": both_jwks }));
    c.key_set_requests = vec![false, true];
    c.store_after = Some(vec![record("acme", "c1", "alice")]);
    b.push(c);

    // --- CONNECT: refused ----------------------------------------------------
    let no_groups = signer.sign(&claims("erin", None));
    let mut c = b.case(
        "connect-no-groups",
        "a valid token without cognito:groups stores nothing",
        connect("c1", Some(&no_groups)),
        response(401, NO_GROUPS),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let empty_groups = signer.sign(&claims("erin", Some(json!([]))));
    let mut c = b.case(
        "connect-empty-groups",
        "an empty cognito:groups array counts as no groups",
        connect("c1", Some(&empty_groups)),
        response(401, NO_GROUPS),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    b.push(b.case(
        "connect-no-token",
        "no idToken at all",
        connect("c1", None),
        response(401, NO_TOKEN),
    ));
    b.push(b.case(
        "connect-empty-token",
        "an empty idToken counts as none",
        connect("c1", Some("")),
        response(401, NO_TOKEN),
    ));

    let signed_negatives: Vec<(&str, &str, Value)> = vec![
        (
            "connect-expired",
            "exp passed beyond the leeway",
            with(
                claims("alice", Some(json!(["acme"]))),
                "exp",
                json!(NOW - 61),
            ),
        ),
        (
            "connect-not-yet-valid",
            "nbf beyond the leeway in the future",
            with(
                claims("alice", Some(json!(["acme"]))),
                "nbf",
                json!(NOW + 120),
            ),
        ),
        (
            "connect-wrong-issuer",
            "iss of another user pool",
            with(
                claims("alice", Some(json!(["acme"]))),
                "iss",
                json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"),
            ),
        ),
        (
            "connect-wrong-audience",
            "aud of an app client that is none of the accepted ones",
            with(
                claims("alice", Some(json!(["acme"]))),
                "aud",
                json!("another-client"),
            ),
        ),
        (
            "connect-audiences-joined",
            "aud is the accepted clients joined by a comma: none of them",
            with(
                claims("alice", Some(json!(["acme"]))),
                "aud",
                json!(format!("{AUDIENCE},{SECOND_AUDIENCE}")),
            ),
        ),
        (
            "connect-wrong-token-use",
            "an access token instead of an id token",
            with(
                claims("alice", Some(json!(["acme"]))),
                "token_use",
                json!("access"),
            ),
        ),
        ("connect-missing-sub", "no sub claim", {
            let mut c = claims("alice", Some(json!(["acme"])));
            c.as_object_mut().unwrap().remove("sub");
            c
        }),
    ];
    for (name, description, token_claims) in signed_negatives {
        let mut c = b.case(
            name,
            description,
            connect("c1", Some(&signer.sign(&token_claims))),
            response(401, INVALID_TOKEN),
        );
        c.key_set_requests = vec![false];
        b.push(c);
    }

    let good_claims = claims("alice", Some(json!(["acme"]))).to_string();
    let alg_none = hand_made_token(r#"{"alg":"none","typ":"JWT"}"#, &good_claims, b"");
    b.push(b.case(
        "connect-alg-none",
        "an unsigned token (alg none)",
        connect("c1", Some(&alg_none)),
        response(401, INVALID_TOKEN),
    ));
    let hs256 = hand_made_token(
        &format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#),
        &good_claims,
        &[7u8; 32],
    );
    b.push(b.case(
        "connect-hs256",
        "an HMAC token carrying the RSA key's kid (key confusion)",
        connect("c1", Some(&hs256)),
        response(401, INVALID_TOKEN),
    ));

    let mut c = b.case(
        "connect-unknown-kid-refresh-does-not-find-it",
        "the kid is in neither the cached nor the refreshed set",
        connect("c1", Some(&one_group)),
        response(401, INVALID_TOKEN),
    );
    c.key_set = json!({ "ok": other_jwks });
    c.key_set_requests = vec![false, true];
    b.push(c);

    let mut c = b.case(
        "connect-unknown-kid-refresh-fails",
        "the kid is unknown and the refresh finds no key set at all",
        connect("c1", Some(&one_group)),
        response(500, INTERNAL_ERROR),
    );
    c.key_set = json!({ "ok": other_jwks });
    c.refreshed_key_set = Some(json!({ "error": "injected: refresh failed" }));
    c.key_set_requests = vec![false, true];
    b.push(c);

    let mut c = b.case(
        "connect-key-set-unavailable",
        "the host has no key set: not the client's fault, 500",
        connect("c1", Some(&one_group)),
        response(500, INTERNAL_ERROR),
    );
    c.key_set = json!({ "error": "injected: key set unavailable" });
    c.key_set_requests = vec![false];
    b.push(c);

    let mut c = b.case(
        "connect-key-set-not-jwks",
        "the key set is not a JWKS document: 500",
        connect("c1", Some(&one_group)),
        response(500, INTERNAL_ERROR),
    );
    c.key_set = json!({ "ok": "{\"not\":\"a key set\"}" });
    c.key_set_requests = vec![false];
    b.push(c);

    let mut c = b.case(
        "connect-unusable-key",
        "the kid's key is marked for encryption only",
        connect("c1", Some(&one_group)),
        response(401, INVALID_TOKEN),
    );
    c.key_set = json!({ "ok": tampered_jwks(&jwks, "use", json!("enc")) });
    c.key_set_requests = vec![false];
    b.push(c);

    let other_signature = other.sign(&claims("alice", Some(json!(["acme"]))));
    let bad_signature = with_signature_of(&one_group, &other_signature);
    let mut c = b.case(
        "connect-bad-signature",
        "right kid, signature made by another key",
        connect("c1", Some(&bad_signature)),
        response(401, INVALID_TOKEN),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let forged_claims = {
        let (head, rest) = one_group.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let payload = base64_url(
            claims("mallory", Some(json!(["acme", "globex"])))
                .to_string()
                .as_bytes(),
        );
        format!("{head}.{payload}.{signature}")
    };
    let mut c = b.case(
        "connect-forged-claims",
        "claims swapped under a genuine signature",
        connect("c1", Some(&forged_claims)),
        response(401, INVALID_TOKEN),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let (head, rest) = one_group.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let malformed: Vec<(&str, &str, String)> = vec![
        (
            "connect-malformed-two-segments",
            "only header and payload",
            format!("{head}.{payload}"),
        ),
        (
            "connect-malformed-four-segments",
            "an extra segment",
            format!("{one_group}.AAAA"),
        ),
        (
            "connect-malformed-not-base64url",
            "a payload segment with characters outside base64url",
            format!(
                "{head}.{payload}*.{}",
                &one_group.rsplit_once('.').unwrap().1
            ),
        ),
        (
            "connect-malformed-payload-not-json",
            "a payload that is not JSON",
            hand_made_token(
                &format!(r#"{{"alg":"RS256","kid":"{kid}"}}"#),
                "not json",
                &[1u8; 256],
            ),
        ),
        (
            "connect-malformed-garbage",
            "no dots at all",
            "garbage".into(),
        ),
    ];
    for (name, description, token) in malformed {
        b.push(b.case(
            name,
            description,
            connect("c1", Some(&token)),
            response(401, INVALID_TOKEN),
        ));
    }

    let no_kid = hand_made_token(r#"{"alg":"RS256","typ":"JWT"}"#, &good_claims, &[1u8; 256]);
    b.push(b.case(
        "connect-header-without-kid",
        "an RS256 header without kid",
        connect("c1", Some(&no_kid)),
        response(401, INVALID_TOKEN),
    ));

    // --- CONNECT: invalid connection ids --------------------------------------
    let long_id = "x".repeat(129);
    for (name, id) in [
        ("connect-invalid-connection-id-empty", ""),
        ("connect-invalid-connection-id-control", "c\n1"),
        ("connect-invalid-connection-id-too-long", long_id.as_str()),
        ("connect-invalid-connection-id-space", "revoked alice"),
    ] {
        b.push(b.case(
            name,
            "the connection id is refused before the token is looked at",
            connect(id, Some(&one_group)),
            response(400, INVALID_CONNECTION_ID),
        ));
    }

    // --- CONNECT: revocations (evict) -----------------------------------------
    // `iat` of `two_groups` is NOW - 60.
    for (name, description, revoked_before) in [
        (
            "connect-revoked-after-iat",
            "the user was revoked after the token was issued: 401, nothing stored",
            NOW - 30,
        ),
        (
            "connect-revoked-at-iat",
            "a revocation in the very second of iat refuses the token too",
            NOW - 60,
        ),
    ] {
        let mut c = b.case(
            name,
            description,
            connect("c1", Some(&two_groups)),
            response(401, REVOKED),
        );
        c.key_set_requests = vec![false];
        c.revocations = vec![("alice".into(), revoked_before)];
        b.push(c);
    }
    let mut c = b.case(
        "connect-revoked-before-iat",
        "a token issued after the revocation connects (the user signed in again)",
        connect("c1", Some(&two_groups)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.revocations = vec![("alice".into(), NOW - 61), ("bob".into(), NOW)];
    c.store_after = Some(vec![
        record("acme", "c1", "alice"),
        record("globex", "c1", "alice"),
    ]);
    b.push(c);
    let mut c = b.case(
        "connect-revocation-read-fails",
        "the revocation cannot be read: nothing stored, the store error's answer",
        connect("c1", Some(&two_groups)),
        response(500, INTERNAL_ERROR),
    );
    c.key_set_requests = vec![false];
    c.store_failure = Some(store_failure("revoked-before", "unavailable"));
    b.push(c);
    let spaced = signer.sign(&claims("alice", Some(json!(["acme", "revoked alice"]))));
    let mut c = b.case(
        "connect-group-with-a-space",
        "a group name with whitespace is no Cognito group: the claim is unreadable, no groups",
        connect("c1", Some(&spaced)),
        response(401, NO_GROUPS),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    // --- CONNECT: store errors -----------------------------------------------
    for (kind, status, body) in STORE_ERRORS {
        let mut c = b.case(
            &format!("connect-store-{kind}"),
            "put-all fails: the store is unchanged and the client gets a generic answer",
            connect("c1", Some(&two_groups)),
            response(*status, body),
        );
        c.key_set_requests = vec![false];
        c.store_before = vec![old_record("initech", "c9", "dave")];
        c.store_failure = Some(store_failure("put-all", kind));
        b.push(c);
    }

    // --- DISCONNECT ----------------------------------------------------------
    let populated = vec![
        old_record("acme", "c1", "alice"),
        old_record("globex", "c1", "alice"),
        old_record("acme", "c2", "bob"),
    ];
    let mut c = b.case(
        "disconnect-with-records",
        "removes every record of the connection and nothing else",
        disconnect("c1"),
        response(200, "Disconnected. Removed 2 records."),
    );
    c.store_before = populated.clone();
    c.store_after = Some(vec![old_record("acme", "c2", "bob")]);
    b.push(c);

    let mut c = b.case(
        "disconnect-one-record",
        "removes the single record",
        disconnect("c2"),
        response(200, "Disconnected. Removed 1 records."),
    );
    c.store_before = populated.clone();
    c.store_after = Some(vec![
        old_record("acme", "c1", "alice"),
        old_record("globex", "c1", "alice"),
    ]);
    b.push(c);

    let mut c = b.case(
        "disconnect-no-records",
        "a connection without records",
        disconnect("c7"),
        response(200, NOTHING_TO_DISCONNECT),
    );
    c.store_before = populated.clone();
    b.push(c);

    b.push(b.case(
        "disconnect-empty-store",
        "an empty store",
        disconnect("c1"),
        response(200, NOTHING_TO_DISCONNECT),
    ));

    for (name, id) in [
        ("disconnect-invalid-connection-id-empty", ""),
        ("disconnect-invalid-connection-id-control", "c\u{7f}1"),
        (
            "disconnect-invalid-connection-id-too-long",
            long_id.as_str(),
        ),
    ] {
        let mut c = b.case(
            name,
            "the connection id is refused before the store is asked",
            disconnect(id),
            response(400, INVALID_CONNECTION_ID),
        );
        c.store_before = populated.clone();
        b.push(c);
    }

    for operation in ["keys-of", "delete"] {
        for (kind, status, body) in STORE_ERRORS {
            let mut c = b.case(
                &format!("disconnect-store-{operation}-{kind}"),
                "the store fails: nothing is removed and the client gets a generic answer",
                disconnect("c1"),
                response(*status, body),
            );
            c.store_before = populated.clone();
            c.store_failure = Some(store_failure(operation, kind));
            b.push(c);
        }
    }

    // --- verify-token --------------------------------------------------------
    let mut c = b.case(
        "verify-valid",
        "sub and groups of a valid token",
        verify(&two_groups),
        valid("alice", &["acme", "globex"]),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let mut c = b.case(
        "verify-duplicate-groups",
        "duplicates collapsed, first-seen order kept",
        verify(&duplicates),
        valid("carol", &["b", "a", "c"]),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let mut c = b.case(
        "verify-no-groups",
        "a valid token without groups is valid, with no groups",
        verify(&no_groups),
        valid("erin", &[]),
    );
    c.key_set_requests = vec![false];
    b.push(c);

    let too_large = format!("{}.{}.{}", "a".repeat(8192), "b".repeat(8192), "c");
    let verify_rejections: Vec<(&str, String, &str, Vec<bool>)> = vec![
        ("verify-missing", String::new(), "missing", vec![]),
        ("verify-too-large", too_large, "too-large", vec![]),
        ("verify-malformed", "garbage".into(), "malformed", vec![]),
        (
            "verify-alg-none",
            alg_none.clone(),
            "unsupported-algorithm",
            vec![],
        ),
        (
            "verify-hs256",
            hs256.clone(),
            "unsupported-algorithm",
            vec![],
        ),
        ("verify-no-kid", no_kid.clone(), "bad-header", vec![]),
        (
            "verify-bad-signature",
            bad_signature.clone(),
            "bad-signature",
            vec![false],
        ),
        (
            "verify-expired",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "exp",
                json!(NOW - 61),
            )),
            "expired",
            vec![false],
        ),
        (
            "verify-wrong-issuer",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "iss",
                json!("https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Other"),
            )),
            "wrong-issuer",
            vec![false],
        ),
        (
            "verify-wrong-audience",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "aud",
                json!("another-client"),
            )),
            "wrong-audience",
            vec![false],
        ),
        (
            "verify-not-yet-valid",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "nbf",
                json!(NOW + u64::from(LEEWAY) + 1),
            )),
            "not-yet-valid",
            vec![false],
        ),
        (
            "verify-wrong-token-use",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "token_use",
                json!("access"),
            )),
            "wrong-token-use",
            vec![false],
        ),
        (
            "verify-bad-claims",
            signer.sign(&with(
                claims("alice", Some(json!(["acme"]))),
                "exp",
                json!("tomorrow"),
            )),
            "bad-claims",
            vec![false],
        ),
    ];
    for (name, token, reason, requests) in verify_rejections {
        let mut c = b.case(
            name,
            "rejected with its class",
            verify(&token),
            rejected(reason),
        );
        c.key_set_requests = requests;
        b.push(c);
    }

    let mut c = b.case(
        "verify-unknown-key",
        "kid unknown before and after the refresh",
        verify(&one_group),
        rejected("unknown-key"),
    );
    c.key_set = json!({ "ok": other_jwks });
    c.key_set_requests = vec![false, true];
    b.push(c);

    let mut c = b.case(
        "verify-unusable-key",
        "the kid's key may not verify signatures",
        verify(&one_group),
        rejected("unusable-key"),
    );
    c.key_set = json!({ "ok": tampered_jwks(&jwks, "alg", json!("RS512")) });
    c.key_set_requests = vec![false];
    b.push(c);

    let mut c = b.case(
        "verify-key-set-unavailable",
        "no key set at all",
        verify(&one_group),
        rejected("key-set-unavailable"),
    );
    c.key_set = json!({ "error": "injected: key set unavailable" });
    c.key_set_requests = vec![false];
    b.push(c);

    refresh_cases(&mut b, &signer);

    b.cases
}

/// The endpoint refresh cases store with their records.
const NODE_ENDPOINT: &str = "http://10.0.0.5:8082/n/3f9c0a1b2c3d4e5f";

fn refresh(connection_id: &str, token: Option<&str>, current: &str) -> Value {
    json!({
        "op": "refresh",
        "connection-id": connection_id,
        "id-token": token,
        "current-token": current,
        "now": NOW,
        "connected-at": "2027-01-15T07:00:00Z",
        "settings": settings_json(),
        "endpoint": NODE_ENDPOINT,
    })
}

fn refreshed(code: u16, body: &str, expires_at: Option<u64>) -> Value {
    json!({ "refresh": { "code": code, "body": body, "expires-at": expires_at } })
}

/// A record a refresh at `NOW` writes for a token issued at `iat`,
/// expiring at `exp`.
fn refreshed_record(group: &str, connection_id: &str, sub: &str, iat: u64, exp: u64) -> Value {
    json!({
        "integration-id": group,
        "connection-id": connection_id,
        "sub": sub,
        "connected-at": "2027-01-15T07:00:00Z",
        "expires-at": NOW + u64::from(RECORD_TTL),
        "endpoint": NODE_ENDPOINT,
        "auth-expires-at": exp,
        "auth-issued-at": iat,
    })
}

/// The records a CONNECT an hour before `NOW` stored for alice's current
/// token (groups acme, globex; exp at `NOW + 60`), and another connection's.
fn connected_before() -> Vec<Value> {
    let mut records = vec![
        old_record("acme", "r1", "alice"),
        old_record("globex", "r1", "alice"),
        old_record("acme", "r9", "bob"),
    ];
    for record in &mut records[..2] {
        record["endpoint"] = json!(NODE_ENDPOINT);
        record["auth-expires-at"] = json!(NOW + 60);
        record["auth-issued-at"] = json!(NOW - 3600);
    }
    records
}

fn refresh_cases(b: &mut Builder, signer: &DevSigner) {
    let token = |sub: &str, groups: Value, iat: u64, exp: u64| {
        let mut claims = claims(sub, Some(groups));
        claims["iat"] = json!(iat);
        claims["auth_time"] = json!(iat);
        claims["exp"] = json!(exp);
        signer.sign(&claims)
    };
    let current = token("alice", json!(["acme", "globex"]), NOW - 3600, NOW + 60);
    let bob = old_record("acme", "r9", "bob");

    let newer = token("alice", json!(["acme", "initech"]), NOW - 10, NOW + 3590);
    // What refreshing `current` to `newer` answers and leaves.
    let newer_refreshed = || {
        refreshed(
            1000,
            &format!(
                r#"{{"type":"refreshed","expiresAt":{},"added":["initech"],"removed":["globex"]}}"#,
                NOW + 3590
            ),
            Some(NOW + 3590),
        )
    };
    let newer_records = || {
        vec![
            refreshed_record("acme", "r1", "alice", NOW - 10, NOW + 3590),
            refreshed_record("initech", "r1", "alice", NOW - 10, NOW + 3590),
            bob.clone(),
        ]
    };
    let mut c = b.case(
        "refresh-brings-records-in-line",
        "a newer token of the same sub: every group written with the new auth-expires-at, \
         the dropped one deleted; the answer lists what was added and removed",
        refresh("r1", Some(&newer), &current),
        newer_refreshed(),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.store_after = Some(newer_records());
    b.push(c);

    // API Gateway: no token kept; one of the connection's records stands
    // for it.
    let by_record = |token: &str| {
        let mut call = refresh("r1", Some(token), &current);
        call["current-token"] = Value::Null;
        call["current-record"] = connected_before()[0].clone();
        call
    };
    let mut c = b.case(
        "refresh-by-record-brings-records-in-line",
        "without the current token, its record's sub, auth-issued-at and auth-expires-at \
         stand for it: a newer token is accepted as with the token",
        by_record(&newer),
        newer_refreshed(),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.store_after = Some(newer_records());
    b.push(c);

    let resigned = {
        let mut claims = claims("alice", Some(json!(["acme", "globex"])));
        claims["iat"] = json!(NOW - 3600);
        claims["exp"] = json!(NOW + 60);
        claims["jti"] = json!("another");
        signer.sign(&claims)
    };
    let mut c = b.case(
        "refresh-by-record-same-iat-and-exp",
        "without the current token, a token of the same iat and exp counts as the same token: 4001",
        by_record(&resigned),
        refreshed(4001, "token invalid", None),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.store_after = Some(vec![bob.clone()]);
    b.push(c);

    let mut call = by_record(&newer);
    call["current-record"] = Value::Null;
    let mut c = b.case(
        "refresh-without-records",
        "neither the current token nor a record (the connection is gone): 4001",
        call,
        refreshed(4001, "token invalid", None),
    );
    c.store_before = vec![bob.clone()];
    b.push(c);

    let refusals: Vec<(&str, &str, String, u16, &str)> = vec![
        (
            "refresh-another-sub",
            "a token of another user closes 4003 and deletes the connection's records",
            token("mallory", json!(["acme"]), NOW - 10, NOW + 3590),
            4003,
            "forbidden",
        ),
        (
            "refresh-no-groups",
            "a token without groups closes 4003",
            signer.sign(&claims("alice", None)),
            4003,
            "forbidden",
        ),
        (
            "refresh-same-token",
            "the current token again is refused (no replay)",
            current.clone(),
            4001,
            "token invalid",
        ),
        (
            "refresh-older-token",
            "a token issued before the current one is refused",
            token("alice", json!(["acme"]), NOW - 3601, NOW + 60),
            4001,
            "token invalid",
        ),
        (
            "refresh-expired-token",
            "a new token that has itself expired closes 4001 token expired",
            token("alice", json!(["acme"]), NOW - 100, NOW - 61),
            4001,
            "token expired",
        ),
        (
            "refresh-forged-token",
            "a token whose signature does not verify closes 4001",
            with_signature_of(
                &token("alice", json!(["acme"]), NOW - 10, NOW + 3590),
                &current,
            ),
            4001,
            "token invalid",
        ),
    ];
    for (name, description, new, code, reason) in refusals {
        let mut c = b.case(
            name,
            description,
            refresh("r1", Some(&new), &current),
            refreshed(code, reason, None),
        );
        c.key_set_requests = vec![false];
        c.store_before = connected_before();
        c.store_after = Some(vec![bob.clone()]);
        b.push(c);
    }

    let mut c = b.case(
        "refresh-no-token",
        "a refresh frame without a token closes 4001 before any key is fetched",
        refresh("r1", None, &current),
        refreshed(4001, "token invalid", None),
    );
    c.store_before = connected_before();
    c.store_after = Some(vec![bob.clone()]);
    b.push(c);

    let mut c = b.case(
        "refresh-revoked",
        "a newer token issued before the user's revocation closes 4003 and deletes the records",
        refresh("r1", Some(&newer), &current),
        refreshed(4003, "forbidden", None),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.revocations = vec![("alice".into(), NOW - 10)];
    c.store_after = Some(vec![bob.clone()]);
    b.push(c);

    let mut c = b.case(
        "refresh-issued-after-the-revocation",
        "a token issued after the revocation refreshes as usual",
        refresh("r1", Some(&newer), &current),
        newer_refreshed(),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.revocations = vec![("alice".into(), NOW - 11)];
    c.store_after = Some(newer_records());
    b.push(c);

    let mut c = b.case(
        "refresh-store-failure",
        "the store fails writing the new records: 1011, nothing written",
        refresh("r1", Some(&newer), &current),
        refreshed(1011, "internal error", None),
    );
    c.key_set_requests = vec![false];
    c.store_before = connected_before();
    c.store_failure = Some(store_failure("put-all", "throttled"));
    c.store_after = Some(vec![bob]);
    b.push(c);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The conformance set as the generator makes it now: fresh keys and
/// tokens, the same cases and expectations.
pub fn document() -> Value {
    let cases = build_cases();
    json!({
        "description": "The gitgazer-ws policy conformance set: each case is one call of the \
            handler with the key set and store the host supplies, and the expected answer, key \
            set requests (the refresh flag of each jwks.key-set call, in order) and store \
            contents after. Run by tests/e2e/conformance.rs (wasmtime) and \
            tests/jco/run.mjs (jco on Node).",
        "generated-by": "cargo test --release -p gitgazer-ws-tests --test e2e -- --ignored conformance::generate_conformance_cases",
        "cases": cases,
    })
}

/// Writes [`document`] to `path`; returns how many cases it wrote.
pub fn write_cases(path: &Path) -> usize {
    let document = document();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        serde_json::to_string_pretty(&document).unwrap() + "\n",
    )
    .unwrap();
    document["cases"].as_array().unwrap().len()
}
