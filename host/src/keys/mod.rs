//! Where the guest's `jwks` import gets its key set: a fixed set (dev mode,
//! a file) or a remote one fetched over HTTPS and cached.
//!
//! The cache lives here, in the host, because guest instances are fresh per
//! request and keep nothing.

mod remote;

pub use remote::{FetchLimits, RemoteKeySet};

use std::sync::Arc;

/// Supplies the key set (JWKS JSON) to the guest.
#[async_trait::async_trait]
pub trait KeySetSource: Send + Sync + 'static {
    /// The key set. `refresh`: an unknown kid was met; a source may refetch
    /// (rate-limited) or answer from its cache. `Err` means no key set at
    /// all; its text is for the log.
    async fn key_set(&self, refresh: bool) -> Result<Arc<str>, String>;

    /// Where the keys come from, for logs.
    fn describe(&self) -> String;
}

/// A key set that never changes (dev mode, a file given on the command line).
pub struct StaticKeySet {
    json: Arc<str>,
    origin: String,
}

impl StaticKeySet {
    /// Checks the shape (`{"keys":[...]}`) once, so a bad file fails at start.
    pub fn new(json: impl Into<Arc<str>>, origin: impl Into<String>) -> anyhow::Result<Self> {
        let json = json.into();
        let origin = origin.into();
        validate_key_set(&json).map_err(|e| anyhow::anyhow!("key set from {origin}: {e}"))?;
        Ok(Self { json, origin })
    }
}

#[async_trait::async_trait]
impl KeySetSource for StaticKeySet {
    async fn key_set(&self, _refresh: bool) -> Result<Arc<str>, String> {
        Ok(self.json.clone())
    }

    fn describe(&self) -> String {
        self.origin.clone()
    }
}

/// The host's shallow check of a key set: a JSON object with a `keys`
/// array. Each key's own policy is the guest's business.
pub fn validate_key_set(json: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(_)) => Ok(()),
        _ => Err("not a JWKS: no \"keys\" array".into()),
    }
}
