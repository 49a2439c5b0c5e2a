//! Fuzz harnesses: one function per target, each taking the fuzzer's bytes,
//! running the real code and asserting properties that must hold for every
//! input (a failed assertion is a crash to the fuzzer). They return what they
//! saw so the regression tests can assert on known inputs too.
//!
//! - [`token`]: the policy's CONNECT decision and token verifier, with a fixed
//!   key set and clock; an accepted signature is re-checked with independent
//!   big-integer arithmetic (`num-bigint`).
//! - [`jwks`]: the key-set parser and key policy.
//!
//! The token target's host serves another key set on a refresh (the fixed
//! one plus a rotated kid of the same key), so the refresh path is fuzzed
//! too.
//! - [`event`]: the API Gateway event decoder and router.
//! - [`rs256`]: the hand-written RS256 primitive against the `rsa` crate.
//!
//! [`seeds`] builds their starting corpora from `shared/testdata`.

pub mod seeds;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gitgazer_ws_event::{MAX_ECHOED_RUN, Route, decode_event, route};
use gitgazer_ws_guest::jwks::{
    self, KeyLookup, MAX_MODULUS_BITS, MIN_MODULUS_BITS, PUBLIC_EXPONENT,
};
use gitgazer_ws_guest::{
    Capabilities, ConnectRequest, ConnectionRecord, Identity, Level, RecordKey, Rejection,
    Settings, StoreError, handle_connect, verify_token,
};
use gitgazer_ws_guest::{montgomery, rs256};
use num_bigint::BigUint;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fixed clock: 2026-11-27T08:15:54Z.
pub const NOW: u64 = 1_795_767_354;
pub const ISSUER: &str = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_Fuzz";
pub const AUDIENCE: &str = "fuzz-client-id";
/// The kid of the fixed key: RFC 7515 Appendix A.2's public RSA key (its
/// private half is public too, in `shared/testdata`, which the seed
/// generator uses to sign valid tokens).
pub const KID: &str = "rfc7515-a2";
/// The same modulus with exponent 3: listed so lookups reach the key policy.
pub const KID_WEAK_EXPONENT: &str = "rfc7515-a2-e3";
/// The fixed key under another kid, only in the set served on a refresh:
/// a token naming it is valid after one refresh.
pub const KID_ROTATED: &str = "rfc7515-a2-rotated";
pub const MODULUS_B64: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
/// Longer than any log line the policy writes without input in it.
const MAX_FIXED_LOG_TEXT: usize = 80;

/// The connection id every fuzzed CONNECT uses.
pub const CONNECTION_ID: &str = "fuzz-connection";

pub fn settings() -> Settings {
    Settings {
        issuer: ISSUER.into(),
        audiences: vec![AUDIENCE.into()],
        leeway_seconds: 60,
        record_ttl_seconds: 7200,
    }
}

/// The fixed key set the token target verifies against.
pub fn key_set() -> String {
    serde_json::json!({ "keys": [
        { "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": MODULUS_B64, "e": "AQAB" },
        { "kty": "RSA", "kid": KID_WEAK_EXPONENT, "use": "sig", "alg": "RS256", "n": MODULUS_B64, "e": "Aw" },
    ]})
    .to_string()
}

/// The key set a refresh gets: [`key_set`] plus [`KID_ROTATED`], as after
/// a key rotation.
pub fn refreshed_key_set() -> String {
    serde_json::json!({ "keys": [
        { "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": MODULUS_B64, "e": "AQAB" },
        { "kty": "RSA", "kid": KID_WEAK_EXPONENT, "use": "sig", "alg": "RS256", "n": MODULUS_B64, "e": "Aw" },
        { "kty": "RSA", "kid": KID_ROTATED, "use": "sig", "alg": "RS256", "n": MODULUS_B64, "e": "AQAB" },
    ]})
    .to_string()
}

/// The host, as the policy sees it: a fixed key-set document (another one
/// on a refresh) and an in-memory store, recording what the policy did.
pub struct FixedHost {
    key_set: String,
    refreshed_key_set: String,
    /// The refresh flag of each key-set request, in order.
    pub key_set_requests: Vec<bool>,
    pub stored: Vec<ConnectionRecord>,
    pub logs: Vec<String>,
}

impl FixedHost {
    pub fn new(key_set: String, refreshed_key_set: String) -> Self {
        FixedHost {
            key_set,
            refreshed_key_set,
            key_set_requests: Vec::new(),
            stored: Vec::new(),
            logs: Vec::new(),
        }
    }

    /// The token target's host: [`key_set`], [`refreshed_key_set`] on a
    /// refresh.
    pub fn fixed() -> Self {
        Self::new(key_set(), refreshed_key_set())
    }
}

impl Capabilities for FixedHost {
    fn key_set(&mut self, refresh: bool) -> Result<String, String> {
        self.key_set_requests.push(refresh);
        Ok(if refresh {
            self.refreshed_key_set.clone()
        } else {
            self.key_set.clone()
        })
    }
    fn put_all(&mut self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        self.stored.extend_from_slice(records);
        Ok(())
    }
    fn keys_of(&mut self, _connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        Ok(Vec::new())
    }
    fn delete(&mut self, _keys: &[RecordKey]) -> Result<u32, StoreError> {
        Ok(0)
    }
    fn revoked_before(&mut self, _sub: &str) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    fn log(&mut self, _level: Level, message: &str) {
        self.logs.push(message.to_owned());
    }
}

/// What the token target saw.
#[derive(Debug)]
pub struct TokenOutcome {
    pub verdict: Result<Identity, Rejection>,
    pub status: u16,
    pub stored: usize,
    /// The refresh flag of each key-set request of the verification.
    pub key_set_requests: Vec<bool>,
}

/// Verifies `data` as an id token, then runs the CONNECT decision on it.
/// Properties: the decision agrees with the verdict (200 and one record per
/// group iff the token is valid and has groups, else 401 and nothing stored);
/// the key set is asked for at most twice, a refresh only second (after a
/// lookup that found no such kid), and the CONNECT asks exactly as the
/// verification did; an accepted signature passes an
/// independent textbook RSA check; the token never
/// reaches a log line. `None` when `data` is not UTF-8 (the WIT passes strings).
pub fn token(data: &[u8]) -> Option<TokenOutcome> {
    let text = std::str::from_utf8(data).ok()?;
    let mut host = FixedHost::fixed();
    let verdict = verify_token(text, NOW, &settings(), &mut host);
    let key_set_requests = host.key_set_requests;
    assert!(
        matches!(key_set_requests[..], [] | [false] | [false, true]),
        "key set requests (refresh flags) {key_set_requests:?}"
    );
    assert_ne!(
        verdict,
        Err(Rejection::KeySetUnavailable),
        "the fixed key set is always available"
    );

    let request = ConnectRequest {
        connection_id: CONNECTION_ID.into(),
        id_token: Some(text.into()),
        now: NOW,
        settings: settings(),
        endpoint: None,
    };
    let mut host = FixedHost::fixed();
    let response = handle_connect(&request, &mut host);
    assert_eq!(
        host.key_set_requests, key_set_requests,
        "the CONNECT fetched keys otherwise than the verification"
    );
    match &verdict {
        Ok(identity) if !identity.groups.is_empty() => {
            assert_eq!(
                response.status, 200,
                "valid token with groups: {}",
                response.body
            );
            let groups: Vec<&str> = host
                .stored
                .iter()
                .map(|r| r.integration_id.as_str())
                .collect();
            assert_eq!(
                groups,
                identity
                    .groups
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
            );
            for record in &host.stored {
                assert_eq!(record.connection_id, CONNECTION_ID);
                assert_eq!(record.sub, identity.sub);
                assert_eq!(record.expires_at, NOW + 7200);
            }
            assert_signature_verifies_independently(text);
        }
        Ok(_) => {
            assert_eq!(response.status, 401);
            assert!(host.stored.is_empty());
            assert_signature_verifies_independently(text);
        }
        Err(rejection) => {
            assert_eq!(response.status, 401, "{rejection:?}: {}", response.body);
            assert!(host.stored.is_empty(), "{rejection:?} but stored records");
        }
    }
    // Only inputs longer than any fixed log text: a shorter one may simply
    // spell the log's own words (the fuzzer sent ": token malformed").
    if text.len() > MAX_FIXED_LOG_TEXT {
        for line in &host.logs {
            assert!(!line.contains(text), "the token reached a log line: {line}");
        }
    }
    Some(TokenOutcome {
        status: response.status,
        stored: host.stored.len(),
        verdict,
        key_set_requests,
    })
}

/// Differential check: the guest (rsa 0.10) accepted this signature, so an
/// independent textbook check must too: s < n, s^65537 mod n computed with
/// `num-bigint`, compared with the whole EMSA-PKCS1-v1_5 block built here.
fn assert_signature_verifies_independently(token: &str) {
    /// DER DigestInfo prefix for SHA-256 (RFC 8017 §9.2 note 1).
    const SHA256_DIGEST_INFO: [u8; 19] = [
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token that is not three segments");
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("accepted signature is base64url");
    let modulus = URL_SAFE_NO_PAD.decode(MODULUS_B64).expect("fixed modulus");
    assert_eq!(
        signature.len(),
        modulus.len(),
        "accepted a signature of the wrong length"
    );
    let n = BigUint::from_bytes_be(&modulus);
    let s = BigUint::from_bytes_be(&signature);
    assert!(s < n, "accepted a signature not below the modulus");
    let recovered = s.modpow(&BigUint::from(65_537u32), &n).to_bytes_be();

    let digest = Sha256::digest(format!("{header}.{payload}").as_bytes());
    let padding = modulus.len() - 3 - SHA256_DIGEST_INFO.len() - digest.len();
    // 0x00 0x01 PS 0x00 DigestInfo hash; `to_bytes_be` drops the leading 0x00.
    let mut expected = vec![0x01];
    expected.extend(std::iter::repeat_n(0xff, padding));
    expected.push(0x00);
    expected.extend_from_slice(&SHA256_DIGEST_INFO);
    expected.extend_from_slice(&digest);
    assert_eq!(
        recovered, expected,
        "the guest accepted a signature whose block is not EMSA-PKCS1-v1_5"
    );
}

/// What the JWKS target saw.
#[derive(Debug, Default)]
pub struct JwksOutcome {
    /// Whether the document parsed as a key set.
    pub parsed: bool,
    /// The kids whose lookup found a usable key.
    pub usable_kids: Vec<String>,
}

/// Parses `data` as a key set and looks up every kid it names (and the fixed
/// one). Properties: a kid that more than one entry of the raw document
/// names is never usable; a usable key's entry repeats no member, is
/// `kty` RSA, has `use` sig, `alg` RS256 and `key_ops` (distinct strings
/// with verify) or lacks them, and its `n` and `e` are the key's; the key
/// meets the policy (2048–8192-bit odd modulus without leading zero octets,
/// exponent 65537).
pub fn jwks(data: &[u8]) -> Option<JwksOutcome> {
    let text = std::str::from_utf8(data).ok()?;
    let Some(set) = jwks::parse_key_set(text) else {
        return Some(JwksOutcome::default());
    };
    // The raw entries, every member kept in order (a parser that keeps one
    // of two equal names would hide a duplicate).
    let raw: Raw = serde_json::from_str(text).expect("the policy parsed it, so it is JSON");
    let entries: Vec<&[(String, Raw)]> = match raw.member("keys") {
        Some(Raw::Array(entries)) => entries
            .iter()
            .filter_map(|entry| match entry {
                Raw::Object(members) => Some(members.as_slice()),
                _ => None,
            })
            .collect(),
        other => panic!("the policy parsed a key set whose keys are {other:?}"),
    };
    // An entry is named by its kid as the policy reads one: the first
    // `kid` member, when it is a string.
    let kid_of = |entry: &[(String, Raw)]| match entry.iter().find(|(name, _)| name == "kid") {
        Some((_, Raw::String(kid))) => Some(kid.clone()),
        _ => None,
    };
    let mut kids: Vec<String> = entries.iter().filter_map(|e| kid_of(e)).collect();
    kids.push(KID.to_owned());
    kids.sort();
    kids.dedup();
    let mut outcome = JwksOutcome {
        parsed: true,
        usable_kids: Vec::new(),
    };
    for kid in kids {
        let named: Vec<&[(String, Raw)]> = entries
            .iter()
            .copied()
            .filter(|entry| kid_of(entry).as_deref() == Some(kid.as_str()))
            .collect();
        let KeyLookup::Usable(key) = set.lookup(&kid) else {
            continue;
        };
        let [entry] = named[..] else {
            panic!("kid {kid:?} is named by {} entries and usable", named.len());
        };
        assert_key_policy(entry, &key);
        outcome.usable_kids.push(kid);
    }
    Some(outcome)
}

/// The key policy on a usable key and the raw entry it came from.
fn assert_key_policy(entry: &[(String, Raw)], key: &jwks::RsaPublicKey) {
    let mut names: Vec<&str> = entry.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    let count = names.len();
    names.dedup();
    assert_eq!(names.len(), count, "a usable key's entry repeats a member");
    let member = |name: &str| entry.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let string = |name: &str| match member(name) {
        None => None,
        Some(Raw::String(value)) => Some(value.as_str()),
        Some(other) => panic!("usable key with {name} {other:?}"),
    };
    assert_eq!(string("kty"), Some("RSA"), "usable key of another kty");
    assert!(
        matches!(string("use"), None | Some("sig")),
        "usable key with use {:?}",
        string("use")
    );
    assert!(
        matches!(string("alg"), None | Some("RS256")),
        "usable key with alg {:?}",
        string("alg")
    );
    if let Some(ops) = member("key_ops") {
        let Raw::Array(ops) = ops else {
            panic!("usable key with key_ops {ops:?}");
        };
        let mut names: Vec<&str> = ops
            .iter()
            .map(|op| match op {
                Raw::String(op) => op.as_str(),
                other => panic!("usable key with a key_ops entry {other:?}"),
            })
            .collect();
        assert!(
            names.contains(&"verify"),
            "usable key without verify in key_ops"
        );
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(
            names.len(),
            count,
            "usable key with a repeated key_ops entry"
        );
    }
    let decoded = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(string(name).unwrap_or_else(|| panic!("usable key without {name}")))
            .unwrap_or_else(|e| panic!("usable key whose {name} is not base64url: {e}"))
    };
    assert_eq!(decoded("n"), key.n, "the key's modulus is not the entry's");
    assert_eq!(decoded("e"), key.e, "the key's exponent is not the entry's");

    assert_ne!(key.n.first(), Some(&0), "modulus with a leading zero octet");
    let bits = key.n.len() * 8 - key.n[0].leading_zeros() as usize;
    assert!(
        (MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits),
        "{bits}-bit modulus"
    );
    assert_eq!(key.n.last().map(|b| b & 1), Some(1), "even modulus");
    assert_eq!(key.e, PUBLIC_EXPONENT);
}

/// JSON with every object member kept, in order, repeated names included.
#[derive(Debug)]
enum Raw {
    Object(Vec<(String, Raw)>),
    Array(Vec<Raw>),
    String(String),
    /// A number, boolean or null.
    Scalar,
}

impl Raw {
    /// The first member called `name` of an object.
    fn member(&self, name: &str) -> Option<&Raw> {
        match self {
            Raw::Object(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Raw;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Raw, E> {
                Ok(Raw::Scalar)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Raw, E> {
                Ok(Raw::Scalar)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Raw, E> {
                Ok(Raw::Scalar)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Raw, E> {
                Ok(Raw::Scalar)
            }
            fn visit_unit<E>(self) -> Result<Raw, E> {
                Ok(Raw::Scalar)
            }
            fn visit_str<E>(self, value: &str) -> Result<Raw, E> {
                Ok(Raw::String(value.to_owned()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Raw::Array(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, Raw>()? {
                    members.push((name, value));
                }
                Ok(Raw::Object(members))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// What the event target saw.
#[derive(Debug, PartialEq, Eq)]
pub enum EventOutcome {
    Rejected { status: u16 },
    Connect,
    Disconnect,
    Refresh,
    Unhandled,
}

/// Decodes `data` as an API Gateway WebSocket event and routes it.
/// Properties: a refused event is a 400 whose body echoes no long
/// whitespace-free run of any input string (a token must never be echoed);
/// a decoded event is routed by its `requestContext.eventType` and a CONNECT
/// carries exactly the `idToken` query parameter.
pub fn event(data: &[u8]) -> EventOutcome {
    let json: Option<Value> = serde_json::from_slice(data).ok();
    match decode_event(data) {
        Err(response) => {
            assert_eq!(response.status_code, 400);
            for run in long_runs(data, json.as_ref()) {
                assert!(
                    !response.body.contains(&run),
                    "echoed {run:?} in {:?}",
                    response.body
                );
            }
            EventOutcome::Rejected {
                status: response.status_code,
            }
        }
        Ok(event) => {
            let routed = route(&event);
            // The decoder skips what it ignores without validating it (the
            // fuzzer found invalid UTF-8 in a header name accepted), so the
            // input need not be JSON to `serde_json::Value`; compare the
            // route with the raw JSON only when it is.
            let event_type = json.as_ref().map(|json| {
                json.pointer("/requestContext/eventType")
                    .and_then(Value::as_str)
            });
            match routed {
                Route::Connect { id_token, .. } => {
                    if let Some(json) = &json {
                        assert_eq!(event_type, Some(Some("CONNECT")));
                        let expected = json
                            .pointer("/queryStringParameters/idToken")
                            .and_then(Value::as_str);
                        assert_eq!(id_token, expected);
                    }
                    EventOutcome::Connect
                }
                Route::Disconnect { .. } => {
                    if json.is_some() {
                        assert_eq!(event_type, Some(Some("DISCONNECT")));
                    }
                    EventOutcome::Disconnect
                }
                Route::Refresh { body, .. } => {
                    if let Some(json) = &json {
                        assert_eq!(event_type, Some(Some("MESSAGE")));
                        assert_eq!(
                            json.pointer("/requestContext/routeKey")
                                .and_then(Value::as_str),
                            Some("refresh")
                        );
                        let expected = json.pointer("/body").and_then(Value::as_str);
                        assert_eq!(body, expected.unwrap_or_default());
                    }
                    EventOutcome::Refresh
                }
                Route::Unhandled { .. } => {
                    assert!(!matches!(event_type, Some(Some("CONNECT" | "DISCONNECT"))));
                    EventOutcome::Unhandled
                }
            }
        }
    }
}

/// Every whitespace-free run longer than [`MAX_ECHOED_RUN`] in the input's
/// strings (decoded when the input is JSON, raw otherwise).
fn long_runs(data: &[u8], json: Option<&Value>) -> Vec<String> {
    let mut texts = Vec::new();
    match json {
        Some(value) => collect_strings(value, &mut texts),
        None => texts.push(String::from_utf8_lossy(data).into_owned()),
    }
    texts
        .iter()
        .flat_map(|text| text.split(char::is_whitespace))
        .filter(|run| run.len() > MAX_ECHOED_RUN)
        .map(str::to_owned)
        .collect()
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| collect_strings(item, out)),
        Value::Object(members) => {
            for (name, item) in members {
                out.push(name.clone());
                collect_strings(item, out);
            }
        }
        _ => {}
    }
}

/// The keys the `rs256` target verifies against: RFC 7515 A.2's modulus with
/// e = 65537 and with e = 3 (the primitive takes any small exponent).
fn reference_keys() -> [(Vec<u8>, Vec<u8>); 2] {
    let n = URL_SAFE_NO_PAD.decode(MODULUS_B64).expect("fixed modulus");
    [(n.clone(), vec![0x01, 0x00, 0x01]), (n, vec![0x03])]
}

/// Differential check of the hand-written RS256 primitive against the `rsa`
/// crate. Input: a key selector byte, then a signature as long as the
/// modulus, then the message. Properties: both limb widths of the guest's
/// arithmetic agree with `rsa` 0.10's `Pkcs1v15Sign` verifier, and (random
/// signatures almost never verify, so the verdicts alone say little about
/// the arithmetic) `signature^e mod n` itself matches `num-bigint`'s for
/// every signature below the modulus. Returns the verdict; `None` when the
/// input is too short.
pub fn rs256(data: &[u8]) -> Option<bool> {
    let (&selector, rest) = data.split_first()?;
    let keys = reference_keys();
    let (n, e) = &keys[usize::from(selector) % keys.len()];
    if rest.len() < n.len() {
        return None;
    }
    let (signature, message) = rest.split_at(n.len());
    let reference = {
        let key = rsa::PublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(n),
            rsa::BoxedUint::from_be_slice_vartime(e),
        )
        .expect("reference key");
        key.verify(
            rsa::Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(message),
            signature,
        )
        .is_ok()
    };
    let power = (signature < n.as_slice()).then(|| {
        let power = BigUint::from_bytes_be(signature)
            .modpow(&BigUint::from_bytes_be(e), &BigUint::from_bytes_be(n))
            .to_bytes_be();
        let mut padded = vec![0; n.len() - power.len()];
        padded.extend_from_slice(&power);
        padded
    });
    for mod_pow in [montgomery::limb32::mod_pow, montgomery::limb64::mod_pow] {
        let ours = rs256::verify_with(mod_pow, n, e, message, signature);
        assert_eq!(ours, reference, "the guest and the rsa crate disagree");
        if let Some(power) = &power {
            assert_eq!(
                &mod_pow(signature, e, n),
                power,
                "the guest and num-bigint disagree on signature^e mod n"
            );
        }
    }
    Some(reference)
}
