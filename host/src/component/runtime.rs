//! Runs the policy: one fresh guest instance per request from a pre-linked
//! `InstancePre`, bounded in memory and guest time. A trap fails that one
//! request with 500; the instance is dropped, never reused, and the host
//! keeps serving.

use std::sync::Arc;

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

use super::bindings::{WsHandler, WsHandlerPre, handler, types};
use super::engine::{EPOCH_TICK, EngineOptions, LoadedGuest, build_engine, load_component};
use super::imports::{Capabilities, RequestState};
use crate::store::ConnectionStore;

/// The body of every 500: nothing about internals reaches clients.
pub const INTERNAL_ERROR_BODY: &str = "Internal server error.";

/// What the guest checks a token against, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: u32,
    pub record_ttl_seconds: u32,
}

/// What the handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    pub fn internal_error() -> Self {
        Self {
            status: 500,
            body: INTERNAL_ERROR_BODY.into(),
        }
    }
}

/// A token's verdict, from `verify-token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid {
        sub: String,
        groups: Vec<String>,
    },
    /// The failure class, kebab-case as in the WIT (`bad-signature`, ...).
    Invalid {
        reason: String,
    },
}

pub struct PolicyRuntime {
    engine: Engine,
    pre: WsHandlerPre<RequestState>,
    loaded: LoadedGuest,
    options: EngineOptions,
    /// One permit per pool slot: requests beyond wait instead of failing.
    slots: Semaphore,
}

impl PolicyRuntime {
    /// Builds the engine, loads (or compiles) the component, links it, and
    /// starts the epoch ticker that enforces guest deadlines.
    pub fn new(options: EngineOptions) -> anyhow::Result<Arc<Self>> {
        let engine = build_engine(&options)?;
        let (component, loaded) = load_component(&engine, &options)?;
        tracing::info!(guest = ?loaded, "policy component loaded");
        // The world's imports only: no WASI. A component that imports more
        // (e.g. one built with std) is refused here, naming the import.
        let mut linker: Linker<RequestState> = Linker::new(&engine);
        WsHandler::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| anyhow::anyhow!("linking the world's imports: {e}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(WsHandlerPre::new)
            .map_err(|e| anyhow::anyhow!("the guest does not fit the ws-handler world: {e}"))?;
        start_epoch_ticker(&engine);
        Ok(Arc::new(Self {
            engine,
            pre,
            loaded,
            slots: Semaphore::new(options.max_instances.max(1) as usize),
            options,
        }))
    }

    /// Which guest runs.
    pub fn loaded_guest(&self) -> LoadedGuest {
        self.loaded
    }

    /// Decides a CONNECT.
    pub async fn connect(
        &self,
        caps: &Capabilities,
        request_id: &str,
        connection_id: &str,
        id_token: Option<&str>,
        now: u64,
        settings: &PolicySettings,
    ) -> Reply {
        let request = types::ConnectRequest {
            connection_id: connection_id.to_owned(),
            id_token: id_token.map(str::to_owned),
            now,
            settings: settings.into(),
        };
        let Some(_slot) = self.slot().await else {
            return Reply::internal_error();
        };
        let (mut store, guest) = match self.instantiate(caps, request_id).await {
            Ok(instance) => instance,
            Err(e) => return self.failed(request_id, "instantiate", &e),
        };
        let result = guest
            .gitgazer_ws_handler_handler()
            .call_handle_connect(&mut store, &request)
            .await;
        match result {
            Ok(response) => response.into(),
            Err(trap) => {
                roll_back(&mut store, request_id).await;
                self.failed(request_id, "handle-connect", &trap)
            }
        }
    }

    /// Decides a DISCONNECT.
    pub async fn disconnect(
        &self,
        caps: &Capabilities,
        request_id: &str,
        connection_id: &str,
    ) -> Reply {
        let request = types::DisconnectRequest {
            connection_id: connection_id.to_owned(),
        };
        let Some(_slot) = self.slot().await else {
            return Reply::internal_error();
        };
        let (mut store, guest) = match self.instantiate(caps, request_id).await {
            Ok(instance) => instance,
            Err(e) => return self.failed(request_id, "instantiate", &e),
        };
        match guest
            .gitgazer_ws_handler_handler()
            .call_handle_disconnect(&mut store, &request)
            .await
        {
            Ok(response) => response.into(),
            Err(trap) => self.failed(request_id, "handle-disconnect", &trap),
        }
    }

    /// Verifies a token alone, through the same guest code as CONNECT.
    pub async fn verify_token(
        &self,
        caps: &Capabilities,
        token: &str,
        now: u64,
        settings: &PolicySettings,
    ) -> anyhow::Result<Verdict> {
        let _slot = self
            .slot()
            .await
            .ok_or_else(|| anyhow::anyhow!("runtime closed"))?;
        let (mut store, guest) = self
            .instantiate(caps, "verify-token")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let verdict = guest
            .gitgazer_ws_handler_handler()
            .call_verify_token(&mut store, token, now, &settings.into())
            .await
            .map_err(|e| anyhow::anyhow!("the guest trapped: {e}"))?;
        Ok(match verdict {
            Ok(identity) => Verdict::Valid {
                sub: identity.sub,
                groups: identity.groups,
            },
            Err(rejection) => Verdict::Invalid {
                reason: rejection_name(rejection).into(),
            },
        })
    }

    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }

    async fn instantiate(
        &self,
        caps: &Capabilities,
        request_id: &str,
    ) -> wasmtime::Result<(Store<RequestState>, WsHandler)> {
        let state = RequestState::new(
            caps.clone(),
            request_id.to_owned(),
            self.options.max_memory_bytes,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let budget = self.options.guest_time_budget;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |context| {
            if context.data().guest_time() > budget {
                Err(wasmtime::format_err!(
                    "guest time budget of {budget:?} exceeded"
                ))
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        let guest = self.pre.instantiate_async(&mut store).await?;
        Ok((store, guest))
    }

    fn failed(&self, request_id: &str, stage: &str, error: &wasmtime::Error) -> Reply {
        tracing::error!(request_id, stage, error = %format!("{error:#}"), "guest failed; request answered 500");
        Reply::internal_error()
    }
}

/// A trap after records were stored must not leave them behind.
async fn roll_back(store: &mut Store<RequestState>, request_id: &str) {
    let written = std::mem::take(&mut store.data_mut().written);
    if written.is_empty() {
        return;
    }
    let expires_at = store.data().written_expire_at;
    let connection_store: Arc<dyn ConnectionStore> = store.data().capabilities().store.clone();
    tracing::warn!(
        request_id,
        records = written.len(),
        "rolling back records of a failed CONNECT"
    );
    connection_store.roll_back(&written, expires_at).await;
}

/// Increments the engine's epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch thread");
}

/// The WIT name of a rejection (`bad-signature`), used in `verify-token`
/// output and logs.
pub fn rejection_name(rejection: types::TokenRejection) -> &'static str {
    use types::TokenRejection as R;
    match rejection {
        R::Missing => "missing",
        R::TooLarge => "too-large",
        R::Malformed => "malformed",
        R::UnsupportedAlgorithm => "unsupported-algorithm",
        R::BadHeader => "bad-header",
        R::UnknownKey => "unknown-key",
        R::UnusableKey => "unusable-key",
        R::BadSignature => "bad-signature",
        R::WrongIssuer => "wrong-issuer",
        R::WrongAudience => "wrong-audience",
        R::WrongTokenUse => "wrong-token-use",
        R::Expired => "expired",
        R::NotYetValid => "not-yet-valid",
        R::BadClaims => "bad-claims",
        R::KeySetUnavailable => "key-set-unavailable",
    }
}

impl From<&PolicySettings> for types::Settings {
    fn from(s: &PolicySettings) -> Self {
        Self {
            issuer: s.issuer.clone(),
            audience: s.audience.clone(),
            leeway_seconds: s.leeway_seconds,
            record_ttl_seconds: s.record_ttl_seconds,
        }
    }
}

impl From<handler::Response> for Reply {
    fn from(r: handler::Response) -> Self {
        Self {
            status: r.status,
            body: r.body,
        }
    }
}
