//! The server's change feed: a bounded, in-memory log of deleted MD5s that agents
//! poll (`GET /internal/v1/changes?since=SEQ`) to drop cached bytes of deleted images.
//!
//! Every delete gets the next sequence number (1, 2, 3, …). The log keeps the last
//! [`ChangeFeed::capacity`] entries; older ones are forgotten, and an agent asking
//! for changes after a forgotten one gets `reset: true` (it must flush its whole
//! cache). The feed lives only in memory, so each server process has a new random
//! `epoch`: an agent that sees the epoch change (server restarted) flushes too.
//!
//! With storage shared by several servers (S3), the feed is *shared*: deletes are logged
//! in the bucket ([`crate::store::ImageStore::shared_changes`]) and every server merges
//! that log into its feed ([`ChangeFeed::merge`]). Sequence numbers are then the log's
//! timestamps (Unix ms) and the epoch names the log, so every replica answers an agent
//! the same way and an agent may poll any of them. A replica publishes entries only up
//! to the log's settled time, before which no entry can still appear.
//! Pure bookkeeping: no I/O, no clock, no async.

use std::collections::VecDeque;
use std::sync::Mutex;

use crate::id::Md5Hex;
pub use crate::wire::Changes;

/// Entries kept by default: at ~40 bytes each, well under a MiB.
pub const DEFAULT_CAPACITY: usize = 16_384;

struct Log {
    /// Sequence number of the newest entry (0 = none yet); shared: the settled time.
    seq: u64,
    entries: VecDeque<(u64, Md5Hex)>,
    /// Shared feeds: changes at or before this sequence number are not known.
    floor: u64,
}

/// The feed. Share it behind an `Arc`.
pub struct ChangeFeed {
    epoch: String,
    capacity: usize,
    /// Fed from a log shared by several servers (see the module docs).
    shared: bool,
    // A std mutex: every critical section is a few pointer moves.
    log: Mutex<Log>,
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("epoch", &self.epoch)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ChangeFeed {
    /// A feed remembering at most `capacity` deletes, with a fresh epoch.
    pub fn new(capacity: usize) -> Self {
        Self::with_epoch(capacity, new_epoch())
    }

    /// A feed with a given epoch (tests).
    pub fn with_epoch(capacity: usize, epoch: String) -> Self {
        Self {
            epoch,
            capacity: capacity.max(1),
            shared: false,
            log: Mutex::new(Log {
                seq: 0,
                entries: VecDeque::new(),
                floor: 0,
            }),
        }
    }

    /// A feed merged from a log shared by several servers; `log_id` names the log and is
    /// the epoch of every replica's feed.
    pub fn shared(capacity: usize, log_id: String) -> Self {
        Self {
            shared: true,
            ..Self::with_epoch(capacity, log_id)
        }
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// Merges a poll of the shared log; returns the MD5s not merged before (the caller
    /// drops them from its cache).
    pub fn merge(&self, changes: &crate::store::SharedChanges) -> Vec<Md5Hex> {
        let mut log = self.lock();
        if log.seq == 0 {
            log.floor = changes.covered_from_ms;
        }
        let mut fresh = Vec::new();
        for &(ts, md5) in &changes.entries {
            if ts <= log.floor {
                continue;
            }
            let at = log.entries.partition_point(|e| *e < (ts, md5));
            if log.entries.get(at) != Some(&(ts, md5)) {
                log.entries.insert(at, (ts, md5));
                fresh.push(md5);
            }
        }
        log.seq = log.seq.max(changes.settled_ms);
        while log.entries.len() > self.capacity {
            if let Some((ts, _)) = log.entries.pop_front() {
                log.floor = log.floor.max(ts);
            }
        }
        fresh
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records that (some names of) `md5` were deleted; returns its sequence number. A
    /// shared feed learns of deletes from the shared log only ([`ChangeFeed::merge`]).
    pub fn record(&self, md5: &Md5Hex) -> u64 {
        let mut log = self.lock();
        if self.shared {
            return log.seq;
        }
        log.seq += 1;
        let seq = log.seq;
        log.entries.push_back((seq, *md5));
        while log.entries.len() > self.capacity {
            log.entries.pop_front();
        }
        seq
    }

    /// Changes after `since`; `None` asks only for the current position.
    pub fn since(&self, since: Option<u64>) -> Changes {
        let log = self.lock();
        let mut out = Changes {
            epoch: self.epoch.clone(),
            seq: log.seq,
            reset: false,
            md5s: Vec::new(),
        };
        let Some(since) = since else {
            return out;
        };
        if self.shared {
            // A caller ahead of this replica (it polled a faster one) just gets nothing
            // new: it will ask again from this replica's position.
            out.reset = since < log.floor;
            if !out.reset {
                out.md5s = log
                    .entries
                    .iter()
                    .filter(|(s, _)| *s > since && *s <= log.seq)
                    .map(|(_, m)| m.to_string())
                    .collect();
            }
            return out;
        }
        if since > log.seq {
            out.reset = true;
            return out;
        }
        // The oldest sequence still known; everything in (since, oldest) is lost.
        let oldest = log.entries.front().map_or(log.seq + 1, |(s, _)| *s);
        if since + 1 < oldest {
            out.reset = true;
            return out;
        }
        out.md5s = log
            .entries
            .iter()
            .filter(|(s, _)| *s > since)
            .map(|(_, m)| m.to_string())
            .collect();
        out
    }
}

/// A process-unique epoch: start time in nanoseconds and the pid, in hex.
fn new_epoch() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}-{:x}", std::process::id())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn md5(i: u8) -> Md5Hex {
        Md5Hex::of(&[i])
    }

    #[test]
    fn reports_changes_after_since() {
        let f = ChangeFeed::with_epoch(10, "e".into());
        let c = f.since(None);
        assert_eq!((c.seq, c.reset, c.md5s.len()), (0, false, 0));
        assert_eq!(f.since(Some(0)).md5s.len(), 0);
        assert_eq!(f.record(&md5(1)), 1);
        assert_eq!(f.record(&md5(2)), 2);
        let c = f.since(Some(0));
        assert_eq!(c.seq, 2);
        assert!(!c.reset);
        assert_eq!(c.md5s, [md5(1).to_string(), md5(2).to_string()]);
        assert_eq!(f.since(Some(1)).md5s, [md5(2).to_string()]);
        assert!(f.since(Some(2)).md5s.is_empty());
        assert_eq!(f.since(Some(2)).epoch, "e");
    }

    #[test]
    fn bounded_and_resets_when_behind() {
        let f = ChangeFeed::with_epoch(3, "e".into());
        for i in 1..=5 {
            f.record(&md5(i));
        }
        // Entries 3, 4, 5 are kept.
        let c = f.since(Some(2));
        assert!(!c.reset);
        assert_eq!(c.md5s.len(), 3);
        // Change 2 is forgotten: a caller at 1 missed it.
        let c = f.since(Some(1));
        assert!(c.reset);
        assert!(c.md5s.is_empty());
        assert!(f.since(Some(0)).reset);
    }

    #[test]
    fn future_since_is_a_reset() {
        let f = ChangeFeed::with_epoch(3, "e".into());
        f.record(&md5(1));
        assert!(f.since(Some(7)).reset);
    }

    fn shared_poll(
        entries: &[(u64, u8)],
        settled_ms: u64,
        from: u64,
    ) -> crate::store::SharedChanges {
        crate::store::SharedChanges {
            entries: entries.iter().map(|&(t, i)| (t, md5(i))).collect(),
            cursor: String::new(),
            settled_ms,
            covered_from_ms: from,
            log_id: "s3:b/p".into(),
        }
    }

    #[test]
    fn shared_feed_publishes_settled_entries_once() {
        let f = ChangeFeed::shared(10, "s3:b/p".into());
        // Own deletes come back through the log, not through `record`.
        assert_eq!(f.record(&md5(9)), 0);
        let fresh = f.merge(&shared_poll(&[(1500, 1), (2500, 2)], 2000, 1000));
        assert_eq!(fresh, [md5(1), md5(2)]);
        // Re-reading the overlap finds nothing new.
        assert!(
            f.merge(&shared_poll(&[(1500, 1), (2500, 2)], 2000, 1400))
                .is_empty()
        );
        let c = f.since(Some(1000));
        assert_eq!((c.seq, c.reset, c.epoch.as_str()), (2000, false, "s3:b/p"));
        // 2500 is not settled yet: not published.
        assert_eq!(c.md5s, [md5(1).to_string()]);
        // A late entry stamped before the settled time of a later poll still shows.
        f.merge(&shared_poll(&[(1800, 3), (2500, 2)], 3000, 1500));
        assert_eq!(
            f.since(Some(2000)).md5s,
            [md5(2).to_string()],
            "an entry at 1800 < since is the caller's past"
        );
        assert_eq!(f.since(Some(1600)).md5s.len(), 2);
        // Ahead of this replica: no reset, nothing new.
        let c = f.since(Some(9000));
        assert!(!c.reset && c.md5s.is_empty());
        // Before what this replica covers: reset.
        assert!(f.since(Some(999)).reset);
    }

    #[test]
    fn shared_feed_eviction_raises_the_floor() {
        let f = ChangeFeed::shared(2, "e".into());
        f.merge(&shared_poll(&[(10, 1), (20, 2), (30, 3)], 40, 0));
        assert!(f.since(Some(5)).reset);
        assert_eq!(f.since(Some(10)).md5s.len(), 2);
    }

    #[test]
    fn epochs_differ_per_feed() {
        let a = ChangeFeed::new(1);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = ChangeFeed::new(1);
        assert_ne!(a.epoch(), b.epoch());
    }
}
