//! A bounded pool for CPU-bound image work.
//!
//! At most `workers` jobs run at once (a semaphore in front of `spawn_blocking`), at most
//! `queue_len` more wait for a worker, and anything beyond that is refused at once with
//! [`ImagingError::Busy`] so the HTTP layer can answer 503 + `Retry-After` instead of queueing
//! unbounded memory. A job whose caller goes away while still queued gives its slot back; one
//! that has started runs to completion (a blocking thread cannot be cancelled) and keeps its
//! worker slot until then, so the `workers` bound holds even under cancellations.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{Encoded, ImagingError, Limits, ResizeSpec, resize};

/// What the pool reports after each job (or refusal), for metrics kept by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolEvent {
    /// Time spent waiting for a worker.
    pub waited: Duration,
    /// Time spent running on the worker (zero when refused).
    pub worked: Duration,
    /// `"ok"` or the [`ImagingError::code`] of the failure (`"busy"` when refused).
    pub outcome: &'static str,
}

/// Called synchronously after every job; keep it cheap (e.g. observe a histogram).
pub type PoolObserver = Arc<dyn Fn(&PoolEvent) + Send + Sync>;

/// Runs [`resize`] (or any CPU-bound closure) off the async runtime with bounded concurrency.
pub struct ResizePool {
    workers: usize,
    /// workers + queue_len: the most jobs admitted (running or waiting) at once.
    capacity: usize,
    /// One permit per worker; tokio's semaphore is fair, so waiting jobs run in arrival order.
    permits: Arc<Semaphore>,
    /// Jobs admitted and not yet finished (queued + running).
    admitted: Arc<AtomicUsize>,
    observer: Option<PoolObserver>,
}

impl std::fmt::Debug for ResizePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResizePool")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("in_flight", &self.in_flight())
            .field("queue_depth", &self.queue_depth())
            .finish()
    }
}

/// Gives an admission slot back when dropped, wherever the job ends.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ResizePool {
    /// A pool running at most `workers` jobs at once (at least 1) with up to `queue_len` more
    /// waiting.
    pub fn new(workers: usize, queue_len: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            capacity: workers.saturating_add(queue_len),
            permits: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(AtomicUsize::new(0)),
            observer: None,
        }
    }

    /// Workers = available cores, queue = 16 per worker: a sensible default for a server.
    pub fn for_cores() -> Self {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::new(workers, workers * 16)
    }

    /// Reports each job's wait and work time and outcome to `observer`.
    #[must_use]
    pub fn with_observer(mut self, observer: PoolObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Most jobs running at once.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Most jobs admitted (running + waiting) at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs running on a worker right now.
    pub fn in_flight(&self) -> usize {
        self.workers - self.permits.available_permits().min(self.workers)
    }

    /// Jobs admitted and waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.admitted
            .load(Ordering::Acquire)
            .saturating_sub(self.in_flight())
    }

    /// Resizes on a worker. See [`resize`].
    ///
    /// # Errors
    /// [`ImagingError::Busy`] at once when all workers and queue slots are taken, otherwise
    /// whatever [`resize`] returns ([`ImagingError::Internal`] if it panicked).
    pub async fn run(
        &self,
        bytes: Bytes,
        spec: ResizeSpec,
        limits: Limits,
    ) -> Result<Encoded, ImagingError> {
        self.run_fn(move || resize(&bytes, &spec, &limits)).await
    }

    /// Runs any CPU-bound job under the same bounds (e.g. [`super::probe`] of a large upload).
    ///
    /// # Errors
    /// [`ImagingError::Busy`] when saturated, [`ImagingError::Internal`] if `job` panicked,
    /// otherwise `job`'s own error.
    pub async fn run_fn<T, F>(&self, job: F) -> Result<T, ImagingError>
    where
        F: FnOnce() -> Result<T, ImagingError> + Send + 'static,
        T: Send + 'static,
    {
        let admission = match self.admit() {
            Some(a) => a,
            None => {
                self.report(Duration::ZERO, Duration::ZERO, "busy");
                return Err(ImagingError::Busy);
            }
        };
        let queued_at = Instant::now();
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| ImagingError::Internal("resize pool closed".into()))?;
        let waited = queued_at.elapsed();
        let handle = tokio::task::spawn_blocking(move || {
            // Both slots are held until the work is really over, even if our caller is gone.
            let _permit = permit;
            let _admission = admission;
            let started = Instant::now();
            let result = job();
            (result, started.elapsed())
        });
        let (result, worked) = match handle.await {
            Ok(done) => done,
            Err(e) => (
                Err(ImagingError::Internal(format!("image worker failed: {e}"))),
                Duration::ZERO,
            ),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        self.report(waited, worked, outcome);
        result
    }

    fn admit(&self) -> Option<Admission> {
        let mut current = self.admitted.load(Ordering::Acquire);
        loop {
            if current >= self.capacity {
                return None;
            }
            match self.admitted.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Admission(Arc::clone(&self.admitted))),
                Err(actual) => current = actual,
            }
        }
    }

    fn report(&self, waited: Duration, worked: Duration, outcome: &'static str) {
        if let Some(observer) = &self.observer {
            observer(&PoolEvent {
                waited,
                worked,
                outcome,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::imaging::{Fit, Format, testdata};

    /// A job that holds its worker until the test opens the gate.
    fn gated(gate: &Arc<std::sync::Barrier>) -> impl FnOnce() -> Result<(), ImagingError> + use<> {
        let gate = Arc::clone(gate);
        move || {
            gate.wait();
            Ok(())
        }
    }

    async fn until(mut cond: impl FnMut() -> bool) {
        for _ in 0..500 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    type Job = tokio::task::JoinHandle<Result<(), ImagingError>>;

    /// Fills a one-worker, one-slot pool: a job held by `gate` runs, another waits.
    async fn fill(pool: &Arc<ResizePool>, gate: &Arc<std::sync::Barrier>) -> (Job, Job) {
        let running = tokio::spawn({
            let (pool, job) = (Arc::clone(pool), gated(gate));
            async move { pool.run_fn(job).await }
        });
        until(|| pool.in_flight() == 1).await;
        let queued = tokio::spawn({
            let pool = Arc::clone(pool);
            async move { pool.run_fn(|| Ok(())).await }
        });
        until(|| pool.queue_depth() == 1).await;
        (running, queued)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn busy_when_workers_and_queue_are_full() {
        let pool = Arc::new(ResizePool::new(1, 1));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let (running, queued) = fill(&pool, &gate).await;
        assert_eq!(pool.in_flight(), 1);

        // Full: refused at once, without waiting for the running job.
        let refused = pool.run_fn(|| Ok(())).await;
        assert!(matches!(refused, Err(ImagingError::Busy)));
        let bytes = Bytes::from(testdata::encode(&testdata::gradient(8, 8), Format::Png));
        let refused = pool
            .run(bytes, ResizeSpec::default(), Limits::default())
            .await;
        assert!(matches!(refused, Err(ImagingError::Busy)));

        gate.wait();
        assert!(matches!(running.await, Ok(Ok(()))));
        assert!(matches!(queued.await, Ok(Ok(()))));
        assert_eq!((pool.in_flight(), pool.queue_depth()), (0, 0));
        assert!(pool.run_fn(|| Ok(())).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_runs_more_than_workers_at_once() {
        let pool = Arc::new(ResizePool::new(2, 100));
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::new();
        for _ in 0..12 {
            let (pool, running, peak) =
                (Arc::clone(&pool), Arc::clone(&running), Arc::clone(&peak));
            jobs.push(tokio::spawn(async move {
                pool.run_fn(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                })
                .await
            }));
        }
        for job in jobs {
            assert!(matches!(job.await, Ok(Ok(()))));
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "peak concurrency {peak}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_waiters_give_their_slot_back() {
        let pool = Arc::new(ResizePool::new(1, 1));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let (running, waiter) = fill(&pool, &gate).await;
        waiter.abort();
        until(|| pool.queue_depth() == 0).await;
        gate.wait();
        assert!(matches!(running.await, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn runs_resize_and_reports_to_the_observer() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let pool = ResizePool::new(2, 4).with_observer(Arc::new(move |e: &PoolEvent| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.outcome);
            }
        }));
        let bytes = Bytes::from(testdata::encode(&testdata::gradient(64, 32), Format::Jpeg));
        let spec = ResizeSpec {
            width: Some(16),
            height: Some(16),
            fit: Fit::Cover,
            format: Some(Format::Webp),
            ..ResizeSpec::default()
        };
        let out = pool.run(bytes, spec, Limits::default()).await;
        assert!(matches!(&out, Ok(e) if e.format == Format::Webp && !e.bytes.is_empty()));
        let bad = pool
            .run(
                Bytes::from_static(b"nope"),
                ResizeSpec::default(),
                Limits::default(),
            )
            .await;
        assert!(matches!(bad, Err(ImagingError::Unsupported)));
        let panicked = pool.run_fn::<(), _>(|| panic!("boom")).await;
        assert!(matches!(panicked, Err(ImagingError::Internal(_))));
        let seen = events.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(seen, vec!["ok", "unsupported-format", "internal"]);
    }
}
