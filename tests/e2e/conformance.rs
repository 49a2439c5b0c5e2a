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
use gitgazer_ws::wit::types::{Identity, Response, Settings};
use gitgazer_ws_tests::conformance::{cases_path, write_cases};
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
    let reply = |r: Response| json!({ "response": { "status": r.status, "body": r.body } });
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
                .await
                .0,
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
