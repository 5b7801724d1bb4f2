//! Storage: the [`ImageStore`] trait, the one door to where image bytes live, and its
//! backends: local disk ([`disk`]), S3-compatible object storage ([`s3`]) and, in agent
//! mode, the sis server reached over HTTP ([`crate::upstream`]).
//!
//! Handlers hold an `Arc<dyn ImageStore>` and never ask which backend it is; what differs
//! between a server and an agent (the change feed, storage gauges, the internal API) is
//! the node's [`crate::role::Role`], not a property of the store. A backend promises:
//! - `put_if_absent` returns only once the write is durable, never overwrites a name
//!   with different content ([`StoreError::Conflict`]), and stores content once per MD5;
//! - `get` / `names` never show a half-written image;
//! - errors say whether the backend is unreachable or slow, so callers answer 503 / 504.

pub mod disk;
pub mod metered;
pub mod s3;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

pub use crate::id as key;
pub use crate::id::{FileName, Md5Hex, NameError};
use crate::wire::UpstreamError;
pub use disk::DiskStore;
pub use metered::Metered;
pub use s3::{S3Config, S3Store};

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name already holds different content.
    #[error("name already stored with different content")]
    Conflict,
    #[error("storage I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("blocking task failed: {0}")]
    Join(String),
    /// The storage backend cannot be reached or refuses service (object store down,
    /// wrong credentials); nothing was changed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The storage backend did not answer within its timeout.
    #[error("storage did not answer in time: {0}")]
    Timeout(String),
    /// The backend answered something this code cannot use.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// Agent mode: the call to the server failed (or the server refused).
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
}

/// Result of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new name; `new_bytes` is the content added to storage (0 when deduplicated).
    Created { new_bytes: u64 },
    /// The same content was already stored under this name.
    Exists,
}

/// One stored name.
#[derive(Debug, Clone)]
pub struct NameInfo {
    pub name: FileName,
    pub size: u64,
    pub stored: SystemTime,
    /// Names with the same `inode` share content (disk: the inode; other stores: an id
    /// of the shared blob).
    pub inode: u64,
}

/// One stored image's bytes.
#[derive(Debug, Clone)]
pub struct Object {
    pub name: FileName,
    pub bytes: Bytes,
    pub modified: SystemTime,
}

/// What a store says about its own health (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready,
    /// Not ready, and why (shown in `/readyz`'s body and logged).
    Unready(String),
}

/// Deletes made through other processes that share a store (S3: other server replicas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedChanges {
    /// `(ts_ms, md5)` of every delete logged after the cursor, oldest first.
    pub entries: Vec<(u64, Md5Hex)>,
    /// Pass this as the next poll's cursor.
    pub cursor: String,
    /// Every delete logged at or before this time (Unix ms) is in `entries` of this or an
    /// earlier poll: a process may vouch for its cache up to here.
    pub settled_ms: u64,
    /// The poll read the log from this time (Unix ms) on: earlier deletes are unknown.
    pub covered_from_ms: u64,
    /// Names the shared log (the same for every process reading it).
    pub log_id: String,
}

/// Where images live. Object-safe: held as `Arc<dyn ImageStore>`.
#[async_trait::async_trait]
pub trait ImageStore: Send + Sync + std::fmt::Debug {
    /// A short name for logs and metrics (`disk`, `s3`, `upstream`).
    fn kind(&self) -> &'static str;

    /// Stores `bytes` as (md5, name) unless that name already exists. The caller has
    /// checked that `md5` is the digest of `bytes`. Durable when it returns `Ok`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name holds different content; backend errors.
    async fn put_if_absent(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError>;

    /// The image (md5, name), or the first name under md5 in byte order when `name` is
    /// `None`; `None` when missing.
    ///
    /// # Errors
    /// Backend errors.
    async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError>;

    /// Names under an MD5, sorted by the bytes of the name.
    ///
    /// # Errors
    /// Backend errors.
    async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError>;

    /// Deletes a name, or all names when `name` is `None`; returns (names removed,
    /// bytes freed). Content goes with its last name.
    ///
    /// # Errors
    /// Backend errors.
    async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError>;

    /// Whether the store can take writes now.
    async fn health(&self) -> Health;

    /// (names, content bytes) for the storage gauges, when the backend can tell cheaply;
    /// `None` when not applicable or not known yet.
    async fn usage(&self) -> Option<(u64, u64)>;

    /// Deletes logged by other processes sharing this store after `cursor` (`None`:
    /// start a bounded distance back). `Ok(None)` for stores only one process writes.
    ///
    /// # Errors
    /// Backend errors.
    async fn shared_changes(
        &self,
        _cursor: Option<&str>,
    ) -> Result<Option<SharedChanges>, StoreError> {
        Ok(None)
    }

    /// Every stored (md5, name) after `after` in key order, at most `limit`
    /// (migration, listing).
    ///
    /// # Errors
    /// Backend errors.
    async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError>;
}

/// Shared handle to a store.
pub type SharedStore = Arc<dyn ImageStore>;
