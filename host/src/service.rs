//! The handler every entry point shares (HTTP dev server, `/events`,
//! `handle-event`, Lambda): it stamps each request with an id and the time
//! and hands it to the policy component.

use std::sync::Arc;

use crate::clock::unix_now;
use crate::keys::KeySetSource;
use crate::policy::{Capabilities, Connected, KnownKeys, PolicyRuntime, Verdict};
use crate::store::{ConnectionStore, StoreError};
use crate::telemetry;
use crate::wit::types::{ConnectRequest, RefreshRequest, RefreshResponse, Response, Settings};

#[derive(Clone)]
pub struct Handler {
    runtime: Arc<PolicyRuntime>,
    caps: Capabilities,
    settings: Settings,
    /// Where API Gateway refreshes are answered instead of the event's own
    /// stage (`WEBSOCKET_API_ENDPOINT` under Lambda).
    answer_endpoint: Option<String>,
}

impl Handler {
    pub fn new(
        runtime: Arc<PolicyRuntime>,
        store: Arc<dyn ConnectionStore>,
        keys: Arc<dyn KeySetSource>,
        settings: Settings,
    ) -> Self {
        Self {
            runtime,
            caps: Capabilities {
                store,
                keys,
                socket: None,
            },
            settings,
            answer_endpoint: None,
        }
    }

    /// Answers API Gateway refreshes through this Management API endpoint
    /// instead of the event's stage.
    pub fn with_answer_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.answer_endpoint = endpoint.filter(|endpoint| !endpoint.is_empty());
        self
    }

    /// The handler of one self-hosted socket's calls (its CONNECT, its
    /// refreshes, its DISCONNECT): they follow the keys they store and
    /// delete for `connection_id`, so its DISCONNECT deletes them without a
    /// GSI Query (the Query stays the fallback after a failed store call).
    /// Only for a connection id this host drew: records that anything else
    /// writes under it are not followed.
    pub fn for_socket(&self, connection_id: &str) -> Self {
        let mut handler = self.clone();
        handler.caps.socket = Some(Arc::new(KnownKeys::new(connection_id)));
        handler
    }

    /// See [`Handler::with_answer_endpoint`].
    pub fn answer_endpoint(&self) -> Option<&str> {
        self.answer_endpoint.as_deref()
    }

    /// A CONNECT with an optional id token; its records name no endpoint.
    pub async fn connect(
        &self,
        request_id: &str,
        connection_id: &str,
        id_token: Option<&str>,
    ) -> Response {
        self.connect_as(request_id, connection_id, id_token, None)
            .await
            .0
    }

    /// A CONNECT whose records say where the connection can be reached
    /// (`endpoint`), with the user it stored records for and until when
    /// their token authorises them (the WebSocket endpoint counts sockets
    /// per user and closes a socket whose token expired).
    pub async fn connect_as(
        &self,
        request_id: &str,
        connection_id: &str,
        id_token: Option<&str>,
        endpoint: Option<&str>,
    ) -> (Response, Option<Connected>) {
        let request = ConnectRequest {
            connection_id: connection_id.to_owned(),
            id_token: id_token.map(str::to_owned),
            now: unix_now(),
            settings: self.settings.clone(),
            endpoint: endpoint.map(str::to_owned),
        };
        let (reply, sub) = self.runtime.connect(&self.caps, request_id, &request).await;
        tracing::info!(request_id, connection_id, status = reply.status, "CONNECT");
        telemetry::connect(reply.status, reply.rejection);
        (reply, sub)
    }

    /// An in-band refresh of a connection authorised with `current` (the
    /// token a self-hosted socket keeps, or one of its records) since
    /// `connected_at` (RFC 3339, as in its records).
    pub async fn refresh(
        &self,
        request_id: &str,
        connection_id: &str,
        id_token: Option<&str>,
        current: Current,
        connected_at: &str,
        endpoint: Option<&str>,
    ) -> RefreshResponse {
        let (current_token, current_record) = match current {
            Current::Token(token) => (Some(token), None),
            Current::Record(record) => (None, record),
        };
        let request = RefreshRequest {
            connection_id: connection_id.to_owned(),
            id_token: id_token.map(str::to_owned),
            current_token,
            current_record,
            now: unix_now(),
            connected_at: connected_at.to_owned(),
            settings: self.settings.clone(),
            endpoint: endpoint.map(str::to_owned),
        };
        let reply = self.runtime.refresh(&self.caps, request_id, &request).await;
        // The rejection class, never the token.
        tracing::info!(
            request_id,
            connection_id,
            code = reply.code,
            rejection = reply.rejection.map(|r| r.name()),
            "REFRESH"
        );
        telemetry::refresh(reply.code);
        reply
    }

    /// A DISCONNECT.
    pub async fn disconnect(&self, request_id: &str, connection_id: &str) -> Response {
        let reply = self
            .runtime
            .disconnect(&self.caps, request_id, connection_id)
            .await;
        tracing::info!(
            request_id,
            connection_id,
            status = reply.status,
            "DISCONNECT"
        );
        telemetry::disconnect(reply.status);
        reply
    }

    /// The record store, for delivery.
    pub fn store(&self) -> Arc<dyn ConnectionStore> {
        self.caps.store.clone()
    }

    /// Records of failed CONNECTs whose removal the store is still retrying
    /// in the background (`GET /status`).
    pub fn pending_rollbacks(&self) -> usize {
        self.caps.store.pending_rollbacks()
    }

    /// Whether this node can take CONNECTs: the key set is loaded (fetched
    /// now if it is not, within the fetch back-off) and the store answered
    /// its last call, or a probe (one lookup of a connection id no client
    /// can have) now.
    pub async fn readiness(&self) -> Result<(), &'static str> {
        if self.caps.keys.key_set(false).await.is_err() {
            return Err("key set not loaded");
        }
        if self.caps.store.last_call_answered() != Some(true) {
            // Connection ids never contain a space: this one matches nothing.
            if let Err(StoreError::Unavailable(_) | StoreError::Other(_)) =
                self.caps.store.keys_of("readiness probe").await
            {
                return Err("store unavailable");
            }
        }
        Ok(())
    }

    /// Policy instances running now.
    pub fn instances_in_use(&self) -> usize {
        self.runtime.instances_in_use()
    }

    /// Verifies a token at `now` (seconds since the Unix epoch).
    pub async fn verify_token(&self, token: &str, now: u64) -> anyhow::Result<Verdict> {
        self.runtime
            .verify_token(&self.caps, token, now, &self.settings)
            .await
    }
}

/// What stands for a connection's current token in a refresh.
pub enum Current {
    /// The token itself (a self-hosted socket keeps it).
    Token(String),
    /// One of the connection's records, if it has any (API Gateway).
    Record(Option<crate::store::ConnectionRecord>),
}

/// A fresh id for a request that came without one.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
