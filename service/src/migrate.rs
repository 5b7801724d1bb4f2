//! `sis migrate`: copies every stored (MD5, name) from one store to another (disk → S3,
//! S3 → disk, …) through the [`ImageStore`] trait, so any two backends work.
//!
//! Each image's bytes are hashed again before the write (a damaged source is reported,
//! never copied); the destination's put-if-absent makes a second run, or a run resumed
//! after an interruption, skip what is already there. Progress goes to a callback.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;

use crate::id::{FileName, Md5Hex};
use crate::store::{ImageStore, PutOutcome, StoreError};

/// Names listed per page of the source.
const PAGE: usize = 500;

/// What a run did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Names written to the destination.
    pub copied: u64,
    /// Names the destination already had.
    pub skipped: u64,
    /// Source images whose bytes do not hash to their MD5 (not copied).
    pub corrupt: Vec<String>,
    /// Names listed but gone from the source before they were read.
    pub vanished: u64,
    /// Bytes read from the source.
    pub bytes: u64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("reading {md5}/{name} from the source: {source}")]
    Read {
        md5: Md5Hex,
        name: FileName,
        source: StoreError,
    },
    #[error("writing {md5}/{name} to the destination: {source}")]
    Write {
        md5: Md5Hex,
        name: FileName,
        source: StoreError,
    },
    #[error("listing the source: {0}")]
    List(StoreError),
}

enum Copied {
    New(u64),
    Existed(u64),
    Corrupt(String),
    Vanished,
}

async fn copy_one(
    from: &dyn ImageStore,
    to: &dyn ImageStore,
    md5: Md5Hex,
    name: FileName,
) -> Result<Copied, MigrateError> {
    let obj = from
        .get(&md5, Some(&name))
        .await
        .map_err(|source| MigrateError::Read {
            md5,
            name: name.clone(),
            source,
        })?;
    let Some(obj) = obj else {
        return Ok(Copied::Vanished);
    };
    let len = obj.bytes.len() as u64;
    let bytes = obj.bytes;
    let hashed = tokio::task::spawn_blocking(move || (Md5Hex::of(&bytes), bytes))
        .await
        .map_err(|e| MigrateError::Read {
            md5,
            name: name.clone(),
            source: StoreError::Join(e.to_string()),
        })?;
    let (actual, bytes) = hashed;
    if actual != md5 {
        return Ok(Copied::Corrupt(format!("{md5}/{name} hashes to {actual}")));
    }
    match to.put_if_absent(md5, name.clone(), bytes).await {
        Ok(PutOutcome::Created { .. }) => Ok(Copied::New(len)),
        Ok(PutOutcome::Exists) => Ok(Copied::Existed(len)),
        Err(source) => Err(MigrateError::Write { md5, name, source }),
    }
}

/// Copies everything from `from` to `to`, `concurrency` images at a time, calling
/// `progress` after every page.
///
/// # Errors
/// The first read, write or listing failure (what was copied stays copied; run again
/// to resume).
pub async fn run(
    from: Arc<dyn ImageStore>,
    to: Arc<dyn ImageStore>,
    concurrency: usize,
    mut progress: impl FnMut(&Progress, f64),
) -> Result<Progress, MigrateError> {
    let started = Instant::now();
    let mut done = Progress::default();
    let mut after: Option<(Md5Hex, FileName)> = None;
    loop {
        let page = from
            .list(after.as_ref(), PAGE)
            .await
            .map_err(MigrateError::List)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some((last.0, last.1.name.clone()));
        let full = page.len() == PAGE;
        let results: Vec<_> = futures_util::stream::iter(page)
            .map(|(md5, info)| copy_one(from.as_ref(), to.as_ref(), md5, info.name))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for r in results {
            match r? {
                Copied::New(n) => {
                    done.copied += 1;
                    done.bytes += n;
                }
                Copied::Existed(n) => {
                    done.skipped += 1;
                    done.bytes += n;
                }
                Copied::Corrupt(what) => done.corrupt.push(what),
                Copied::Vanished => done.vanished += 1,
            }
        }
        progress(&done, started.elapsed().as_secs_f64());
        if !full {
            break;
        }
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::DiskStore;

    #[tokio::test]
    async fn copies_verifies_and_resumes() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let src = DiskStore::open(a.path()).unwrap();
        for i in 0..7u8 {
            let bytes = vec![i; 100 + usize::from(i)];
            let md5 = Md5Hex::of(&bytes);
            src.put(
                &md5,
                &FileName::parse(&format!("f{i}.png")).unwrap(),
                &bytes,
            )
            .unwrap();
            if i % 3 == 0 {
                src.put(&md5, &FileName::parse("again.png").unwrap(), &bytes)
                    .unwrap();
            }
        }
        let src = src.shared();
        let dst = DiskStore::open(b.path()).unwrap().shared();
        let mut calls = 0;
        let first = run(Arc::clone(&src), Arc::clone(&dst), 3, |_, _| calls += 1)
            .await
            .unwrap();
        assert_eq!((first.copied, first.skipped), (10, 0));
        assert!(calls >= 1);
        let second = run(Arc::clone(&src), Arc::clone(&dst), 3, |_, _| {})
            .await
            .unwrap();
        assert_eq!((second.copied, second.skipped), (0, 10));
        // Content is deduplicated in the destination too.
        assert_eq!(dst.usage().await.unwrap().0, 10);
        let listed = dst.list(None, 100).await.unwrap();
        assert_eq!(listed.len(), 10);
    }

    #[tokio::test]
    async fn a_damaged_source_is_reported_not_copied() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let src = DiskStore::open(a.path()).unwrap();
        let md5 = Md5Hex::of(b"right");
        src.put(&md5, &FileName::parse("x.png").unwrap(), b"wrong")
            .unwrap();
        let dst = DiskStore::open(b.path()).unwrap().shared();
        let got = run(src.shared(), Arc::clone(&dst), 2, |_, _| {})
            .await
            .unwrap();
        assert_eq!(got.corrupt.len(), 1);
        assert_eq!(got.copied, 0);
        assert!(dst.list(None, 10).await.unwrap().is_empty());
    }
}
