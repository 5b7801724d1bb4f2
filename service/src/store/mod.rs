//! Storage: validated keys ([`key`]) and the server's disk store ([`disk`]).
//!
//! [`Origin`] is the one door the HTTP layer uses to read and write images, so the
//! same cache, resizing and handlers serve both modes: `Local` is the server's disk;
//! the agent mode adds an upstream variant here.

pub mod disk;
pub mod key;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

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
}

impl Origin {
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskStore) -> Result<T, StoreError> + Send + 'static,
    {
        match self {
            Origin::Local(store) => {
                let store = Arc::clone(store);
                tokio::task::spawn_blocking(move || f(&store))
                    .await
                    .map_err(|e| StoreError::Join(e.to_string()))?
            }
        }
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
        self.blocking(move |s| s.put(&md5, &name, &bytes)).await
    }

    /// Names under an MD5, sorted by byte order.
    ///
    /// # Errors
    /// I/O.
    pub async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        let md5 = md5.clone();
        self.blocking(move |s| s.names(&md5)).await
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
        let md5 = md5.clone();
        let name = name.cloned();
        self.blocking(move |s| {
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
        let md5 = md5.clone();
        let name = name.cloned();
        self.blocking(move |s| s.delete(&md5, name.as_ref())).await
    }

    /// Readiness: the data directory is writable.
    pub async fn ready(&self) -> bool {
        self.blocking(|s| Ok(s.writable())).await.unwrap_or(false)
    }

    /// (objects, bytes) for the storage gauges; `None` when not applicable.
    pub async fn usage(&self) -> Option<(u64, u64)> {
        self.blocking(|s| s.usage()).await.ok()
    }
}
