//! Several self-hosted nodes on one table: who this node is, how nodes
//! prove themselves to each other, and posting to another node's sockets.
//!
//! Each record names where its connection lives (`endpoint`). A node's
//! endpoint is its advertised management URL plus `/n/{incarnation}`, an id
//! drawn at every start: sockets die with their process, so an endpoint of
//! an earlier incarnation names connections that are certainly gone, and
//! the node at that address says so (410) without keeping any state.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use subtle::ConstantTimeEq;

use super::{Closing, ConnectionSender, SendError};

/// The path segment before an incarnation in a node's endpoint.
pub const INCARNATION_SEGMENT: &str = "n";

/// The shortest `MANAGEMENT_TOKEN` accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 32;

/// The shared secret every management request carries when it is set
/// (`Authorization: Bearer <token>`). Never printed.
#[derive(Clone)]
pub struct ManagementToken(Arc<str>);

impl std::fmt::Debug for ManagementToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagementToken(…)")
    }
}

impl ManagementToken {
    /// At least [`MIN_TOKEN_BYTES`] of visible ASCII (it travels in a header).
    pub fn new(token: &str) -> anyhow::Result<Self> {
        if token.len() < MIN_TOKEN_BYTES {
            anyhow::bail!(
                "MANAGEMENT_TOKEN is {} bytes; it must be at least {MIN_TOKEN_BYTES} \
                 (e.g. `openssl rand -hex 32`)",
                token.len()
            );
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            anyhow::bail!(
                "MANAGEMENT_TOKEN must be visible ASCII (no spaces or control characters)"
            );
        }
        Ok(Self(token.into()))
    }

    /// Whether an `Authorization` header value carries this token; the
    /// comparison takes the same time wherever the first difference is.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        bool::from(presented.ct_eq(self.0.as_bytes()))
    }

    fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// This process as one node: where others reach its sockets.
#[derive(Debug, Clone)]
pub struct Node {
    advertise_url: String,
    incarnation: String,
    token: Option<ManagementToken>,
}

impl Node {
    /// `advertise_url`: the management listener's URL as other nodes reach
    /// it (`None`: `management`, the listener's own address). Without a
    /// token the management listener answers loopback peers only, so an
    /// address other hosts would use is refused.
    pub fn new(
        advertise_url: Option<&str>,
        management: SocketAddr,
        token: Option<ManagementToken>,
    ) -> anyhow::Result<Self> {
        let advertise_url = match advertise_url.filter(|url| !url.is_empty()) {
            Some(url) => parse_advertise_url(url)?,
            None => default_advertise_url(management),
        };
        if token.is_none() && !is_loopback_url(&advertise_url) {
            anyhow::bail!(
                "ADVERTISE_URL {advertise_url} is not a loopback address, but MANAGEMENT_TOKEN \
                 is not set: without it the management listener answers loopback peers only, \
                 so other nodes could not post to this node's sockets (and must not be able to \
                 without a secret). Set MANAGEMENT_TOKEN (the same on every node, at least \
                 {MIN_TOKEN_BYTES} bytes)"
            );
        }
        Ok(Self {
            advertise_url,
            incarnation: new_incarnation(),
            token,
        })
    }

    /// What this node's records say: `{advertise_url}/n/{incarnation}`.
    pub fn endpoint(&self) -> String {
        format!(
            "{}/{INCARNATION_SEGMENT}/{}",
            self.advertise_url, self.incarnation
        )
    }

    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn token(&self) -> Option<&ManagementToken> {
        self.token.as_ref()
    }
}

/// 16 hex digits from the OS's random source.
fn new_incarnation() -> String {
    let id = uuid::Uuid::new_v4();
    id.simple().to_string()[..16].to_owned()
}

fn parse_advertise_url(text: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(text)
        .map_err(|e| anyhow::anyhow!("ADVERTISE_URL {text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        anyhow::bail!("ADVERTISE_URL must be an http(s) URL with a host, not {text:?}");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        anyhow::bail!("ADVERTISE_URL must have no user, query or fragment: {text:?}");
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `http://{address}`; an unspecified address (`0.0.0.0`, `::`) becomes
/// loopback, the one address of it every local client can use.
fn default_advertise_url(management: SocketAddr) -> String {
    let ip = if management.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        management.ip()
    };
    format!("http://{}", SocketAddr::new(ip, management.port()))
}

fn is_loopback_url(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Whether `endpoint` names a self-hosted node (`…/n/{incarnation}`).
pub fn is_node_endpoint(endpoint: &str) -> bool {
    let mut segments = endpoint.trim_end_matches('/').rsplit('/');
    let incarnation = segments.next().unwrap_or_default();
    segments.next() == Some(INCARNATION_SEGMENT)
        && !incarnation.is_empty()
        && incarnation.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Posts to another node's sockets through its management listener
/// (`POST {endpoint}/@connections/{id}`, API Gateway's shape).
pub struct PeerNode {
    client: reqwest::Client,
    endpoint: url::Url,
    authorization: Option<String>,
}

impl PeerNode {
    pub fn new(
        client: reqwest::Client,
        endpoint: &str,
        token: Option<&ManagementToken>,
    ) -> anyhow::Result<Self> {
        let endpoint = url::Url::parse(endpoint)
            .map_err(|e| anyhow::anyhow!("a node endpoint {endpoint:?}: {e}"))?;
        Ok(Self {
            client,
            endpoint,
            authorization: token.map(ManagementToken::header_value),
        })
    }

    /// The client peer posts share: keep-alive connections, a short
    /// connect timeout (a dead node is found fast; each post's deadline is
    /// the delivery's own).
    pub fn client() -> anyhow::Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client for peer nodes: {e}"))
    }

    fn url_of(&self, connection_id: &str) -> url::Url {
        let mut url = self.endpoint.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("@connections").push(connection_id);
        }
        url
    }
}

impl PeerNode {
    /// Sends one management request and maps its answer.
    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<(), SendError> {
        if let Some(authorization) = &self.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request.send().await.map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                SendError::Unreachable(super::with_sources(&error))
            } else {
                SendError::Retryable(super::with_sources(&error))
            }
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 => Ok(()),
            410 => Err(SendError::Gone),
            401 | 403 => Err(SendError::Forbidden(format!(
                "HTTP {status} from the node (MANAGEMENT_TOKEN missing or different?)"
            ))),
            429 | 500..=599 => Err(SendError::Retryable(format!("HTTP {status}"))),
            _ => Err(SendError::Failed(format!("HTTP {status}"))),
        }
    }
}

#[async_trait::async_trait]
impl ConnectionSender for PeerNode {
    async fn post(&self, connection_id: &str, message: &Bytes) -> Result<(), SendError> {
        self.send(
            self.client
                .post(self.url_of(connection_id))
                .body(message.clone()),
        )
        .await
    }

    /// `DELETE {endpoint}/@connections/{id}?code=…`: the node closes its
    /// socket with that code and reason.
    async fn close(&self, connection_id: &str, why: Closing) -> Result<(), SendError> {
        let mut url = self.url_of(connection_id);
        url.query_pairs_mut()
            .append_pair(CLOSE_CODE_PARAMETER, &why.code().to_string());
        self.send(self.client.delete(url)).await
    }
}

/// The query parameter of a management `DELETE` that names the close code.
pub const CLOSE_CODE_PARAMETER: &str = "code";

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> ManagementToken {
        ManagementToken::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn a_token_is_long_visible_ascii_and_admits_only_its_bearer_header() {
        assert!(ManagementToken::new("too-short").is_err());
        assert!(ManagementToken::new("0123456789abcdef0123456789abcde f").is_err());
        let token = token();
        assert!(token.admits(Some(b"Bearer 0123456789abcdef0123456789abcdef")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef0123456789abcdeF")));
        assert!(!token.admits(Some(b"Bearer 0123456789abcdef0123456789abcdef0")));
        assert!(!token.admits(Some(b"0123456789abcdef0123456789abcdef")));
        assert!(!token.admits(Some(b"Basic 0123456789abcdef0123456789abcdef")));
        assert!(!token.admits(None));
        assert_eq!(format!("{token:?}"), "ManagementToken(…)");
    }

    #[test]
    fn the_endpoint_is_the_advertised_url_and_a_fresh_incarnation() {
        let management: SocketAddr = "0.0.0.0:8082".parse().unwrap();
        let one = Node::new(None, management, None).unwrap();
        let two = Node::new(None, management, None).unwrap();
        assert!(one.endpoint().starts_with("http://127.0.0.1:8082/n/"));
        assert_ne!(
            one.endpoint(),
            two.endpoint(),
            "a new incarnation per start"
        );
        assert!(is_node_endpoint(&one.endpoint()));
        let v6 = Node::new(None, "[::1]:9000".parse().unwrap(), None).unwrap();
        assert!(v6.endpoint().starts_with("http://[::1]:9000/n/"));

        let advertised = Node::new(
            Some("https://node-1.internal:8443/"),
            management,
            Some(token()),
        );
        assert!(
            advertised
                .unwrap()
                .endpoint()
                .starts_with("https://node-1.internal:8443/n/")
        );
    }

    #[test]
    fn a_remote_advertise_url_needs_the_token_and_a_bad_one_is_named() {
        let management: SocketAddr = "127.0.0.1:8082".parse().unwrap();
        let error = Node::new(Some("http://10.0.0.5:8082"), management, None).unwrap_err();
        assert!(error.to_string().contains("MANAGEMENT_TOKEN"), "{error}");
        assert!(Node::new(Some("http://localhost:8082"), management, None).is_ok());
        for bad in [
            "10.0.0.5:8082",
            "ftp://10.0.0.5",
            "http://h/?q=1",
            "http://u@h/",
        ] {
            let error = Node::new(Some(bad), management, Some(token())).unwrap_err();
            assert!(
                error.to_string().contains("ADVERTISE_URL"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn node_endpoints_are_told_from_others() {
        assert!(is_node_endpoint("http://10.0.0.5:8082/n/3f9c0a1b2c3d4e5f"));
        assert!(is_node_endpoint("https://lb.example/prefix/n/abc"));
        assert!(!is_node_endpoint(
            "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"
        ));
        assert!(!is_node_endpoint("http://10.0.0.5:8082/n/"));
        assert!(!is_node_endpoint("http://10.0.0.5:8082"));
    }

    #[test]
    fn a_post_goes_to_the_connections_path_under_the_endpoint() {
        let peer =
            PeerNode::new(reqwest::Client::new(), "http://10.0.0.5:8082/n/3f9c", None).unwrap();
        assert_eq!(
            peer.url_of("Ab-_c=").as_str(),
            "http://10.0.0.5:8082/n/3f9c/@connections/Ab-_c="
        );
    }
}
