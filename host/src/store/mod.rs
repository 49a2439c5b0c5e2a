//! Where connection records live: one trait, several stores.
//!
//! The guest reaches a store through the WIT `connections` import; the
//! contract is the same for every implementation: `put_all` stores all of a
//! connection's records or none, and deleting a missing record is not an
//! error.

mod dynamodb;
mod measured;
mod memory;
mod rollback;

pub use dynamodb::{DynamoDbOptions, DynamoDbStore, UnprocessedRetry};
pub use measured::Measured;
pub use memory::MemoryStore;
pub use rollback::RollbackRetry;

pub use crate::wit::types::{ConnectionRecord, RecordKey, StoreError};

/// A user's revocation (`gitgazer-ws evict`) is kept in the records' table,
/// under a key no record can have: both halves start with this prefix, and
/// its space is in no group name (`is_group_name`) and no connection id
/// (`is_valid_connection_id`). No `sub` attribute: the `sub` index never
/// lists it.
pub const REVOCATION_PREFIX: &str = "revoked ";

/// The key of `sub`'s revocation.
pub fn revocation_key(sub: &str) -> RecordKey {
    let key = format!("{REVOCATION_PREFIX}{sub}");
    RecordKey {
        integration_id: key.clone(),
        connection_id: key,
    }
}

impl ConnectionRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            integration_id: self.integration_id.clone(),
            connection_id: self.connection_id.clone(),
        }
    }
}

/// A place to keep connection records.
#[async_trait::async_trait]
pub trait ConnectionStore: Send + Sync + 'static {
    /// Stores every record, or none (what was written is removed again
    /// before an error is returned).
    async fn put_all(&self, records: &[ConnectionRecord]) -> Result<(), StoreError>;

    /// The keys of every record of a connection.
    async fn keys_of(&self, connection_id: &str) -> Result<Vec<RecordKey>, StoreError>;

    /// Deletes the records; returns how many existed and were removed.
    async fn delete(&self, keys: &[RecordKey]) -> Result<u32, StoreError>;

    /// Every record of an integration (all pages), expired ones included:
    /// TTL deletion lags, so the caller decides what `expiresAt` means.
    async fn records_of(&self, integration_id: &str) -> Result<Vec<ConnectionRecord>, StoreError>;

    /// One record by its key (strongly consistent), `None` when there is
    /// none: what an API Gateway refresh knows of a connection.
    async fn record(&self, key: &RecordKey) -> Result<Option<ConnectionRecord>, StoreError> {
        let _ = key;
        Err(self.cannot("read one record"))
    }

    /// The second at or before which `sub`'s tokens are revoked, if a
    /// revocation is stored (strongly consistent: an eviction holds from
    /// the moment it is written).
    async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError>;

    /// Stores `sub`'s revocation (tokens issued at or before `before`),
    /// kept until `expires_at`. A later revocation already stored stays.
    async fn revoke(&self, sub: &str, before: u64, expires_at: u64) -> Result<(), StoreError> {
        let _ = (sub, before, expires_at);
        Err(self.cannot("store a revocation"))
    }

    /// `sub`'s records in one integration (strongly consistent).
    async fn records_of_user(
        &self,
        integration_id: &str,
        sub: &str,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let _ = (integration_id, sub);
        Err(self.cannot("list a user's records in an integration"))
    }

    /// `sub`'s records in every integration, found through the `sub` index
    /// (eventually consistent, as every GSI).
    async fn records_of_sub(&self, sub: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        let _ = sub;
        Err(self.cannot("list a user's records"))
    }

    /// What an operation this store does not offer answers.
    fn cannot(&self, what: &str) -> StoreError {
        StoreError::Other(format!("{} cannot {what}", self.describe()))
    }

    /// Removes the records of a CONNECT that failed after storing them
    /// (`expires_at`: when they expire anyway). Never fails the caller: a
    /// store may retry in the background.
    async fn roll_back(&self, keys: &[RecordKey], _expires_at: u64) {
        match self.delete(keys).await {
            Ok(_) => tracing::warn!(
                records = keys.len(),
                "rolled back records of a failed CONNECT"
            ),
            Err(error) => tracing::error!(
                records = keys.len(),
                %error,
                "could not roll back records of a failed CONNECT; expiresAt will remove them"
            ),
        }
    }

    /// Whether the store answered its last call (an error it sent counts,
    /// being unreachable does not); `None` when not tracked or no call yet.
    fn last_call_answered(&self) -> Option<bool> {
        None
    }

    /// Keys whose rollback is still being retried or confirmed.
    fn pending_rollbacks(&self) -> usize {
        0
    }

    /// A short name for logs (`memory`, `dynamodb:<table>`).
    fn describe(&self) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitgazer_ws_guest::claims::is_group_name;
    use gitgazer_ws_guest::handler::is_valid_connection_id;

    #[test]
    fn a_revocation_key_is_no_records_key() {
        for sub in ["5f3c8a2e-1111-2222-3333-444455556666", "a", "with space"] {
            let key = revocation_key(sub);
            assert!(!is_group_name(&key.integration_id), "{key:?}");
            assert!(!is_valid_connection_id(&key.connection_id), "{key:?}");
        }
    }
}
