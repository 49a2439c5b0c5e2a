//! What the host grants the guest: one `Host` impl per imported interface,
//! all on the per-request store data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{StoreLimits, StoreLimitsBuilder};

use super::bindings::{connections, jwks, log, types};
use crate::keys::KeySetSource;
use crate::store::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};

/// Log lines one request may write; a flood beyond is dropped (and counted).
const MAX_LOG_LINES_PER_REQUEST: u32 = 32;
/// Longer log messages are cut.
const MAX_LOG_LINE_BYTES: usize = 1024;

/// The capabilities one request runs with.
#[derive(Clone)]
pub struct Capabilities {
    pub store: Arc<dyn ConnectionStore>,
    pub keys: Arc<dyn KeySetSource>,
}

/// Store data for one guest instance (one request).
///
/// No WASI: the world's imports are the guest's only capabilities, so a
/// request builds no WASI context (and seeds no random generator).
pub struct RequestState {
    pub(super) limits: StoreLimits,
    caps: Capabilities,
    request_id: String,
    log_lines: u32,
    /// Records this request stored: removed again if the guest traps after
    /// storing them, so a failed request leaves nothing behind.
    pub(super) written: Vec<RecordKey>,
    /// The latest `expiresAt` among them.
    pub(super) written_expire_at: u64,
    /// When the guest was entered, and how long it has waited on the host
    /// since: the deadline counts guest time only.
    pub(super) started: Instant,
    pub(super) waiting: Duration,
}

impl RequestState {
    pub fn new(caps: Capabilities, request_id: String, max_memory_bytes: usize) -> Self {
        Self {
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .instances(32)
                .tables(8)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            caps,
            request_id,
            log_lines: 0,
            written: Vec::new(),
            written_expire_at: 0,
            started: Instant::now(),
            waiting: Duration::ZERO,
        }
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Time spent inside the guest so far (wall time minus host waits).
    pub fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.waiting)
    }

    /// Runs a host future, counting its time as waiting, not guest time.
    async fn wait<F: std::future::Future>(&mut self, future: F) -> F::Output {
        let started = Instant::now();
        let output = future.await;
        self.waiting += started.elapsed();
        output
    }
}

impl types::Host for RequestState {}

impl jwks::Host for RequestState {
    async fn key_set(&mut self, refresh: bool) -> Result<String, String> {
        let keys = self.caps.keys.clone();
        let result = self.wait(keys.key_set(refresh)).await;
        match result {
            Ok(json) => Ok(json.to_string()),
            Err(reason) => {
                tracing::error!(request_id = %self.request_id, %reason, "key set unavailable");
                Err(reason)
            }
        }
    }
}

impl connections::Host for RequestState {
    async fn put_all(
        &mut self,
        records: Vec<types::ConnectionRecord>,
    ) -> Result<(), types::StoreError> {
        let records: Vec<ConnectionRecord> = records.into_iter().map(Into::into).collect();
        let store = self.caps.store.clone();
        let result = self.wait(store.put_all(&records)).await;
        if result.is_ok() {
            self.written
                .extend(records.iter().map(ConnectionRecord::key));
            let latest = records.iter().map(|r| r.expires_at).max().unwrap_or(0);
            self.written_expire_at = self.written_expire_at.max(latest);
        }
        result.map_err(|e| self.report(e))
    }

    async fn keys_of(
        &mut self,
        connection_id: String,
    ) -> Result<Vec<types::RecordKey>, types::StoreError> {
        let store = self.caps.store.clone();
        let result = self.wait(store.keys_of(&connection_id)).await;
        result
            .map(|keys| keys.into_iter().map(Into::into).collect())
            .map_err(|e| self.report(e))
    }

    async fn delete(&mut self, keys: Vec<types::RecordKey>) -> Result<u32, types::StoreError> {
        let keys: Vec<RecordKey> = keys.into_iter().map(Into::into).collect();
        let store = self.caps.store.clone();
        let result = self.wait(store.delete(&keys)).await;
        result.map_err(|e| self.report(e))
    }
}

impl RequestState {
    /// Store failures are logged here with the request id; the guest sees
    /// the class and answers the client generically.
    fn report(&self, error: StoreError) -> types::StoreError {
        tracing::warn!(request_id = %self.request_id, %error, "store operation failed");
        error.into()
    }
}

impl log::Host for RequestState {
    async fn log(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_REQUEST {
            if self.log_lines == MAX_LOG_LINES_PER_REQUEST + 1 {
                tracing::warn!(request_id = %self.request_id, "guest log flood: further lines of this request dropped");
            }
            return;
        }
        let message = truncate(&message, MAX_LOG_LINE_BYTES);
        let id = &self.request_id;
        match level {
            log::Level::Debug => tracing::debug!(target: "guest", request_id = %id, "{message}"),
            log::Level::Info => tracing::info!(target: "guest", request_id = %id, "{message}"),
            log::Level::Warn => tracing::warn!(target: "guest", request_id = %id, "{message}"),
            log::Level::Error => tracing::error!(target: "guest", request_id = %id, "{message}"),
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// Conversions between the WIT types and the host's store types.

impl From<types::ConnectionRecord> for ConnectionRecord {
    fn from(r: types::ConnectionRecord) -> Self {
        Self {
            integration_id: r.integration_id,
            connection_id: r.connection_id,
            sub: r.sub,
            connected_at: r.connected_at,
            expires_at: r.expires_at,
        }
    }
}

impl From<types::RecordKey> for RecordKey {
    fn from(k: types::RecordKey) -> Self {
        Self {
            integration_id: k.integration_id,
            connection_id: k.connection_id,
        }
    }
}

impl From<RecordKey> for types::RecordKey {
    fn from(k: RecordKey) -> Self {
        Self {
            integration_id: k.integration_id,
            connection_id: k.connection_id,
        }
    }
}

impl From<StoreError> for types::StoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Validation(m) => Self::Validation(m),
            StoreError::Throttled(m) => Self::Throttled(m),
            StoreError::NotFound(m) => Self::NotFound(m),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Other(m) => Self::Other(m),
        }
    }
}
