//! The Lambda entry: real API Gateway WebSocket events through the handler
//! function, and the packaged `bootstrap` against a Runtime API emulator.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws::keys::StaticKeySet;
use gitgazer_ws::policy::{EngineOptions, PolicyRuntime};
use gitgazer_ws::service::Handler;
use gitgazer_ws::store::MemoryStore;
use gitgazer_ws::wit::types::Settings;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::lambda_emulator::{Outcome, RuntimeApiEmulator};
use gitgazer_ws_tests::{
    create_table, dynalite_endpoint, dynamodb_env, test_cache_dir, unique_table, unix_now,
};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_Lambda1";
const CLIENT: &str = "lambda-client";

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/apigw")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The CONNECT fixture with this token (or no query string at all).
pub(crate) fn connect_event(token: Option<&str>, connection_id: &str) -> Value {
    let mut event = fixture("connect.json");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["queryStringParameters"] = match token {
        Some(token) => json!({ "idToken": token }),
        None => Value::Null,
    };
    event["multiValueQueryStringParameters"] = Value::Null;
    event
}

/// The CONNECT fixture with the token in `Sec-WebSocket-Protocol: bearer, <token>`
/// (in both header maps, as API Gateway sends them) and a query token too.
fn bearer_connect_event(token: &str, query_token: &str, connection_id: &str) -> Value {
    let mut event = connect_event(Some(query_token), connection_id);
    let offered = format!("bearer, {token}");
    event["headers"]["Sec-WebSocket-Protocol"] = json!(offered);
    event["multiValueHeaders"]["Sec-WebSocket-Protocol"] = json!([offered]);
    event
}

pub(crate) fn disconnect_event(connection_id: &str) -> Value {
    let mut event = fixture("disconnect.json");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event
}

fn message_event() -> Value {
    let mut event = fixture("connect.json");
    event["requestContext"]["eventType"] = json!("MESSAGE");
    event["requestContext"]["routeKey"] = json!("$default");
    event
}

fn cognito_token(signer: &DevSigner) -> String {
    cognito_token_for(signer, REGION, POOL, CLIENT)
}

/// A Cognito-shaped id token of that pool and client, groups acme and globex.
pub(crate) fn cognito_token_for(
    signer: &DevSigner,
    region: &str,
    pool: &str,
    client: &str,
) -> String {
    let now = unix_now();
    signer.sign(&json!({
        "sub": "lambda-user",
        "iss": format!("https://cognito-idp.{region}.amazonaws.com/{pool}"),
        "aud": client,
        "token_use": "id",
        "iat": now,
        "exp": now + 600,
        "cognito:groups": ["acme", "globex"],
    }))
}

fn proxy(status: u16, body: &str) -> Value {
    json!({ "statusCode": status, "body": body })
}

#[tokio::test]
async fn real_events_through_the_handler_function() {
    let signer = DevSigner::generate().unwrap();
    let runtime = PolicyRuntime::new(EngineOptions {
        cache_dir: Some(test_cache_dir()),
        ..EngineOptions::default()
    })
    .unwrap();
    let keys = Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "test").unwrap());
    let settings = Settings {
        issuer: format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
        audiences: vec![CLIENT.into()],
        leeway_seconds: 0,
        record_ttl_seconds: 7500,
    };
    let store = Arc::new(MemoryStore::new());
    let handler = Handler::new(runtime, store.clone(), keys, settings);
    let invoke = |payload: Value| {
        let handler = handler.clone();
        async move {
            let mut context = Context::default();
            context.request_id = "lambda-request-1".into();
            let response =
                gitgazer_ws::edge::lambda::handle(&handler, LambdaEvent::new(payload, context))
                    .await;
            serde_json::to_value(response).unwrap()
        }
    };

    let token = cognito_token(&signer);
    assert_eq!(
        invoke(connect_event(Some(&token), "TWegAcC4EowCHnA=")).await,
        proxy(200, "Connected.")
    );
    assert_eq!(store.snapshot().len(), 2);
    assert_eq!(
        invoke(connect_event(None, "x=")).await,
        proxy(401, "Unauthorized: No authentication token provided")
    );
    assert_eq!(
        invoke(fixture("connect-without-method.json")).await,
        proxy(401, "Unauthorized: No authentication token provided")
    );
    assert_eq!(
        invoke(message_event()).await,
        proxy(400, "Invalid event type: MESSAGE")
    );
    assert_eq!(
        invoke(disconnect_event("TWegAcC4EowCHnA=")).await,
        proxy(200, "Disconnected. Removed 2 records.")
    );
    assert!(store.snapshot().is_empty());

    // The token as a subprotocol (it wins over the query's): a 200 selects
    // `bearer`, which API Gateway passes to the handshake; a refusal does not.
    assert_eq!(
        invoke(bearer_connect_event(&token, "not-a-token", "bearer=")).await,
        json!({
            "statusCode": 200,
            "body": "Connected.",
            "headers": { "Sec-WebSocket-Protocol": "bearer" },
        })
    );
    assert_eq!(store.snapshot().len(), 2);
    assert_eq!(
        invoke(bearer_connect_event("not-a-token", &token, "refused=")).await,
        proxy(401, "Unauthorized: Invalid authentication token")
    );
    assert_eq!(store.snapshot().len(), 2);
    invoke(disconnect_event("bearer=")).await;
    assert!(store.snapshot().is_empty());

    for malformed in [
        json!([1, 2, 3]),
        json!({ "requestContext": 5 }),
        json!("text"),
    ] {
        let response = invoke(malformed.clone()).await;
        assert_eq!(response["statusCode"], 400, "{malformed}");
        assert!(
            response["body"]
                .as_str()
                .unwrap()
                .starts_with("Invalid event:"),
            "{response}"
        );
    }
}

/// Unpacks a Lambda zip that `scripts/test` builds (`gitgazer-ws-x86_64.zip`,
/// `gitgazer-ws-arm64.zip`), keeping file modes (a `bootstrap` without its
/// executable bit would not start on Lambda).
fn unpack_lambda_zip(zip_name: &str, into: &Path) -> PathBuf {
    let zip_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/lambda")
        .join(zip_name);
    assert!(
        zip_path.exists(),
        "{} is missing: run scripts/package-lambda (./scripts/test does)",
        zip_path.display()
    );
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let names: Vec<String> = archive
        .file_names()
        .map(|name| name.expect("entry name").into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    std::fs::create_dir_all(into).unwrap();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let path = into.join(entry.name().expect("entry name").as_ref());
        let mut file = std::fs::File::create(&path).unwrap();
        std::io::copy(&mut entry, &mut file).unwrap();
        let mode = entry.unix_mode().expect("unix mode recorded");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let bootstrap = into.join("bootstrap");
    let mode = std::fs::metadata(&bootstrap).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "bootstrap is not executable: {mode:o}");
    assert!(into.join("gitgazer-ws.cwasm").exists());
    bootstrap
}

const X86_64_ZIP: &str = "gitgazer-ws-x86_64.zip";
const ARM64_ZIP: &str = "gitgazer-ws-arm64.zip";

fn start_bootstrap(bootstrap: &Path, runtime_api: &str, env: &[(&str, &str)]) -> Child {
    start_bootstrap_with(Command::new(bootstrap), runtime_api, env)
}

/// Starts `command` (the bootstrap, or an emulator running it) as Lambda
/// would: a clean environment with the Runtime API's variables.
fn start_bootstrap_with(mut command: Command, runtime_api: &str, env: &[(&str, &str)]) -> Child {
    command
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "gitgazer-ws")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_LEVEL", "DEBUG")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting bootstrap")
}

/// A Cognito-mode function's environment: the test pool, `jwks`, and a
/// fresh table on dynalite.
fn cognito_env(jwks: &JwksServer, table_prefix: &str) -> Vec<(String, String)> {
    let endpoint = dynalite_endpoint();
    let table = unique_table(table_prefix);
    create_table(&endpoint, &table);
    let mut env = dynamodb_env(&endpoint, &table);
    env.extend(
        [
            ("AWS_REGION", REGION),
            ("COGNITO_USER_POOL_ID", POOL),
            ("COGNITO_CLIENT_ID", CLIENT),
            ("COGNITO_JWKS_URL", &jwks.url),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packaged_bootstrap_serves_events_and_survives_a_malformed_one() {
    let dir = test_cache_dir().join(format!("lambda-{}", std::process::id()));
    let bootstrap = unpack_lambda_zip(X86_64_ZIP, &dir);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let emulator = RuntimeApiEmulator::start().await;
    let env = cognito_env(&jwks, "lambda");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut child = start_bootstrap(&bootstrap, &emulator.address, &env);
    // Read the log as it comes: at debug level the AWS SDK alone fills a
    // pipe's buffer, and a blocked write would stall the function.
    let mut stderr = child.stderr.take().expect("stderr piped");
    let log_reader = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut logs);
        logs
    });
    let mut stdout = child.stdout.take().expect("stdout piped");
    let metrics_reader = std::thread::spawn(move || {
        let mut lines = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut lines);
        lines
    });

    let token = cognito_token(&signer);
    let outcomes = [
        (
            connect_event(Some(&token), "conn-1="),
            proxy(200, "Connected."),
        ),
        (json!({ "requestContext": "not an object" }), Value::Null),
        (
            connect_event(None, "conn-2="),
            proxy(401, "Unauthorized: No authentication token provided"),
        ),
        (message_event(), proxy(400, "Invalid event type: MESSAGE")),
        (
            disconnect_event("conn-1="),
            proxy(200, "Disconnected. Removed 2 records."),
        ),
        (
            disconnect_event("conn-1="),
            proxy(200, "No records to disconnect."),
        ),
    ];
    for (n, (event, expected)) in outcomes.into_iter().enumerate() {
        let outcome = emulator.invoke(event).await;
        let Outcome::Response(response) = outcome else {
            panic!("the function reported an error: {outcome:?}");
        };
        if expected.is_null() {
            assert_eq!(response["statusCode"], 400, "{response}");
        } else {
            assert_eq!(response, expected);
        }
        if n == 0 {
            // The CONNECT's records say where delivery reaches it: the
            // stage's Management API, from the event's apiId and stage.
            let stage = format!("https://gy415nuibc.execute-api.{REGION}.amazonaws.com/testStage");
            assert_eq!(stored_endpoints(&env, "conn-1=").await, [stage.as_str(); 2]);
        }
    }
    assert!(child.try_wait().unwrap().is_none(), "bootstrap exited");
    assert_eq!(jwks.requests(), 1);

    child.kill().unwrap();
    child.wait().unwrap();
    let logs = log_reader.join().unwrap();
    // JSON lines carrying the Lambda request id and the connection id...
    let invocation_line = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "CONNECT")
        .unwrap_or_else(|| panic!("no JSON CONNECT line in:\n{logs}"));
    assert_eq!(
        invocation_line["span"]["request_id"], "req-0001",
        "{invocation_line}"
    );
    assert_eq!(
        invocation_line["span"]["connection_id"], "conn-1=",
        "{invocation_line}"
    );
    // ...loaded from the packaged precompiled component, no JIT...
    assert!(logs.contains("precompiled component loaded"), "{logs}");
    assert!(!logs.contains("compiled the guest component"), "{logs}");
    // ...and never the token.
    assert!(
        !logs.contains(&token[token.len() - 40..]),
        "the token leaked:\n{logs}"
    );
    assert_emf_per_invocation(&metrics_reader.join().unwrap());
}

/// The `endpoint` attribute of each of a connection's records, read from the
/// table the function's environment names.
async fn stored_endpoints(env: &[(&str, &str)], connection_id: &str) -> Vec<String> {
    let var = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| *value)
            .unwrap_or_else(|| panic!("{name} in the function's environment"))
    };
    crate::support::scan_items(var("AWS_ENDPOINT_URL_DYNAMODB"), var("TABLE_NAME"))
        .await
        .iter()
        .filter(|item| crate::support::text(item, "connectionId") == connection_id)
        .map(|item| crate::support::text(item, "endpoint"))
        .collect()
}

/// Stdout holds one CloudWatch EMF document per invocation that recorded
/// something, each well-formed: every metric it declares has a value.
fn assert_emf_per_invocation(stdout: &str) {
    let documents: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let mut request_ids = std::collections::BTreeSet::new();
    for document in &documents {
        let directive = &document["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "GitGazerWs", "{document}");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(document["FunctionName"], "gitgazer-ws");
        assert!(document["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(!document[name].is_null(), "{name} has no value: {document}");
        }
        let id = document["requestId"].as_str().unwrap().to_owned();
        assert!(
            request_ids.insert(id),
            "two documents for one invocation: {stdout}"
        );
    }
    let of = |id: &str| {
        documents
            .iter()
            .find(|d| d["requestId"] == id)
            .unwrap_or_else(|| panic!("no EMF document for {id}:\n{stdout}"))
    };
    // The first CONNECT stored two records; the second had no token.
    let connect = of("req-0001");
    assert_eq!(
        connect["gitgazer_ws_connects_total{status=200,rejection=none}"],
        1
    );
    assert_eq!(connect["gitgazer_ws_records_written_total"], 2);
    assert_eq!(
        connect["gitgazer_ws_policy_call_duration_seconds{export=handle-connect}"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        of("req-0003")["gitgazer_ws_connects_total{status=401,rejection=missing}"],
        1
    );
    let disconnect = of("req-0005");
    assert_eq!(disconnect["gitgazer_ws_disconnects_total{status=200}"], 1);
    assert_eq!(disconnect["gitgazer_ws_records_deleted_total"], 2);
    assert!(
        disconnect
            .get("gitgazer_ws_records_written_total")
            .is_none(),
        "{disconnect}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_fails_the_init_naming_the_variable() {
    let dir = test_cache_dir().join(format!("lambda-init-{}", std::process::id()));
    let bootstrap = unpack_lambda_zip(X86_64_ZIP, &dir);
    // A mistyped or missing variable must not start a function that refuses
    // every user (dev mode) or loses records (memory): each is an init error.
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("AWS_REGION", REGION),
                ("COGNITO_USER_POOL_ID", POOL),
                ("TABLE_NAME", "t"),
            ],
            "COGNITO_CLIENT_ID",
        ),
        (
            &[
                ("AWS_REGION", REGION),
                ("COGNITO_CLIENT_ID", CLIENT),
                ("TABLE_NAME", "t"),
            ],
            "COGNITO_USER_POOL_ID is not set",
        ),
        (
            &[
                ("AWS_REGION", REGION),
                ("COGNITO_USER_POOL_ID", POOL),
                ("COGNITO_CLIENT_ID", CLIENT),
            ],
            "TABLE_NAME is not set",
        ),
        // GitGazer's name for the table, naming another one than ours.
        (
            &[
                ("AWS_REGION", REGION),
                ("COGNITO_USER_POOL_ID", POOL),
                ("COGNITO_CLIENT_ID", CLIENT),
                ("TABLE_NAME", "connections"),
                (
                    "DYNAMO_DB_CONNECTIONS_TABLE_ARN",
                    "arn:aws:dynamodb:eu-west-1:123456789012:table/other",
                ),
            ],
            "TABLE_NAME (--table-name) is \"connections\" but its alias DYNAMO_DB_CONNECTIONS_TABLE_ARN",
        ),
    ];
    for (env, names) in cases {
        let emulator = RuntimeApiEmulator::start().await;
        let child = start_bootstrap(&bootstrap, &emulator.address, env);
        let (body, kind) = emulator.wait_init_error().await;
        assert_eq!(kind, "Runtime.InitError");
        assert!(
            body["errorMessage"].as_str().unwrap().contains(names),
            "{names}: {body}"
        );
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "{names}");
    }
}

/// The emulator and the aarch64 C library it loads the bootstrap with
/// (Debian's qemu-user and libc6-arm64-cross: scripts/install-cross).
const QEMU_AARCH64: &str = "qemu-aarch64";
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arm64_package_serves_events_under_emulation_from_its_precompiled_component() {
    let dir = test_cache_dir().join(format!("lambda-arm64-{}", std::process::id()));
    let bootstrap = unpack_lambda_zip(ARM64_ZIP, &dir);
    // An aarch64 ELF: 64-bit, little-endian, e_machine EM_AARCH64 (183).
    let header = std::fs::read(&bootstrap).unwrap();
    assert_eq!(&header[..4], b"\x7fELF", "bootstrap is not an ELF file");
    assert_eq!(
        (header[4], header[5]),
        (2, 1),
        "not a 64-bit little-endian ELF"
    );
    assert_eq!(
        u16::from_le_bytes([header[18], header[19]]),
        183,
        "bootstrap is not an aarch64 executable"
    );
    let qemu = Command::new(QEMU_AARCH64).arg("--version").output();
    assert!(
        qemu.as_ref().is_ok_and(|o| o.status.success()),
        "{QEMU_AARCH64} is missing: the arm64 package runs under it; run scripts/install-cross"
    );
    assert!(
        Path::new(AARCH64_SYSROOT)
            .join("lib/ld-linux-aarch64.so.1")
            .exists(),
        "{AARCH64_SYSROOT} has no aarch64 glibc: run scripts/install-cross"
    );

    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let emulator = RuntimeApiEmulator::start().await;
    let mut env = cognito_env(&jwks, "lambda-arm64");
    env.push(("QEMU_LD_PREFIX".to_owned(), AARCH64_SYSROOT.to_owned()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut command = Command::new(QEMU_AARCH64);
    command.arg(&bootstrap);
    let started = std::time::Instant::now();
    let mut child = start_bootstrap_with(command, &emulator.address, &env);
    let mut stderr = child.stderr.take().expect("stderr piped");
    let log_reader = std::thread::spawn(move || {
        let mut logs = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut logs);
        logs
    });

    let token = cognito_token(&signer);
    let connected = emulator.invoke(connect_event(Some(&token), "arm-1=")).await;
    let cold_start = started.elapsed();
    assert_eq!(connected, Outcome::Response(proxy(200, "Connected.")));
    assert_eq!(
        emulator.invoke(disconnect_event("arm-1=")).await,
        Outcome::Response(proxy(200, "Disconnected. Removed 2 records."))
    );
    assert!(child.try_wait().unwrap().is_none(), "bootstrap exited");
    child.kill().unwrap();
    child.wait().unwrap();
    let logs = log_reader.join().unwrap();
    // The packaged component, precompiled for aarch64 on x86_64, fits: no
    // fallback to compiling (under emulation that would take seconds).
    assert!(logs.contains("precompiled component loaded"), "{logs}");
    assert!(!logs.contains("does not fit"), "{logs}");
    assert!(!logs.contains("compiled the guest component"), "{logs}");
    // A figure of its own (user-mode emulation of every instruction): not
    // comparable to a native or a Graviton cold start.
    println!(
        "arm64 bootstrap under {QEMU_AARCH64}: process start to first CONNECT answered in {} ms (emulated)",
        cold_start.as_millis()
    );
}

/// A Management API that answers 200 to everything and records each call
/// (method, path, body).
async fn recording_management_api() -> (String, Arc<std::sync::Mutex<Vec<(String, String, String)>>>)
{
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = calls.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method, uri: axum::http::Uri, body: String| {
            let recorded = recorded.clone();
            async move {
                recorded
                    .lock()
                    .unwrap()
                    .push((method.to_string(), uri.path().to_owned(), body));
                (axum::http::StatusCode::OK, "")
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

/// A MESSAGE routed `refresh` with this body.
fn refresh_event(connection_id: &str, body: &str) -> Value {
    let mut event = fixture("connect.json");
    event["requestContext"]["eventType"] = json!("MESSAGE");
    event["requestContext"]["routeKey"] = json!("refresh");
    event["requestContext"]["connectionId"] = json!(connection_id);
    event["body"] = json!(body);
    event
}

fn refresh_body(token: &str) -> String {
    json!({ "action": "refresh", "idToken": token }).to_string()
}

/// The Lambda path of the in-band refresh, against dynalite: MESSAGE events
/// routed `refresh` through the handler, answered by posting to the
/// connection (the `refreshed` frame; or a last close message and
/// DeleteConnection), the records following the new token; a malformed or
/// oversized body changes nothing; any other MESSAGE keeps its 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_messages_through_the_handler_function_against_dynalite() {
    use gitgazer_ws::store::{ConnectionStore, DynamoDbOptions, DynamoDbStore};
    let endpoint = dynalite_endpoint();
    let table = unique_table("lambda-refresh");
    create_table(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let runtime = PolicyRuntime::new(EngineOptions {
        cache_dir: Some(test_cache_dir()),
        ..EngineOptions::default()
    })
    .unwrap();
    let keys = Arc::new(StaticKeySet::new(signer.jwks().to_owned(), "test").unwrap());
    let settings = Settings {
        issuer: format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
        audiences: vec![CLIENT.into()],
        leeway_seconds: 0,
        record_ttl_seconds: 7500,
    };
    let store = Arc::new(
        DynamoDbStore::connect(DynamoDbOptions {
            table: table.clone(),
            connection_id_index: "connectionId-index".into(),
            sub_index: "sub-index".into(),
            region: Some("us-east-1".into()),
            query_page_limit: None,
            unprocessed_retry: Default::default(),
            rollback_retry: Default::default(),
        })
        .await,
    );
    let (api, calls) = recording_management_api().await;
    let handler = Handler::new(runtime, store.clone(), keys, settings)
        .with_answer_endpoint(Some(api.clone()));
    let invoke = |payload: Value| {
        let handler = handler.clone();
        async move {
            let mut context = Context::default();
            context.request_id = "lambda-refresh-1".into();
            let response =
                gitgazer_ws::edge::lambda::handle(&handler, LambdaEvent::new(payload, context))
                    .await;
            serde_json::to_value(response).unwrap()
        }
    };
    let token = |sub: &str, groups: Value, iat: u64| {
        signer.sign(&json!({
            "sub": sub,
            "iss": format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
            "aud": CLIENT, "token_use": "id", "iat": iat, "exp": iat + 600,
            "cognito:groups": groups,
        }))
    };
    let groups_of = |connection: &'static str| {
        let store = store.clone();
        async move {
            let mut groups: Vec<String> = store
                .keys_of(connection)
                .await
                .unwrap()
                .into_iter()
                .map(|key| key.integration_id)
                .collect();
            groups.sort();
            groups
        }
    };
    let now = unix_now();
    let first = token("lambda-user", json!(["acme", "globex"]), now - 10);
    assert_eq!(
        invoke(connect_event(Some(&first), "REFRESHa=")).await,
        proxy(200, "Connected.")
    );

    // Valid: the answer posted to the connection, the records follow.
    let second = token("lambda-user", json!(["acme", "initech"]), now);
    let refreshed = format!(
        r#"{{"type":"refreshed","expiresAt":{},"added":["initech"],"removed":["globex"]}}"#,
        now + 600
    );
    assert_eq!(
        invoke(refresh_event("REFRESHa=", &refresh_body(&second))).await,
        proxy(200, &refreshed)
    );
    assert_eq!(
        calls.lock().unwrap().drain(..).collect::<Vec<_>>(),
        [(
            "POST".to_owned(),
            "/@connections/REFRESHa%3D".to_owned(),
            refreshed.clone()
        )]
    );
    assert_eq!(groups_of("REFRESHa=").await, ["acme", "initech"]);
    let record = store
        .record(&gitgazer_ws::store::RecordKey {
            integration_id: "initech".into(),
            connection_id: "REFRESHa=".into(),
        })
        .await
        .unwrap()
        .expect("the added record");
    assert_eq!(
        (record.auth_issued_at, record.auth_expires_at),
        (Some(now), Some(now + 600))
    );

    // Malformed and oversized bodies: 400 and 413, nothing posted or changed.
    for (body, status, answer) in [
        ("not json".to_owned(), 400, "Invalid refresh."),
        (r#"{"action":"other"}"#.to_owned(), 400, "Invalid refresh."),
        (
            refresh_body(&"x".repeat(16 * 1024)),
            413,
            "Refresh too large.",
        ),
    ] {
        assert_eq!(
            invoke(refresh_event("REFRESHa=", &body)).await,
            proxy(status, answer)
        );
    }
    assert!(calls.lock().unwrap().is_empty());
    assert_eq!(groups_of("REFRESHa=").await, ["acme", "initech"]);
    // Other MESSAGEs keep their 400.
    assert_eq!(
        invoke(message_event()).await,
        proxy(400, "Invalid event type: MESSAGE")
    );

    // The same token again (its records stand for it): refused, a last
    // close message, DeleteConnection, no records.
    assert_eq!(
        invoke(refresh_event("REFRESHa=", &refresh_body(&second))).await,
        proxy(401, "token invalid")
    );
    assert_eq!(
        calls.lock().unwrap().drain(..).collect::<Vec<_>>(),
        [
            (
                "POST".to_owned(),
                "/@connections/REFRESHa%3D".to_owned(),
                r#"{"type":"close","code":4001,"reason":"token invalid"}"#.to_owned()
            ),
            (
                "DELETE".to_owned(),
                "/@connections/REFRESHa%3D".to_owned(),
                String::new()
            ),
        ]
    );
    assert!(groups_of("REFRESHa=").await.is_empty());

    // Another user's token: 4003.
    assert_eq!(
        invoke(connect_event(Some(&first), "REFRESHb=")).await,
        proxy(200, "Connected.")
    );
    let mallory = token("mallory", json!(["acme"]), now);
    assert_eq!(
        invoke(refresh_event("REFRESHb=", &refresh_body(&mallory))).await,
        proxy(403, "forbidden")
    );
    let calls_now = calls.lock().unwrap().drain(..).collect::<Vec<_>>();
    assert_eq!(calls_now.len(), 2, "{calls_now:?}");
    assert!(calls_now[0].2.contains(r#""code":4003"#), "{calls_now:?}");
    assert!(groups_of("REFRESHb=").await.is_empty());
}

/// `deliver` ends an API Gateway connection whose token expired more than
/// the grace window ago: a last close message, DeleteConnection, its
/// records deleted; one still within the grace is only skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_ends_api_gateway_connections_past_the_grace() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let endpoint = dynalite_endpoint();
    let table = unique_table("lambda-grace");
    create_table(&endpoint, &table);
    let (api, calls) = recording_management_api().await;
    let client = crate::support::client(&endpoint);
    let now = unix_now();
    for (connection, auth_expires_at) in [("past=", now - 31), ("within=", now - 5)] {
        client
            .put_item()
            .table_name(&table)
            .item("integrationId", AttributeValue::S("acme".into()))
            .item("connectionId", AttributeValue::S(connection.into()))
            .item("sub", AttributeValue::S("u".into()))
            .item(
                "connectedAt",
                AttributeValue::S("2026-11-27T00:00:00Z".into()),
            )
            .item("expiresAt", AttributeValue::N((now + 3600).to_string()))
            .item(
                "authExpiresAt",
                AttributeValue::N(auth_expires_at.to_string()),
            )
            .send()
            .await
            .unwrap();
    }
    let output = Command::new(gitgazer_ws_tests::binary_path())
        .envs(dynamodb_env(&endpoint, &table))
        .env("WEBSOCKET_API_ENDPOINT", &api)
        .env("AUTH_GRACE_SECONDS", "30")
        .args(["deliver", "--integration", "acme", "--message", "-"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(
        report,
        json!({"delivered": 0, "gone": 0, "failed": 0, "expired": 0, "expiredAuth": 2})
    );
    assert_eq!(
        calls.lock().unwrap().clone(),
        [
            (
                "POST".to_owned(),
                "/@connections/past%3D".to_owned(),
                r#"{"type":"close","code":4001,"reason":"token expired"}"#.to_owned()
            ),
            (
                "DELETE".to_owned(),
                "/@connections/past%3D".to_owned(),
                String::new()
            ),
        ]
    );
    let left = crate::support::keys(&crate::support::scan(&endpoint, &table).await);
    assert_eq!(
        left.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        ["within="]
    );
}
