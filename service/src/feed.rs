//! The server's change feed: a bounded, in-memory log of deleted MD5s that agents
//! poll (`GET /internal/v1/changes?since=SEQ`) to drop cached bytes of deleted images.
//!
//! Every delete gets the next sequence number (1, 2, 3, …). The log keeps the last
//! [`ChangeFeed::capacity`] entries; older ones are forgotten, and an agent asking
//! for changes after a forgotten one gets `reset: true` (it must flush its whole
//! cache). The feed lives only in memory, so each server process has a new random
//! `epoch`: an agent that sees the epoch change (server restarted) flushes too.
//! Pure bookkeeping: no I/O, no clock, no async.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::store::Md5Hex;

/// Entries kept by default: at ~40 bytes each, well under a MiB.
pub const DEFAULT_CAPACITY: usize = 16_384;

/// Changes after a sequence number, as the server answers them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Identifies this server process; changes when the server restarts.
    pub epoch: String,
    /// The latest sequence number (pass it as `since` next time).
    pub seq: u64,
    /// True when changes after `since` were forgotten (or `since` is in the
    /// future): the caller cannot know what was deleted and must flush.
    pub reset: bool,
    /// MD5s deleted after `since`, oldest first (may repeat).
    pub md5s: Vec<String>,
}

struct Log {
    /// Sequence number of the newest entry (0 = none yet).
    seq: u64,
    entries: VecDeque<(u64, Md5Hex)>,
}

/// The feed. Share it behind an `Arc`.
pub struct ChangeFeed {
    epoch: String,
    capacity: usize,
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
            log: Mutex::new(Log {
                seq: 0,
                entries: VecDeque::new(),
            }),
        }
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

    /// Records that (some names of) `md5` were deleted; returns its sequence number.
    pub fn record(&self, md5: &Md5Hex) -> u64 {
        let mut log = self.lock();
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

    #[test]
    fn epochs_differ_per_feed() {
        let a = ChangeFeed::new(1);
        std::thread::sleep(std::time::Duration::from_millis(1));
        let b = ChangeFeed::new(1);
        assert_ne!(a.epoch(), b.epoch());
    }
}
