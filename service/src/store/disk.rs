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

use super::key::{FileName, Md5Hex};
use super::{NameInfo, PutOutcome, StoreError};

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
    fn leftovers_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(TMP_DIR)).unwrap();
        fs::write(dir.path().join(TMP_DIR).join("junk"), b"x").unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join(TMP_DIR)).unwrap().count(), 0);
        assert!(store.writable());
    }
}
