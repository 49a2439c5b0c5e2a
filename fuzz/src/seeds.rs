//! Seed corpora for the fuzz targets, built from `shared/testdata` (read in
//! place) and the repository's API Gateway fixtures, plus tokens signed at
//! generation time with RFC 7515 A.2's published private key so the fuzzer
//! starts from inputs that pass every check.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::{BoxedUint, PrivateKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{AUDIENCE, CONNECTION_ID, ISSUER, KID, KID_ROTATED, KID_WEAK_EXPONENT, NOW, key_set};

/// The fuzz targets, by name (as in `targets/fuzz_targets/`).
pub const TARGETS: [&str; 4] = ["token", "jwks", "event", "rs256"];

/// `shared/testdata`, beside the repository. Panics when it is missing: the
/// seeds must not silently shrink.
pub fn testdata_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
    assert!(
        dir.is_dir(),
        "test vectors missing: expected {} (shared/testdata beside the repository)",
        dir.display()
    );
    dir
}

/// The repository root.
pub fn repository_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One seed input: a short name saying where it came from, and its bytes.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Seed {
    fn new(origin: &str, bytes: Vec<u8>) -> Self {
        let digest = Sha256::digest(&bytes);
        let name = format!("{origin}-{}", hex(&digest[..8]));
        Seed { name, bytes }
    }
}

/// The seeds of one target.
pub fn seeds(target: &str) -> Vec<Seed> {
    match target {
        "token" => token_seeds(),
        "jwks" => jwks_seeds(),
        "event" => event_seeds(),
        "rs256" => rs256_seeds(),
        other => panic!("unknown fuzz target {other}"),
    }
}

fn token_seeds() -> Vec<Seed> {
    let mut seeds: Vec<Seed> = signed_tokens()
        .into_iter()
        .map(|(origin, token)| Seed::new(origin, token.into_bytes()))
        .collect();
    for text in testdata_strings() {
        if looks_like_compact_jws(&text) {
            seeds.push(Seed::new("testdata-jws", text.into_bytes()));
        }
    }
    seeds
}

fn jwks_seeds() -> Vec<Seed> {
    let mut seeds = vec![Seed::new("fixed-key-set", key_set().into_bytes())];
    for value in testdata_values() {
        walk(&value, &mut |item| {
            if item.get("kty").is_some() {
                let set = json!({ "keys": [item] }).to_string();
                seeds.push(Seed::new("testdata-jwk", set.into_bytes()));
            } else if item.get("keys").is_some_and(Value::is_array) {
                seeds.push(Seed::new("testdata-jwks", item.to_string().into_bytes()));
            }
        });
    }
    seeds
}

fn event_seeds() -> Vec<Seed> {
    let fixtures = repository_dir().join("tests/fixtures/apigw");
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(&fixtures).expect("tests/fixtures/apigw") {
        let path = entry.expect("fixture entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let bytes = std::fs::read(&path).expect("fixture");
            seeds.push(Seed::new("apigw-fixture", bytes));
        }
    }
    let (_, token) = signed_tokens().swap_remove(0);
    let connect = json!({
        "queryStringParameters": { "idToken": token },
        "requestContext": {
            "eventType": "CONNECT", "connectionId": CONNECTION_ID, "routeKey": "$connect",
            "connectedAt": 1_700_000_000_000u64, "requestTimeEpoch": 1_700_000_000_000u64,
            "requestId": "fuzz-request", "stage": "prod", "apiId": "fuzz"
        }
    });
    seeds.push(Seed::new(
        "connect-with-token",
        connect.to_string().into_bytes(),
    ));
    seeds
}

/// Key selector 0 (e = 65537), a valid signature, its signing input; and
/// the same with the signature's last byte changed.
fn rs256_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (origin, token) in signed_tokens() {
        let (signing_input, signature) = token.rsplit_once('.').expect("compact JWS");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&signature);
        bytes.extend_from_slice(signing_input.as_bytes());
        seeds.push(Seed::new(origin, bytes.clone()));
        let last = signature.len();
        bytes[last] ^= 1;
        seeds.push(Seed::new("flipped", bytes));
    }
    seeds
}

/// Tokens signed with the fixed key: the first is valid with groups; the
/// others each break one rule.
pub fn signed_tokens() -> Vec<(&'static str, String)> {
    let header = json!({ "alg": "RS256", "kid": KID, "typ": "JWT" });
    let claims = json!({
        "sub": "5f3c8a2e-1111-2222-3333-444455556666",
        "cognito:groups": ["integration-1", "integration-2"],
        "iss": ISSUER, "aud": AUDIENCE, "token_use": "id",
        "auth_time": NOW - 100, "iat": NOW - 100, "exp": NOW + 3500,
        "email": "someone@example.com",
    });
    let with = |changes: Value| {
        let mut claims = claims.clone();
        for (name, value) in changes.as_object().expect("object") {
            if value.is_null() {
                claims.as_object_mut().unwrap().remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    };
    let weak_header = json!({ "alg": "RS256", "kid": KID_WEAK_EXPONENT });
    [
        ("valid", header.clone(), claims.clone()),
        (
            "no-groups",
            header.clone(),
            with(json!({ "cognito:groups": null })),
        ),
        (
            "expired",
            header.clone(),
            with(json!({ "exp": NOW - 3600 })),
        ),
        (
            "not-yet-valid",
            header.clone(),
            with(json!({ "nbf": NOW + 3600 })),
        ),
        (
            "wrong-audience",
            header.clone(),
            with(json!({ "aud": "other" })),
        ),
        (
            "wrong-issuer",
            header.clone(),
            with(json!({ "iss": "https://example.com" })),
        ),
        (
            "access-token",
            header.clone(),
            with(json!({ "token_use": "access" })),
        ),
        (
            "groups-string",
            header.clone(),
            with(json!({ "cognito:groups": "integration-1" })),
        ),
        (
            "many-groups",
            header.clone(),
            with(json!({ "cognito:groups": (0..30).map(|i| format!("g{i}")).collect::<Vec<_>>() })),
        ),
        ("weak-exponent-kid", weak_header, claims.clone()),
        (
            "unknown-kid",
            json!({ "alg": "RS256", "kid": "other" }),
            claims.clone(),
        ),
        (
            "rotated-kid",
            json!({ "alg": "RS256", "kid": KID_ROTATED }),
            claims.clone(),
        ),
    ]
    .into_iter()
    .map(|(origin, header, claims)| (origin, sign(&header, &claims)))
    .collect()
}

fn sign(header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = private_key()
        .pkcs1v15_sign::<Sha256>(signing_input.as_bytes())
        .expect("sign");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// RFC 7515 A.2's private key, from `shared/testdata`.
fn private_key() -> PrivateKey {
    let path = testdata_dir().join("rfc/rfc7515_A2_rs256.json");
    let vector: Value = serde_json::from_slice(&std::fs::read(&path).expect("rfc7515 vector"))
        .expect("rfc7515 vector JSON");
    let part = |name: &str| {
        let text = vector["private_jwk"][name]
            .as_str()
            .expect("private_jwk member");
        BoxedUint::from_be_slice_vartime(&URL_SAFE_NO_PAD.decode(text).expect("base64url"))
    };
    PrivateKey::from_p_q(part("p"), part("q"), part("e")).expect("RFC 7515 A.2 key")
}

/// Every JSON document under `shared/testdata`.
fn testdata_values() -> Vec<Value> {
    let mut files = Vec::new();
    collect_json_files(&testdata_dir(), &mut files);
    files.sort();
    files
        .iter()
        .filter_map(|path| serde_json::from_slice(&std::fs::read(path).ok()?).ok())
        .collect()
}

/// Every string in those documents.
fn testdata_strings() -> Vec<String> {
    let mut strings = Vec::new();
    for value in testdata_values() {
        walk(&value, &mut |item| {
            if let Value::String(text) = item {
                strings.push(text.clone());
            }
        });
    }
    strings
}

fn collect_json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("testdata directory") {
        let path = entry.expect("testdata entry").path();
        if path.is_dir() {
            collect_json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

fn walk(value: &Value, visit: &mut impl FnMut(&Value)) {
    visit(value);
    match value {
        Value::Array(items) => items.iter().for_each(|item| walk(item, visit)),
        Value::Object(members) => members.values().for_each(|item| walk(item, visit)),
        _ => {}
    }
}

fn looks_like_compact_jws(text: &str) -> bool {
    text.split('.').count() == 3
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
