//! Runs the policy: one fresh guest instance per request (from the
//! engine's pre-linked component), called with the generated types. A trap
//! fails that one request with 500; the instance is dropped, never reused,
//! and the host keeps serving.

use std::sync::Arc;
use std::time::Instant;

use super::engine::{EngineOptions, LoadedGuest, PolicyEngine};
use super::request::Capabilities;
use crate::telemetry::{self, PolicyFailure};
use crate::wit::types::{
    ConnectRequest, DisconnectRequest, Identity, RefreshRequest, RefreshResponse, Response,
    Settings, TokenRejection,
};

/// The body of every 500: nothing about internals reaches clients.
pub const INTERNAL_ERROR_BODY: &str = "Internal server error.";

impl Response {
    pub fn internal_error() -> Self {
        Self {
            status: 500,
            body: INTERNAL_ERROR_BODY.into(),
            rejection: None,
        }
    }
}

/// Who a CONNECT stored records for, and until when their token authorises
/// them (`authExpiresAt`, seconds since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub sub: String,
    pub auth_expires_at: Option<u64>,
}

/// A token's verdict, from `verify-token`; a rejection's WIT name
/// (`bad-signature`, ...) is `TokenRejection::name`.
pub type Verdict = Result<Identity, TokenRejection>;

pub struct PolicyRuntime {
    engine: PolicyEngine,
}

impl PolicyRuntime {
    pub fn new(options: EngineOptions) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            engine: PolicyEngine::new(&options)?,
        }))
    }

    /// Which guest runs.
    pub fn loaded_guest(&self) -> LoadedGuest {
        self.engine.loaded_guest()
    }

    /// Decides a CONNECT; with whose records it stored and until when.
    pub async fn connect(
        &self,
        caps: &Capabilities,
        request_id: &str,
        request: &ConnectRequest,
    ) -> (Response, Option<Connected>) {
        let call = Call::start("handle-connect");
        let Some(_slot) = self.engine.admit().await else {
            return (Response::internal_error(), None);
        };
        let (mut store, guest) = match self.engine.instantiate(caps, request_id).await {
            Ok(instance) => instance,
            Err(e) => return (call.failed(request_id, "instantiate", &e), None),
        };
        let result = guest
            .gitgazer_ws_handler_handler()
            .call_handle_connect(&mut store, request)
            .await;
        let ledger = std::mem::take(&mut store.data_mut().ledger);
        match result {
            Ok(response) => {
                call.done();
                let connected = ledger.sub().map(|sub| Connected {
                    sub: sub.to_owned(),
                    auth_expires_at: ledger.auth_expires_at(),
                });
                (response, connected)
            }
            Err(trap) => {
                ledger.roll_back(&*caps.store, request_id).await;
                (call.failed(request_id, "handle-connect", &trap), None)
            }
        }
    }

    /// Decides a DISCONNECT.
    pub async fn disconnect(
        &self,
        caps: &Capabilities,
        request_id: &str,
        connection_id: &str,
    ) -> Response {
        let request = DisconnectRequest {
            connection_id: connection_id.to_owned(),
        };
        let call = Call::start("handle-disconnect");
        let Some(_slot) = self.engine.admit().await else {
            return Response::internal_error();
        };
        let (mut store, guest) = match self.engine.instantiate(caps, request_id).await {
            Ok(instance) => instance,
            Err(e) => return call.failed(request_id, "instantiate", &e),
        };
        match guest
            .gitgazer_ws_handler_handler()
            .call_handle_disconnect(&mut store, &request)
            .await
        {
            Ok(response) => {
                call.done();
                response
            }
            Err(trap) => call.failed(request_id, "handle-disconnect", &trap),
        }
    }

    /// Decides an in-band refresh. A trap or a failed instantiation ends
    /// the connection with 1011 (its records go with its DISCONNECT).
    pub async fn refresh(
        &self,
        caps: &Capabilities,
        request_id: &str,
        request: &RefreshRequest,
    ) -> RefreshResponse {
        let internal = || RefreshResponse {
            code: 1011,
            body: "internal error".into(),
            rejection: None,
            expires_at: None,
        };
        let call = Call::start("handle-refresh");
        let Some(_slot) = self.engine.admit().await else {
            return internal();
        };
        let (mut store, guest) = match self.engine.instantiate(caps, request_id).await {
            Ok(instance) => instance,
            Err(e) => {
                call.failed(request_id, "instantiate", &e);
                return internal();
            }
        };
        match guest
            .gitgazer_ws_handler_handler()
            .call_handle_refresh(&mut store, request)
            .await
        {
            Ok(response) => {
                call.done();
                response
            }
            Err(trap) => {
                call.failed(request_id, "handle-refresh", &trap);
                internal()
            }
        }
    }

    /// Verifies a token alone, through the same guest code as CONNECT.
    pub async fn verify_token(
        &self,
        caps: &Capabilities,
        token: &str,
        now: u64,
        settings: &Settings,
    ) -> anyhow::Result<Verdict> {
        let _slot = self
            .engine
            .admit()
            .await
            .ok_or_else(|| anyhow::anyhow!("runtime closed"))?;
        let (mut store, guest) = self
            .engine
            .instantiate(caps, "verify-token")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        guest
            .gitgazer_ws_handler_handler()
            .call_verify_token(&mut store, token, now, settings)
            .await
            .map_err(|e| anyhow::anyhow!("the guest trapped: {e}"))
    }

    /// Instances running now.
    pub fn instances_in_use(&self) -> usize {
        self.engine.instances_in_use()
    }
}

/// One policy call, timed from admission (waiting included) to answer.
struct Call {
    export: &'static str,
    started: Instant,
}

impl Call {
    fn start(export: &'static str) -> Self {
        Self {
            export,
            started: Instant::now(),
        }
    }

    fn done(self) {
        telemetry::policy_call(self.export, self.started.elapsed(), None);
    }

    /// A 500 for a failed call: logged, counted by kind (a deadline is the
    /// epoch interruption's trap).
    fn failed(self, request_id: &str, stage: &str, error: &wasmtime::Error) -> Response {
        let kind = if stage == "instantiate" {
            PolicyFailure::Instantiate
        } else if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            PolicyFailure::Deadline
        } else {
            PolicyFailure::Trap
        };
        telemetry::policy_call(self.export, self.started.elapsed(), Some(kind));
        tracing::error!(request_id, stage, error = %format!("{error:#}"), "guest failed; request answered 500");
        Response::internal_error()
    }
}
