//! A store that counts: every call by operation and outcome, its time, and
//! the records written and deleted, whatever the store behind it.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use super::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use crate::telemetry;

pub struct Measured<S> {
    store: S,
    /// 0: no call yet; 1: the last call was answered; 2: it was not.
    last_call: AtomicU8,
}

impl<S> Measured<S> {
    pub fn new(store: S) -> Self {
        Self {
            store,
            last_call: AtomicU8::new(0),
        }
    }

    fn measured<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        telemetry::store_call(operation, outcome(&result), started.elapsed());
        let answered = !matches!(
            result,
            Err(StoreError::Unavailable(_) | StoreError::Other(_))
        );
        self.last_call
            .store(if answered { 1 } else { 2 }, Ordering::Relaxed);
        result
    }
}

/// The metric's `outcome` label of a call.
fn outcome<T>(result: &Result<T, StoreError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::Validation(_)) => "validation",
        Err(StoreError::Throttled(_)) => "throttled",
        Err(StoreError::NotFound(_)) => "not_found",
        Err(StoreError::Unavailable(_)) => "unavailable",
        Err(StoreError::Other(_)) => "other",
    }
}

#[async_trait::async_trait]
impl<S: ConnectionStore> ConnectionStore for Measured<S> {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        let result = self.measured("put_all", Instant::now(), self.store.put_all(records).await);
        if result.is_ok() {
            telemetry::records_written(records.len());
        }
        result
    }

    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        self.measured(
            "keys_of",
            Instant::now(),
            self.store.keys_of(connection_id).await,
        )
    }

    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let result = self.measured("delete", Instant::now(), self.store.delete(keys).await);
        if let Ok(removed) = result {
            telemetry::records_deleted(removed);
        }
        result
    }

    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.measured(
            "records_of",
            Instant::now(),
            self.store.records_of(integration_id).await,
        )
    }

    async fn record(&self, key: &RecordKey) -> Result<Option<ConnectionRecord>, StoreError> {
        self.measured("record", Instant::now(), self.store.record(key).await)
    }

    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        self.measured(
            "revoked_before",
            Instant::now(),
            self.store.revoked_before(sub).await,
        )
    }

    async fn revoke(&self, sub: &str, before: u64, expires_at: u64) -> Result<(), StoreError> {
        self.measured(
            "revoke",
            Instant::now(),
            self.store.revoke(sub, before, expires_at).await,
        )
    }

    async fn records_of_user(
        &self,
        integration_id: &str,
        sub: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.measured(
            "records_of_user",
            Instant::now(),
            self.store.records_of_user(integration_id, sub).await,
        )
    }

    async fn records_of_sub(&self, sub: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.measured(
            "records_of_sub",
            Instant::now(),
            self.store.records_of_sub(sub).await,
        )
    }

    async fn roll_back(&self, keys: &[RecordKey], expires_at: u64) {
        self.store.roll_back(keys, expires_at).await;
    }

    fn last_call_answered(&self) -> Option<bool> {
        match self.last_call.load(Ordering::Relaxed) {
            0 => None,
            answered => Some(answered == 1),
        }
    }

    fn pending_rollbacks(&self) -> usize {
        self.store.pending_rollbacks()
    }

    fn describe(&self) -> String {
        self.store.describe()
    }
}
