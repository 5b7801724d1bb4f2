//! Connection threads: one single-threaded tokio runtime per core, each serving the
//! connections handed to it, the way nginx runs one event loop per worker process.
//!
//! Why not tokio's work-stealing runtime for connections: serving a cached image takes a
//! few microseconds of CPU, and at that grain the cross-thread wake-ups of work stealing
//! (futex, context switches) cost more than the request itself — measured on the bench's
//! cached-variant scenario, one current-thread runtime alone came within 15 % of two
//! work-stealing workers. Connections are accepted on the main runtime and dealt
//! round-robin, so keep-alive connections spread evenly (a shared listening socket would
//! let whichever thread wakes first take most of a burst).
//!
//! Everything a handler touches is `Send + Sync` and runtime-agnostic (the cache, the
//! resize pool, the store, metrics); tasks a handler spawns run on its own thread's
//! runtime, blocking work on that runtime's blocking pool.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The connection threads, stopped (their runtimes dropped) on [`IoThreads::stop`] or drop.
pub struct IoThreads {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl IoThreads {
    /// Starts `n` threads (at least one), each running a current-thread runtime.
    ///
    /// # Errors
    /// A runtime or a thread could not be created.
    pub fn start(n: usize) -> std::io::Result<Self> {
        // Built field by field so that a failure part-way stops (via `Drop`) the threads
        // already running.
        let mut io = Self {
            handles: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
            stop: CancellationToken::new(),
        };
        for i in 0..n.max(1) {
            // Each runtime is built and dropped on its own thread: a runtime dropped on the
            // caller (a runtime worker) would panic.
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = io.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("sis-io-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .thread_name(format!("sis-io-{i}"))
                        .build();
                    match rt {
                        Ok(rt) => {
                            let _ = tx.send(Ok(rt.handle().clone()));
                            rt.block_on(stop.cancelled());
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            io.threads.push(thread);
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("connection thread died at start"))??;
            io.handles.push(handle);
        }
        Ok(io)
    }

    /// How many connection threads run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Always false: there is at least one thread.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime of the next thread, round-robin.
    pub fn next_handle(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    /// Runs `fut` on the next thread.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.next_handle().spawn(fut)
    }

    /// Stops every thread: tasks still running on them are dropped.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.cancel();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The default number of connection threads: the cores this process may use.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn deals_tasks_round_robin_and_stops() {
        let io = IoThreads::start(3).unwrap();
        assert_eq!(io.len(), 3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let names: Vec<String> = rt.block_on(async {
            let mut names = Vec::new();
            for _ in 0..6 {
                let name = io
                    .spawn(async { std::thread::current().name().map(str::to_owned) })
                    .await
                    .unwrap();
                names.push(name.unwrap());
            }
            names
        });
        assert_eq!(
            names,
            [
                "sis-io-0", "sis-io-1", "sis-io-2", "sis-io-0", "sis-io-1", "sis-io-2"
            ]
        );
        io.stop();
    }
}
