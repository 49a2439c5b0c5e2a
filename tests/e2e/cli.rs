//! The `verify-token` and `handle-event` commands of the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::{binary_path, test_cache_dir, unix_now};
use serde_json::{Value, json};

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_Cli123";
const CLIENT: &str = "cli-client";

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_with_env(args, stdin, &[])
}

fn run_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(binary_path())
        .args(args)
        .env_remove("COGNITO_USER_POOL_ID")
        .env_remove("TABLE_NAME")
        .env_remove("RUST_LOG")
        .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running gitgazer-ws");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn stdout_json(output: &Output) -> Value {
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line of JSON expected, got {text:?}");
    serde_json::from_str(lines[0]).expect("JSON")
}

struct Fixture {
    signer: DevSigner,
    jwks_path: std::path::PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let signer = DevSigner::generate().unwrap();
    let dir = test_cache_dir().join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let jwks_path = dir.join(format!("{name}-jwks.json"));
    std::fs::write(&jwks_path, signer.jwks()).unwrap();
    Fixture { signer, jwks_path }
}

fn cognito_claims(now: u64) -> Value {
    json!({
        "sub": "user-1",
        "iss": format!("https://cognito-idp.{REGION}.amazonaws.com/{POOL}"),
        "aud": CLIENT,
        "token_use": "id",
        "iat": now,
        "exp": now + 600,
        "cognito:groups": ["acme", "globex", "acme"],
    })
}

fn verify_args<'a>(jwks: &'a str, client: &'a str) -> Vec<&'a str> {
    vec![
        "verify-token",
        "--jwks",
        jwks,
        "--region",
        REGION,
        "--user-pool-id",
        POOL,
        "--client-id",
        client,
    ]
}

#[test]
fn verify_token_valid_invalid_and_usage() {
    let f = fixture("verify");
    let jwks = f.jwks_path.to_str().unwrap();
    let now = unix_now();
    let token = f.signer.sign(&cognito_claims(now));

    let mut args = verify_args(jwks, CLIENT);
    args.push(&token);
    let output = run(&args, None);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout_json(&output),
        json!({ "valid": true, "sub": "user-1", "groups": ["acme", "globex"] })
    );

    // The token from standard input.
    let mut args = verify_args(jwks, CLIENT);
    args.push("-");
    let output = run(&args, Some(&token));
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // Expired as of --now.
    let later = (now + 601).to_string();
    let mut args = verify_args(jwks, CLIENT);
    args.extend(["--now", &later, &token]);
    let output = run(&args, None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout_json(&output),
        json!({ "valid": false, "reason": "expired" })
    );

    // Another app client.
    let mut args = verify_args(jwks, "someone-else");
    args.push(&token);
    let output = run(&args, None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout_json(&output),
        json!({ "valid": false, "reason": "wrong-audience" })
    );

    // Several app clients (a web and a mobile one): any of them, and only
    // them; COGNITO_CLIENT_ID takes the same list.
    for (clients, env_clients, expected) in [
        (
            "web-client,cli-client",
            "",
            json!({ "valid": true, "sub": "user-1", "groups": ["acme", "globex"] }),
        ),
        (
            " cli-client , web-client",
            "",
            json!({ "valid": true, "sub": "user-1", "groups": ["acme", "globex"] }),
        ),
        (
            "",
            "web-client,cli-client",
            json!({ "valid": true, "sub": "user-1", "groups": ["acme", "globex"] }),
        ),
        (
            "web-client,mobile-client",
            "",
            json!({ "valid": false, "reason": "wrong-audience" }),
        ),
        (
            "cli",
            "",
            json!({ "valid": false, "reason": "wrong-audience" }),
        ),
    ] {
        let mut args = verify_args(jwks, clients);
        if clients.is_empty() {
            args.retain(|a| !["--client-id", ""].contains(a));
        }
        args.push(&token);
        let output = run_with_env(&args, None, &[("COGNITO_CLIENT_ID", env_clients)]);
        assert_eq!(
            stdout_json(&output),
            expected,
            "{clients:?} {env_clients:?}"
        );
        let code = if expected["valid"] == true { 0 } else { 1 };
        assert_eq!(output.status.code(), Some(code), "{output:?}");
    }
    // An empty element is a usage error naming the variable, not a client
    // id that matches nothing.
    for clients in ["web-client,,cli-client", "cli-client,"] {
        let mut args = verify_args(jwks, clients);
        args.push(&token);
        let output = run(&args, None);
        assert_eq!(output.status.code(), Some(2), "{clients}: {output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("COGNITO_CLIENT_ID") && stderr.contains("is empty"),
            "{clients}: {stderr}"
        );
    }

    // A token signed by a key the set does not hold (same kid shape, other key).
    let stranger = DevSigner::generate().unwrap().sign(&cognito_claims(now));
    let mut args = verify_args(jwks, CLIENT);
    args.push(&stranger);
    let output = run(&args, None);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout_json(&output),
        json!({ "valid": false, "reason": "unknown-key" })
    );

    // Tokens never reach the log.
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(&stranger[stranger.len() - 40..]),
        "{stderr}"
    );

    // Usage errors exit 2: no --jwks; no user pool; an unreadable key set.
    let output = run(&["verify-token", &token], None);
    assert_eq!(output.status.code(), Some(2));
    let output = run(&["verify-token", "--jwks", jwks, &token], None);
    assert_eq!(output.status.code(), Some(2));
    let mut args = verify_args("/nonexistent/jwks.json", CLIENT);
    args.push(&token);
    let output = run(&args, None);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/jwks.json"));
}

#[test]
fn handle_event_reads_an_event_and_prints_the_proxy_response() {
    let event = json!({
        "requestContext": {
            "eventType": "CONNECT",
            "connectionId": "abc=",
            "connectedAt": 1_700_000_000_000_i64,
            "requestTimeEpoch": 1_700_000_000_000_i64,
        },
    })
    .to_string();
    let output = run(&["handle-event", "-"], Some(&event));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout_json(&output),
        json!({ "statusCode": 401, "body": "Unauthorized: No authentication token provided" })
    );

    let output = run(&["handle-event"], Some("{\"requestContext\": 5}"));
    assert_eq!(output.status.code(), Some(0));
    let response = stdout_json(&output);
    assert_eq!(response["statusCode"], 400);
    assert!(
        response["body"]
            .as_str()
            .unwrap()
            .starts_with("Invalid event:")
    );
}

#[test]
fn a_precompiled_component_that_does_not_fit_is_compiled_instead_with_a_warning() {
    let dir = test_cache_dir().join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join("stale.cwasm");
    // Not a wasmtime artifact of this build (as after an upgrade, or a
    // corrupted download).
    std::fs::write(&stale, b"\x7fELF not really a precompiled component").unwrap();
    let event = json!({
        "requestContext": {
            "eventType": "DISCONNECT",
            "connectionId": "abc=",
            "connectedAt": 0,
            "requestTimeEpoch": 0,
        },
    })
    .to_string();
    let args = [
        "--precompiled",
        stale.to_str().unwrap(),
        "--no-cache",
        "handle-event",
    ];
    let output = run(&args, Some(&event));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout_json(&output),
        json!({ "statusCode": 200, "body": "No records to disconnect." })
    );
    // A one-shot command logs warnings only...
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not fit this build"), "{stderr}");
    assert!(!stderr.contains("INFO"), "{stderr}");
    // ...unless RUST_LOG asks for more.
    let output = run_with_env(&args, Some(&event), &[("RUST_LOG", "info")]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("compiled the guest component"), "{stderr}");
}
