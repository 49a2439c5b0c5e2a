//! Cold start of the `gitgazer-ws` binary with the embedded store: from
//! process start to the first CONNECT answered (`handle-event` on a CONNECT
//! with a valid RS256 token, key set from a file, precompiled component),
//! timed by hyperfine, peak RSS by `/usr/bin/time -v`. A benchmark, not a
//! test (figures in BENCHMARKS.md):
//!
//!     scripts/build
//!     cargo run --release -p gitgazer-ws-tests --example cold_start [-- RUNS]
//!
//! Prints the exact command it measures, so it can be re-run by hand.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::binary_path;
use serde_json::{Value, json};

const REGION: &str = "eu-west-1";
const POOL: &str = "eu-west-1_ColdStart";
const CLIENT: &str = "cold-start-client";

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let dir = std::env::temp_dir().join(format!("gitgazer-ws-cold-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_fixtures(&dir);

    let binary = binary_path();
    let artifact = dir.join("gitgazer-ws.cwasm");
    let status = Command::new(&binary)
        .args(["--no-cache", "compile", "--output"])
        .arg(&artifact)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "gitgazer-ws compile failed");

    let env = [
        ("AWS_REGION", REGION.to_owned()),
        ("COGNITO_USER_POOL_ID", POOL.to_owned()),
        ("COGNITO_CLIENT_ID", CLIENT.to_owned()),
        (
            "COGNITO_JWKS_URL",
            dir.join("jwks.json").display().to_string(),
        ),
        ("GITGAZER_WS_PRECOMPILED", artifact.display().to_string()),
        ("GITGAZER_WS_NO_CACHE", "true".to_owned()),
    ];
    let event = dir.join("connect.json");
    let command = format!("{} handle-event {}", binary.display(), event.display());

    // Once by hand: the answer must be a stored CONNECT.
    let output = Command::new(&binary)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("handle-event")
        .arg(&event)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let answer: Value = serde_json::from_slice(&output.stdout).expect("a JSON answer");
    assert_eq!(
        answer,
        json!({"statusCode": 200, "body": "Connected."}),
        "the CONNECT must be accepted"
    );

    let export = dir.join("hyperfine.json");
    let status = Command::new("hyperfine")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["--shell=none", "--warmup", "5", "--runs", &runs.to_string()])
        .arg("--export-json")
        .arg(&export)
        .arg(&command)
        .status()
        .expect("hyperfine is needed (apt install hyperfine)");
    assert!(status.success(), "hyperfine failed");
    let report: Value = serde_json::from_slice(&std::fs::read(&export).unwrap()).unwrap();
    let result = &report["results"][0];
    let ms = |name: &str| result[name].as_f64().unwrap() * 1000.0;

    let mut peaks: Vec<u64> = (0..10)
        .map(|_| {
            let output = Command::new("/usr/bin/time")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .arg("-v")
                .arg(&binary)
                .arg("handle-event")
                .arg(&event)
                .stdout(Stdio::null())
                .output()
                .expect("/usr/bin/time is needed (apt install time)");
            let stderr = String::from_utf8_lossy(&output.stderr);
            stderr
                .lines()
                .find_map(|line| {
                    line.trim()
                        .strip_prefix("Maximum resident set size (kbytes): ")
                })
                .and_then(|kib| kib.parse().ok())
                .expect("a peak RSS line")
        })
        .collect();
    peaks.sort();

    println!("\nmeasured: {command}");
    println!("with: {}", env.map(|(k, v)| format!("{k}={v}")).join(" "));
    println!(
        "cold start to first CONNECT answered, {runs} runs: min {:.2} ms, median {:.2} ms, mean {:.2} ms, max {:.2} ms; peak RSS median {:.1} MiB (max {:.1} MiB)",
        ms("min"),
        ms("median"),
        ms("mean"),
        ms("max"),
        peaks[peaks.len() / 2] as f64 / 1024.0,
        peaks[peaks.len() - 1] as f64 / 1024.0,
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A key set, and a CONNECT event whose token it verifies (valid for an hour).
fn write_fixtures(dir: &Path) {
    let signer = DevSigner::generate().unwrap();
    let event = common::connect_event(&signer, REGION, POOL, CLIENT);
    std::fs::write(dir.join("jwks.json"), signer.jwks()).unwrap();
    std::fs::write(dir.join("connect.json"), event.to_string()).unwrap();
}
