//! The embedded store: records in a map, lost when the process exits. The
//! default when no table is configured (dev mode, tests, a single host).
//!
//! Records past their `expiresAt` are dropped at the next operation, as
//! DynamoDB's TTL would (only sooner), so a process that runs for weeks
//! holds the records of live connections only, however many CONNECTs it saw.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use super::{ConnectionRecord, ConnectionStore, RecordKey, StoreError};
use crate::clock::unix_now;

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<Records>,
    /// Revocations by `sub`: (revoked before, kept until).
    revocations: Mutex<HashMap<String, (u64, u64)>>,
}

#[derive(Default)]
struct Records {
    by_key: BTreeMap<RecordKey, ConnectionRecord>,
    /// The same records by expiry, so dropping expired ones costs a look at
    /// the oldest only.
    by_expiry: BTreeSet<(u64, RecordKey)>,
}

impl Records {
    fn insert(&mut self, record: ConnectionRecord) {
        let key = record.key();
        self.by_expiry.insert((record.expires_at, key.clone()));
        if let Some(old) = self.by_key.insert(key.clone(), record) {
            self.by_expiry.remove(&(old.expires_at, key));
        }
    }

    fn remove(&mut self, key: &RecordKey) -> bool {
        match self.by_key.remove(key) {
            Some(old) => {
                self.by_expiry.remove(&(old.expires_at, key.clone()));
                true
            }
            None => false,
        }
    }

    /// Drops every record whose `expiresAt` is at or before `now`.
    fn expire(&mut self, now: u64) {
        while let Some((expires_at, _)) = self.by_expiry.first()
            && *expires_at <= now
        {
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.by_key.remove(&key);
            }
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live record, ordered by key (for tests and diagnostics).
    pub fn snapshot(&self) -> Vec<ConnectionRecord> {
        self.lock().by_key.values().cloned().collect()
    }

    /// The records, with the expired ones dropped first.
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic while holding the lock cannot leave a half-applied change
        // (each operation mutates after all checks), so poisoning is ignored.
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.expire(unix_now());
        records
    }
}

#[async_trait::async_trait]
impl ConnectionStore for MemoryStore {
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError> {
        // One lock for the whole batch: all or nothing by construction.
        let mut map = self.lock();
        for record in records {
            map.insert(record.clone());
        }
        Ok(())
    }

    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError> {
        Ok(self
            .lock()
            .by_key
            .keys()
            .filter(|key| key.connection_id == connection_id)
            .cloned()
            .collect())
    }

    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        Ok(self
            .lock()
            .by_key
            .values()
            .filter(|record| record.integration_id == integration_id)
            .cloned()
            .collect())
    }

    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError> {
        let mut map = self.lock();
        let removed = keys.iter().filter(|key| map.remove(key)).count();
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }

    async fn record(&self, key: &RecordKey) -> Result<Option<ConnectionRecord>, StoreError> {
        Ok(self.lock().by_key.get(key).cloned())
    }

    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        let now = unix_now();
        let mut revocations = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        revocations.retain(|_, (_, expires_at)| *expires_at > now);
        Ok(revocations.get(sub).map(|(before, _)| *before))
    }

    async fn revoke(&self, sub: &str, before: u64, expires_at: u64) -> Result<(), StoreError> {
        let mut revocations = self.revocations.lock().unwrap_or_else(|e| e.into_inner());
        let entry = revocations
            .entry(sub.to_owned())
            .or_insert((before, expires_at));
        if entry.0 <= before {
            *entry = (before, expires_at);
        }
        Ok(())
    }

    async fn records_of_user(
        &self,
        integration_id: &str,
        sub: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let mut records = self.records_of(integration_id).await?;
        records.retain(|record| record.sub == sub);
        Ok(records)
    }

    async fn records_of_sub(&self, sub: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        Ok(self
            .lock()
            .by_key
            .values()
            .filter(|record| record.sub == sub)
            .cloned()
            .collect())
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(connection: &str, expires_at: u64) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: "acme".into(),
            connection_id: connection.into(),
            sub: "alice".into(),
            connected_at: "2026-12-06T00:00:00Z".into(),
            expires_at,
            endpoint: None,
            auth_expires_at: None,
            auth_issued_at: None,
        }
    }

    #[tokio::test]
    async fn expired_records_are_dropped_and_a_rewrite_moves_the_expiry() {
        let store = MemoryStore::new();
        let now = unix_now();
        store
            .put_all(&[record("old", now - 1), record("live", now + 600)])
            .await
            .unwrap();
        let left: Vec<_> = store
            .snapshot()
            .into_iter()
            .map(|r| r.connection_id)
            .collect();
        assert_eq!(left, ["live"]);
        assert!(store.keys_of("old").await.unwrap().is_empty());

        // Rewritten with an earlier expiry: the later one no longer keeps it.
        store.put_all(&[record("live", now - 1)]).await.unwrap();
        assert!(store.snapshot().is_empty());
        assert!(store.lock().by_expiry.is_empty(), "no stale index entries");
    }

    #[tokio::test]
    async fn a_revocation_is_read_back_never_moves_earlier_and_expires() {
        let store = MemoryStore::new();
        let now = unix_now();
        assert_eq!(store.revoked_before("alice").await.unwrap(), None);
        store.revoke("alice", now, now + 60).await.unwrap();
        store.revoke("alice", now - 10, now + 60).await.unwrap();
        assert_eq!(store.revoked_before("alice").await.unwrap(), Some(now));
        assert_eq!(store.revoked_before("bob").await.unwrap(), None);
        store.revoke("bob", now, now).await.unwrap();
        assert_eq!(store.revoked_before("bob").await.unwrap(), None, "expired");
    }

    #[tokio::test]
    async fn a_users_records_are_found_in_one_integration_or_all() {
        let store = MemoryStore::new();
        let now = unix_now();
        let mut other = record("c2", now + 60);
        other.sub = "bob".into();
        let mut elsewhere = record("c1", now + 60);
        elsewhere.integration_id = "globex".into();
        store
            .put_all(&[record("c1", now + 60), other, elsewhere])
            .await
            .unwrap();
        let keys = |records: Vec<ConnectionRecord>| -> Vec<(String, String)> {
            records
                .into_iter()
                .map(|r| (r.integration_id, r.connection_id))
                .collect()
        };
        assert_eq!(
            keys(store.records_of_user("acme", "alice").await.unwrap()),
            [("acme".into(), "c1".into())]
        );
        assert_eq!(
            keys(store.records_of_sub("alice").await.unwrap()),
            [("acme".into(), "c1".into()), ("globex".into(), "c1".into())]
        );
    }
}
