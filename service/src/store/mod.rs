//! Storage: validated keys ([`key`]) and the server's disk store ([`disk`]).
//!
//! [`Origin`] is the one door the HTTP layer uses to read and write images, so the
//! same cache, resizing and handlers serve both modes: `Local` is the server's disk,
//! `Upstream` is the agent's sis server reached over HTTP ([`crate::upstream`]).

pub mod disk;
pub mod key;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::upstream::{Upstream, UpstreamError};
pub use disk::DiskStore;
pub use key::{FileName, Md5Hex, NameError};

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
    /// Agent mode: the call to the server failed (or the server refused).
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
}

/// Result of a successful put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// A new name; `new_bytes` is the content added to disk (0 when deduplicated).
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
    /// Names sharing an inode share content.
    pub inode: u64,
}

/// One stored image's bytes.
#[derive(Debug, Clone)]
pub struct Object {
    pub name: FileName,
    pub bytes: Bytes,
    pub modified: SystemTime,
}

/// Where images come from and go to.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Server mode: the local disk store.
    Local(Arc<DiskStore>),
    /// Agent mode: a sis server's internal API.
    Upstream(Arc<Upstream>),
}

impl Origin {
    /// True for the server's own disk (storage gauges, change feed, internal API).
    pub fn is_local(&self) -> bool {
        matches!(self, Origin::Local(_))
    }

    async fn blocking<T, F>(store: &Arc<DiskStore>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// Stores one image (see [`DiskStore::put`]).
    ///
    /// # Errors
    /// Conflict or I/O.
    pub async fn put(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        match self {
            Origin::Local(d) => Self::blocking(d, move |s| s.put(&md5, &name, &bytes)).await,
            Origin::Upstream(u) => Ok(u.put(&md5, &name, bytes).await?),
        }
    }

    /// Names under an MD5, sorted by byte order.
    ///
    /// # Errors
    /// I/O.
    pub async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        let d = match self {
            Origin::Local(d) => d,
            Origin::Upstream(u) => return Ok(u.names(md5).await?),
        };
        let md5 = *md5;
        Self::blocking(d, move |s| s.names(&md5)).await
    }

    /// The image (md5, name), or the first name under md5 when `name` is `None`.
    ///
    /// # Errors
    /// I/O.
    pub async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError> {
        let d = match self {
            Origin::Local(d) => d,
            Origin::Upstream(u) => return Ok(u.get(md5, name).await?),
        };
        let md5 = *md5;
        let name = name.cloned();
        Self::blocking(d, move |s| {
            let name = match name {
                Some(n) => n,
                None => match s.names(&md5)?.into_iter().next() {
                    Some(info) => info.name,
                    None => return Ok(None),
                },
            };
            Ok(s.get(&md5, &name)?.map(|(bytes, modified)| Object {
                name,
                bytes,
                modified,
            }))
        })
        .await
    }

    /// Deletes a name or all names; returns (names removed, bytes freed).
    ///
    /// # Errors
    /// I/O.
    pub async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        let d = match self {
            Origin::Local(d) => d,
            Origin::Upstream(u) => return Ok(u.delete(md5, name).await?),
        };
        let md5 = *md5;
        let name = name.cloned();
        Self::blocking(d, move |s| s.delete(&md5, name.as_ref())).await
    }

    /// Readiness: the data directory is writable (server); the last probes of the
    /// server succeeded (agent).
    pub async fn ready(&self) -> bool {
        match self {
            Origin::Local(d) => Self::blocking(d, |s| Ok(s.writable()))
                .await
                .unwrap_or(false),
            Origin::Upstream(u) => u.is_reachable(),
        }
    }

    /// (objects, bytes) for the storage gauges; `None` when not applicable.
    pub async fn usage(&self) -> Option<(u64, u64)> {
        match self {
            Origin::Local(d) => Self::blocking(d, |s| s.usage()).await.ok(),
            Origin::Upstream(_) => None,
        }
    }
}
