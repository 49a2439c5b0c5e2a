//! Calls shared by concurrent requests (a group commit).
//!
//! A DynamoDB call costs about 200 µs of CPU here whatever it carries
//! (BENCHMARKS.md, issue 25), and a CONNECT or a DISCONNECT reads or writes
//! only a few items. So concurrent requests share calls: while a call is
//! under way, new jobs wait in a queue, and the next call takes as many
//! whole jobs as fit in one call. A job that finds no call under way goes
//! out at once: an idle store makes nobody wait for company, and a busy one
//! adds at most one call's time to a job. More calls run at once (up to
//! [`MAX_CALLS`]) only when the queue holds a full call, so a saturated
//! store is bounded by DynamoDB's latency, not by one call, or when the
//! call under way has stalled (retries, a slow partition: longer than
//! [`STALLED_AFTER`]), so one slow call does not hold back the jobs behind
//! it. What a call is, and how it answers each job, is the [`Calls`]'.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Calls under way at once, at most, per queue: 400 writes or 1 600
/// revocation reads in flight, so even calls slowed to a second each (a
/// brownout, the SDK's retries) carry hundreds of requests a second.
pub const MAX_CALLS: usize = 16;

/// A call under way this long no longer holds back the jobs behind it.
pub const STALLED_AFTER: Duration = Duration::from_millis(100);

/// One kind of shared call.
#[async_trait::async_trait]
pub trait Calls: Send + Sync + 'static {
    /// A request's part of a call; it carries its own way to answer.
    type Job: Send + 'static;
    /// What one call carries at most, in [`Calls::size`] units.
    const LIMIT: usize;
    fn size(job: &Self::Job) -> usize;
    /// Whether `job` may share a call with `batch`.
    fn joins(batch: &[Self::Job], job: &Self::Job) -> bool;
    /// Makes the call and answers every job in it.
    async fn call(&self, batch: Vec<Self::Job>);
}

/// One queue of jobs and the calls that carry them.
pub struct Group<C: Calls> {
    inner: Arc<Inner<C>>,
}

impl<C: Calls> Clone for Group<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<C: Calls> {
    calls: C,
    stalled_after: Duration,
    queue: Mutex<Queue<C::Job>>,
}

struct Queue<J> {
    jobs: VecDeque<J>,
    /// The sizes of `jobs`, summed.
    size: usize,
    /// Calls under way (each a task that drains the queue).
    calls: usize,
    /// Of those, the ones under way longer than `stalled_after`.
    stalled: usize,
}

impl<C: Calls> Group<C> {
    pub fn new(calls: C, stalled_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                calls,
                stalled_after,
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    size: 0,
                    calls: 0,
                    stalled: 0,
                }),
            }),
        }
    }

    /// Queues a job; a call answers it.
    pub fn submit(&self, job: C::Job) {
        let mut queue = self.inner.lock();
        queue.size += C::size(&job);
        queue.jobs.push_back(job);
        self.inner.start_call_if_needed(&mut queue);
    }

    /// The sizes of the jobs waiting, summed (for tests).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.inner.lock().size
    }

    /// Calls under way (or about to take their jobs) and [`Group::waiting`],
    /// read at one moment (for tests).
    #[cfg(test)]
    pub fn calls_and_waiting(&self) -> (usize, usize) {
        let queue = self.inner.lock();
        (queue.calls, queue.size)
    }
}

impl<C: Calls> Inner<C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<C::Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a call for what waits when no call under way will take it
    /// soon enough.
    fn start_call_if_needed(self: &Arc<Self>, queue: &mut Queue<C::Job>) {
        let needed = queue.calls == queue.stalled || queue.size >= C::LIMIT;
        if needed && !queue.jobs.is_empty() && queue.calls < MAX_CALLS {
            queue.calls += 1;
            tokio::spawn(self.clone().drain());
        }
    }

    /// Makes calls until the queue is empty.
    async fn drain(self: Arc<Self>) {
        let mut slot = Slot {
            inner: self.clone(),
            stalled: false,
        };
        loop {
            let batch = self.lock().next_batch::<C>();
            if batch.is_empty() {
                return;
            }
            let call = self.calls.call(batch);
            tokio::pin!(call);
            if tokio::time::timeout(self.stalled_after, &mut call)
                .await
                .is_err()
            {
                {
                    let mut queue = self.lock();
                    queue.stalled += 1;
                    slot.stalled = true;
                    self.start_call_if_needed(&mut queue);
                }
                call.await;
                self.lock().stalled -= 1;
                slot.stalled = false;
            }
        }
    }
}

/// A drain's place among the calls under way, given back however the drain
/// ends (a panic in a call included), with a new call started for any job
/// that arrived meanwhile: no job waits for a call that is gone.
struct Slot<C: Calls> {
    inner: Arc<Inner<C>>,
    stalled: bool,
}

impl<C: Calls> Drop for Slot<C> {
    fn drop(&mut self) {
        let mut queue = self.inner.lock();
        queue.calls -= 1;
        if self.stalled {
            queue.stalled -= 1;
        }
        self.inner.start_call_if_needed(&mut queue);
    }
}

impl<J> Queue<J> {
    /// The jobs at the front that fit in one call and may share it.
    fn next_batch<C: Calls<Job = J>>(&mut self) -> Vec<J> {
        let mut batch: Vec<J> = Vec::new();
        let mut size = 0;
        while let Some(job) = self.jobs.front() {
            if !batch.is_empty() && (size + C::size(job) > C::LIMIT || !C::joins(&batch, job)) {
                break;
            }
            let job = self.jobs.pop_front().expect("a front job");
            size += C::size(&job);
            self.size -= C::size(&job);
            batch.push(job);
        }
        batch
    }
}
