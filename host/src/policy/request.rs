//! What one guest instance (one request) carries in its store: the bounds
//! the engine enforces, the clock its deadline reads, the capabilities its
//! imports use, and the ledger that undoes a CONNECT the guest did not finish.
//!
//! No WASI: the world's imports are the guest's only capabilities, so a
//! request builds no WASI context (and seeds no random generator).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::StoreLimits;

use super::known_keys::KnownKeys;
use crate::keys::KeySetSource;
use crate::store::{ConnectionRecord, ConnectionStore, RecordKey};

/// The capabilities one request runs with.
#[derive(Clone)]
pub struct Capabilities {
    pub store: Arc<dyn ConnectionStore>,
    pub keys: Arc<dyn KeySetSource>,
    /// The keys of a self-hosted socket's records, for the requests of that
    /// socket: they record what they store and delete, and its `keys-of` is
    /// answered from them. `None`: `keys-of` always asks the store.
    pub socket: Option<Arc<KnownKeys>>,
}

/// Store data for one guest instance.
pub struct RequestState {
    pub(super) limits: StoreLimits,
    pub(super) clock: GuestClock,
    pub(super) caps: Capabilities,
    pub(super) request_id: String,
    /// Log lines the guest has written (the `log` import bounds them).
    pub(super) log_lines: u32,
    pub(super) ledger: Ledger,
}

impl RequestState {
    pub(super) fn new(caps: Capabilities, request_id: String, limits: StoreLimits) -> Self {
        Self {
            limits,
            clock: GuestClock::start(),
            caps,
            request_id,
            log_lines: 0,
            ledger: Ledger::default(),
        }
    }
}

/// Guest time: wall time since the guest was entered minus the time it
/// waited on the host, so a slow store or key-set fetch never counts against
/// the guest's deadline.
pub struct GuestClock {
    started: Instant,
    waiting: Duration,
}

impl GuestClock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            waiting: Duration::ZERO,
        }
    }

    /// Time spent inside the guest so far.
    pub fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.waiting)
    }

    /// Runs a host future, counting its time as waiting, not guest time.
    pub async fn wait<F: Future>(&mut self, future: F) -> F::Output {
        let started = Instant::now();
        let output = future.await;
        self.waiting += started.elapsed();
        output
    }
}

/// The records this request stored: if the guest traps after storing them,
/// they are removed again, so a failed request leaves nothing behind.
#[derive(Default)]
pub struct Ledger {
    written: Vec<RecordKey>,
    /// The latest `expiresAt` among them.
    expires_at: u64,
    /// Whose they are (every record of a CONNECT carries the token's `sub`).
    sub: Option<String>,
    /// Until when the token authorises them (the earliest `authExpiresAt`).
    auth_expires_at: Option<u64>,
}

impl Ledger {
    pub fn stored(&mut self, records: &[ConnectionRecord]) {
        if let Some(record) = records.first() {
            self.sub.get_or_insert_with(|| record.sub.clone());
        }
        self.written
            .extend(records.iter().map(ConnectionRecord::key));
        let latest = records.iter().map(|r| r.expires_at).max().unwrap_or(0);
        self.expires_at = self.expires_at.max(latest);
        let authorised_until = records.iter().filter_map(|r| r.auth_expires_at).min();
        self.auth_expires_at = match (self.auth_expires_at, authorised_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Until when the token authorises the stored records, if they say.
    pub fn auth_expires_at(&self) -> Option<u64> {
        self.auth_expires_at
    }

    /// The user whose records this request stored, if it stored any.
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }

    /// Undoes what was stored (after a trap).
    pub async fn roll_back(self, store: &dyn ConnectionStore, request_id: &str) {
        if self.written.is_empty() {
            return;
        }
        tracing::warn!(
            request_id,
            records = self.written.len(),
            "rolling back records of a failed CONNECT"
        );
        store.roll_back(&self.written, self.expires_at).await;
    }
}
