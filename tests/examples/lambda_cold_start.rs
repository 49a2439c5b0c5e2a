//! Cold start of the packaged Lambda `bootstrap`: from process start to the
//! first CONNECT (valid token, records written to a local dynalite: the
//! Lambda entry needs a table) answered to a Runtime API emulator on
//! 127.0.0.1, plus the process's peak RSS. A benchmark, not a test: run it
//! after `scripts/package-lambda`, with dynalite running:
//!
//!     scripts/dynalite start && eval "$(scripts/dynalite env)"
//!     cargo run --release -p gitgazer-ws-tests --example lambda_cold_start [-- RUNS [arm64]]
//!
//! `arm64` runs the arm64 package's bootstrap under qemu-aarch64 (user-mode
//! emulation, scripts/install-cross): a figure of its own, not comparable to
//! a native or a Graviton cold start. Its peak RSS is the emulator's.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::lambda_emulator::{FunctionEnv, Outcome, RuntimeApiEmulator};
use gitgazer_ws_tests::{create_table, dynalite_endpoint, unique_table};
use serde_json::json;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let arch = std::env::args().nth(2).unwrap_or_else(|| "x86_64".into());
    let bootstrap = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../target/lambda/package-{arch}/bootstrap"));
    assert!(
        bootstrap.exists(),
        "run scripts/package-lambda first ({arch})"
    );
    let command = || match arch.as_str() {
        "arm64" => {
            let mut command = Command::new("qemu-aarch64");
            command.arg(&bootstrap);
            command
        }
        _ => Command::new(&bootstrap),
    };

    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let (region, pool, client) = ("eu-west-1", "eu-west-1_Cold1", "cold-client");
    let event = common::connect_event(&signer, region, pool, client);
    let endpoint = dynalite_endpoint();
    let table = unique_table("lambda-cold");
    create_table(&endpoint, &table);

    let mut times = Vec::new();
    let mut peak_rss_kib = Vec::new();
    for _ in 0..runs {
        let emulator = RuntimeApiEmulator::start().await;
        let started = Instant::now();
        let mut command = command();
        FunctionEnv {
            runtime_api: &emulator.address,
            memory_mb: 128,
            endpoint: &endpoint,
            table: &table,
            region,
            pool,
            client,
            jwks_url: &jwks.url,
        }
        .apply(&mut command);
        let mut child = command
            .env("QEMU_LD_PREFIX", "/usr/aarch64-linux-gnu")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let outcome = emulator.invoke(event.clone()).await;
        times.push(started.elapsed());
        assert_eq!(
            outcome,
            Outcome::Response(json!({"statusCode": 200, "body": "Connected."}))
        );
        peak_rss_kib.push(peak_rss(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    times.sort();
    peak_rss_kib.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{arch}{}: cold start to first CONNECT answered, {runs} runs: min {:.1} ms, median {:.1} ms, max {:.1} ms; peak RSS median {} KiB",
        if arch == "arm64" {
            " under qemu-aarch64 (emulated)"
        } else {
            ""
        },
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        peak_rss_kib[peak_rss_kib.len() / 2]
    );
}

/// VmHWM of a running process, in KiB (0 if unreadable).
fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
