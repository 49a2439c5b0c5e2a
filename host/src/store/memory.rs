//! The embedded store: records in a map, lost when the process exits. The
//! default when no table is configured (dev mode, tests, a single host).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<RecordKey, ConnectionRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record, ordered by key (for tests and diagnostics).
    pub fn snapshot(&self) -> Vec<ConnectionRecord> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RecordKey, ConnectionRecord>> {
        // A panic while holding the lock cannot leave a half-applied change
        // (each operation mutates after all checks), so poisoning is ignored.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl ConnectionStore for MemoryStore {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        // One lock for the whole batch: all or nothing by construction.
        let mut map = self.lock();
        for record in records {
            map.insert(record.key(), record.clone());
        }
        Ok(())
    }

    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        Ok(self
            .lock()
            .keys()
            .filter(|key| key.connection_id == connection_id)
            .cloned()
            .collect())
    }

    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        Ok(self
            .lock()
            .values()
            .filter(|record| record.integration_id == integration_id)
            .cloned()
            .collect())
    }

    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let mut map = self.lock();
        let removed = keys.iter().filter(|key| map.remove(key).is_some()).count();
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
