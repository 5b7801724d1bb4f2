//! Agent mode's background loop: poll the server's change feed, drop cached bytes
//! of deleted images, and track whether the server is reachable (`/readyz`).
//!
//! The promise: bytes of an image deleted on the server are not served by this
//! agent more than `window` after the delete. How it is kept:
//! - Every `poll_interval` (well under the window) the agent asks for changes
//!   since the last sequence number it saw, and drops every cached original and
//!   variant of each deleted MD5. Deleted MD5s are remembered for one window and
//!   swept again on each poll, which catches a resize or fetch that was already
//!   running when the delete arrived and cached its result afterwards.
//! - The server restarted (new epoch) or the agent fell behind the feed's bounded
//!   log (`reset`): the agent cannot know what was deleted, so it flushes its whole
//!   cache (and once more on the next poll, for in-flight loads).
//! - The feed cannot be reached: after `ready_failures` failed polls `/readyz`
//!   answers 503; once no poll has succeeded for a whole window, cached data can
//!   no longer be vouched for, so the cache is flushed (and kept empty on every
//!   poll until the feed answers again). Until then cached reads keep answering
//!   200 while the server is down: availability for up to one window, never
//!   staleness beyond it.
//!
//! The loop never touches the network except through [`Upstream::changes`].

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::state::{AppState, ImageKey};
use crate::store::Md5Hex;
use crate::upstream::Upstream;

/// Timing of the feed loop.
#[derive(Debug, Clone)]
pub struct FeedOptions {
    /// Longest time a deleted image may still be served.
    pub window: Duration,
    /// Time between polls.
    pub poll_interval: Duration,
    /// Failed polls in a row before `/readyz` answers 503.
    pub ready_failures: u32,
}

impl FeedOptions {
    /// The poll interval used when none is given: a fifth of the window, at least 100 ms.
    pub fn default_interval(window: Duration) -> Duration {
        (window / 5).max(Duration::from_millis(100))
    }
}

/// What the loop decided after one poll (pure; see [`FeedState::on_success`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Drop these MD5s' entries.
    Sweep(Vec<Md5Hex>),
    /// Drop everything.
    Flush(&'static str),
}

/// The loop's bookkeeping, separate from I/O so it can be unit-tested.
#[derive(Debug)]
pub struct FeedState {
    opts: FeedOptions,
    epoch: Option<String>,
    seq: Option<u64>,
    /// When the last successful poll was sent: the cache is vouched for up to then.
    last_ok: Instant,
    failures: u32,
    /// Recently deleted MD5s, swept on every poll for one window.
    tombstones: VecDeque<(Instant, Md5Hex)>,
    flush_again: bool,
    /// The cache was flushed because the feed was out of reach for a window.
    stale: bool,
}

impl FeedState {
    /// Starts vouching at `now` (the cache is empty at start-up).
    pub fn new(opts: FeedOptions, now: Instant) -> Self {
        Self {
            opts,
            epoch: None,
            seq: None,
            last_ok: now,
            failures: 0,
            tombstones: VecDeque::new(),
            flush_again: false,
            stale: false,
        }
    }

    /// The `since` of the next poll.
    pub fn since(&self) -> Option<u64> {
        self.seq
    }

    /// A poll sent at `sent` answered `changes`.
    pub fn on_success(&mut self, sent: Instant, changes: &crate::feed::Changes) -> Vec<Action> {
        let mut actions = Vec::new();
        let restarted = self.epoch.as_ref().is_some_and(|e| e != &changes.epoch);
        let first = self.epoch.is_none();
        if restarted || changes.reset {
            actions.push(Action::Flush(if restarted {
                "server restarted (new feed epoch)"
            } else {
                "fell behind the change feed"
            }));
            self.flush_again = true;
        } else if self.flush_again || self.stale {
            actions.push(Action::Flush("settling after a flush"));
            self.flush_again = false;
        } else if first && self.failures > 0 {
            // Loads may have succeeded before the first poll did: not vouched for.
            actions.push(Action::Flush("first contact with the change feed"));
        }
        for m in &changes.md5s {
            if let Some(md5) = Md5Hex::parse(m) {
                self.tombstones.push_back((sent, md5));
            }
        }
        while self
            .tombstones
            .front()
            .is_some_and(|(t, _)| sent.saturating_duration_since(*t) > self.opts.window)
        {
            self.tombstones.pop_front();
        }
        if !self.tombstones.is_empty() {
            let mut seen = HashSet::new();
            let md5s = self
                .tombstones
                .iter()
                .filter(|(_, m)| seen.insert(*m))
                .map(|(_, m)| *m)
                .collect();
            actions.push(Action::Sweep(md5s));
        }
        self.epoch = Some(changes.epoch.clone());
        self.seq = Some(changes.seq);
        self.last_ok = self.last_ok.max(sent);
        self.failures = 0;
        self.stale = false;
        actions
    }

    /// A poll sent at `now` failed. Returns the flush to do, if any.
    pub fn on_failure(&mut self, now: Instant) -> Option<Action> {
        self.failures = self.failures.saturating_add(1);
        if now.saturating_duration_since(self.last_ok) > self.opts.window {
            self.stale = true;
            return Some(Action::Flush("change feed unreachable for a whole window"));
        }
        None
    }

    /// Enough polls failed in a row that `/readyz` should answer 503.
    pub fn unready(&self) -> bool {
        self.failures >= self.opts.ready_failures.max(1)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

fn apply(state: &AppState, action: &Action, logged_stale: &mut bool) {
    match action {
        Action::Sweep(md5s) => {
            let set: HashSet<&Md5Hex> = md5s.iter().collect();
            state
                .cache
                .remove_where(|k: &ImageKey| set.contains(k.md5()));
        }
        Action::Flush(why) => {
            let entries = state.cache.len();
            state.cache.remove_where(|_: &ImageKey| true);
            let stale = why.contains("unreachable");
            if entries > 0 && (!stale || !*logged_stale) {
                tracing::warn!(entries, reason = *why, "flushed the agent cache");
            }
            if stale {
                *logged_stale = true;
            }
        }
    }
}

/// Runs the feed loop until `shutdown` is cancelled.
pub async fn run_feed(
    state: AppState,
    upstream: Arc<Upstream>,
    opts: FeedOptions,
    shutdown: CancellationToken,
) {
    let mut feed = FeedState::new(opts.clone(), Instant::now());
    // A poll must not outlive its interval (nor the configured request timeout).
    let poll_timeout = opts
        .poll_interval
        .max(Duration::from_millis(200))
        .min(upstream.config().request_timeout);
    let mut ticker = tokio::time::interval(opts.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut logged_stale = false;
    let mut was_ready = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let sent = Instant::now();
        match upstream.changes(feed.since(), poll_timeout).await {
            Ok(changes) => {
                for action in feed.on_success(sent, &changes) {
                    apply(&state, &action, &mut logged_stale);
                }
                logged_stale = false;
                upstream.set_reachable(true);
                if !was_ready {
                    tracing::info!(upstream = upstream.base(), "upstream reachable");
                    was_ready = true;
                }
            }
            Err(e) => {
                if let Some(action) = feed.on_failure(sent) {
                    apply(&state, &action, &mut logged_stale);
                }
                if feed.unready() {
                    upstream.set_reachable(false);
                    if was_ready {
                        tracing::warn!(error = %e, failures = feed.failures(), "upstream unreachable: not ready");
                        was_ready = false;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::feed::Changes;

    fn opts() -> FeedOptions {
        FeedOptions {
            window: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            ready_failures: 3,
        }
    }

    fn changes(epoch: &str, seq: u64, md5s: &[&Md5Hex]) -> Changes {
        Changes {
            epoch: epoch.into(),
            seq,
            reset: false,
            md5s: md5s.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn sweeps_deleted_md5s_for_one_window() {
        let t0 = Instant::now();
        let mut f = FeedState::new(opts(), t0);
        assert!(f.on_success(t0, &changes("e", 0, &[])).is_empty());
        assert_eq!(f.since(), Some(0));
        let a = Md5Hex::of(b"a");
        let acts = f.on_success(t0 + Duration::from_secs(1), &changes("e", 1, &[&a]));
        assert_eq!(acts, [Action::Sweep(vec![a])]);
        assert_eq!(f.since(), Some(1));
        // Swept again while within the window (in-flight loads).
        let acts = f.on_success(t0 + Duration::from_secs(5), &changes("e", 1, &[]));
        assert_eq!(acts, [Action::Sweep(vec![a])]);
        // Forgotten after it.
        assert!(
            f.on_success(t0 + Duration::from_secs(12), &changes("e", 1, &[]))
                .is_empty()
        );
    }

    #[test]
    fn restart_or_reset_flushes_twice() {
        let t0 = Instant::now();
        let mut f = FeedState::new(opts(), t0);
        f.on_success(t0, &changes("e1", 5, &[]));
        let acts = f.on_success(t0, &changes("e2", 0, &[]));
        assert!(matches!(acts[..], [Action::Flush(_)]));
        assert_eq!(f.since(), Some(0));
        assert!(matches!(
            f.on_success(t0, &changes("e2", 0, &[]))[..],
            [Action::Flush(_)]
        ));
        assert!(f.on_success(t0, &changes("e2", 0, &[])).is_empty());
        let mut c = changes("e2", 9, &[]);
        c.reset = true;
        assert!(matches!(f.on_success(t0, &c)[..], [Action::Flush(_)]));
    }

    #[test]
    fn unreachable_turns_unready_then_flushes_after_the_window() {
        let t0 = Instant::now();
        let mut f = FeedState::new(opts(), t0);
        f.on_success(t0, &changes("e", 0, &[]));
        assert!(f.on_failure(t0 + Duration::from_secs(1)).is_none());
        assert!(f.on_failure(t0 + Duration::from_secs(2)).is_none());
        assert!(!f.unready());
        assert!(f.on_failure(t0 + Duration::from_secs(3)).is_none());
        assert!(f.unready(), "three failures: not ready");
        // Still within the window: cached data is served.
        assert!(f.on_failure(t0 + Duration::from_secs(9)).is_none());
        assert!(matches!(
            f.on_failure(t0 + Duration::from_millis(10_001)),
            Some(Action::Flush(_))
        ));
        // Back: ready, and one more flush for loads that raced the outage.
        let acts = f.on_success(t0 + Duration::from_secs(11), &changes("e", 0, &[]));
        assert!(!f.unready());
        assert!(matches!(acts[..], [Action::Flush(_)]));
        assert!(
            f.on_success(t0 + Duration::from_secs(12), &changes("e", 0, &[]))
                .is_empty()
        );
    }

    #[test]
    fn first_contact_after_failures_flushes() {
        let t0 = Instant::now();
        let mut f = FeedState::new(opts(), t0);
        assert!(f.on_failure(t0).is_none());
        assert!(matches!(
            f.on_success(t0, &changes("e", 3, &[]))[..],
            [Action::Flush(_)]
        ));
    }
}
