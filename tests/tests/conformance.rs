//! The policy's conformance set (`tests/conformance/cases.json`): one file of
//! cases as data, run here against the component under wasmtime (through the
//! host's own `PolicyRuntime`) and by `tests/jco/run.mjs` against the very
//! same `.wasm` under jco on Node. Both must give the same answers.
//!
//! The checked-in file is the source of truth. To regenerate it (new keys,
//! new tokens, same expectations):
//!
//! ```sh
//! cargo test --release -p gitgazer-ws-tests --test conformance -- --ignored generate_conformance_cases
//! ```
//!
//! Every case carries a fixed `now`, so its tokens never expire in the file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gitgazer_ws::component::{
    Capabilities, EngineOptions, GUEST_COMPONENT, GuestBuild, LoadedGuest, PolicyRuntime,
    PolicySettings, Reply, Verdict,
};
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws::keys::KeySetSource;
use gitgazer_ws::store::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use gitgazer_ws_tests::hand_made_token;
use serde_json::{Value, json};

/// The `now` of every case: 2027-01-15T08:00:00Z.
const NOW: u64 = 1_800_000_000;
const NOW_RFC3339: &str = "2027-01-15T08:00:00Z";
const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Conform";
const AUDIENCE: &str = "conformance-client";
const LEEWAY: u32 = 60;
const RECORD_TTL: u32 = 7200;

const CONNECTED: &str = "Connected.";
const NO_TOKEN: &str = "Unauthorized: No authentication token provided";
const INVALID_TOKEN: &str = "Unauthorized: Invalid authentication token";
const NO_GROUPS: &str = "Connection denied: No authorized groups found";
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

fn cases_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conformance/cases.json")
}

/// The component `tests/jco/run.mjs` transpiles by default.
fn built_component_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guest/wasm32-wasip2/release/gitgazer_ws_guest.wasm")
}

// ---------------------------------------------------------------------------
// The generator.

fn settings_json() -> Value {
    json!({
        "issuer": ISSUER,
        "audience": AUDIENCE,
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

fn record(group: &str, connection_id: &str, sub: &str) -> Value {
    json!({
        "integration-id": group,
        "connection-id": connection_id,
        "sub": sub,
        "connected-at": NOW_RFC3339,
        "expires-at": NOW + u64::from(RECORD_TTL),
    })
}

/// A record stored by an earlier connection (other time, other TTL).
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

    let within_leeway = signer.sign(&with(
        claims("alice", Some(json!(["acme"]))),
        "exp",
        json!(NOW - 30),
    ));
    let mut c = b.case(
        "connect-expired-within-leeway",
        "exp 30 s ago with 60 s leeway is still accepted",
        connect("c1", Some(&within_leeway)),
        response(200, CONNECTED),
    );
    c.key_set_requests = vec![false];
    c.store_after = Some(vec![record("acme", "c1", "alice")]);
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
            "aud of another app client",
            with(
                claims("alice", Some(json!(["acme"]))),
                "aud",
                json!("another-client"),
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
    ] {
        b.push(b.case(
            name,
            "the connection id is refused before the token is looked at",
            connect(id, Some(&one_group)),
            response(400, INVALID_CONNECTION_ID),
        ));
    }

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

    b.cases
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Regenerates `tests/conformance/cases.json` (fresh keys and tokens, the
/// same cases and expectations).
#[test]
#[ignore = "writes tests/conformance/cases.json; run on purpose"]
fn generate_conformance_cases() {
    let cases = build_cases();
    let document = json!({
        "description": "The gitgazer-ws policy conformance set: each case is one call of the \
            handler with the key set and store the host supplies, and the expected answer, key \
            set requests (the refresh flag of each jwks.key-set call, in order) and store \
            contents after. Run by tests/tests/conformance.rs (wasmtime) and \
            tests/jco/run.mjs (jco on Node).",
        "generated-by": "cargo test --release -p gitgazer-ws-tests --test conformance -- --ignored generate_conformance_cases",
        "cases": cases,
    });
    let path = cases_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&document).unwrap() + "\n",
    )
    .unwrap();
    println!(
        "wrote {} cases to {}",
        document["cases"].as_array().unwrap().len(),
        path.display()
    );
}

// ---------------------------------------------------------------------------
// The wasmtime runner.

/// An in-memory store that fails one operation on demand.
struct CaseStore {
    records: Mutex<BTreeMap<RecordKey, ConnectionRecord>>,
    failure: Option<(String, StoreError)>,
}

impl CaseStore {
    fn fail(&self, operation: &str) -> Result<(), StoreError> {
        match &self.failure {
            Some((op, error)) if op == operation => Err(error.clone()),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionStore for CaseStore {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        self.fail("put-all")?;
        let mut map = self.records.lock().unwrap();
        for record in records {
            map.insert(record.key(), record.clone());
        }
        Ok(())
    }

    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.fail("keys-of")?;
        Ok(self
            .records
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.connection_id == connection_id)
            .cloned()
            .collect())
    }

    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        self.fail("delete")?;
        let mut map = self.records.lock().unwrap();
        Ok(keys.iter().filter(|k| map.remove(k).is_some()).count() as u32)
    }

    async fn records_of(&self, _integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        unreachable!("the policy never lists an integration")
    }

    fn describe(&self) -> String {
        "conformance".into()
    }
}

/// The case's key sets, recording the refresh flag of every request.
struct CaseKeys {
    key_set: Result<Arc<str>, String>,
    refreshed: Result<Arc<str>, String>,
    requests: Mutex<Vec<bool>>,
}

#[async_trait::async_trait]
impl KeySetSource for CaseKeys {
    async fn key_set(&self, refresh: bool) -> Result<Arc<str>, String> {
        self.requests.lock().unwrap().push(refresh);
        if refresh {
            self.refreshed.clone()
        } else {
            self.key_set.clone()
        }
    }

    fn describe(&self) -> String {
        "conformance".into()
    }
}

fn key_set_of(value: &Value) -> Result<Arc<str>, String> {
    if let Some(ok) = value.get("ok") {
        Ok(ok.as_str().expect("key-set.ok is a string").into())
    } else {
        Err(value["error"]
            .as_str()
            .expect("key-set is {ok} or {error}")
            .to_owned())
    }
}

fn str_of<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string in {value}"))
}

fn u64_of(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is a u64 in {value}"))
}

fn record_from(value: &Value) -> ConnectionRecord {
    ConnectionRecord {
        integration_id: str_of(value, "integration-id").into(),
        connection_id: str_of(value, "connection-id").into(),
        sub: str_of(value, "sub").into(),
        connected_at: str_of(value, "connected-at").into(),
        expires_at: u64_of(value, "expires-at"),
    }
}

fn record_to(record: &ConnectionRecord) -> Value {
    json!({
        "integration-id": record.integration_id,
        "connection-id": record.connection_id,
        "sub": record.sub,
        "connected-at": record.connected_at,
        "expires-at": record.expires_at,
    })
}

fn store_error_of(failure: &Value) -> (String, StoreError) {
    let detail = str_of(failure, "detail").to_owned();
    let error = match str_of(failure, "kind") {
        "validation" => StoreError::Validation(detail),
        "throttled" => StoreError::Throttled(detail),
        "not-found" => StoreError::NotFound(detail),
        "unavailable" => StoreError::Unavailable(detail),
        "other" => StoreError::Other(detail),
        kind => panic!("unknown store error kind {kind}"),
    };
    (str_of(failure, "operation").to_owned(), error)
}

fn settings_of(value: &Value) -> PolicySettings {
    PolicySettings {
        issuer: str_of(value, "issuer").into(),
        audience: str_of(value, "audience").into(),
        leeway_seconds: u64_of(value, "leeway-seconds") as u32,
        record_ttl_seconds: u64_of(value, "record-ttl-seconds") as u32,
    }
}

/// Runs one case; returns what it observed in the case's own terms.
async fn run_case(runtime: &PolicyRuntime, case: &Value) -> Value {
    let key_set = key_set_of(&case["key-set"]);
    let refreshed = case
        .get("refreshed-key-set")
        .map(key_set_of)
        .unwrap_or_else(|| key_set.clone());
    let keys = Arc::new(CaseKeys {
        key_set,
        refreshed,
        requests: Mutex::new(Vec::new()),
    });
    let records = case["store-before"]
        .as_array()
        .expect("store-before is an array")
        .iter()
        .map(record_from)
        .map(|r| (r.key(), r))
        .collect();
    let store = Arc::new(CaseStore {
        records: Mutex::new(records),
        failure: case.get("store-failure").map(store_error_of),
    });
    let caps = Capabilities {
        store: store.clone(),
        keys: keys.clone(),
    };
    let call = &case["call"];
    let name = str_of(case, "name");
    let reply = |r: Reply| json!({ "response": { "status": r.status, "body": r.body } });
    let outcome = match str_of(call, "op") {
        "connect" => reply(
            runtime
                .connect(
                    &caps,
                    name,
                    str_of(call, "connection-id"),
                    call["id-token"].as_str(),
                    u64_of(call, "now"),
                    &settings_of(&call["settings"]),
                )
                .await,
        ),
        "disconnect" => reply(
            runtime
                .disconnect(&caps, name, str_of(call, "connection-id"))
                .await,
        ),
        "verify-token" => {
            let verdict = runtime
                .verify_token(
                    &caps,
                    str_of(call, "token"),
                    u64_of(call, "now"),
                    &settings_of(&call["settings"]),
                )
                .await
                .expect("verify-token runs");
            match verdict {
                Verdict::Valid { sub, groups } => {
                    json!({ "verify": { "ok": { "sub": sub, "groups": groups } } })
                }
                Verdict::Invalid { reason } => json!({ "verify": { "error": reason } }),
            }
        }
        op => panic!("unknown op {op}"),
    };
    let store_after: Vec<Value> = store
        .records
        .lock()
        .unwrap()
        .values()
        .map(record_to)
        .collect();
    let requests = keys.requests.lock().unwrap().clone();
    json!({
        "expect": outcome,
        "expect-key-set-requests": requests,
        "expect-store-after": store_after,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_under_wasmtime_portable_guest() {
    run_conformance(GuestBuild::Portable, LoadedGuest::Portable).await;
}

/// The same source built with wide-arithmetic (64-bit RSA limbs): what the
/// host runs by default on this machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cases_under_wasmtime_wide_guest_the_default_here() {
    run_conformance(GuestBuild::Auto, LoadedGuest::Wide).await;
}

async fn run_conformance(build: GuestBuild, expected: LoadedGuest) {
    let path = cases_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let document: Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = document["cases"].as_array().expect("a cases array");

    match std::fs::read(built_component_path()) {
        Ok(bytes) => println!(
            "embedded component ({} bytes) is byte-identical to {}: {}",
            GUEST_COMPONENT.len(),
            built_component_path().display(),
            bytes == GUEST_COMPONENT
        ),
        Err(e) => println!("{}: {e}", built_component_path().display()),
    }

    let runtime = PolicyRuntime::new(EngineOptions {
        cache_dir: Some(gitgazer_ws_tests::test_cache_dir()),
        guest_build: build,
        ..Default::default()
    })
    .expect("the runtime starts");
    assert_eq!(runtime.loaded_guest(), expected);

    let mut failures = Vec::new();
    for case in cases {
        let name = str_of(case, "name");
        let observed = run_case(&runtime, case).await;
        for field in ["expect", "expect-key-set-requests", "expect-store-after"] {
            if observed[field] != case[field] {
                failures.push(format!(
                    "{name}: {field}\n    expected {}\n    observed {}",
                    case[field], observed[field]
                ));
            }
        }
    }
    let failed_cases = {
        let mut names: Vec<&str> = failures
            .iter()
            .map(|f| f.split(':').next().unwrap())
            .collect();
        names.dedup();
        names.len()
    };
    println!(
        "conformance under wasmtime ({expected:?} guest): {} passed, {} failed ({} cases)",
        cases.len() - failed_cases,
        failed_cases,
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "conformance differences:\n{}",
        failures.join("\n")
    );
    assert!(cases.len() > 30, "only {} cases", cases.len());
}
