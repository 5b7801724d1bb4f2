//! [`Metered`]: a store wrapper that keeps the storage metrics (`sis_images_stored_total`,
//! `sis_storage_objects`, `sis_storage_bytes`) in step with puts and deletes, so no
//! handler counts storage itself. A server wraps its store in it; an agent does not
//! (it stores nothing of its own).

use std::sync::Arc;

use bytes::Bytes;

use super::{
    Health, ImageStore, NameInfo, Object, PutOutcome, SharedChanges, SharedStore, StoreError,
};
use crate::id::{FileName, Md5Hex};
use crate::metrics::Metrics;

/// The wrapper.
pub struct Metered {
    inner: SharedStore,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn wrap(inner: SharedStore, metrics: Arc<Metrics>) -> SharedStore {
        Arc::new(Self { inner, metrics })
    }
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl ImageStore for Metered {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn put_if_absent(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        let outcome = self.inner.put_if_absent(md5, name, bytes).await?;
        if let PutOutcome::Created { new_bytes } = outcome {
            self.metrics.images_stored.inc();
            self.metrics.storage_objects.inc();
            self.metrics.storage_bytes.add(gauge(new_bytes));
        }
        Ok(outcome)
    }

    async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError> {
        self.inner.get(md5, name).await
    }

    async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        self.inner.names(md5).await
    }

    async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        let (removed, freed) = self.inner.delete(md5, name).await?;
        self.metrics.storage_objects.sub(gauge(removed as u64));
        self.metrics.storage_bytes.sub(gauge(freed));
        Ok((removed, freed))
    }

    async fn health(&self) -> Health {
        self.inner.health().await
    }

    /// Also sets the gauges to the inner store's count (start-up, periodic refresh).
    async fn usage(&self) -> Option<(u64, u64)> {
        let usage = self.inner.usage().await;
        if let Some((objects, bytes)) = usage {
            self.metrics.storage_objects.set(gauge(objects));
            self.metrics.storage_bytes.set(gauge(bytes));
        }
        usage
    }

    async fn shared_changes(
        &self,
        cursor: Option<&str>,
    ) -> Result<Option<SharedChanges>, StoreError> {
        self.inner.shared_changes(cursor).await
    }

    async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError> {
        self.inner.list(after, limit).await
    }
}
