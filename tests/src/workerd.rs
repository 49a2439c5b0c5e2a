//! The edge Worker (`edge/cloudflare/`) under workerd, Cloudflare's Workers
//! runtime from npm: its build (`build.mjs`, once per process) and a running
//! `workerd serve`, for the end-to-end tests (`tests/e2e/edge.rs`) and the
//! edge benchmark (`examples/edge_flood.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

/// `edge/cloudflare/` in this repository.
pub fn edge_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../edge/cloudflare")
}

/// The workerd binary the edge's package-lock pins. Missing means the npm
/// packages were never installed: fail, never skip.
pub fn workerd_binary() -> PathBuf {
    let path = edge_dir().join("node_modules/workerd/bin/workerd");
    assert!(
        path.exists(),
        "{} is missing: the edge tests run the Worker under workerd from npm. Run \
         `npm ci --prefix edge/cloudflare` (./scripts/test does)",
        path.display()
    );
    path
}

/// Builds the Worker into `edge/cloudflare/dist/` (`build.mjs --if-needed`:
/// the component the host's build embeds, transpiled by jco) once per
/// process, and returns that directory.
pub fn build() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            workerd_binary();
            let output = Command::new("node")
                .arg(edge_dir().join("build.mjs"))
                .arg("--if-needed")
                .output()
                .map_err(|e| format!("running node (Node.js 20+ is needed): {e}"))?;
            if output.status.success() {
                Ok(edge_dir().join("dist"))
            } else {
                Err(format!(
                    "node edge/cloudflare/build.mjs failed ({}):\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The variables the edge reads; a test's workerd sees only those it sets.
const EDGE_VARIABLES: &[&str] = &[
    "AWS_REGION",
    "COGNITO_USER_POOL_ID",
    "COGNITO_CLIENT_ID",
    "COGNITO_JWKS_URL",
    "JWT_LEEWAY_SECONDS",
    "ORIGIN_URL",
    "EDGE_POLICY_INSTANCE",
];

/// A running `workerd serve`, killed when dropped.
pub struct Workerd {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Workerd {
    /// The edge Worker (`edge/cloudflare/workerd.capnp`) with this
    /// configuration, built first if needed.
    pub fn edge(env: &[(&str, &str)]) -> Workerd {
        build();
        Self::start(&edge_dir().join("workerd.capnp"), env)
    }

    /// The test-only conformance Worker (`edge/cloudflare/test/conformance.capnp`).
    pub fn conformance() -> Workerd {
        build();
        Self::start(&edge_dir().join("test/conformance.capnp"), &[])
    }

    /// `workerd serve CONFIG` with its `http` socket on a free loopback port
    /// and `env` over a clean slate of the edge's variables; waits until it
    /// listens.
    pub fn start(config: &Path, env: &[(&str, &str)]) -> Workerd {
        let mut command = Command::new(workerd_binary());
        for var in EDGE_VARIABLES {
            command.env_remove(var);
        }
        let mut child = command
            .arg("serve")
            .arg(config)
            .args(["--socket-addr", "http=127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting workerd");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout piped")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr piped")),
        ] {
            let (sink, address_tx) = (logs.clone(), address_tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("Listening on ") {
                        let _ = address_tx.send(url.trim().to_owned());
                    }
                    sink.lock().unwrap().push(line);
                }
            });
        }
        drop(address_tx);
        let Ok(base_url) = address_rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "workerd did not start listening; its output:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Workerd {
            child,
            base_url,
            logs,
        }
    }

    /// An HTTP URL on the Worker.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base_url)
    }

    /// A WebSocket URL on the Worker.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        self.url(path_and_query).replacen("http://", "ws://", 1)
    }

    /// Everything workerd (and the Worker's console) has printed so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
