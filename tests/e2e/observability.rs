//! Metrics and readiness (issue: observability): a real Prometheus scrapes a
//! node the test drives, and what it reports equals what the test did; the
//! shipped dashboard and alert rules name only metrics a real scrape has,
//! and `promtool` accepts the rules; `/readyz` follows the key set.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::fault_proxy::{FaultProxy, PutFault};
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::{create_table, dynalite_endpoint, test_cache_dir, unique_table};
use serde_json::Value;

use crate::support::{Fixture, Pool, get};

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A Prometheus server (the distribution's) scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = test_cache_dir().join(format!("prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n  - job_name: gitgazer-ws\n    static_configs:\n      - targets: ['{target}']\n",
                repo_file("deploy/prometheus-alerts.yml").display()
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus (Debian package `prometheus`; .ci/run installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// One instant query's samples, as (labels, value).
    async fn query(&self, expr: &str) -> Vec<(Value, f64)> {
        let mut url = url::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", expr);
        let Ok(response) = reqwest::get(url).await else {
            return Vec::new();
        };
        let Ok(body) = response.text().await else {
            return Vec::new();
        };
        let Ok(body) = serde_json::from_str::<Value>(&body) else {
            return Vec::new();
        };
        body["data"]["result"]
            .as_array()
            .map(|samples| {
                samples
                    .iter()
                    .map(|s| {
                        let value = s["value"][1].as_str().unwrap().parse().unwrap();
                        (s["metric"].clone(), value)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits, until `deadline`, for `expr`'s one value to be `expected`;
    /// returns what it last saw.
    async fn wait_for(&self, expr: &str, expected: f64, deadline: Instant) -> Option<f64> {
        loop {
            let seen = self.query(expr).await.first().map(|(_, v)| *v);
            if seen == Some(expected) || Instant::now() > deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `gitgazer_ws_…` name in a text, histogram series folded into their
/// metric (`_bucket`, `_sum`, `_count`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("gitgazer_ws_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(name.to_owned());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_reports_what_the_node_did_and_the_shipped_rules_and_dashboard_fit() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("metrics");
    create_table(&endpoint, &table);
    let proxy = FaultProxy::start(&endpoint).await;
    let f = Fixture::start(&proxy.endpoint, &table, &[]);
    let prometheus = Prometheus::start(f.server.management_url.strip_prefix("http://").unwrap());

    // Two CONNECTs stored (two groups each), one per rejection class below.
    let token = f.token("alice", &["acme", "globex"]).await;
    assert_eq!(f.connect(&token, "c1").await.0, 200);
    assert_eq!(f.connect(&token, "c2").await.0, 200);
    let (status, _) = get(&f.server.url("/connect?connectionId=c3")).await;
    assert_eq!(status, 401);
    assert_eq!(f.connect("not-a-token", "c4").await.0, 401);
    let (head, signature) = token.rsplit_once('.').unwrap();
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let forged = format!("{head}.{flipped}{}", &signature[1..]);
    assert_eq!(f.connect(&forged, "c5").await.0, 401);
    // The store refusing past the SDK's retries: 429, counted as throttled.
    proxy.set(PutFault::Throttle { times: 1000 });
    assert_eq!(f.connect(&token, "c6").await.0, 429);
    proxy.set(PutFault::None);
    // One DISCONNECT, and a delivery to c2, which has no socket here: gone.
    assert_eq!(f.disconnect("c1").await.0, 200);
    let delivered = reqwest::Client::new()
        .post(f.server.management("/integrations/globex/events"))
        .body("hello")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let delivered: Value = serde_json::from_str(&delivered).unwrap();
    assert_eq!(delivered["gone"], 1, "{delivered}");

    let expectations = [
        (
            r#"gitgazer_ws_connects_total{status="200",rejection="none"}"#,
            2.0,
        ),
        (
            r#"gitgazer_ws_connects_total{status="401",rejection="missing"}"#,
            1.0,
        ),
        (
            r#"gitgazer_ws_connects_total{status="401",rejection="malformed"}"#,
            1.0,
        ),
        (
            r#"gitgazer_ws_connects_total{status="401",rejection="bad-signature"}"#,
            1.0,
        ),
        (
            r#"gitgazer_ws_connects_total{status="429",rejection="none"}"#,
            1.0,
        ),
        (r#"gitgazer_ws_disconnects_total{status="200"}"#, 1.0),
        ("gitgazer_ws_records_written_total", 4.0),
        // c1's two by its DISCONNECT, c2's two as gone.
        ("gitgazer_ws_records_deleted_total", 4.0),
        (
            r#"gitgazer_ws_store_calls_total{operation="put_all",outcome="throttled"}"#,
            1.0,
        ),
        (
            r#"gitgazer_ws_store_calls_total{operation="put_all",outcome="ok"}"#,
            2.0,
        ),
        (r#"gitgazer_ws_deliveries_total{outcome="gone"}"#, 1.0),
        (r#"gitgazer_ws_deliveries_total{outcome="delivered"}"#, 0.0),
        (
            r#"gitgazer_ws_policy_call_duration_seconds_count{export="handle-connect"}"#,
            6.0,
        ),
        ("gitgazer_ws_key_set_keys", 1.0),
    ];
    // Scraped every second: all of it well within a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wrong = Vec::new();
    for (expr, expected) in expectations {
        let seen = prometheus.wait_for(expr, expected, deadline).await;
        if seen != Some(expected) {
            wrong.push(format!(
                "{expr}: expected {expected}, Prometheus has {seen:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // The shipped dashboard and alert rules use only names a scrape has.
    let (status, scrape) = get(&f.server.management("/metrics")).await;
    assert_eq!(status, 200);
    let scraped = metric_names(&scrape);
    for file in [
        "deploy/grafana-dashboard.json",
        "deploy/prometheus-alerts.yml",
    ] {
        let text = std::fs::read_to_string(repo_file(file)).unwrap();
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file} names {used:?}");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{file} uses {missing:?}, not in a scrape:\n{scrape}"
        );
    }
    // promtool (shipped with Prometheus) accepts the rules.
    let output = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo_file("deploy/prometheus-alerts.yml"))
        .output()
        .expect("running promtool (Debian package `prometheus`)");
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // No label carries a client's value: no connection id, sub or group.
    for client_value in ["c1", "c2", "alice", "acme", "globex"] {
        assert!(
            !scrape.contains(&format!("\"{client_value}\"")),
            "a label carries {client_value:?}:\n{scrape}"
        );
    }
}

#[tokio::test]
async fn readyz_is_503_until_the_key_set_loads_then_200() {
    const POOL: Pool = Pool {
        region: "eu-west-1",
        id: "eu-west-1_Ready1",
        client: "ready-client",
    };
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Status(503)).await;
    let server = POOL.server(&jwks, &[]);
    let (status, body) = get(&server.management("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["reason"], "key set not loaded");
    let (status, _) = get(&server.url("/healthz")).await;
    assert_eq!(status, 200, "liveness stays 200");

    jwks.set(JwksMode::Serve(signer.jwks().to_owned()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&server.management("/readyz")).await;
        if status == 200 {
            assert_eq!(body, r#"{"ready":true}"#);
            break;
        }
        assert!(Instant::now() < deadline, "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
