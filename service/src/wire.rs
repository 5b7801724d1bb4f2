//! The internal API's wire types (server ↔ agent), shared by both sides: header names,
//! JSON replies, the change feed's answer and the agent's view of a failed call. A leaf
//! module: it imports nothing of ours.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Header carrying an object's name (percent-encoded UTF-8) on internal GETs.
pub const NAME_HEADER: &str = "x-sis-name";
/// Header carrying an object's modification time (Unix milliseconds) on internal GETs.
pub const MODIFIED_HEADER: &str = "x-sis-modified";

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

/// Why an upstream call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection (refused, reset before an answer, DNS, connect timeout).
    #[error("cannot reach the image server: {0}")]
    Unreachable(String),
    /// The call took longer than the request timeout.
    #[error("the image server did not answer in time")]
    Timeout,
    /// The server answered with an error status; `code` is its JSON error code.
    #[error("the image server answered {status} ({code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer was cut off or unreadable.
    #[error("bad answer from the image server: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Worth another attempt for an idempotent call. Timeouts are not retried: a
    /// slow server would only make the client wait a multiple of the timeout.
    pub fn retriable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Protocol(_) => true,
            Self::Rejected { status, .. } => matches!(status, 502..=504),
            Self::Timeout => false,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PutReply {
    pub created: bool,
    pub new_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct NameReply {
    pub name: String,
    pub size: u64,
    pub stored_ms: u64,
    pub inode: u64,
}

/// One entry of `GET /internal/v1/list`: a stored (MD5, name) with its facts.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListEntry {
    pub md5: String,
    pub name: String,
    pub size: u64,
    pub stored_ms: u64,
    pub inode: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteReply {
    pub removed: usize,
    pub freed: u64,
}

/// Unix milliseconds of a time (0 before the epoch).
pub fn to_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The time `ms` Unix milliseconds after the epoch.
pub fn from_millis(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}
