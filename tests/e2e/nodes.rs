//! Several self-hosted nodes on one table (issue: several nodes): three
//! Cognito-mode nodes on one dynalite table behind a real nginx (round
//! robin, WebSocket upgrade); a delivery from any node, or from
//! `gitgazer-ws deliver`, reaches every socket once; a killed node's records
//! stay until the node is back, and then go; nodes refuse each other
//! without the shared management token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::{JwksMode, JwksServer};
use gitgazer_ws_tests::{
    Server, binary_path, create_table, dynalite_endpoint, dynamodb_env, test_cache_dir,
    unique_table,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::{Pool, scan_items, text};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const POOL: Pool = Pool {
    region: "eu-west-1",
    id: "eu-west-1_Nodes1",
    client: "nodes-client",
};
const TOKEN: &str = "a-management-token-shared-by-all-three-nodes-0123456789";
const CLIENTS: usize = 300;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx (the distribution's binary) on `port`, round robin over `upstreams`,
/// WebSocket upgrades passed through.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(port: u16, upstreams: &[u16]) -> Nginx {
        let dir = test_cache_dir().join(format!("nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = upstreams
            .iter()
            .map(|port| format!("    server 127.0.0.1:{port};\n"))
            .collect();
        let config = format!(
            r#"worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  upstream nodes {{
{servers}  }}
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 1h;
    }}
  }}
}}
"#,
            dir = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), config).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nginx (scripts/install-test-tools installs it)");
        wait_listening(port);
        Nginx { child }
    }
}

impl Drop for Nginx {
    /// SIGTERM (nginx's fast shutdown: the master stops its workers), then
    /// SIGKILL if it is still there after 5 s. A SIGKILL alone would leave
    /// the workers running.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_binary() -> String {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return candidate.into();
        }
    }
    "nginx".into()
}

fn wait_listening(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One node: its fixed ports (a restart takes the same ones).
struct Node {
    public: u16,
    management: u16,
}

impl Node {
    fn start(&self, jwks: &JwksServer, dynamo: &[(String, String)]) -> Server {
        let public = self.public.to_string();
        let management = format!("127.0.0.1:{}", self.management);
        // The pool's region, not the table's (dynalite takes any).
        let mut env: Vec<(&str, &str)> = dynamo
            .iter()
            .filter(|(k, _)| k != "AWS_REGION")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.extend([
            ("PORT", public.as_str()),
            ("MANAGEMENT_BIND", management.as_str()),
            ("MANAGEMENT_TOKEN", TOKEN),
            ("MAX_WEBSOCKETS_PER_USER", "100"),
            ("RUST_LOG", "warn,gitgazer_ws=info"),
        ]);
        POOL.server(jwks, &env)
    }
}

/// Every record's connection id and endpoint.
async fn records(endpoint: &str, table: &str) -> BTreeMap<String, String> {
    scan_items(endpoint, table)
        .await
        .iter()
        .map(|item| (text(item, "connectionId"), text(item, "endpoint")))
        .collect()
}

/// `POST /integrations/acme/events` on a node's management listener.
async fn deliver_from(server: &Server, token: Option<&str>, message: &str) -> (u16, String) {
    let mut request = reqwest::Client::new()
        .post(server.management("/integrations/acme/events"))
        .body(message.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `gitgazer-ws deliver` against the table, with or without the token.
fn deliver_command(
    dynamo: &[(String, String)],
    token: Option<&str>,
    message: &str,
) -> (i32, String) {
    let mut command = Command::new(binary_path());
    command
        .envs(dynamo.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("MANAGEMENT_TOKEN")
        .env_remove("WEBSOCKET_API_ENDPOINT")
        .args(["deliver", "--integration", "acme"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        command.env("MANAGEMENT_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(message.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    )
}

fn report(delivered: usize, gone: usize, failed: usize) -> serde_json::Value {
    serde_json::json!({"delivered": delivered, "gone": gone, "failed": failed, "expired": 0, "expiredAuth": 0})
}

/// The next text frame within `wait` (pings skipped); `None` on silence
/// or a closed socket.
async fn next_text(socket: &mut Socket, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// Each socket's next message is `message`, and nothing else follows
/// within a moment (exactly once).
async fn all_received_once(sockets: &mut [Socket], message: &str) {
    let received = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|socket| next_text(socket, Duration::from_secs(10))),
    )
    .await;
    let missing = received
        .iter()
        .filter(|text| text.as_deref() != Some(message))
        .count();
    assert_eq!(
        missing, 0,
        "{missing} sockets did not receive {message:?} next"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_nginx_reach_every_socket_and_a_dead_node_loses_no_records() {
    let endpoint = dynalite_endpoint();
    let table = unique_table("nodes");
    create_table(&endpoint, &table);
    let dynamo = dynamodb_env(&endpoint, &table);
    let signer = DevSigner::generate().unwrap();
    let jwks = JwksServer::start(JwksMode::Serve(signer.jwks().to_owned())).await;
    let nodes: Vec<Node> = (0..3)
        .map(|_| Node {
            public: free_port(),
            management: free_port(),
        })
        .collect();
    let mut servers: Vec<Server> = nodes
        .iter()
        .map(|node| node.start(&jwks, &dynamo))
        .collect();
    let lb_port = free_port();
    let _nginx = Nginx::start(lb_port, &nodes.iter().map(|n| n.public).collect::<Vec<_>>());

    // 300 clients of ten users, through nginx, ten at a time.
    let tokens: Vec<String> = (0..10)
        .map(|i| POOL.token(&signer, &format!("user-{i}")))
        .collect();
    let mut sockets = Vec::new();
    for chunk in (0..CLIENTS).collect::<Vec<_>>().chunks(10) {
        let opening = chunk.iter().map(|&n| {
            let mut request = format!("ws://127.0.0.1:{lb_port}/ws")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(&format!("bearer, {}", tokens[n % 10])).unwrap(),
            );
            async move {
                let (socket, _) = tokio_tungstenite::connect_async(request)
                    .await
                    .expect("upgrade through nginx");
                socket
            }
        });
        sockets.extend(futures_util::future::join_all(opening).await);
    }
    let stored = records(&endpoint, &table).await;
    assert_eq!(stored.len(), CLIENTS, "one record per socket");
    let per_node: BTreeMap<&str, usize> = stored.values().fold(BTreeMap::new(), |mut n, e| {
        *n.entry(e.as_str()).or_default() += 1;
        n
    });
    eprintln!("ledger: {CLIENTS} sockets; records per node endpoint {per_node:?}");
    assert_eq!(
        per_node.len(),
        3,
        "spread over the three nodes: {per_node:?}"
    );
    for node in &nodes {
        let prefix = format!("http://127.0.0.1:{}/n/", node.management);
        assert!(
            per_node.keys().any(|e| e.starts_with(&prefix)),
            "a node's records name its advertised management URL: {per_node:?}"
        );
    }

    // A delivery from node 1's management API, then one from the command.
    let (status, body) = deliver_from(&servers[0], Some(TOKEN), "event-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        report(CLIENTS, 0, 0)
    );
    all_received_once(&mut sockets, "event-1").await;
    let dynamo_for_command = dynamo.clone();
    let (code, out) = tokio::task::spawn_blocking(move || {
        deliver_command(&dynamo_for_command, Some(TOKEN), "event-2")
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        report(CLIENTS, 0, 0)
    );
    all_received_once(&mut sockets, "event-2").await;

    // Without the token, or with another: refused (401) and counted failed
    // by the command; the management API itself refuses it, loopback too.
    let dynamo_for_command = dynamo.clone();
    let (code, out) = tokio::task::spawn_blocking(move || {
        let without = deliver_command(&dynamo_for_command, None, "stray");
        let wrong = deliver_command(
            &dynamo_for_command,
            Some("another-token-of-enough-length-0123456789abcdef"),
            "stray",
        );
        assert_eq!(without, wrong, "no token and a wrong one alike");
        without
    })
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        report(0, 0, CLIENTS)
    );
    for token in [
        None,
        Some("another-token-of-enough-length-0123456789abcdef"),
    ] {
        let (status, _) = deliver_from(&servers[0], token, "stray").await;
        assert_eq!(status, 401);
    }
    assert_eq!(records(&endpoint, &table).await, stored, "nothing deleted");

    // Node 2 dies (SIGKILL: no DISCONNECT runs). A delivery reaches the rest,
    // counts node 2's connections failed and deletes nothing.
    let node_two = servers[1].management_url.clone();
    let on_two: BTreeSet<String> = stored
        .iter()
        .filter(|(_, e)| e.starts_with(&format!("{node_two}/n/")))
        .map(|(id, _)| id.clone())
        .collect();
    let (two, rest) = (on_two.len(), CLIENTS - on_two.len());
    servers[1].kill();
    let (status, body) = deliver_from(&servers[0], Some(TOKEN), "event-3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        report(rest, 0, two)
    );
    assert_eq!(
        records(&endpoint, &table).await,
        stored,
        "a dead node's records stay"
    );
    eprintln!(
        "ledger: node 2 killed; expected {CLIENTS}, stored {}, deleted 0",
        stored.len()
    );

    // Node 2 back at the same address, a new incarnation: the next delivery
    // finds the old incarnation's connections gone and deletes them.
    servers[1] = nodes[1].start(&jwks, &dynamo);
    let (status, body) = deliver_from(&servers[2], Some(TOKEN), "event-4").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        report(rest, two, 0)
    );
    let left = records(&endpoint, &table).await;
    let live: BTreeMap<String, String> = stored
        .into_iter()
        .filter(|(id, _)| !on_two.contains(id))
        .collect();
    assert_eq!(left, live, "exactly the records of the live sockets");
    eprintln!(
        "ledger: node 2 restarted; expected {rest}, stored {}, deleted {two}",
        left.len()
    );

    // The live sockets got events 3 and 4, once each.
    let mut alive = Vec::new();
    for mut socket in sockets {
        if let Some(text) = next_text(&mut socket, Duration::from_secs(10)).await {
            alive.push((text, socket));
        }
    }
    assert_eq!(alive.len(), rest, "node 2's clients lost their sockets");
    assert!(alive.iter().all(|(text, _)| text == "event-3"));
    let mut alive: Vec<Socket> = alive.into_iter().map(|(_, socket)| socket).collect();
    all_received_once(&mut alive, "event-4").await;
}

/// Without the token, a node that advertises a non-loopback URL does not
/// start (its management listener would refuse every other node); a short
/// token is refused, and never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_advertise_url_without_the_token_refuses_to_start() {
    let stderr = refused_start(&[("ADVERTISE_URL", "http://10.0.0.5:8082")]);
    assert!(
        stderr.contains("ADVERTISE_URL") && stderr.contains("MANAGEMENT_TOKEN"),
        "{stderr}"
    );
    let stderr = refused_start(&[("MANAGEMENT_TOKEN", "tiny-secret")]);
    assert!(stderr.contains("MANAGEMENT_TOKEN is 11 bytes"), "{stderr}");
    assert!(
        !stderr.contains("tiny-secret"),
        "the token itself is never printed: {stderr}"
    );
}

/// `serve` with `env`, which must exit (within 60 s) with an error: its
/// standard error.
fn refused_start(env: &[(&str, &str)]) -> String {
    let mut child = Command::new(binary_path())
        .env_remove("MANAGEMENT_TOKEN")
        .env_remove("ADVERTISE_URL")
        .env("MANAGEMENT_BIND", "127.0.0.1:0")
        .env("GITGAZER_WS_CACHE_DIR", test_cache_dir())
        .envs(env.iter().copied())
        .args(["serve", "--port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve started with {env:?}; it must refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    stderr
}
