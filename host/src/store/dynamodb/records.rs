//! An integration's records, read once for every delivery waiting on them.
//!
//! Reading 10 000 records is several Query pages (about 0.2 s on dynalite,
//! BENCHMARKS.md), and a burst of events for one integration (a workflow
//! run's jobs starting and ending) would read the same records once each.
//! So deliveries of one integration share reads, never a read that started
//! before they arrived: a delivery that finds no read of its integration
//! under way starts one at once; those arriving while one is under way
//! wait for it to end and then share the next one. Each answer is as fresh
//! as a read of the caller's own (nothing removed before the caller
//! arrived is served), and a burst costs two reads instead of one each.
//! Integrations do not wait for each other.
//!
//! The reads run in a task of their own, so a caller that goes away (its
//! HTTP client hung up) strands no one waiting behind it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Waiting<V> = Vec<oneshot::Sender<V>>;

/// Reads shared per key; `V` is a read's answer (cloned for each sharer).
pub struct SharedByKey<V> {
    /// The keys with a read under way, and who waits for the next one.
    under_way: Arc<Mutex<HashMap<String, Waiting<V>>>>,
}

impl<V> Clone for SharedByKey<V> {
    fn clone(&self) -> Self {
        Self {
            under_way: self.under_way.clone(),
        }
    }
}

impl<V> Default for SharedByKey<V> {
    fn default() -> Self {
        Self {
            under_way: Arc::default(),
        }
    }
}

impl<V: Clone + Send + 'static> SharedByKey<V> {
    /// The answer of a read of `key` that started after this call did;
    /// `read` makes one (used when this call starts the reads of `key`).
    /// `None` when the read ended without an answer (it panicked).
    pub async fn read<F, Fut>(&self, key: &str, read: F) -> Option<V>
    where
        F: Fn(String) -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let starts = {
            let mut under_way = lock(&self.under_way);
            match under_way.get_mut(key) {
                Some(waiting) => {
                    waiting.push(answer);
                    None
                }
                None => {
                    under_way.insert(key.to_owned(), Vec::new());
                    Some(answer)
                }
            }
        };
        if let Some(answer) = starts {
            let reads = Reads {
                under_way: self.under_way.clone(),
                key: key.to_owned(),
                finished: false,
            };
            tokio::spawn(reads.run(answer, read));
        }
        answered.await.ok()
    }

    /// Keys with a read under way (for tests).
    #[cfg(test)]
    fn under_way(&self) -> usize {
        lock(&self.under_way).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reads of one key, one after another while anyone waits. The key
/// leaves the map when no one waits, in the same lock as that check (a
/// caller arriving a moment later starts afresh and is never dropped), or
/// when a read panics (dropped unfinished): whoever waits then gets no
/// answer, and the next caller starts afresh.
struct Reads<V> {
    under_way: Arc<Mutex<HashMap<String, Waiting<V>>>>,
    key: String,
    finished: bool,
}

impl<V: Clone> Reads<V> {
    async fn run<F, Fut>(mut self, first: oneshot::Sender<V>, read: F)
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = V>,
    {
        let mut answers = vec![first];
        loop {
            answer_all(answers, read(self.key.clone()).await);
            // Whoever arrived during that read needs a read of their own
            // time: the next one, shared.
            answers = {
                let mut under_way = lock(&self.under_way);
                match under_way.get_mut(&self.key) {
                    Some(waiting) if !waiting.is_empty() => std::mem::take(waiting),
                    _ => {
                        under_way.remove(&self.key);
                        self.finished = true;
                        return;
                    }
                }
            };
        }
    }
}

/// A clone of `value` for each but the last, who gets `value`.
fn answer_all<V: Clone>(answers: Waiting<V>, value: V) {
    let mut answers = answers.into_iter().peekable();
    while let Some(answer) = answers.next() {
        if answers.peek().is_none() {
            let _ = answer.send(value);
            return;
        }
        let _ = answer.send(value.clone());
    }
}

impl<V> Drop for Reads<V> {
    fn drop(&mut self) {
        if !self.finished {
            lock(&self.under_way).remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Semaphore;

    /// A read that counts itself and waits for the gate; its answer is
    /// its number (1 for the first read).
    fn gated(
        reads: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    ) -> impl Fn(String) -> std::pin::Pin<Box<dyn Future<Output = usize> + Send>> + Send + 'static
    {
        move |_key| {
            let (reads, gate) = (reads.clone(), gate.clone());
            Box::pin(async move {
                let number = reads.fetch_add(1, Ordering::SeqCst) + 1;
                gate.acquire().await.unwrap().forget();
                number
            })
        }
    }

    async fn until(what: impl Fn() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !what() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("reached");
    }

    #[tokio::test]
    async fn callers_during_a_read_share_the_next_one_never_the_one_under_way() {
        let shared = SharedByKey::<usize>::default();
        let (reads, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let first = tokio::spawn({
            let (shared, read) = (shared.clone(), gated(reads.clone(), gate.clone()));
            async move { shared.read("acme", read).await }
        });
        // The first caller's read starts at once, alone.
        until(|| reads.load(Ordering::SeqCst) == 1).await;
        let later: Vec<_> = (0..3)
            .map(|_| {
                let (shared, read) = (shared.clone(), gated(reads.clone(), gate.clone()));
                tokio::spawn(async move { shared.read("acme", read).await })
            })
            .collect();
        until(|| {
            lock(&shared.under_way)
                .get("acme")
                .is_some_and(|w| w.len() == 3)
        })
        .await;
        gate.add_permits(1);
        assert_eq!(first.await.unwrap(), Some(1));
        // The three who came during read 1 get read 2, all of them.
        until(|| reads.load(Ordering::SeqCst) == 2).await;
        gate.add_permits(1);
        for caller in later {
            assert_eq!(caller.await.unwrap(), Some(2));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        until(|| shared.under_way() == 0).await;
    }

    /// Callers arriving just as the reads of their key end are never
    /// dropped (the key leaves the map in the same lock as the check that
    /// no one waits).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_arriving_as_the_reads_end_is_answered() {
        let shared = SharedByKey::<usize>::default();
        let callers: Vec<_> = (0..4)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut unanswered = 0;
                    for _ in 0..100_000 {
                        if shared.read("acme", |_| async { 7 }).await.is_none() {
                            unanswered += 1;
                        }
                    }
                    unanswered
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), 0, "callers left without an answer");
        }
        until(|| shared.under_way() == 0).await;
    }

    #[tokio::test]
    async fn another_key_does_not_wait() {
        let shared = SharedByKey::<usize>::default();
        let (reads, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Semaphore::new(0)));
        let held = tokio::spawn({
            let (shared, read) = (shared.clone(), gated(reads.clone(), gate.clone()));
            async move { shared.read("acme", read).await }
        });
        until(|| reads.load(Ordering::SeqCst) == 1).await;
        let other = shared.read("globex", |key| async move { key.len() }).await;
        assert_eq!(other, Some("globex".len()));
        gate.add_permits(1);
        assert_eq!(held.await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_read_that_panics_answers_none_and_the_next_caller_reads_afresh() {
        let shared = SharedByKey::<usize>::default();
        let gate = Arc::new(Semaphore::new(0));
        let failing = tokio::spawn({
            let (shared, gate) = (shared.clone(), gate.clone());
            async move {
                shared
                    .read("acme", move |_| {
                        let gate = gate.clone();
                        async move {
                            gate.acquire().await.unwrap().forget();
                            panic!("a bug in the read")
                        }
                    })
                    .await
            }
        });
        until(|| shared.under_way() == 1).await;
        let waiting = tokio::spawn({
            let shared = shared.clone();
            async move { shared.read("acme", |_| async { 7 }).await }
        });
        until(|| {
            lock(&shared.under_way)
                .get("acme")
                .is_some_and(|w| w.len() == 1)
        })
        .await;
        gate.add_permits(1);
        assert_eq!(failing.await.unwrap(), None);
        assert_eq!(waiting.await.unwrap(), None);
        assert_eq!(shared.under_way(), 0);
        assert_eq!(shared.read("acme", |_| async { 7 }).await, Some(7));
    }
}
