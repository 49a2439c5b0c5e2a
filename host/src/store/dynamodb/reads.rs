//! Revocation reads shared by concurrent CONNECTs (`group`): one strongly
//! consistent BatchGetItem for up to [`GET_LIMIT`] users instead of a Query
//! each. Two CONNECTs of one user that wait together share its key: both
//! were waiting before the call was sent, so its answer is as fresh as
//! either would have got alone. Keys left in `UnprocessedKeys` are asked
//! again (with backoff, within the budget); an error of the call fails
//! every read it carried.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::oneshot;

use super::UnprocessedRetry;
use super::group::{Calls, Group};
use crate::store::StoreError;

/// BatchGetItem's limit of keys per call.
pub const GET_LIMIT: usize = 100;

/// What one BatchGetItem of revocations answers.
#[derive(Debug, Default)]
pub struct Got {
    /// `revokedBefore` of each user who has a revocation.
    pub revoked_before: HashMap<String, u64>,
    /// The users whose keys were left unprocessed.
    pub unprocessed: Vec<String>,
}

/// Sends one BatchGetItem of the users' revocations.
#[async_trait::async_trait]
pub trait SendGet: Send + Sync + 'static {
    async fn get(&self, subs: Vec<String>) -> Result<Got, StoreError>;
}

type Answer = oneshot::Sender<Result<Option<u64>, StoreError>>;

pub struct Lookup {
    sub: String,
    done: Answer,
}

pub struct ReadCalls<S> {
    sender: S,
    retry: UnprocessedRetry,
}

/// The queue of revocation reads.
pub struct SharedReads<S: SendGet> {
    group: Group<ReadCalls<S>>,
}

impl<S: SendGet> Clone for SharedReads<S> {
    fn clone(&self) -> Self {
        Self {
            group: self.group.clone(),
        }
    }
}

impl<S: SendGet> SharedReads<S> {
    pub fn new(sender: S, retry: UnprocessedRetry, stalled_after: std::time::Duration) -> Self {
        Self {
            group: Group::new(ReadCalls { sender, retry }, stalled_after),
        }
    }

    /// The second at or before which `sub`'s tokens are revoked, if any.
    pub async fn revoked_before(&self, sub: &str) -> Result<Option<u64>, StoreError> {
        let (done, answer) = oneshot::channel();
        self.group.submit(Lookup {
            sub: sub.to_owned(),
            done,
        });
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "BatchGetItem: the call was dropped".into(),
            ))
        })
    }
}

#[async_trait::async_trait]
impl<S: SendGet> Calls for ReadCalls<S> {
    type Job = Lookup;
    const LIMIT: usize = GET_LIMIT;

    fn size(_: &Lookup) -> usize {
        1
    }

    fn joins(_: &[Lookup], _: &Lookup) -> bool {
        true
    }

    async fn call(&self, batch: Vec<Lookup>) {
        let started = Instant::now();
        let mut waiting: HashMap<String, Vec<Answer>> = HashMap::new();
        for lookup in batch {
            waiting.entry(lookup.sub).or_default().push(lookup.done);
        }
        let answer = |waiting: &mut HashMap<String, Vec<Answer>>,
                      sub: &str,
                      result: Result<Option<u64>, StoreError>| {
            for done in waiting.remove(sub).into_iter().flatten() {
                // A CONNECT that went away no longer needs its answer.
                let _ = done.send(result.clone());
            }
        };
        let mut pending: Vec<String> = waiting.keys().cloned().collect();
        let mut resubmissions = 0;
        loop {
            let got = match self.sender.get(pending.clone()).await {
                Ok(got) => got,
                Err(error) => {
                    for sub in pending {
                        answer(&mut waiting, &sub, Err(error.clone()));
                    }
                    return;
                }
            };
            for sub in &pending {
                if !got.unprocessed.contains(sub) {
                    answer(&mut waiting, sub, Ok(got.revoked_before.get(sub).copied()));
                }
            }
            if got.unprocessed.is_empty() {
                return;
            }
            resubmissions += 1;
            let left = got.unprocessed.len();
            let delay = match self
                .retry
                .next_wait("BatchGetItem", left, resubmissions, started)
            {
                Ok(delay) => delay,
                Err(error) => {
                    for sub in got.unprocessed {
                        answer(&mut waiting, &sub, Err(error.clone()));
                    }
                    return;
                }
            };
            tokio::time::sleep(delay).await;
            pending = got.unprocessed;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::retry::Backoff;

    /// A BatchGetItem stand-in: holds its calls while the gate is closed,
    /// records each call's users, knows `alice`'s revocation and leaves
    /// `stubborn` unprocessed.
    #[derive(Clone)]
    struct Scripted {
        calls: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<tokio::sync::watch::Sender<bool>>,
    }

    #[async_trait::async_trait]
    impl SendGet for Scripted {
        async fn get(&self, mut subs: Vec<String>) -> Result<Got, StoreError> {
            subs.sort();
            self.calls.lock().unwrap().push(subs.clone());
            let _ = self.gate.subscribe().wait_for(|open| *open).await;
            Ok(Got {
                revoked_before: HashMap::from([("alice".to_owned(), 1_700_000_000)]),
                unprocessed: subs.into_iter().filter(|s| s == "stubborn").collect(),
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_waiting_behind_a_call_share_the_next_one_and_one_key() {
        let sender = Scripted {
            calls: Arc::default(),
            gate: Arc::new(tokio::sync::watch::channel(false).0),
        };
        let retry = UnprocessedRetry {
            max_resubmissions: 1,
            backoff: Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(2),
            },
            total_budget: Duration::from_secs(5),
        };
        let reads = SharedReads::new(sender.clone(), retry, Duration::from_secs(60));
        let read = |sub: &'static str| {
            let reads = reads.clone();
            tokio::spawn(async move { reads.revoked_before(sub).await })
        };
        // The first read's call is held; four more wait behind it.
        let mut answers = vec![read("bob")];
        while sender.calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        for sub in ["alice", "alice", "carol", "stubborn"] {
            answers.push(read(sub));
        }
        while reads.group.waiting() < 4 {
            tokio::task::yield_now().await;
        }
        sender.gate.send_replace(true);
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap());
        }
        assert_eq!(got[0], Ok(None));
        assert_eq!(got[1], Ok(Some(1_700_000_000)));
        assert_eq!(got[2], Ok(Some(1_700_000_000)));
        assert_eq!(got[3], Ok(None));
        assert!(
            matches!(&got[4], Err(StoreError::Throttled(m)) if m.contains("1 still unprocessed")),
            "{:?}",
            got[4]
        );
        // bob alone; then alice once for both, carol and stubborn; then
        // stubborn again.
        assert_eq!(
            *sender.calls.lock().unwrap(),
            vec![
                vec!["bob".to_owned()],
                vec!["alice".into(), "carol".into(), "stubborn".into()],
                vec!["stubborn".into()],
            ]
        );
    }
}
