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
