//! Start-up: configuration turned into a running handler. The expensive
//! parts (compiling or loading the component, building clients, making the
//! dev key) happen here, once per process.

use std::path::Path;
use std::sync::Arc;

use crate::dev::DevSigner;
use crate::keys::{FetchLimits, KeySetSource, RemoteKeySet, StaticKeySet};
use crate::policy::{EngineOptions, PolicyRuntime};
use crate::service::Handler;
use crate::settings::TokenMode;
use crate::store::{ConnectionStore, DynamoDbOptions, DynamoDbStore, Measured, MemoryStore};
use crate::wit::types::Settings;

/// What a handler is built from (the command line's `start_options`).
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub mode: TokenMode,
    pub settings: Settings,
    pub engine: EngineOptions,
    /// DynamoDB; `None` keeps records in memory.
    pub table: Option<DynamoDbOptions>,
}

pub struct Started {
    pub handler: Handler,
    /// Dev mode's signer; `None` in Cognito mode.
    pub dev: Option<Arc<DevSigner>>,
    pub mode: TokenMode,
}

/// Builds everything `serve`, `handle-event` and Lambda need.
pub async fn start(options: StartOptions) -> anyhow::Result<Started> {
    let StartOptions {
        mode,
        settings,
        engine,
        table,
    } = options;
    // Three independent parts, at once: loading the component (a blocking
    // thread), the store's client (the SDK's configuration chain) and the
    // key set (a fetch). Lambda's init phase has up to two vCPUs.
    let store = async {
        let store: Arc<dyn ConnectionStore> = match table {
            Some(table) => Arc::new(Measured::new(DynamoDbStore::connect(table).await)),
            None => Arc::new(Measured::new(MemoryStore::new())),
        };
        store
    };
    let keys = async {
        let keys: (Arc<dyn KeySetSource>, _) = match &mode {
            TokenMode::Dev => {
                let signer = tokio::task::spawn_blocking(DevSigner::generate).await??;
                let keys = StaticKeySet::new(signer.jwks().to_owned(), "the dev key")?;
                (Arc::new(keys), Some(Arc::new(signer)))
            }
            TokenMode::Cognito { jwks_url, .. } => {
                let keys = key_set_source(jwks_url)?;
                // Warm the cache so the first CONNECT does not wait; a
                // failure here is not fatal, the next CONNECT tries again.
                if let Err(reason) = keys.key_set(false).await {
                    tracing::warn!(%reason, "could not fetch the key set at start; will retry on demand");
                }
                (keys, None)
            }
        };
        anyhow::Ok(keys)
    };
    let (runtime, store, keys) = tokio::join!(load_runtime(engine), store, keys);
    let (runtime, (keys, dev)) = (runtime?, keys?);
    tracing::info!(
        keys = %keys.describe(),
        store = %store.describe(),
        issuer = %settings.issuer,
        "handler ready"
    );
    Ok(Started {
        handler: Handler::new(runtime, store, keys, settings),
        dev,
        mode,
    })
}

/// Compiling the component may take a second: off the async threads.
pub async fn load_runtime(options: EngineOptions) -> anyhow::Result<Arc<PolicyRuntime>> {
    tokio::task::spawn_blocking(move || PolicyRuntime::new(options)).await?
}

/// A key set from an http(s) URL (fetched, cached) or a file (read once).
pub fn key_set_source(location: &str) -> anyhow::Result<Arc<dyn KeySetSource>> {
    if location.starts_with("https://") || location.starts_with("http://") {
        return Ok(Arc::new(RemoteKeySet::new(
            location,
            FetchLimits::default(),
        )?));
    }
    let path = location.strip_prefix("file://").unwrap_or(location);
    let json = std::fs::read_to_string(Path::new(path))
        .map_err(|e| anyhow::anyhow!("reading the key set {path}: {e}"))?;
    Ok(Arc::new(StaticKeySet::new(json, path)?))
}
