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
        let keys =
            validate_key_set(&json).map_err(|e| anyhow::anyhow!("key set from {origin}: {e}"))?;
        crate::telemetry::key_set_loaded(keys);
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

/// Whether the policy accepts a key set document, and how many entries it
/// has: the guest's own parser
/// (the `gitgazer-ws-guest` crate, compiled natively), so the host never
/// caches a set the guest would refuse (duplicate members, nesting past its
/// bound, no `keys` array). Each key's own policy stays the guest's business:
/// one bad key does not spoil a set.
pub fn validate_key_set(json: &str) -> Result<usize, String> {
    match gitgazer_ws_guest::jwks::parse_key_set(json) {
        Some(set) => Ok(set.len()),
        None => Err(
            "not a key set the policy accepts: a JSON object with one \"keys\" \
                     array, no repeated member, nested at most as deep as the policy parses"
                .into(),
        ),
    }
}
