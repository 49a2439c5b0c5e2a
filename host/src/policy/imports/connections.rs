//! `connections`: the record store (`crate::store`). What a request stores
//! goes into its ledger, so a trap after the write can undo it. A
//! self-hosted socket's calls also follow its keys ([`KnownKeys`]) and
//! answer its `keys-of` from them, without a Query.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use crate::policy::known_keys::KnownKeys;
use crate::policy::request::{GuestClock, Ledger, RequestState};
use crate::store::ConnectionStore;
use crate::wit::connections;
use crate::wit::types::{ConnectionRecord, RecordKey, StoreError};

pub struct ConnectionsHost<'a> {
    store: &'a Arc<dyn ConnectionStore>,
    request_id: &'a str,
    clock: &'a mut GuestClock,
    ledger: &'a mut Ledger,
    /// The socket's keys, when the request is one of a self-hosted socket's.
    known: Option<&'a KnownKeys>,
}

struct Connections;

impl HasData for Connections {
    type Data<'a> = ConnectionsHost<'a>;
}

pub fn add_to_linker(linker: &mut Linker<RequestState>) -> wasmtime::Result<()> {
    connections::add_to_linker::<_, Connections>(linker, |state| ConnectionsHost {
        store: &state.caps.store,
        request_id: &state.request_id,
        clock: &mut state.clock,
        ledger: &mut state.ledger,
        known: state.caps.socket.as_deref(),
    })
}

impl connections::Host for ConnectionsHost<'_> {
    async fn put_all(&mut self, records: Vec<ConnectionRecord>) -> Result<(), StoreError> {
        let change = self.known.map(|known| known.storing(&records));
        let result = self.clock.wait(self.store.put_all(&records)).await;
        if let Some(change) = change {
            change.finish(result.is_ok());
        }
        if result.is_ok() {
            self.ledger.stored(&records);
        }
        result.inspect_err(|e| self.report(e))
    }

    async fn keys_of(&mut self, connection_id: String) -> Result<Vec<RecordKey>, StoreError> {
        if let Some(keys) = self.known.and_then(|known| known.keys_of(&connection_id)) {
            return Ok(keys);
        }
        let mut result = self.clock.wait(self.store.keys_of(&connection_id)).await;
        if let (Some(known), Ok(found)) = (self.known, result.as_mut()) {
            known.merge(&connection_id, found);
        }
        result.inspect_err(|e| self.report(e))
    }

    async fn delete(&mut self, keys: Vec<RecordKey>) -> Result<u32, StoreError> {
        let change = self.known.map(|known| known.deleting(&keys));
        let result = self.clock.wait(self.store.delete(&keys)).await;
        if let Some(change) = change {
            change.finish(result.is_ok());
        }
        result.inspect_err(|e| self.report(e))
    }

    async fn revoked_before(&mut self, sub: String) -> Result<Option<u64>, StoreError> {
        let result = self.clock.wait(self.store.revoked_before(&sub)).await;
        result.inspect_err(|e| self.report(e))
    }
}

impl ConnectionsHost<'_> {
    /// Store failures are logged here with the request id; the guest sees
    /// the class and answers the client generically.
    fn report(&self, error: &StoreError) {
        tracing::warn!(request_id = self.request_id, %error, "store operation failed");
    }
}
