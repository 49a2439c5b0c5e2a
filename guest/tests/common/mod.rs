//! Shared test helpers: deterministic RSA keys, a token signer, a fixed clock,
//! settings, and an in-memory fake of the host's capabilities.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gitgazer_ws_guest::{Capabilities, ConnectionRecord, Level, RecordKey, Settings, StoreError};
use rsa::PrivateKey;
use rsa::rand_core::{Infallible, TryCryptoRng, TryRng};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The fixed clock: 2026-11-27T08:15:54Z.
pub const NOW: u64 = 1_795_767_354;
pub const NOW_RFC3339: &str = "2026-11-27T08:15:54Z";
pub const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123";
pub const AUDIENCE: &str = "app-client-id";
pub const LEEWAY: u32 = 60;
pub const TTL: u32 = 7200;
pub const KID_A: &str = "key-a";
pub const KID_B: &str = "key-b";

pub fn settings() -> Settings {
    Settings {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        leeway_seconds: LEEWAY,
        record_ttl_seconds: TTL,
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text).expect("test base64url")
}

pub fn hex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd hex length");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// SHA-256 in counter mode: deterministic, so every run signs with the same
/// keys (and failures reproduce).
struct TestRng {
    seed: [u8; 32],
    counter: u64,
    buffer: Vec<u8>,
}

impl TestRng {
    fn new(label: &str) -> Self {
        TestRng {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
            buffer: Vec::new(),
        }
    }
}

impl TryRng for TestRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for byte in dst {
            if self.buffer.is_empty() {
                let mut hasher = Sha256::new();
                hasher.update(self.seed);
                hasher.update(self.counter.to_be_bytes());
                self.counter += 1;
                self.buffer = hasher.finalize().to_vec();
            }
            *byte = self.buffer.pop().expect("refilled");
        }
        Ok(())
    }
}

impl TryCryptoRng for TestRng {}

/// The 2048-bit signing key of the user pool (kid `key-a`).
pub fn key_a() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut TestRng::new("key-a"), 2048).expect("keygen"))
}

/// A second 2048-bit key (kid `key-b`), e.g. an attacker's.
pub fn key_b() -> &'static PrivateKey {
    static KEY: OnceLock<PrivateKey> = OnceLock::new();
    KEY.get_or_init(|| PrivateKey::new(&mut TestRng::new("key-b"), 2048).expect("keygen"))
}

fn unsigned_bytes(value: &rsa::BoxedUint) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[first..].to_vec()
}

pub fn modulus(key: &PrivateKey) -> Vec<u8> {
    unsigned_bytes(key.n())
}

pub fn exponent(key: &PrivateKey) -> Vec<u8> {
    unsigned_bytes(key.e())
}

/// The public JWK of `key`, as Cognito publishes it.
pub fn jwk(key: &PrivateKey, kid: &str) -> Value {
    json!({
        "alg": "RS256",
        "e": b64(&exponent(key)),
        "kid": kid,
        "kty": "RSA",
        "n": b64(&modulus(key)),
        "use": "sig",
    })
}

pub fn key_set(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// The pool's key set: key A only.
pub fn pool_key_set() -> String {
    key_set(&[jwk(key_a(), KID_A)])
}

pub fn sign_bytes(key: &PrivateKey, signing_input: &[u8]) -> Vec<u8> {
    key.pkcs1v15_sign::<Sha256>(signing_input).expect("sign")
}

/// A compact token over the given raw header and claims JSON texts (raw so
/// tests can write duplicate members), signed with `key`.
pub fn sign_raw(key: &PrivateKey, header_json: &str, claims_json: &str) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header_json.as_bytes()),
        b64(claims_json.as_bytes())
    );
    format!(
        "{signing_input}.{}",
        b64(&sign_bytes(key, signing_input.as_bytes()))
    )
}

/// Signs an arbitrary signing input (possibly non-canonical base64url).
pub fn sign_input(key: &PrivateKey, signing_input: &str) -> String {
    format!(
        "{signing_input}.{}",
        b64(&sign_bytes(key, signing_input.as_bytes()))
    )
}

pub fn header(kid: &str) -> Value {
    json!({ "alg": "RS256", "kid": kid, "typ": "JWT" })
}

/// The claims of a valid Cognito id token at [`NOW`].
pub fn claims() -> Value {
    json!({
        "sub": "5f3c8a2e-1111-2222-3333-444455556666",
        "cognito:groups": ["integration-1", "integration-2", "integration-1"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "token_use": "id",
        "auth_time": NOW - 100,
        "iat": NOW - 100,
        "exp": NOW + 3500,
        "jti": "0c1d2e3f",
        "email": "someone@example.com",
    })
}

/// `claims()` with members replaced (`null` in `changes` removes a member).
pub fn claims_with(changes: Value) -> Value {
    let mut claims = claims();
    let object = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().expect("changes object") {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

pub fn sign(key: &PrivateKey, header: &Value, claims: &Value) -> String {
    sign_raw(key, &header.to_string(), &claims.to_string())
}

/// A valid token for the pool.
pub fn valid_token() -> String {
    sign(key_a(), &header(KID_A), &claims())
}

/// What the fake's `key_set` answers, per call.
#[derive(Debug, Clone)]
pub enum KeySetScript {
    /// The same answer whether or not a refresh is asked for.
    Always(Result<String, String>),
    /// One answer without refresh, another with.
    ThenRefreshed {
        cached: Result<String, String>,
        refreshed: Result<String, String>,
    },
}

/// An in-memory host: a record table keyed like DynamoDB, scripted key sets,
/// injectable store errors, and every call recorded.
pub struct FakeHost {
    pub key_set: KeySetScript,
    /// The `refresh` flag of every `key_set` call, in order.
    pub key_set_calls: Vec<bool>,
    pub records: BTreeMap<RecordKey, ConnectionRecord>,
    pub put_all_calls: usize,
    pub keys_of_calls: usize,
    pub delete_calls: usize,
    pub put_all_error: Option<StoreError>,
    pub keys_of_error: Option<StoreError>,
    pub delete_error: Option<StoreError>,
    /// Revocations by `sub`: tokens issued at or before the second are refused.
    pub revocations: BTreeMap<String, u64>,
    pub revoked_before_calls: usize,
    pub revoked_before_error: Option<StoreError>,
    pub logs: Vec<(Level, String)>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::with_key_set(Ok(pool_key_set()))
    }

    pub fn with_key_set(answer: Result<String, String>) -> Self {
        FakeHost {
            key_set: KeySetScript::Always(answer),
            key_set_calls: Vec::new(),
            records: BTreeMap::new(),
            put_all_calls: 0,
            keys_of_calls: 0,
            delete_calls: 0,
            put_all_error: None,
            keys_of_error: None,
            delete_error: None,
            revocations: BTreeMap::new(),
            revoked_before_calls: 0,
            revoked_before_error: None,
            logs: Vec::new(),
        }
    }

    pub fn with_refresh(cached: Result<String, String>, refreshed: Result<String, String>) -> Self {
        let mut host = Self::new();
        host.key_set = KeySetScript::ThenRefreshed { cached, refreshed };
        host
    }

    pub fn insert(&mut self, integration_id: &str, connection_id: &str) {
        let record = ConnectionRecord {
            integration_id: integration_id.into(),
            connection_id: connection_id.into(),
            sub: "someone".into(),
            connected_at: NOW_RFC3339.into(),
            expires_at: NOW + u64::from(TTL),
            endpoint: None,
            auth_expires_at: None,
            auth_issued_at: None,
        };
        self.records.insert(record.key(), record);
    }

    /// Whether any log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.iter().any(|(_, line)| line.contains(needle))
    }

    pub fn logged_at(&self, level: Level, needle: &str) -> bool {
        self.logs
            .iter()
            .any(|(l, line)| *l == level && line.contains(needle))
    }
}

impl Capabilities for FakeHost {
    fn key_set(&mut self, refresh: bool) -> Result<String, String> {
        self.key_set_calls.push(refresh);
        match &self.key_set {
            KeySetScript::Always(answer) => answer.clone(),
            KeySetScript::ThenRefreshed { cached, refreshed } => {
                if refresh {
                    refreshed.clone()
                } else {
                    cached.clone()
                }
            }
        }
    }

    fn put_all(&mut self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        self.put_all_calls += 1;
        if let Some(error) = &self.put_all_error {
            return Err(error.clone());
        }
        for record in records {
            self.records.insert(record.key(), record.clone());
        }
        Ok(())
    }

    fn keys_of(&mut self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.keys_of_calls += 1;
        if let Some(error) = &self.keys_of_error {
            return Err(error.clone());
        }
        Ok(self
            .records
            .keys()
            .filter(|key| key.connection_id == connection_id)
            .cloned()
            .collect())
    }

    fn delete(&mut self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        self.delete_calls += 1;
        if let Some(error) = &self.delete_error {
            return Err(error.clone());
        }
        let removed = keys
            .iter()
            .filter(|key| self.records.remove(key).is_some())
            .count();
        Ok(u32::try_from(removed).expect("few records"))
    }

    fn revoked_before(&mut self, sub: &str) -> Result<Option<u64>, StoreError> {
        self.revoked_before_calls += 1;
        if let Some(error) = &self.revoked_before_error {
            return Err(error.clone());
        }
        Ok(self.revocations.get(sub).copied())
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_owned()));
    }
}

/// `shared/testdata`, read in place. Panics (never skips) when it is missing.
pub fn testdata(relative: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata");
    assert!(
        root.is_dir(),
        "test vectors missing: expected {} (shared/testdata beside the repository)",
        root.display()
    );
    let path = root.join(relative);
    assert!(
        path.is_file(),
        "test vector file missing: {}",
        path.display()
    );
    path
}

pub fn load_json(relative: &str) -> Value {
    let path = testdata(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}
