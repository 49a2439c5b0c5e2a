//! Rollbacks that could not finish at once.
//!
//! `put_all` is all-or-nothing, so a failed write deletes what it may have
//! written before answering. When that delete fails too (the store is down or
//! paused), the keys are handed to a background task that keeps deleting
//! them, with backoff, until it succeeds or the records expire anyway.
//!
//! A write that timed out may still land after the rollback (a paused server
//! processes its queued requests when it resumes), so when a write's outcome
//! was uncertain the keys are deleted once more after a settle time. Deletes
//! are idempotent, so the extra pass is always safe.
//!
//! The same holds for a DISCONNECT that comes soon after such a write: the
//! straggler may land after the DISCONNECT's delete, so [`RecentUncertain`]
//! remembers those connections for the settle time.
//!
//! The work is bounded: at most [`RollbackRetry::max_pending_keys`] keys wait
//! at a time; beyond that the records are left to `expiresAt`, with an error
//! in the log. In a process that exits (or a Lambda environment that is
//! discarded) pending rollbacks are lost and `expiresAt` removes the records.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{RecordKey, StoreError};
use crate::clock::unix_now;
use crate::retry::Backoff;

/// Connections whose write may have a straggler, remembered at most.
const MAX_RECENT_UNCERTAIN: usize = 10_000;

/// How background rollbacks are retried.
#[derive(Debug, Clone)]
pub struct RollbackRetry {
    pub backoff: Backoff,
    /// Wait before the confirming delete after an uncertain write.
    pub settle: Duration,
    pub max_pending_keys: usize,
}

impl Default for RollbackRetry {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            // Longer than the store's operation timeout (8 s), so a write the
            // client gave up on has landed or been dropped by then.
            settle: Duration::from_secs(10),
            max_pending_keys: 100_000,
        }
    }
}

/// What the retrier should do with some keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// The rollback failed: delete until it succeeds (then confirm if the
    /// write was uncertain).
    Retry { uncertain: bool },
    /// The rollback succeeded but the write was uncertain: delete once more
    /// after the settle time.
    ConfirmOnly,
}

#[derive(Clone)]
pub struct RollbackRetrier {
    retry: RollbackRetry,
    pending_keys: Arc<AtomicUsize>,
}

impl RollbackRetrier {
    pub fn new(retry: RollbackRetry) -> Self {
        Self {
            retry,
            pending_keys: Arc::default(),
        }
    }

    /// Keys whose rollback is still to be done or confirmed.
    pub fn pending_keys(&self) -> usize {
        self.pending_keys.load(Ordering::SeqCst)
    }

    /// Deletes `keys` in the background with `delete` until done, or until
    /// `expires_at` (seconds since the epoch) has passed.
    pub fn schedule<F, Fut>(&self, keys: Vec<RecordKey>, expires_at: u64, what: Pending, delete: F)
    where
        F: Fn(Vec<RecordKey>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<u32, StoreError>> + Send,
    {
        let count = keys.len();
        let before = self.pending_keys.fetch_add(count, Ordering::SeqCst);
        if before + count > self.retry.max_pending_keys {
            self.pending_keys.fetch_sub(count, Ordering::SeqCst);
            tracing::error!(
                records = count,
                pending = before,
                "too many rollbacks pending; expiresAt will remove these records"
            );
            return;
        }
        let retry = self.retry.clone();
        let pending_keys = self.pending_keys.clone();
        tokio::spawn(async move {
            run(&retry, &keys, expires_at, what, delete).await;
            pending_keys.fetch_sub(count, Ordering::SeqCst);
        });
    }
}

/// Connections stored by a write that outlived an SDK attempt, with when
/// and until when (`expiresAt`): an abandoned attempt may still land after a
/// quick DISCONNECT deleted the records, so that DISCONNECT is confirmed
/// after the settle time.
#[derive(Clone, Default)]
pub struct RecentUncertain {
    written: Arc<Mutex<HashMap<String, (Instant, u64)>>>,
}

impl RecentUncertain {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, u64)>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a connection whose write outlived an attempt.
    pub fn remember(&self, connection_id: &str, expires_at: u64, settle: Duration) {
        let mut recent = self.lock();
        recent.retain(|_, (written, _)| written.elapsed() < settle);
        if recent.len() < MAX_RECENT_UNCERTAIN {
            recent.insert(connection_id.to_owned(), (Instant::now(), expires_at));
        }
    }

    /// Forgets a connection; its records' `expiresAt` when it was written
    /// uncertainly within the settle time (its delete needs confirming).
    pub fn take(&self, connection_id: &str, settle: Duration) -> Option<u64> {
        let written = self.lock().remove(connection_id);
        written
            .filter(|(at, _)| at.elapsed() < settle)
            .map(|(_, expires_at)| expires_at)
    }
}

async fn run<F, Fut>(
    retry: &RollbackRetry,
    keys: &[RecordKey],
    expires_at: u64,
    what: Pending,
    delete: F,
) where
    F: Fn(Vec<RecordKey>) -> Fut,
    Fut: Future<Output = Result<u32, StoreError>>,
{
    let confirm = match what {
        Pending::Retry { uncertain } => {
            if !delete_until_done(retry, keys, expires_at, &delete).await {
                return;
            }
            tracing::info!(records = keys.len(), "rolled back in the background");
            uncertain
        }
        Pending::ConfirmOnly => true,
    };
    if confirm {
        tokio::time::sleep(retry.settle).await;
        if delete_until_done(retry, keys, expires_at, &delete).await {
            tracing::info!(
                records = keys.len(),
                "rollback confirmed after an uncertain write"
            );
        }
    }
}

/// `true` once deleted; `false` when the records expired first.
async fn delete_until_done<F, Fut>(
    retry: &RollbackRetry,
    keys: &[RecordKey],
    expires_at: u64,
    delete: &F,
) -> bool
where
    F: Fn(Vec<RecordKey>) -> Fut,
    Fut: Future<Output = Result<u32, StoreError>>,
{
    let mut retries = 0;
    loop {
        if unix_now() >= expires_at {
            tracing::warn!(
                records = keys.len(),
                "rollback given up: the records have expired"
            );
            return false;
        }
        match delete(keys.to_vec()).await {
            Ok(_) => return true,
            Err(error) => {
                tracing::warn!(records = keys.len(), %error, "background rollback failed; retrying");
                retries += 1;
                tokio::time::sleep(retry.backoff.delay(retries)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn fast() -> RollbackRetry {
        RollbackRetry {
            backoff: Backoff {
                base: Duration::from_millis(5),
                max: Duration::from_millis(20),
            },
            settle: Duration::from_millis(50),
            max_pending_keys: 3,
        }
    }

    fn keys(n: usize) -> Vec<RecordKey> {
        (0..n)
            .map(|i| RecordKey {
                integration_id: format!("g{i}"),
                connection_id: "c".into(),
            })
            .collect()
    }

    type DeleteResult = std::future::Ready<Result<u32, StoreError>>;

    /// A delete that fails `failures` times, then succeeds; counts calls.
    fn flaky(failures: usize) -> (Arc<Mutex<usize>>, impl Fn(Vec<RecordKey>) -> DeleteResult) {
        let calls = Arc::new(Mutex::new(0));
        let counter = calls.clone();
        let delete = move |keys: Vec<RecordKey>| {
            let mut calls = counter.lock().unwrap();
            *calls += 1;
            std::future::ready(if *calls <= failures {
                Err(StoreError::Unavailable("down".into()))
            } else {
                Ok(keys.len() as u32)
            })
        };
        (calls, delete)
    }

    async fn drained(retrier: &RollbackRetrier) {
        for _ in 0..400 {
            if retrier.pending_keys() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("still pending: {}", retrier.pending_keys());
    }

    const FAR: u64 = u64::MAX;

    #[tokio::test]
    async fn retries_until_the_delete_succeeds() {
        let retrier = RollbackRetrier::new(fast());
        let (calls, delete) = flaky(3);
        retrier.schedule(keys(2), FAR, Pending::Retry { uncertain: false }, delete);
        assert_eq!(retrier.pending_keys(), 2);
        drained(&retrier).await;
        assert_eq!(*calls.lock().unwrap(), 4);
    }

    #[tokio::test]
    async fn an_uncertain_write_is_deleted_again_after_the_settle_time() {
        let retrier = RollbackRetrier::new(fast());
        let (calls, delete) = flaky(1);
        retrier.schedule(keys(1), FAR, Pending::Retry { uncertain: true }, delete);
        drained(&retrier).await;
        assert_eq!(
            *calls.lock().unwrap(),
            3,
            "one failure, one success, one confirmation"
        );

        let (calls, delete) = flaky(0);
        retrier.schedule(keys(1), FAR, Pending::ConfirmOnly, delete);
        drained(&retrier).await;
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test]
    async fn expired_records_are_given_up_and_the_queue_is_bounded() {
        let retrier = RollbackRetrier::new(fast());
        let (calls, delete) = flaky(usize::MAX);
        retrier.schedule(keys(1), 0, Pending::Retry { uncertain: true }, delete);
        drained(&retrier).await;
        assert_eq!(
            *calls.lock().unwrap(),
            0,
            "already expired: nothing to delete"
        );

        let (_, delete) = flaky(usize::MAX);
        retrier.schedule(keys(4), FAR, Pending::Retry { uncertain: false }, delete);
        assert_eq!(
            retrier.pending_keys(),
            0,
            "over the bound: left to expiresAt"
        );
    }
}
