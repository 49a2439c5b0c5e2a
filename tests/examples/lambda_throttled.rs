//! The packaged Lambda `bootstrap` at a small function's CPU share: init at
//! full speed, then every invocation throttled, as Lambda does (CPU in
//! proportion to memory, 1 769 MB = one vCPU; INIT unthrottled). The Runtime
//! API emulator moves the process into a CPU cgroup at its first
//! `GET /next` (cgroup v1 `cpu.cfs_quota_us`, or v2 `cpu.max`; needs root).
//! Measures, against dynalite and a local JWKS server: init (process start
//! to the first `/next`), the first CONNECT, and warm CONNECTs and
//! DISCONNECTs. A benchmark, not a test:
//!
//!     scripts/package-lambda && scripts/dynalite start && eval "$(scripts/dynalite env)"
//!     cargo run --release -p gitgazer-ws-tests --example lambda_throttled [-- RUNS]
//!
//! Sizes: 128 MB (7.2 % of a CPU), 512 MB (28.9 %), and unthrottled.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::lambda_emulator::{CpuThrottle, FunctionEnv, Outcome, RuntimeApiEmulator};
use gitgazer_ws_tests::{create_table, dynalite_endpoint, unique_table};
use serde_json::json;

/// Lambda's memory for one full vCPU.
const MB_PER_VCPU: f64 = 1769.0;
const WARM: usize = 20;

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let bootstrap =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lambda/package-x86_64/bootstrap");
    assert!(bootstrap.exists(), "run scripts/package-lambda first");
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let (region, pool, client) = ("eu-west-1", "eu-west-1_Cold1", "cold-client");
    let connect = common::connect_event(&signer, region, pool, client);
    let endpoint = dynalite_endpoint();
    let table = unique_table("lambda-throttled");
    create_table(&endpoint, &table);

    for memory in [Some(128u32), Some(512), None] {
        let percent = memory.map(|mb| f64::from(mb) / MB_PER_VCPU * 100.0);
        let (mut init, mut first, mut warm_connect, mut warm_disconnect) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut throttled = 0;
        for _ in 0..runs {
            let emulator = RuntimeApiEmulator::start().await;
            let started = Instant::now();
            let mut command = Command::new(&bootstrap);
            FunctionEnv {
                runtime_api: &emulator.address,
                memory_mb: memory.unwrap_or(1769),
                endpoint: &endpoint,
                table: &table,
                region,
                pool,
                client,
                jwks_url: &jwks.url,
            }
            .apply(&mut command);
            let mut child = command
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            if let Some(percent) = percent {
                match CpuThrottle::new(child.id(), percent) {
                    Ok(throttle) => emulator.throttle_at_first_next(throttle),
                    Err(why) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        eprintln!("skipped: cannot limit the function's CPU here ({why})");
                        return;
                    }
                }
            }
            let asked = Instant::now();
            let outcome = emulator.invoke(connect.clone()).await;
            first.push(asked.elapsed());
            init.push(emulator.first_next().expect("asked for an event") - started);
            assert_eq!(
                outcome,
                Outcome::Response(json!({"statusCode": 200, "body": "Connected."}))
            );
            for n in 0..WARM {
                let id = format!("warm-{n}=");
                let mut event = connect.clone();
                event["requestContext"]["connectionId"] = json!(id);
                let asked = Instant::now();
                let outcome = emulator.invoke(event).await;
                warm_connect.push(asked.elapsed());
                assert_eq!(
                    outcome,
                    Outcome::Response(json!({"statusCode": 200, "body": "Connected."}))
                );
                let disconnect = json!({"requestContext": {
                    "eventType": "DISCONNECT", "routeKey": "$disconnect", "connectionId": id,
                    "connectedAt": 0, "requestTimeEpoch": 0,
                }});
                let asked = Instant::now();
                let outcome = emulator.invoke(disconnect).await;
                warm_disconnect.push(asked.elapsed());
                assert!(
                    matches!(&outcome, Outcome::Response(r) if r["statusCode"] == 200),
                    "{outcome:?}"
                );
            }
            throttled += emulator.throttled_periods();
            child.kill().unwrap();
            child.wait().unwrap();
        }
        let at = |samples: &mut Vec<Duration>, q: f64| {
            samples.sort();
            let index = ((samples.len() as f64 * q) as usize).min(samples.len() - 1);
            samples[index].as_secs_f64() * 1000.0
        };
        let median = |samples: &mut Vec<Duration>| at(samples, 0.5);
        let size = match memory {
            Some(mb) => format!("{mb} MB ({:.1} % of a CPU after init)", percent.unwrap()),
            None => "unthrottled".to_owned(),
        };
        println!(
            "{size}, {runs} runs: init {:.1} ms, first CONNECT {:.1} ms, warm CONNECT {:.1} ms \
             (p90 {:.1}, max {:.1}), warm DISCONNECT {:.1} ms (p90 {:.1}, max {:.1}); medians, \
             {WARM} warm pairs a run; throttled in {throttled} periods of 100 ms",
            median(&mut init),
            median(&mut first),
            median(&mut warm_connect),
            at(&mut warm_connect, 0.9),
            at(&mut warm_connect, 1.0),
            median(&mut warm_disconnect),
            at(&mut warm_disconnect, 0.9),
            at(&mut warm_disconnect, 1.0),
        );
    }
}
