//! Helpers for the end-to-end tests: run the real `gitgazer-ws` binary, find
//! its port, collect its logs; build tokens by hand for negative cases; run
//! dynalite and a fault-injecting proxy in front of it; generate the policy's
//! conformance set; build the edge Worker and run it under workerd.

pub mod conformance;
pub mod fault_proxy;
pub mod jwks_server;
pub mod lambda_emulator;
pub mod workerd;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The release binary the README's build produces (`GITGAZER_WS_BIN`
/// overrides). The test command builds it before running the tests.
pub fn binary_path() -> PathBuf {
    let path = std::env::var_os("GITGAZER_WS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/gitgazer-ws")
        });
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --release`, or run ./scripts/test)",
        path.display()
    );
    path
}

/// A test-local cache directory, so tests never touch the user's cache.
pub fn test_cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-cache")
}

/// A running `gitgazer-ws serve`, killed when dropped.
pub struct Server {
    child: Child,
    /// The public listener.
    pub base_url: String,
    /// The management listener.
    pub management_url: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `serve` on a free port (and the management listener on a free
    /// loopback port) with the given env (over a clean slate of the handler's
    /// own variables; `PORT` and `MANAGEMENT_BIND` in it win) and waits until
    /// both listen.
    pub fn start(env: &[(&str, &str)]) -> Server {
        Self::start_with_args(env, &[])
    }

    /// [`Server::start`] with owned variables (e.g. from [`dynamodb_env`]).
    pub fn start_env(env: &[(String, String)]) -> Server {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_with_args(&env, &[])
    }

    pub fn start_with_args(env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::start_wrapped(&[], env, args)
    }

    /// [`Server::start_with_args`] run through a wrapper command, e.g.
    /// `["prlimit", "--nofile=1024:1024", "--"]`.
    pub fn start_wrapped(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Server {
        let binary = binary_path();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        for var in [
            "AWS_REGION",
            "COGNITO_USER_POOL_ID",
            "COGNITO_CLIENT_ID",
            "COGNITO_JWKS_URL",
            "TABLE_NAME",
            "DYNAMO_DB_CONNECTIONS_TABLE_ARN",
            "DYNAMO_DB_TABLE_CONNECTIONS_CONNECTION_ID_INDEX",
            "PORT",
            "RUST_LOG",
            "ADVERTISE_URL",
            "MANAGEMENT_TOKEN",
            "WEBSOCKET_API_ENDPOINT",
            "AUTH_GRACE_SECONDS",
        ] {
            command.env_remove(var);
        }
        command
            .args(["--log-format", "json", "serve"])
            .args(args)
            .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
            .env("PORT", "0")
            .env("MANAGEMENT_BIND", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting gitgazer-ws");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (address_tx, address_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(listening) = listening_address(&line) {
                    let _ = address_tx.send(listening);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (mut public, mut management) = (None, None);
        while public.is_none() || management.is_none() {
            let Ok((which, address)) = address_rx.recv_timeout(Duration::from_secs(120)) else {
                let _ = child.kill();
                panic!(
                    "gitgazer-ws did not start listening; its log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            };
            match which {
                Listener::Public => public = Some(address),
                Listener::Management => management = Some(address),
            }
        }
        Server {
            child,
            base_url: format!("http://{}", public.unwrap()),
            management_url: format!("http://{}", management.unwrap()),
            logs,
        }
    }

    /// A URL on the public listener.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{}", self.base_url, path_and_query)
    }

    /// A URL on the management listener.
    pub fn management(&self, path_and_query: &str) -> String {
        format!("{}{}", self.management_url, path_and_query)
    }

    /// Everything the server has logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far (user + system), from
    /// `/proc/<pid>/stat` (clock ticks of 10 ms).
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .expect("reading /proc/<pid>/stat");
        // Fields after the command name (which may hold spaces), from 3 on.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("a stat line")
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// The process's peak resident set size so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("reading /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status")
    }

    /// Sends SIGTERM, as a service manager stopping the host would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
    }

    /// Requests for `path` in its access log (the `http` lines, debug level).
    pub fn logged_requests(&self, path: &str) -> usize {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "http" && line["fields"]["path"] == path)
            .count()
    }

    /// CONNECT decisions so far: `gitgazer_ws_connects_total`, every label,
    /// from its `/metrics`.
    pub async fn connect_decisions(&self) -> u64 {
        let scrape = reqwest::get(self.management("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the scrape");
        scrape
            .lines()
            .filter(|line| line.starts_with("gitgazer_ws_connects_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// SIGKILL, as a crash would: nothing of the process runs after it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping the killed server");
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Listener {
    Public,
    Management,
}

/// Which listener a `listening` log line announces, and its address.
fn listening_address(line: &str) -> Option<(Listener, String)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    let which = match fields.get("message")?.as_str()? {
        "listening" => Listener::Public,
        "management listening" => Listener::Management,
        _ => return None,
    };
    Some((which, fields.get("address")?.as_str()?.to_owned()))
}

/// A token-shaped string from arbitrary header and claims JSON and raw
/// signature bytes, for cases no real signer would make.
pub fn hand_made_token(header: &str, claims: &str, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// Seconds since the Unix epoch: the host's clock.
pub use gitgazer_ws::clock::unix_now;

/// The dynalite that `scripts/test` starts (`AWS_ENDPOINT_URL_DYNAMODB`).
/// Missing means the tests were run without it: fail, never skip.
pub fn dynalite_endpoint() -> String {
    std::env::var("AWS_ENDPOINT_URL_DYNAMODB").unwrap_or_else(|_| {
        panic!(
            "AWS_ENDPOINT_URL_DYNAMODB is not set: the DynamoDB tests need dynalite. Run \
             ./scripts/test, or `scripts/dynalite start && eval \"$(scripts/dynalite env)\"` first"
        )
    })
}

/// The env a host needs to reach a DynamoDB-protocol endpoint with dummy
/// credentials.
pub fn dynamodb_env(endpoint: &str, table: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL_DYNAMODB".into(), endpoint.into()),
        ("AWS_ACCESS_KEY_ID".into(), "local".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "local".into()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("TABLE_NAME".into(), table.into()),
    ]
}

/// A table name no other test uses.
pub fn unique_table(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        unix_now(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Runs `gitgazer-ws table create` against an endpoint.
pub fn create_table(endpoint: &str, table: &str) {
    let output = Command::new(binary_path())
        .args(["table", "create"])
        .envs(dynamodb_env(endpoint, table))
        .output()
        .expect("running gitgazer-ws table create");
    assert!(
        output.status.success(),
        "table create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A dynalite process of a test's own, persisted in a directory so that it
/// can be killed and started again with its data.
pub struct OwnDynalite {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl OwnDynalite {
    pub fn start(dir: PathBuf) -> OwnDynalite {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut dynalite = OwnDynalite {
            child: None,
            port,
            dir,
        };
        dynalite.restart();
        dynalite
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// but nothing is answered until [`OwnDynalite::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT); it then works through what
    /// queued up meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("dynalite is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts it again on the same port and data directory; waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.kill();
        let cli =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dynalite/node_modules/dynalite/cli.js");
        assert!(
            cli.exists(),
            "{} is missing: run `npm ci --prefix tests/dynalite` (./scripts/test does)",
            cli.display()
        );
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new("node")
            .arg(cli)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--createTableMs",
                "0",
                "--deleteTableMs",
                "0",
                "--updateTableMs",
                "0",
            ])
            .arg("--path")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dynalite with node");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "dynalite did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OwnDynalite {
    fn drop(&mut self) {
        self.kill();
    }
}
