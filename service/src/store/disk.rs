//! The server's on-disk store.
//!
//! Layout: `<data>/ab/cd/<md5>/n_<escaped name>`, one file per (MD5, name). Names
//! with identical content under the same MD5 are hard links to one inode, so content
//! is stored once and disappears with its last name. Writes go to `<data>/.tmp/`,
//! are fsynced, then hard-linked into place (a link never overwrites, which is what
//! makes "same name, different content" a 409 rather than a race) and the directory
//! is fsynced. Everything here is blocking; callers run it on the blocking pool.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

use std::sync::Arc;

use super::{Health, ImageStore, NameInfo, Object, PutOutcome, SharedStore, StoreError};
use crate::id::{FileName, Md5Hex};

const TMP_DIR: &str = ".tmp";

/// A content-addressed image store in one directory.
#[derive(Debug)]
pub struct DiskStore {
    root: PathBuf,
    tmp_seq: AtomicU64,
}

impl DiskStore {
    /// Opens (creating if needed) the store and removes temp files left by a crash.
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        fs::create_dir_all(root.join(TMP_DIR))?;
        let mut removed = 0usize;
        for entry in fs::read_dir(root.join(TMP_DIR))? {
            let entry = entry?;
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed leftover temp files");
        }
        Ok(Self {
            root,
            tmp_seq: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, md5: &Md5Hex) -> PathBuf {
        let s = md5.as_str();
        self.root.join(&s[0..2]).join(&s[2..4]).join(s)
    }

    fn path(&self, md5: &Md5Hex, name: &FileName) -> PathBuf {
        self.dir(md5).join(name.to_disk())
    }

    /// Stores `bytes` as (md5, name). The caller has checked that `md5` is the
    /// digest of `bytes`.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name holds different content; I/O errors.
    pub fn put(
        &self,
        md5: &Md5Hex,
        name: &FileName,
        bytes: &[u8],
    ) -> Result<PutOutcome, StoreError> {
        let dir = self.dir(md5);
        let target = dir.join(name.to_disk());
        // One mkdir in the common cases; `parents_to_sync` are the directories that
        // got a new entry (the parent of every directory created here).
        let mut parents_to_sync = Vec::new();
        let fresh_dir = create_dirs(&dir, &mut parents_to_sync)?;
        if !fresh_dir && target.exists() {
            return same_content(&target, bytes);
        }
        // Dedup: link to a sibling with the same bytes when there is one (a directory
        // we just created is empty: nothing to list).
        let mut linked = false;
        let mut new_bytes = bytes.len() as u64;
        let siblings = if fresh_dir {
            None
        } else {
            Some(fs::read_dir(&dir)?)
        };
        for entry in siblings.into_iter().flatten() {
            let entry = entry?;
            let path = entry.path();
            if FileName::from_disk(&entry.file_name().to_string_lossy()).is_none() {
                continue;
            }
            if entry.metadata()?.len() == bytes.len() as u64
                && matches!(same_content(&path, bytes), Ok(PutOutcome::Exists))
            {
                match fs::hard_link(&path, &target) {
                    Ok(()) => {
                        linked = true;
                        new_bytes = 0;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return same_content(&target, bytes);
                    }
                    // Hard links unsupported: fall back to a copy.
                    Err(_) => break,
                }
            }
        }
        if !linked {
            let tmp = self.write_temp(bytes)?;
            let res = fs::hard_link(&tmp, &target);
            let _ = fs::remove_file(&tmp);
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return same_content(&target, bytes);
                }
                Err(e) => return Err(e.into()),
            }
        }
        sync_dir(&dir)?;
        // After the leaf's fsync (which commits the journal with the new entries), so
        // these are usually cheap.
        for d in &parents_to_sync {
            sync_dir(d)?;
        }
        Ok(PutOutcome::Created { new_bytes })
    }

    fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self
            .root
            .join(TMP_DIR)
            .join(format!("{}-{nanos}-{seq}", std::process::id()));
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        let res = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e.into());
        }
        Ok(tmp)
    }

    /// Names stored under `md5`, sorted by the bytes of the name.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        let dir = self.dir(md5);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry?;
            let Some(name) = FileName::from_disk(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let meta = entry.metadata()?;
            out.push(NameInfo {
                name,
                size: meta.len(),
                stored: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                inode: meta.ino(),
            });
        }
        out.sort_by(|a, b| a.name.as_str().as_bytes().cmp(b.name.as_str().as_bytes()));
        Ok(out)
    }

    /// Reads one stored image; `None` when missing.
    ///
    /// # Errors
    /// I/O errors other than "not found".
    pub fn get(
        &self,
        md5: &Md5Hex,
        name: &FileName,
    ) -> Result<Option<(Bytes, SystemTime)>, StoreError> {
        let path = self.path(md5, name);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = f.metadata()?;
        let mut buf = Vec::with_capacity(meta.len() as usize);
        f.read_to_end(&mut buf)?;
        Ok(Some((
            Bytes::from(buf),
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        )))
    }

    /// Removes one name, or every name when `name` is `None`. Returns the removed
    /// names and the bytes freed (content whose last link went away).
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        let dir = self.dir(md5);
        let all = self.names(md5)?;
        let victims: Vec<&NameInfo> = all
            .iter()
            .filter(|n| name.is_none_or(|want| &n.name == want))
            .collect();
        let mut freed = 0u64;
        for v in &victims {
            let path = dir.join(v.name.to_disk());
            let links = fs::metadata(&path).map(|m| m.nlink()).unwrap_or(1);
            fs::remove_file(&path)?;
            if links <= 1 {
                freed += v.size;
            }
        }
        if !victims.is_empty() {
            if victims.len() == all.len() {
                let _ = fs::remove_dir(&dir);
            } else {
                sync_dir(&dir)?;
            }
        }
        Ok((victims.len(), freed))
    }

    /// Counts stored names and unique content bytes (for the storage gauges).
    ///
    /// # Errors
    /// I/O errors while walking the tree.
    pub fn usage(&self) -> Result<(u64, u64), StoreError> {
        let mut objects = 0u64;
        let mut bytes = 0u64;
        let mut seen = std::collections::HashSet::new();
        for l1 in read_dirs(&self.root)? {
            if l1.file_name().is_some_and(|n| n == TMP_DIR) {
                continue;
            }
            for l2 in read_dirs(&l1)? {
                for md5dir in read_dirs(&l2)? {
                    for entry in fs::read_dir(&md5dir)? {
                        let entry = entry?;
                        if FileName::from_disk(&entry.file_name().to_string_lossy()).is_none() {
                            continue;
                        }
                        let meta = entry.metadata()?;
                        objects += 1;
                        if seen.insert((meta.dev(), meta.ino())) {
                            bytes += meta.len();
                        }
                    }
                }
            }
        }
        Ok((objects, bytes))
    }

    /// True when a file can be created in the data directory.
    pub fn writable(&self) -> bool {
        let probe = self.root.join(TMP_DIR).join(format!(
            "ready-{}-{}",
            std::process::id(),
            self.tmp_seq.fetch_add(1, Ordering::Relaxed)
        ));
        let ok = File::create(&probe).is_ok();
        let _ = fs::remove_file(&probe);
        ok
    }

    /// Every (md5, name) after `after` in key order (fan-out directories in order, names
    /// by their on-disk form), at most `limit`: reads only the directories it needs.
    ///
    /// # Errors
    /// I/O errors while walking the tree.
    pub fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError> {
        let mut out = Vec::new();
        let start = after.map(|(m, n)| (m.as_str().to_owned(), n.to_disk()));
        let start_md5 = start.as_ref().map(|(m, _)| m.as_str()).unwrap_or("");
        for l1 in sorted_dirs(&self.root)? {
            let n1 = file_name_of(&l1);
            if n1 == TMP_DIR || n1.len() != 2 || n1.as_str() < start_md5.get(..2).unwrap_or("") {
                continue;
            }
            for l2 in sorted_dirs(&l1)? {
                let p4 = format!("{n1}{}", file_name_of(&l2));
                if p4.as_str() < start_md5.get(..4).unwrap_or("") {
                    continue;
                }
                for md5dir in sorted_dirs(&l2)? {
                    let Some(md5) = Md5Hex::parse(&file_name_of(&md5dir)) else {
                        continue;
                    };
                    if md5.as_str() < start_md5 {
                        continue;
                    }
                    let entries = match fs::read_dir(&md5dir) {
                        Ok(rd) => rd,
                        // Its last name was deleted while we walked.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let mut files: Vec<_> = entries
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    files.sort();
                    for file in files {
                        if let Some((m, n)) = &start
                            && md5.as_str() == m
                            && file.as_str() <= n.as_str()
                        {
                            continue;
                        }
                        let Some(name) = FileName::from_disk(&file) else {
                            continue;
                        };
                        let meta = match fs::metadata(md5dir.join(&file)) {
                            Ok(m) => m,
                            // Deleted while we walked.
                            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                            Err(e) => return Err(e.into()),
                        };
                        out.push((
                            md5,
                            NameInfo {
                                name,
                                size: meta.len(),
                                stored: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                                inode: meta.ino(),
                            },
                        ));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// This store as an [`ImageStore`] (blocking calls moved to the blocking pool).
    pub fn shared(self) -> SharedStore {
        Arc::new(Disk(Arc::new(self)))
    }
}

/// [`DiskStore`] behind the async [`ImageStore`] trait.
#[derive(Debug)]
struct Disk(Arc<DiskStore>);

impl Disk {
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&DiskStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Join(e.to_string()))?
    }
}

#[async_trait::async_trait]
impl ImageStore for Disk {
    fn kind(&self) -> &'static str {
        "disk"
    }

    async fn put_if_absent(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        self.blocking(move |s| s.put(&md5, &name, &bytes)).await
    }

    async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError> {
        let md5 = *md5;
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

    async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        let md5 = *md5;
        self.blocking(move |s| s.names(&md5)).await
    }

    async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        let md5 = *md5;
        let name = name.cloned();
        self.blocking(move |s| s.delete(&md5, name.as_ref())).await
    }

    async fn health(&self) -> Health {
        match self.blocking(|s| Ok(s.writable())).await {
            Ok(true) => Health::Ready,
            _ => Health::Unready("data directory not writable".into()),
        }
    }

    async fn usage(&self) -> Option<(u64, u64)> {
        self.blocking(|s| s.usage()).await.ok()
    }

    async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError> {
        let after = after.cloned();
        self.blocking(move |s| s.list(after.as_ref(), limit)).await
    }
}

/// Subdirectories of `dir` in order; none when `dir` went away (a concurrent delete
/// removed the last image under it) or a child vanished while it was read.
fn sorted_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut dirs = match read_dirs(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    dirs.sort();
    Ok(dirs)
}

fn file_name_of(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn same_content(path: &Path, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
    let existing = fs::read(path)?;
    if existing == bytes {
        Ok(PutOutcome::Exists)
    } else {
        Err(StoreError::Conflict)
    }
}

/// Creates `dir` and any missing ancestors, pushing the parent of every directory it
/// created onto `changed`. Returns whether `dir` itself was created by this call.
fn create_dirs(dir: &Path, changed: &mut Vec<PathBuf>) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let Some(parent) = dir.parent() else {
                return Err(e);
            };
            create_dirs(parent, changed)?;
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        changed.push(parent.to_path_buf());
    }
    Ok(true)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(s: &str) -> (Md5Hex, FileName) {
        (Md5Hex::of(s.as_bytes()), FileName::parse("a.png").unwrap())
    }

    #[test]
    fn put_get_dedup_conflict_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let (md5, a) = key("hello");
        let b = FileName::parse("测试2.png").unwrap();
        assert_eq!(
            store.put(&md5, &a, b"hello").unwrap(),
            PutOutcome::Created { new_bytes: 5 }
        );
        assert_eq!(store.put(&md5, &a, b"hello").unwrap(), PutOutcome::Exists);
        assert!(matches!(
            store.put(&md5, &a, b"other"),
            Err(StoreError::Conflict)
        ));
        // Same content, second name: stored once.
        assert_eq!(
            store.put(&md5, &b, b"hello").unwrap(),
            PutOutcome::Created { new_bytes: 0 }
        );
        assert_eq!(store.usage().unwrap(), (2, 5));
        let names = store.names(&md5).unwrap();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0].name.as_str(), "a.png");
        assert_eq!(names[0].inode, names[1].inode);
        assert_eq!(&store.get(&md5, &b).unwrap().unwrap().0[..], b"hello");
        // Fan-out layout.
        let s = md5.as_str();
        assert!(dir.path().join(&s[..2]).join(&s[2..4]).join(s).is_dir());
        assert_eq!(store.delete(&md5, Some(&a)).unwrap(), (1, 0));
        assert_eq!(store.delete(&md5, None).unwrap(), (1, 5));
        assert!(store.get(&md5, &b).unwrap().is_none());
        assert_eq!(store.usage().unwrap(), (0, 0));
    }

    #[test]
    fn collision_keeps_both() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let md5 = Md5Hex::parse("00000000000000000000000000000000").unwrap();
        let a = FileName::parse("a").unwrap();
        let b = FileName::parse("b").unwrap();
        store.put(&md5, &a, b"one").unwrap();
        store.put(&md5, &b, b"two").unwrap();
        assert_eq!(&store.get(&md5, &a).unwrap().unwrap().0[..], b"one");
        assert_eq!(&store.get(&md5, &b).unwrap().unwrap().0[..], b"two");
    }

    #[test]
    fn list_pages_in_key_order_and_resumes_after_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        let mut all = Vec::new();
        for i in 0..20u8 {
            let bytes = [i; 3];
            let md5 = Md5Hex::of(&bytes);
            for n in ["b.png", "a.png"] {
                let name = FileName::parse(n).unwrap();
                store.put(&md5, &name, &bytes).unwrap();
                all.push((md5, name));
            }
        }
        all.sort_by_key(|(m, n)| (*m, n.to_disk()));
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(after.as_ref(), 7).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 7);
            seen.extend(page.iter().map(|(m, i)| (*m, i.name.clone())));
            after = seen.last().cloned();
        }
        assert_eq!(seen, all);
        // A fan-out directory deleted under a walk is not an error.
        let (m, _) = &all[0];
        store.delete(m, None).unwrap();
        assert_eq!(store.list(None, 100).unwrap().len(), 38);
    }

    #[test]
    fn leftovers_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        fs::write(dir.path().join(TMP_DIR).join("junk"), b"x").unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
        assert!(store.writable());
    }
}
