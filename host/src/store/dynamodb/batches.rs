//! BatchWriteItem calls shared by concurrent writes (`group`: a write
//! waits only while a call is under way, then shares the next one).
//!
//! Each write keeps its own outcome: `UnprocessedItems` are mapped back to
//! their writes by key and resubmitted (with backoff, within the budget), a
//! write is answered as soon as all its requests are processed, and one
//! still unprocessed when the budget runs out fails alone. An error of the
//! call itself (after the SDK's own retries) fails every write it carried.
//! No call holds the same key twice (BatchWriteItem refuses it, and two
//! writes of one key keep their order): such a write waits for the next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::WriteRequest;
use tokio::sync::oneshot;

use super::group::{Calls, Group};
use super::item::request_key;
use super::{BATCH_LIMIT, UnprocessedRetry};
use crate::store::{RecordKey, StoreError};

/// Sends one BatchWriteItem; answers the requests left unprocessed.
#[async_trait::async_trait]
pub trait SendBatch: Send + Sync + 'static {
    async fn send(&self, requests: Vec<WriteRequest>) -> Result<Vec<WriteRequest>, StoreError>;
}

/// How one write went.
#[derive(Debug)]
pub struct Written {
    pub result: Result<(), StoreError>,
    /// Whether its calls took longer than one SDK attempt may: an abandoned
    /// attempt may still land later.
    pub outlived_an_attempt: bool,
}

/// One queue of writes (puts, or deletes) and the calls that carry them.
pub struct SharedBatches<S: SendBatch> {
    group: Group<WriteCalls<S>>,
}

impl<S: SendBatch> Clone for SharedBatches<S> {
    fn clone(&self) -> Self {
        Self {
            group: self.group.clone(),
        }
    }
}

pub struct WriteCalls<S> {
    sender: S,
    retry: UnprocessedRetry,
    attempt_timeout: Duration,
}

pub struct Write {
    requests: Vec<WriteRequest>,
    /// `None` when a request names no key (never for requests built here).
    keys: Option<Vec<RecordKey>>,
    done: oneshot::Sender<Written>,
}

impl<S: SendBatch> SharedBatches<S> {
    pub fn new(
        sender: S,
        retry: UnprocessedRetry,
        attempt_timeout: Duration,
        stalled_after: Duration,
    ) -> Self {
        let calls = WriteCalls {
            sender,
            retry,
            attempt_timeout,
        };
        Self {
            group: Group::new(calls, stalled_after),
        }
    }

    /// Writes the requests (at most [`BATCH_LIMIT`]), sharing a call with
    /// whatever else is waiting.
    pub async fn write(&self, requests: Vec<WriteRequest>) -> Written {
        debug_assert!(requests.len() <= BATCH_LIMIT);
        if requests.is_empty() {
            return Written {
                result: Ok(()),
                outlived_an_attempt: false,
            };
        }
        let (done, answer) = oneshot::channel();
        let keys = requests.iter().map(request_key).collect();
        self.group.submit(Write {
            requests,
            keys,
            done,
        });
        answer.await.unwrap_or_else(|_| Written {
            // The call's task ended without an answer (the runtime is
            // shutting down): the write may or may not have landed.
            result: Err(StoreError::Unavailable(
                "BatchWriteItem: the call was dropped".into(),
            )),
            outlived_an_attempt: true,
        })
    }
}

#[async_trait::async_trait]
impl<S: SendBatch> Calls for WriteCalls<S> {
    type Job = Write;
    const LIMIT: usize = BATCH_LIMIT;

    fn size(write: &Write) -> usize {
        write.requests.len()
    }

    /// A write whose keys are unknown shares a call with nothing.
    fn joins(batch: &[Write], write: &Write) -> bool {
        let Some(keys) = &write.keys else {
            return false;
        };
        batch.iter().all(|other| {
            other
                .keys
                .as_ref()
                .is_some_and(|theirs| keys.iter().all(|key| !theirs.contains(key)))
        })
    }

    /// One BatchWriteItem for the batch, resubmitting `UnprocessedItems`
    /// until none are left or the budget is spent; answers each write when
    /// it is done.
    async fn call(&self, batch: Vec<Write>) {
        let started = Instant::now();
        let mut owner: HashMap<RecordKey, usize> = HashMap::new();
        let mut pending = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for (index, write) in batch.into_iter().enumerate() {
            for key in write.keys.into_iter().flatten() {
                owner.insert(key, index);
            }
            pending.extend(write.requests);
            answers.push(Some(write.done));
        }
        let answer = |answers: &mut Vec<Option<oneshot::Sender<Written>>>,
                      index: usize,
                      result: Result<(), StoreError>| {
            if let Some(done) = answers[index].take() {
                let outlived_an_attempt = started.elapsed() >= self.attempt_timeout;
                // A writer that went away no longer needs its answer.
                let _ = done.send(Written {
                    result,
                    outlived_an_attempt,
                });
            }
        };
        let mut resubmissions = 0;
        loop {
            let unprocessed = match self.sender.send(pending).await {
                Ok(unprocessed) => unprocessed,
                Err(error) => {
                    for index in 0..answers.len() {
                        answer(&mut answers, index, Err(error.clone()));
                    }
                    return;
                }
            };
            // Whose requests are left; one this batch cannot place keeps
            // every write waiting.
            let mut left = vec![false; answers.len()];
            for request in &unprocessed {
                match request_key(request).and_then(|key| owner.get(&key)) {
                    Some(&index) => left[index] = true,
                    None => left.fill(true),
                }
            }
            for (index, left) in left.into_iter().enumerate() {
                if !left {
                    answer(&mut answers, index, Ok(()));
                }
            }
            if unprocessed.is_empty() {
                return;
            }
            resubmissions += 1;
            let left = unprocessed.len();
            let delay = match self
                .retry
                .next_wait("BatchWriteItem", left, resubmissions, started)
            {
                Ok(delay) => delay,
                Err(error) => {
                    for index in 0..answers.len() {
                        answer(&mut answers, index, Err(error.clone()));
                    }
                    return;
                }
            };
            tracing::debug!(
                items = unprocessed.len(),
                resubmissions,
                delay_ms = delay.as_millis() as u64,
                "resubmitting unprocessed items"
            );
            tokio::time::sleep(delay).await;
            crate::telemetry::unprocessed_resubmitted(unprocessed.len());
            pending = unprocessed;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::retry::Backoff;
    use crate::store::ConnectionRecord;
    use crate::store::dynamodb::item::{delete_request, put_request};

    /// A BatchWriteItem stand-in: answers only while its gate is open,
    /// records each call's keys, and leaves unprocessed every request whose
    /// connection is `stubborn`.
    #[derive(Clone)]
    struct Scripted {
        calls: Arc<Mutex<Vec<Vec<RecordKey>>>>,
        gate: Arc<tokio::sync::watch::Sender<bool>>,
        /// Calls waiting at the closed gate.
        held: Arc<std::sync::atomic::AtomicUsize>,
        stubborn: Option<&'static str>,
        fail: bool,
    }

    impl Default for Scripted {
        fn default() -> Self {
            Self {
                calls: Arc::default(),
                gate: Arc::new(tokio::sync::watch::channel(true).0),
                held: Arc::default(),
                stubborn: None,
                fail: false,
            }
        }
    }

    #[async_trait::async_trait]
    impl SendBatch for Scripted {
        async fn send(&self, requests: Vec<WriteRequest>) -> Result<Vec<WriteRequest>, StoreError> {
            let keys: Vec<RecordKey> = requests.iter().map(|r| request_key(r).unwrap()).collect();
            assert!(
                keys.iter().all(|key| key.connection_id != "boom"),
                "a bug in the call"
            );
            use std::sync::atomic::Ordering::SeqCst;
            self.held.fetch_add(1, SeqCst);
            self.calls.lock().unwrap().push(keys);
            let _ = self.gate.subscribe().wait_for(|open| *open).await;
            self.held.fetch_sub(1, SeqCst);
            if self.fail {
                return Err(StoreError::Unavailable("down".into()));
            }
            Ok(requests
                .into_iter()
                .filter(|r| Some(request_key(r).unwrap().connection_id.as_str()) == self.stubborn)
                .collect())
        }
    }

    fn shared(sender: Scripted) -> SharedBatches<Scripted> {
        let retry = UnprocessedRetry {
            max_resubmissions: 2,
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            total_budget: Duration::from_secs(5),
        };
        // Calls held by the test's gate are not stalled.
        SharedBatches::new(
            sender,
            retry,
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
    }

    fn puts(connection: &str, groups: usize) -> Vec<WriteRequest> {
        (0..groups)
            .map(|g| {
                put_request(&ConnectionRecord {
                    integration_id: format!("g{g}"),
                    connection_id: connection.into(),
                    sub: "alice".into(),
                    connected_at: "2026-12-06T00:00:00Z".into(),
                    expires_at: 1,
                    endpoint: None,
                    auth_expires_at: None,
                    auth_issued_at: None,
                })
                .unwrap()
            })
            .collect()
    }

    fn sizes(sender: &Scripted) -> Vec<usize> {
        sender.calls.lock().unwrap().iter().map(Vec::len).collect()
    }

    /// Starts the writes one after another while the sender holds its
    /// calls (each write in a held call or queued before the next starts),
    /// then lets the calls answer.
    async fn concurrently(
        queue: &SharedBatches<Scripted>,
        sender: &Scripted,
        writes: Vec<Vec<WriteRequest>>,
    ) -> Vec<Written> {
        sender.gate.send_replace(false);
        let mut submitted: usize = sizes(sender).iter().sum();
        let mut tasks = Vec::new();
        for requests in writes {
            submitted += requests.len();
            let queue_ = queue.clone();
            tasks.push(tokio::spawn(async move { queue_.write(requests).await }));
            loop {
                // Settled: every call started is held at the gate with its
                // jobs, and the rest wait in the queue.
                let (calls, waiting) = queue.group.calls_and_waiting();
                let held = sender.held.load(std::sync::atomic::Ordering::SeqCst);
                let sent: usize = sizes(sender).iter().sum();
                if calls == held && sent + waiting == submitted {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        sender.gate.send_replace(true);
        let mut written = Vec::new();
        for task in tasks {
            written.push(task.await.unwrap());
        }
        written
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_waiting_behind_a_call_share_the_next_one() {
        let sender = Scripted::default();
        let queue = shared(sender.clone());
        // Alone: a call of its own, at once.
        assert!(queue.write(puts("c0", 3)).await.result.is_ok());
        assert_eq!(sizes(&sender), vec![3]);

        // Ten writes of three: the first goes at once, the nine that wait
        // behind it share calls of at most 25 requests (8 writes, then 1).
        let written = concurrently(
            &queue,
            &sender,
            (1..=10).map(|i| puts(&format!("c{i}"), 3)).collect(),
        )
        .await;
        assert!(written.iter().all(|w| w.result.is_ok()), "{written:?}");
        assert_eq!(sizes(&sender), vec![3, 3, 24, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_key_twice_never_shares_a_call() {
        let sender = Scripted::default();
        let queue = shared(sender.clone());
        let delete = |connection: &str| {
            vec![
                delete_request(&RecordKey {
                    integration_id: "g0".into(),
                    connection_id: connection.into(),
                })
                .unwrap(),
            ]
        };
        let written = concurrently(
            &queue,
            &sender,
            vec![delete("a"), delete("b"), delete("b"), delete("c")],
        )
        .await;
        assert!(written.iter().all(|w| w.result.is_ok()));
        // a alone; then b (the second b waits, and c behind it); then b, c.
        let calls = sender.calls.lock().unwrap().clone();
        let connections: Vec<Vec<&str>> = calls
            .iter()
            .map(|call| call.iter().map(|k| k.connection_id.as_str()).collect())
            .collect();
        assert_eq!(connections, vec![vec!["a"], vec!["b"], vec!["b", "c"]]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_write_keeps_its_own_outcome() {
        // `stubborn`'s items stay unprocessed: it fails alone, throttled,
        // and the writes that shared its calls are stored.
        let sender = Scripted {
            stubborn: Some("stubborn"),
            ..Scripted::default()
        };
        let queue = shared(sender.clone());
        let written = concurrently(
            &queue,
            &sender,
            vec![puts("first", 2), puts("stubborn", 2), puts("other", 2)],
        )
        .await;
        assert!(written[0].result.is_ok());
        assert!(
            matches!(&written[1].result, Err(StoreError::Throttled(m)) if m.contains("2 still unprocessed after 2 resubmissions")),
            "{:?}",
            written[1]
        );
        assert!(written[2].result.is_ok());
        // first alone; stubborn and other together; stubborn resubmitted twice.
        assert_eq!(sizes(&sender), vec![2, 4, 2, 2]);

        // An error of the call fails every write it carried.
        let sender = Scripted {
            fail: true,
            ..Scripted::default()
        };
        let queue = shared(sender.clone());
        let written = concurrently(
            &queue,
            &sender,
            vec![puts("a", 1), puts("b", 1), puts("c", 1)],
        )
        .await;
        assert!(
            written
                .iter()
                .all(|w| matches!(w.result, Err(StoreError::Unavailable(_)))),
            "{written:?}"
        );
        assert_eq!(sizes(&sender), vec![1, 2]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_call_does_not_hold_back_the_writes_behind_it() {
        let sender = Scripted::default();
        let queue = SharedBatches::new(
            sender.clone(),
            UnprocessedRetry::default(),
            Duration::from_secs(3),
            Duration::from_millis(20),
        );
        sender.gate.send_replace(false);
        let write = |connection: &'static str| {
            let queue = queue.clone();
            tokio::spawn(async move { queue.write(puts(connection, 1)).await })
        };
        let first = write("first");
        while sizes(&sender).is_empty() {
            tokio::task::yield_now().await;
        }
        // The first call is held past the stall time: the next write gets a
        // call of its own instead of waiting behind it.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let second = write("second");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sizes(&sender).len() < 2 {
            assert!(Instant::now() < deadline, "the second write waited");
            tokio::task::yield_now().await;
        }
        sender.gate.send_replace(true);
        assert!(first.await.unwrap().result.is_ok());
        assert!(second.await.unwrap().result.is_ok());
        assert_eq!(sizes(&sender), vec![1, 1]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_call_that_panics_fails_its_writes_and_the_queue_goes_on() {
        let sender = Scripted::default();
        let queue = shared(sender.clone());
        let written = queue.write(puts("boom", 1)).await;
        assert!(
            matches!(written.result, Err(StoreError::Unavailable(_))),
            "{written:?}"
        );
        let next = tokio::time::timeout(Duration::from_secs(5), queue.write(puts("next", 1)))
            .await
            .expect("the next write waited for a call that is gone");
        assert!(next.result.is_ok());
    }
}
