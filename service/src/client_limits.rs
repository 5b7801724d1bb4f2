//! What one client may hold: connections per client address ([`PerClient`]) and the
//! slowest rate a request body may arrive at ([`MinRateBody`]). Both exist because a
//! handful of cheap clients could otherwise hold every connection slot or every upload
//! task by sending almost nothing.
//!
//! The rate rule: once a body has been read for the grace period, the bytes received must
//! average at least the minimum rate since the first read, and no gap between two chunks
//! may exceed [`MAX_BODY_GAP`]; otherwise the body fails with [`BODY_TOO_SLOW`] and the edge
//! answers 408 and closes the connection. The clock starts when the handler first reads, so
//! server-side waits never count against the client. What this must not do: cut an honest
//! slow upload (50 MiB at 2 Mbit/s is 32 times the default minimum).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody};
use bytes::Bytes;
use hyper::body::Frame;
use tokio::time::{Instant, Sleep};

/// Marker in the stream error of a body cut by the rate rule.
pub const BODY_TOO_SLOW: &str = "sis: request body arriving too slowly";
/// Longest pause between two chunks of a body once its grace period is over.
pub const MAX_BODY_GAP: Duration = Duration::from_secs(20);
/// How often a stalled body is re-checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// Open connections per client address, capped.
#[derive(Debug)]
pub struct PerClient {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; gives its slot back when dropped.
#[derive(Debug)]
pub struct ClientSlot {
    owner: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    /// At most `max` connections per address; `0` = no cap.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a new connection from `ip`, or `None` when the address is at its cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.max == 0 {
            return Some(ClientSlot {
                owner: Arc::clone(self),
                ip,
            });
        }
        let mut open = self.open.lock().ok()?;
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.open
            .lock()
            .map(|m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if self.owner.max == 0 {
            return;
        }
        if let Ok(mut open) = self.owner.open.lock()
            && let Some(n) = open.get_mut(&self.ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The rate rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes per second, averaged since the first read; `0` = off.
    pub bytes_per_sec: u64,
    /// No check before this much time has passed since the first read.
    pub grace: Duration,
}

impl Default for MinRate {
    fn default() -> Self {
        Self {
            bytes_per_sec: 8 << 10,
            grace: Duration::from_secs(5),
        }
    }
}

/// A request body held to [`MinRate`]. `tripped` is set when it cut the body, so the edge
/// can answer 408 whatever the handler made of the error.
pub struct MinRateBody {
    inner: Body,
    rate: MinRate,
    started: Option<Instant>,
    last_data: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    tripped: Arc<AtomicBool>,
    done: bool,
}

impl MinRateBody {
    /// Wraps `inner`; returns the body and the flag it sets when it cuts the body.
    pub fn wrap(inner: Body, rate: MinRate) -> (Body, Arc<AtomicBool>) {
        let tripped = Arc::new(AtomicBool::new(false));
        if rate.bytes_per_sec == 0 {
            return (inner, tripped);
        }
        let now = Instant::now();
        let body = Self {
            inner,
            rate,
            started: None,
            last_data: now,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(now + rate.grace)),
            tripped: Arc::clone(&tripped),
            done: false,
        };
        (Body::new(body), tripped)
    }

    /// Whether the body is too slow at `now`.
    fn too_slow(&self, now: Instant) -> bool {
        let Some(started) = self.started else {
            return false;
        };
        let elapsed = now.saturating_duration_since(started);
        if elapsed < self.rate.grace {
            return false;
        }
        let wanted = self.rate.bytes_per_sec as f64 * elapsed.as_secs_f64();
        (self.received as f64) < wanted
            || now.saturating_duration_since(self.last_data) > MAX_BODY_GAP.max(self.rate.grace)
    }

    fn cut(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        self.done = true;
        self.tripped.store(true, Ordering::SeqCst);
        Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            BODY_TOO_SLOW,
        )))))
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let now = Instant::now();
        if self.started.is_none() {
            self.started = Some(now);
            self.last_data = now;
            let first_check = now + self.rate.grace;
            self.timer.as_mut().reset(first_check);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    self.last_data = now;
                }
                if self.too_slow(now) {
                    return self.cut();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                // Nothing arrived: check on a timer, so a stalled body is cut too.
                loop {
                    match self.timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let now = Instant::now();
                            if self.too_slow(now) {
                                return self.cut();
                            }
                            self.timer.as_mut().reset(now + CHECK_EVERY);
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn per_client_caps_and_frees() {
        let pc = PerClient::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let a = pc.admit(ip).unwrap();
        let _b = pc.admit(ip).unwrap();
        assert!(pc.admit(ip).is_none(), "third from one address");
        assert!(pc.admit(other).is_some(), "another address is not affected");
        drop(a);
        assert_eq!(pc.open_from(ip), 1);
        assert!(pc.admit(ip).is_some());
        let off = PerClient::new(0);
        let many: Vec<_> = (0..1000).map(|_| off.admit(ip).unwrap()).collect();
        assert_eq!(many.len(), 1000);
    }

    /// A body fed by a channel at a chosen pace.
    fn fed(rate: MinRate) -> (tokio::sync::mpsc::Sender<Bytes>, Body, Arc<AtomicBool>) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
        });
        let (body, tripped) = MinRateBody::wrap(Body::from_stream(stream), rate);
        (tx, body, tripped)
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_is_cut_after_the_grace_period() {
        let rate = MinRate {
            bytes_per_sec: 1000,
            grace: Duration::from_secs(5),
        };
        let (tx, body, tripped) = fed(rate);
        tokio::spawn(async move {
            loop {
                if tx.send(Bytes::from_static(b"x")).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let start = Instant::now();
        let err = body.collect().await.err().unwrap();
        assert!(err.to_string().contains(BODY_TOO_SLOW), "{err}");
        assert!(tripped.load(Ordering::SeqCst));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(5) && took < Duration::from_secs(7),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut() {
        let (tx, body, tripped) = fed(MinRate::default());
        tx.send(Bytes::from(vec![0; 100_000])).await.unwrap();
        let start = Instant::now();
        let err = body.collect().await.err().unwrap();
        assert!(err.to_string().contains(BODY_TOO_SLOW));
        assert!(tripped.load(Ordering::SeqCst));
        // 100 kB cover 12 s at 8 KiB/s; then the average falls below the minimum.
        assert!(
            start.elapsed() < Duration::from_secs(14),
            "{:?}",
            start.elapsed()
        );
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn an_honest_slow_body_passes() {
        // 2 Mbit/s = 250 kB/s in 25 kB chunks every 100 ms, 5 MB.
        let (tx, body, tripped) = fed(MinRate::default());
        tokio::spawn(async move {
            for _ in 0..200 {
                tx.send(Bytes::from(vec![1; 25_000])).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), 5_000_000);
        assert!(!tripped.load(Ordering::SeqCst));
    }
}
