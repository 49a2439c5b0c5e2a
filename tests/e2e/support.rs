//! Shared by the areas: a GET over HTTP; a Cognito user pool's tokens and
//! server; for the DynamoDB areas (`dynamodb`, `websocket`, `browser`,
//! `load_faults`), a host in DynamoDB mode driven over HTTP and a direct view
//! of the table.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use gitgazer_ws::dev::DevSigner;
use gitgazer_ws_tests::jwks_server::JwksServer;
use gitgazer_ws_tests::{Server, dynamodb_env, unix_now};
use serde_json::json;

pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// A server on `endpoint` with `table`, and a way to mint tokens.
pub struct Fixture {
    pub server: Server,
}

impl Fixture {
    pub fn start(endpoint: &str, table: &str, extra: &[(&str, &str)]) -> Fixture {
        let mut env = dynamodb_env(endpoint, table);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Fixture {
            server: Server::start_env(&env),
        }
    }

    pub async fn token(&self, sub: &str, groups: &[&str]) -> String {
        let url = self
            .server
            .url(&format!("/dev/token?sub={sub}&groups={}", groups.join(",")));
        let (status, token) = get(&url).await;
        assert_eq!(status, 200);
        token
    }

    pub async fn connect(&self, token: &str, connection_id: &str) -> (u16, String) {
        get(&self.server.url(&format!(
            "/connect?idToken={token}&connectionId={connection_id}"
        )))
        .await
    }

    pub async fn disconnect(&self, connection_id: &str) -> (u16, String) {
        get(&self
            .server
            .url(&format!("/disconnect?connectionId={connection_id}")))
        .await
    }
}

/// Every item of the table (every page, consistent reads).
pub async fn scan_items(
    endpoint: &str,
    table: &str,
) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let client = client(endpoint);
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        items.extend(page.items().iter().cloned());
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// A string attribute of an item, which must have it.
pub fn text(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(value)) => value.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

/// Every item of the table, as (integrationId, connectionId, sub, expiresAt).
pub async fn scan(endpoint: &str, table: &str) -> BTreeSet<(String, String, String, u64)> {
    let mut items = BTreeSet::new();
    for item in scan_items(endpoint, table).await {
        let expires_at = match item.get("expiresAt") {
            Some(AttributeValue::N(n)) => n.parse().unwrap(),
            other => panic!("expiresAt: {other:?}"),
        };
        match item.get("connectedAt") {
            Some(AttributeValue::S(v)) if v.ends_with('Z') && v.len() == 20 => {}
            other => panic!("connectedAt: {other:?}"),
        }
        items.insert((
            text(&item, "integrationId"),
            text(&item, "connectionId"),
            text(&item, "sub"),
            expires_at,
        ));
    }
    items
}

/// A client of the test's own, with explicit endpoint and dummy
/// credentials (no process-wide environment changes).
pub fn client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

pub fn keys(items: &BTreeSet<(String, String, String, u64)>) -> BTreeSet<(String, String)> {
    items
        .iter()
        .map(|(i, c, _, _)| (i.clone(), c.clone()))
        .collect()
}

/// Waits until the table holds exactly `expected` keys.
pub async fn wait_for_table(endpoint: &str, table: &str, expected: &BTreeSet<(String, String)>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = keys(&scan(endpoint, table).await);
        if &now == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "table: {} records, expected {}; extra {:?}, missing {:?}",
            now.len(),
            expected.len(),
            now.difference(expected).take(5).collect::<Vec<_>>(),
            expected.difference(&now).take(5).collect::<Vec<_>>(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stores a record as a host would (for connections no socket holds).
pub async fn put_record(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    integration: &str,
    connection: &str,
    expires_at: u64,
) {
    put_record_connected_at(
        client,
        table,
        integration,
        connection,
        expires_at,
        "2026-11-27T00:00:00Z",
    )
    .await;
}

/// [`put_record`] with its `connectedAt` (RFC 3339).
pub async fn put_record_connected_at(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    integration: &str,
    connection: &str,
    expires_at: u64,
    connected_at: &str,
) {
    client
        .put_item()
        .table_name(table)
        .item("integrationId", AttributeValue::S(integration.into()))
        .item("connectionId", AttributeValue::S(connection.into()))
        .item("sub", AttributeValue::S("ghost".into()))
        .item("connectedAt", AttributeValue::S(connected_at.into()))
        .item("expiresAt", AttributeValue::N(expires_at.to_string()))
        .send()
        .await
        .expect("put_item");
}

/// A Cognito user pool as the tests configure it: its tokens, signed by a
/// test key, and a Cognito-mode server whose key set comes from a
/// [`JwksServer`].
pub struct Pool {
    pub region: &'static str,
    pub id: &'static str,
    pub client: &'static str,
}

impl Pool {
    /// A token of `sub` in group `acme`, valid for ten minutes.
    pub fn token(&self, signer: &DevSigner, sub: &str) -> String {
        let now = unix_now();
        signer.sign(&json!({
            "sub": sub,
            "iss": format!("https://cognito-idp.{}.amazonaws.com/{}", self.region, self.id),
            "aud": self.client, "token_use": "id", "iat": now, "exp": now + 600,
            "cognito:groups": ["acme"],
        }))
    }

    /// `serve` in Cognito mode for this pool on a DynamoDB table
    /// (`dynamodb_env`'s variables; the pool's region, not the table's:
    /// dynalite takes any), info logs.
    pub fn server_on_table(&self, jwks: &JwksServer, dynamo: &[(String, String)]) -> Server {
        let mut env: Vec<(&str, &str)> = dynamo
            .iter()
            .filter(|(k, _)| k != "AWS_REGION")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        env.push(("RUST_LOG", "warn,gitgazer_ws=info"));
        self.server(jwks, &env)
    }

    /// `serve` in Cognito mode for this pool, plus `extra` variables.
    pub fn server(&self, jwks: &JwksServer, extra: &[(&str, &str)]) -> Server {
        let mut env = vec![
            ("AWS_REGION", self.region),
            ("COGNITO_USER_POOL_ID", self.id),
            ("COGNITO_CLIENT_ID", self.client),
            ("COGNITO_JWKS_URL", jwks.url.as_str()),
        ];
        env.extend_from_slice(extra);
        Server::start(&env)
    }
}
