//! The keys of one self-hosted socket's records, as this host wrote them.
//!
//! A socket's connection id is drawn by this host, and only the calls made
//! for that socket (its CONNECT, its refreshes, its DISCONNECT) write records
//! under it. So the host can follow them: every `put-all` and `delete` those
//! calls make goes through [`KnownKeys`], and their `keys-of` for the
//! connection is answered from it, without a GSI Query (which is eventually
//! consistent and may miss records written a moment ago).
//!
//! What the host knows is a superset of what exists: a key is added before
//! its write is sent and removed once its delete succeeded, or once its
//! write failed (`put-all` is all or nothing: the store rolls back what it
//! wrote, in the background if need be). Records deleted by anyone else
//! (delivery after a 410, an operator, `expiresAt`) are deleted again, which
//! is not an error. When a call fails, is cut short or overlaps another, the
//! keys are no longer exact: from then on `keys-of` asks the store, as
//! before, and adds the keys the host may still have records under.

use std::sync::Mutex;

use crate::store::{ConnectionRecord, RecordKey};

/// The records one connection's own calls wrote (see the module).
pub struct KnownKeys {
    connection_id: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Integrations this host may have stored a record of the connection
    /// for and not deleted since, in the order first written.
    integrations: Vec<String>,
    /// A change failed, was dropped unfinished or overlapped another: the
    /// records may be fewer than `integrations` (never more, as far as this
    /// host's writes go), so `keys-of` asks the store.
    uncertain: bool,
    /// Changes sent and not yet answered.
    in_flight: u32,
}

/// A change to the connection's records in flight; [`Change::finish`] with
/// the store's answer. Dropped unfinished (the request was cancelled while
/// the store call ran), it leaves the keys uncertain.
#[must_use = "finish it with the store's answer"]
pub struct Change<'a> {
    known: &'a KnownKeys,
    /// The integrations whose records a successful delete removed.
    deleting: Vec<String>,
    /// The integrations a write added (not known before): forgotten when it
    /// fails, as the store rolls them back.
    adding: Vec<String>,
    finished: bool,
}

impl KnownKeys {
    /// A connection with no records yet (its id was just drawn).
    pub fn new(connection_id: &str) -> Self {
        Self {
            connection_id: connection_id.to_owned(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, deleting: Vec<String>, adding: impl Iterator<Item = String>) -> Change<'_> {
        let mut state = self.lock();
        if state.in_flight > 0 {
            state.uncertain = true;
        }
        state.in_flight += 1;
        let mut added = Vec::new();
        for integration in adding {
            if !state.integrations.contains(&integration) {
                state.integrations.push(integration.clone());
                added.push(integration);
            }
        }
        Change {
            known: self,
            deleting,
            adding: added,
            finished: false,
        }
    }

    /// Before a `put-all`: the connection's records among them count as
    /// stored from now on; those not known before are forgotten again if
    /// the write fails (the store removes what it wrote). Cut short, they
    /// stay (no rollback ran).
    pub fn storing(&self, records: &[ConnectionRecord]) -> Change<'_> {
        let ours = records
            .iter()
            .filter(|record| record.connection_id == self.connection_id)
            .map(|record| record.integration_id.clone());
        self.begin(Vec::new(), ours)
    }

    /// Before a `delete`: the connection's keys among them are forgotten
    /// once the delete succeeded.
    pub fn deleting(&self, keys: &[RecordKey]) -> Change<'_> {
        let ours = keys
            .iter()
            .filter(|key| key.connection_id == self.connection_id)
            .map(|key| key.integration_id.clone())
            .collect();
        self.begin(ours, std::iter::empty())
    }

    /// The keys of `connection_id`'s records when they are this connection's
    /// and known exactly; `None`: ask the store (then [`KnownKeys::merge`]).
    pub fn keys_of(&self, connection_id: &str) -> Option<Vec<RecordKey>> {
        if connection_id != self.connection_id {
            return None;
        }
        let state = self.lock();
        if state.uncertain || state.in_flight > 0 {
            return None;
        }
        Some(self.keys(&state.integrations))
    }

    /// What the store answered for `connection_id`, plus the keys this host
    /// may have stored for it that the answer lacks (a lagging index, a
    /// write that failed part way): deleting a missing record is harmless.
    pub fn merge(&self, connection_id: &str, found: &mut Vec<RecordKey>) {
        if connection_id != self.connection_id {
            return;
        }
        let state = self.lock();
        for key in self.keys(&state.integrations) {
            if !found.contains(&key) {
                found.push(key);
            }
        }
    }

    fn keys(&self, integrations: &[String]) -> Vec<RecordKey> {
        integrations
            .iter()
            .map(|integration| RecordKey {
                integration_id: integration.clone(),
                connection_id: self.connection_id.clone(),
            })
            .collect()
    }
}

impl Change<'_> {
    /// Records the store's answer: `ok` means every record asked for is
    /// stored, or deleted. A failure leaves the keys uncertain.
    pub fn finish(mut self, ok: bool) {
        self.finished = true;
        let mut state = self.known.lock();
        state.in_flight -= 1;
        let gone = if ok {
            &self.deleting
        } else {
            state.uncertain = true;
            &self.adding
        };
        state
            .integrations
            .retain(|integration| !gone.contains(integration));
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.known.lock();
            state.in_flight -= 1;
            state.uncertain = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(integration: &str, connection: &str) -> ConnectionRecord {
        ConnectionRecord {
            integration_id: integration.into(),
            connection_id: connection.into(),
            sub: "alice".into(),
            connected_at: "2026-12-06T00:00:00Z".into(),
            expires_at: 0,
            endpoint: None,
            auth_expires_at: None,
            auth_issued_at: None,
        }
    }

    fn key(integration: &str, connection: &str) -> RecordKey {
        record(integration, connection).key()
    }

    fn integrations(keys: Option<Vec<RecordKey>>) -> Option<Vec<String>> {
        keys.map(|keys| keys.into_iter().map(|k| k.integration_id).collect())
    }

    #[test]
    fn a_new_connection_has_no_records_and_only_its_own_id_is_answered() {
        let known = KnownKeys::new("c1");
        assert_eq!(known.keys_of("c1"), Some(Vec::new()));
        assert_eq!(known.keys_of("c2"), None, "another connection: the store");
    }

    #[test]
    fn a_connect_then_a_refresh_leave_exactly_the_current_keys() {
        let known = KnownKeys::new("c1");
        known
            .storing(&[record("a", "c1"), record("b", "c1"), record("c", "c1")])
            .finish(true);
        assert_eq!(
            integrations(known.keys_of("c1")),
            Some(vec!["a".into(), "b".into(), "c".into()])
        );
        // A refresh to a, d: all current groups written, then b and c deleted.
        known
            .storing(&[record("a", "c1"), record("d", "c1")])
            .finish(true);
        known
            .deleting(&[key("b", "c1"), key("c", "c1")])
            .finish(true);
        assert_eq!(
            integrations(known.keys_of("c1")),
            Some(vec!["a".into(), "d".into()])
        );
        // The DISCONNECT.
        known
            .deleting(&[key("a", "c1"), key("d", "c1")])
            .finish(true);
        assert_eq!(known.keys_of("c1"), Some(Vec::new()));
    }

    #[test]
    fn a_failed_connect_leaves_no_known_keys_and_the_store_is_asked() {
        let known = KnownKeys::new("c1");
        known
            .storing(&[record("a", "c1"), record("b", "c1")])
            .finish(false);
        assert_eq!(known.keys_of("c1"), None);
        // The store's answer alone: the failed write was rolled back.
        let mut found = vec![key("b", "c1")];
        known.merge("c1", &mut found);
        assert_eq!(found, vec![key("b", "c1")]);
        let mut found = Vec::new();
        known.merge("c1", &mut found);
        assert!(found.is_empty());
    }

    #[test]
    fn a_refresh_whose_write_failed_keeps_the_keys_known_before() {
        let known = KnownKeys::new("c1");
        known
            .storing(&[record("a", "c1"), record("b", "c1")])
            .finish(true);
        known
            .storing(&[record("a", "c1"), record("c", "c1")])
            .finish(false);
        assert_eq!(known.keys_of("c1"), None);
        let mut found = Vec::new();
        known.merge("c1", &mut found);
        assert_eq!(found, vec![key("a", "c1"), key("b", "c1")]);
        let mut other = Vec::new();
        known.merge("c2", &mut other);
        assert!(
            other.is_empty(),
            "another connection's answer is left alone"
        );
    }

    #[test]
    fn a_refresh_that_fails_part_way_keeps_every_key_it_may_have_left() {
        let known = KnownKeys::new("c1");
        known
            .storing(&[record("a", "c1"), record("b", "c1")])
            .finish(true);
        // The refresh's write succeeds, its delete of b fails.
        known
            .storing(&[record("a", "c1"), record("c", "c1")])
            .finish(true);
        known.deleting(&[key("b", "c1")]).finish(false);
        assert_eq!(known.keys_of("c1"), None, "uncertain: the store is asked");
        let mut found = Vec::new();
        known.merge("c1", &mut found);
        assert_eq!(found, vec![key("a", "c1"), key("b", "c1"), key("c", "c1")]);
        // A later successful delete still forgets its keys, yet the store
        // stays asked.
        known
            .deleting(&[key("a", "c1"), key("b", "c1"), key("c", "c1")])
            .finish(true);
        assert_eq!(known.keys_of("c1"), None);
        let mut found = Vec::new();
        known.merge("c1", &mut found);
        assert!(found.is_empty());
    }

    #[test]
    fn a_change_in_flight_dropped_or_overlapping_makes_the_keys_uncertain() {
        let known = KnownKeys::new("c1");
        let write = known.storing(&[record("a", "c1")]);
        assert_eq!(known.keys_of("c1"), None, "a write in flight");
        drop(write);
        assert_eq!(known.keys_of("c1"), None, "cut short: it may have landed");
        let mut found = Vec::new();
        known.merge("c1", &mut found);
        assert_eq!(found, vec![key("a", "c1")]);

        let known = KnownKeys::new("c1");
        let first = known.storing(&[record("a", "c1")]);
        let second = known.deleting(&[key("a", "c1")]);
        second.finish(true);
        first.finish(true);
        assert_eq!(known.keys_of("c1"), None, "overlapping changes");
    }

    #[test]
    fn another_connections_keys_are_not_followed() {
        let known = KnownKeys::new("c1");
        known
            .storing(&[record("a", "c1"), record("x", "c2")])
            .finish(true);
        known.deleting(&[key("a", "c2")]).finish(true);
        assert_eq!(integrations(known.keys_of("c1")), Some(vec!["a".into()]));
        assert_eq!(known.keys_of("c2"), None);
    }
}
