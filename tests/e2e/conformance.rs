//! The policy's conformance set (`tests/conformance/cases.json`, made by
//! `gitgazer_ws_tests::conformance`): one file of cases as data, run here
//! against the component under wasmtime (through the host's own
//! `PolicyRuntime`) and by `tests/jco/run.mjs` against the very same `.wasm`
//! under jco on Node. Both must give the same answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gitgazer_ws::keys::KeySetSource;
use gitgazer_ws::policy::{
    Capabilities, EngineOptions, GUEST_COMPONENT, GuestBuild, LoadedGuest, PolicyRuntime,
};
use gitgazer_ws::store::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use gitgazer_ws::wit::types::{ConnectRequest, Identity, RefreshRequest, Response, Settings};
use gitgazer_ws_tests::conformance::{cases_path, document, write_cases};
use serde_json::{Value, json};

/// The component `tests/jco/run.mjs` transpiles by default.
fn built_component_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guest/wasm32-wasip2/release/gitgazer_ws_guest.wasm")
}

/// Regenerates `tests/conformance/cases.json` (fresh keys and tokens, the
/// same cases and expectations):
///
/// ```sh
/// cargo test --release -p gitgazer-ws-tests --test e2e -- --ignored conformance::generate_conformance_cases
/// ```
#[test]
#[ignore = "writes tests/conformance/cases.json; run on purpose"]
fn generate_conformance_cases() {
    let path = cases_path();
    let count = write_cases(&path);
    println!("wrote {count} cases to {}", path.display());
}

// ---------------------------------------------------------------------------
// The wasmtime runner.

/// An in-memory store that fails one operation on demand.
struct CaseStore {
    records: Mutex<BTreeMap<RecordKey, ConnectionRecord>>,
    /// Revocations by `sub` (the case's `revocations`).
    revocations: BTreeMap<String, u64>,
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

    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        self.fail("revoked-before")?;
        Ok(self.revocations.get(sub).copied())
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
        endpoint: value["endpoint"].as_str().map(str::to_owned),
        auth_expires_at: value["auth-expires-at"].as_u64(),
        auth_issued_at: value["auth-issued-at"].as_u64(),
    }
}

fn record_to(record: &ConnectionRecord) -> Value {
    let mut value = json!({
        "integration-id": record.integration_id,
        "connection-id": record.connection_id,
        "sub": record.sub,
        "connected-at": record.connected_at,
        "expires-at": record.expires_at,
    });
    // Only when set: the cases without one stay as they were.
    if let Some(endpoint) = &record.endpoint {
        value["endpoint"] = json!(endpoint);
    }
    if let Some(auth_expires_at) = record.auth_expires_at {
        value["auth-expires-at"] = json!(auth_expires_at);
    }
    if let Some(auth_issued_at) = record.auth_issued_at {
        value["auth-issued-at"] = json!(auth_issued_at);
    }
    value
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

fn settings_of(value: &Value) -> Settings {
    Settings {
        issuer: str_of(value, "issuer").into(),
        audiences: value["audiences"]
            .as_array()
            .expect("settings.audiences")
            .iter()
            .map(|a| a.as_str().expect("an audience").to_owned())
            .collect(),
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
    let revocations = case
        .get("revocations")
        .map(|list| {
            list.as_array()
                .expect("revocations is an array")
                .iter()
                .map(|r| (str_of(r, "sub").to_owned(), u64_of(r, "revoked-before")))
                .collect()
        })
        .unwrap_or_default();
    let store = Arc::new(CaseStore {
        records: Mutex::new(records),
        revocations,
        failure: case.get("store-failure").map(store_error_of),
    });
    let caps = Capabilities {
        store: store.clone(),
        keys: keys.clone(),
        socket: None,
    };
    let call = &case["call"];
    let name = str_of(case, "name");
    let reply = |r: Response| json!({ "response": { "status": r.status, "body": r.body } });
    let outcome = match str_of(call, "op") {
        "connect" => reply(
            runtime
                .connect(
                    &caps,
                    name,
                    &ConnectRequest {
                        connection_id: str_of(call, "connection-id").into(),
                        id_token: call["id-token"].as_str().map(str::to_owned),
                        now: u64_of(call, "now"),
                        settings: settings_of(&call["settings"]),
                        endpoint: call["endpoint"].as_str().map(str::to_owned),
                    },
                )
                .await
                .0,
        ),
        "refresh" => {
            let r = runtime
                .refresh(
                    &caps,
                    name,
                    &RefreshRequest {
                        connection_id: str_of(call, "connection-id").into(),
                        id_token: call["id-token"].as_str().map(str::to_owned),
                        current_token: call["current-token"].as_str().map(str::to_owned),
                        current_record: call
                            .get("current-record")
                            .filter(|record| !record.is_null())
                            .map(record_from),
                        now: u64_of(call, "now"),
                        connected_at: str_of(call, "connected-at").into(),
                        settings: settings_of(&call["settings"]),
                        endpoint: call["endpoint"].as_str().map(str::to_owned),
                    },
                )
                .await;
            json!({ "refresh": { "code": r.code, "body": r.body, "expires-at": r.expires_at } })
        }
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
                Ok(Identity { sub, groups }) => {
                    json!({ "verify": { "ok": { "sub": sub, "groups": groups } } })
                }
                Err(rejection) => json!({ "verify": { "error": rejection.name() } }),
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
    assert_eq!(cases.len(), CASES, "cases.json holds another set");
}

/// How many cases the set holds; a change is a change of the set.
const CASES: usize = 100;

/// A token with what changes from one generation to the next masked: the
/// signing key's `kid` in a header segment, and signatures (segments from
/// the third on that are not JSON). Claims, and anything not shaped like a
/// token, stay as they are.
fn stable_token(token: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let segments: Vec<String> = token
        .split('.')
        .enumerate()
        .map(|(index, segment)| {
            let json = URL_SAFE_NO_PAD
                .decode(segment)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
            match json {
                Some(mut value) if value.get("kid").is_some_and(Value::is_string) => {
                    value["kid"] = json!("<kid>");
                    value.to_string()
                }
                Some(_) => segment.to_owned(),
                None if index >= 2 => "<signature>".to_owned(),
                None => segment.to_owned(),
            }
        })
        .collect();
    segments.join(".")
}

/// A conformance document with its tokens made [`stable_token`] and its
/// key sets masked: what a regeneration must leave unchanged.
fn stable(mut document: Value) -> Value {
    for case in document["cases"].as_array_mut().expect("cases") {
        for field in ["key-set", "refreshed-key-set"] {
            if let Some(set) = case.get_mut(field) {
                *set = json!("<key set>");
            }
        }
        for field in ["id-token", "token", "current-token"] {
            if let Some(Value::String(token)) = case["call"].get_mut(field) {
                *token = stable_token(token);
            }
        }
    }
    document
}

/// The checked-in set is what the generator makes (keys, kids and
/// signatures aside): a case edited by hand, or a generator changed without
/// regenerating, fails here.
#[test]
fn cases_json_is_what_the_generator_makes() {
    let path = cases_path();
    let checked_in: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("cases.json")).unwrap();
    let (checked_in, generated) = (stable(checked_in), stable(document()));
    let (old, new) = (&checked_in["cases"], &generated["cases"]);
    let names = |cases: &Value| -> Vec<String> {
        cases
            .as_array()
            .unwrap()
            .iter()
            .map(|c| str_of(c, "name").to_owned())
            .collect()
    };
    assert_eq!(
        names(old),
        names(new),
        "the generator makes other cases; regenerate: cargo test --release -p gitgazer-ws-tests \
         --test e2e -- --ignored conformance::generate_conformance_cases"
    );
    for (old, new) in old.as_array().unwrap().iter().zip(new.as_array().unwrap()) {
        assert_eq!(
            old,
            new,
            "case {} differs from the generator's",
            str_of(old, "name")
        );
    }
    assert_eq!(checked_in, generated);
    assert_eq!(old.as_array().unwrap().len(), CASES);
}

/// The conformance set names every rejection class of the WIT's
/// `token-rejection` (the README says so): the token's own in verify
/// cases; `revoked`, a fact of the store, not of the token, in CONNECT and
/// refresh cases with a revocation.
#[test]
fn every_rejection_class_has_a_verify_case() {
    let text = std::fs::read_to_string(cases_path()).unwrap();
    let document: Value = serde_json::from_str(&text).unwrap();
    let cases = document["cases"].as_array().unwrap();
    let mut classes: std::collections::BTreeSet<&str> = cases
        .iter()
        .filter_map(|case| case["expect"]["verify"]["error"].as_str())
        .collect();
    let refused_as_revoked = |op: &str, refusal: &Value| {
        cases.iter().any(|case| {
            case["call"]["op"] == op
                && case.get("revocations").is_some()
                && (case["expect"]["response"] == *refusal || case["expect"]["refresh"] == *refusal)
        })
    };
    if refused_as_revoked(
        "connect",
        &json!({ "status": 401, "body": "Unauthorized: Access revoked" }),
    ) && refused_as_revoked(
        "refresh",
        &json!({ "code": 4003, "body": "forbidden", "expires-at": null }),
    ) {
        classes.insert("revoked");
    }
    let wit = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wit/ws-handler.wit"),
    )
    .unwrap();
    let body = wit
        .split("enum token-rejection")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("enum token-rejection in the WIT");
    let wit_classes: std::collections::BTreeSet<&str> = body
        .lines()
        .map(|line| {
            line.split("//")
                .next()
                .unwrap()
                .trim()
                .trim_end_matches(',')
        })
        .filter(|word| !word.is_empty() && !word.starts_with('{'))
        .collect();
    assert!(wit_classes.len() >= 15, "{wit_classes:?}");
    assert_eq!(classes, wit_classes);
}

/// The bytes the host embeds are the bytes `tests/jco/run.mjs` runs under
/// jco, so the two runtimes are tried on one component.
#[test]
fn the_embedded_component_is_the_one_jco_runs() {
    let path = built_component_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes == GUEST_COMPONENT,
        "{} ({} bytes) is not the embedded component ({} bytes)",
        path.display(),
        bytes.len(),
        GUEST_COMPONENT.len()
    );
}
