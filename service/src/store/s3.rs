//! S3-compatible object storage (Ceph RGW, MinIO, AWS S3, R2, …) through the
//! `object_store` crate (signing, retries, multipart uploads, conditional puts).
//!
//! Layout under `PREFIX/` in one bucket, shared by any number of server replicas:
//! - `blobs/<md5>`: the content, once per MD5;
//! - `names/<md5>/n_<escaped name>`: one empty object per stored name (its time is the
//!   name's "stored" time);
//! - `changes/<ts_ms, 16 digits>-<md5>-<nonce>`: the change log of deletes, read by every
//!   replica ([`ImageStore::shared_changes`]) so each drops its cache within seconds.
//!
//! Writes: the blob first (`If-None-Match: *`, or a multipart upload above a threshold),
//! then the name (`If-None-Match: *`): a crash in between leaves an unreachable blob,
//! never a name without content. A read fetches the blob and checks the name side by side. Deletes log the change first, then remove names, then
//! the blob once no name refers to it. Every call is bounded by the client's timeout.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::{Health, ImageStore, NameInfo, Object, PutOutcome, SharedChanges, StoreError};
use crate::id::{FileName, Md5Hex};
use crate::wire::to_millis;

/// How far back a replica's first poll of the change log reaches.
const FIRST_POLL_LOOKBACK: Duration = Duration::from_secs(600);
/// Change-log entries older than this are deleted (a replica that was away longer
/// flushes its cache instead).
const CHANGE_RETENTION: Duration = Duration::from_secs(3600);
/// Timeout (and retry budget) of a change-log write: it bounds how late an entry can
/// appear in a listing after its timestamp, hence [`SETTLE`].
const CHANGE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// An entry stamped `t` is listed by `t + SETTLE` or never (its write timed out and
/// the delete failed): the write's timeout and one retry, plus clock skew allowance.
pub const SETTLE: Duration = Duration::from_secs(4);

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix (no leading or trailing `/`); empty for the bucket's root.
    pub prefix: String,
    /// e.g. `http://127.0.0.1:7480`; `None` for AWS.
    pub endpoint: Option<String>,
    pub region: String,
    /// `http://host/bucket/key` instead of `http://bucket.host/key`.
    pub path_style: bool,
    /// Timeout of each call to the object store (connect, send, answer).
    pub timeout: Duration,
    /// Uploads larger than this go as multipart uploads.
    pub multipart_threshold: u64,
}

impl S3Config {
    /// Parses `s3://BUCKET[/PREFIX]`.
    ///
    /// # Errors
    /// Not an `s3://` URL, or no bucket.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url}: want s3://BUCKET[/PREFIX]"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: no bucket name"));
        }
        Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
    }
}

/// The S3 store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct S3Store {
    client: Arc<AmazonS3>,
    /// Same bucket, short timeout: change-log writes (see [`SETTLE`]).
    log_client: Arc<AmazonS3>,
    cfg: S3Config,
    /// The last completed count of (names, blob bytes); see [`S3Store::spawn_usage_scan`].
    usage: Arc<Mutex<Option<(u64, u64)>>>,
    /// When old change-log entries were last cleaned up.
    last_gc: Mutex<Option<SystemTime>>,
}

impl S3Store {
    /// Builds the client; credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN` (and the other standard `AWS_*` variables). No I/O.
    ///
    /// # Errors
    /// Invalid configuration.
    pub fn new(cfg: S3Config) -> Result<Self, StoreError> {
        let client = Arc::new(build(&cfg, cfg.timeout, 2)?);
        let log_client = Arc::new(build(&cfg, CHANGE_WRITE_TIMEOUT, 1)?);
        Ok(Self {
            client,
            log_client,
            cfg,
            usage: Arc::new(Mutex::new(None)),
            last_gc: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// Checks that the bucket answers with these credentials (start-up).
    ///
    /// # Errors
    /// Unreachable, wrong credentials, missing bucket.
    pub async fn check(&self) -> Result<(), StoreError> {
        let mut list = self.client.list(Some(&self.key("names")));
        match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(map_err(e)),
        }
    }

    /// Counts names and blob bytes in the background, one listing page at a time, every
    /// `every`; [`ImageStore::usage`] answers the last complete count. Start-up never
    /// waits for a listing of the whole bucket.
    pub fn spawn_usage_scan(self: &Arc<Self>, every: Duration) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                match me.count().await {
                    Ok(u) => *lock(&me.usage) = Some(u),
                    Err(e) => tracing::warn!(error = %e, "storage usage scan failed"),
                }
                tokio::time::sleep(every).await;
            }
        });
    }

    async fn count(&self) -> Result<(u64, u64), StoreError> {
        let mut names = 0u64;
        let mut list = self.client.list(Some(&self.key("names")));
        while let Some(meta) = list.next().await {
            meta.map_err(map_err)?;
            names += 1;
        }
        let mut bytes = 0u64;
        let mut list = self.client.list(Some(&self.key("blobs")));
        while let Some(meta) = list.next().await {
            bytes += meta.map_err(map_err)?.size;
        }
        Ok((names, bytes))
    }

    /// Number of blobs (content objects) stored: what deduplication saves (tests, ops).
    ///
    /// # Errors
    /// Backend errors.
    pub async fn blob_count(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let mut list = self.client.list(Some(&self.key("blobs")));
        while let Some(meta) = list.next().await {
            meta.map_err(map_err)?;
            n += 1;
        }
        Ok(n)
    }

    fn key(&self, rest: &str) -> Path {
        let full = if self.cfg.prefix.is_empty() {
            rest.to_owned()
        } else {
            format!("{}/{rest}", self.cfg.prefix)
        };
        // Every part we join is ASCII without empty segments (hex, digits, `n_%XX…`).
        Path::parse(&full).unwrap_or_else(|_| Path::from(full.as_str()))
    }

    fn blob_key(&self, md5: &Md5Hex) -> Path {
        self.key(&format!("blobs/{md5}"))
    }

    fn names_dir(&self, md5: &Md5Hex) -> Path {
        self.key(&format!("names/{md5}"))
    }

    fn name_key(&self, md5: &Md5Hex, name: &FileName) -> Path {
        self.key(&format!("names/{md5}/{}", name.to_disk()))
    }

    fn changes_dir(&self) -> Path {
        self.key("changes")
    }

    fn change_key_at(&self, ms: u64) -> Path {
        self.key(&format!("changes/{ms:016}"))
    }

    async fn create(&self, key: &Path, payload: PutPayload) -> Result<bool, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.client.put_opts(key, payload, opts).await {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn head_size(&self, key: &Path) -> Result<Option<u64>, StoreError> {
        match self.client.head(key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Writes the blob unless one exists; returns the bytes added (0: deduplicated).
    async fn put_blob(&self, md5: &Md5Hex, bytes: &Bytes) -> Result<u64, StoreError> {
        let key = self.blob_key(md5);
        let len = bytes.len() as u64;
        let created = if len > self.cfg.multipart_threshold {
            if self.head_size(&key).await?.is_some() {
                false
            } else {
                // Same MD5, same bytes: a concurrent identical upload is harmless.
                self.put_multipart(&key, bytes.clone()).await?;
                true
            }
        } else {
            self.create(&key, PutPayload::from_bytes(bytes.clone()))
                .await?
        };
        if created {
            return Ok(len);
        }
        match self.head_size(&key).await? {
            Some(size) if size == len => Ok(0),
            // Same MD5, other length: a collision or a damaged blob; never overwrite.
            Some(_) => Err(StoreError::Conflict),
            // Deleted between our two calls: write it again.
            None => {
                self.client
                    .put(&key, PutPayload::from_bytes(bytes.clone()))
                    .await
                    .map_err(map_err)?;
                Ok(len)
            }
        }
    }

    async fn put_multipart(&self, key: &Path, bytes: Bytes) -> Result<(), StoreError> {
        let upload = self.client.put_multipart(key).await.map_err(map_err)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        writer.put(bytes);
        if let Err(e) = writer.finish().await {
            // `finish` aborts the upload on failure; parts are not left behind.
            return Err(map_err(e));
        }
        Ok(())
    }

    async fn name_infos(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        let dir = self.names_dir(md5);
        let mut list = self.client.list(Some(&dir));
        let mut out = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(map_err)?;
            let Some(name) = meta.location.filename().and_then(FileName::from_disk) else {
                continue;
            };
            out.push(NameInfo {
                name,
                size: 0,
                stored: SystemTime::from(meta.last_modified),
                inode: blob_id(md5),
            });
        }
        if out.is_empty() {
            return Ok(out);
        }
        let size = self.head_size(&self.blob_key(md5)).await?.unwrap_or(0);
        for n in &mut out {
            n.size = size;
        }
        out.sort_by(|a, b| a.name.as_str().as_bytes().cmp(b.name.as_str().as_bytes()));
        Ok(out)
    }

    async fn log_delete(&self, md5: &Md5Hex) -> Result<(), StoreError> {
        let now = to_millis(SystemTime::now());
        let nonce: u64 = rand_nonce();
        let key = self.key(&format!("changes/{now:016}-{md5}-{nonce:016x}"));
        self.log_client
            .put(&key, PutPayload::new())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Deletes change-log entries past [`CHANGE_RETENTION`], at most once a minute and a
    /// bounded number per call.
    async fn collect_old_changes(&self, now: SystemTime) {
        {
            let mut last = lock(&self.last_gc);
            if last.is_some_and(|t| {
                now.duration_since(t).unwrap_or_default() < Duration::from_secs(60)
            }) {
                return;
            }
            *last = Some(now);
        }
        let horizon = to_millis(now).saturating_sub(CHANGE_RETENTION.as_millis() as u64);
        let end = self.change_key_at(horizon);
        let mut list = self.client.list(Some(&self.changes_dir())).take(500);
        while let Some(Ok(meta)) = list.next().await {
            if meta.location.as_ref() >= end.as_ref() {
                break;
            }
            let _ = self.client.delete(&meta.location).await;
        }
    }
}

#[async_trait::async_trait]
impl ImageStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
    }

    async fn put_if_absent(
        &self,
        md5: Md5Hex,
        name: FileName,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        // A new image costs two requests: the blob and the name, both create-only.
        let new_bytes = self.put_blob(&md5, &bytes).await?;
        if !self
            .create(&self.name_key(&md5, &name), PutPayload::new())
            .await?
        {
            return Ok(PutOutcome::Exists);
        }
        if new_bytes == 0 && self.head_size(&self.blob_key(&md5)).await?.is_none() {
            // The last other name was deleted (with the blob) while we linked to it.
            self.put_blob(&md5, &bytes).await?;
        }
        Ok(PutOutcome::Created { new_bytes })
    }

    async fn get(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<Option<Object>, StoreError> {
        // The name's existence (and time) and the blob, read side by side.
        let blob = async {
            match self.client.get(&self.blob_key(md5)).await {
                Ok(r) => r.bytes().await.map(Some).map_err(map_err),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(map_err(e)),
            }
        };
        let named = async {
            match name {
                Some(n) => match self.client.head(&self.name_key(md5, n)).await {
                    Ok(meta) => Ok(Some((n.clone(), SystemTime::from(meta.last_modified)))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(map_err(e)),
                },
                None => Ok(self
                    .name_infos(md5)
                    .await?
                    .into_iter()
                    .next()
                    .map(|info| (info.name, info.stored))),
            }
        };
        let (blob, named) = tokio::join!(blob, named);
        let (Some((name, stored)), Some(bytes)) = (named?, blob?) else {
            return Ok(None);
        };
        Ok(Some(Object {
            name,
            bytes,
            modified: stored,
        }))
    }

    async fn names(&self, md5: &Md5Hex) -> Result<Vec<NameInfo>, StoreError> {
        self.name_infos(md5).await
    }

    async fn delete(
        &self,
        md5: &Md5Hex,
        name: Option<&FileName>,
    ) -> Result<(usize, u64), StoreError> {
        let all = self.name_infos(md5).await?;
        let victims: Vec<&NameInfo> = all
            .iter()
            .filter(|n| name.is_none_or(|want| &n.name == want))
            .collect();
        if victims.is_empty() {
            return Ok((0, 0));
        }
        // Logged before anything goes: replicas must hear of every delete that happened.
        self.log_delete(md5).await?;
        for v in &victims {
            match self.client.delete(&self.name_key(md5, &v.name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        let mut freed = 0;
        if self.name_infos(md5).await?.is_empty() {
            let size = all.first().map_or(0, |n| n.size);
            match self.client.delete(&self.blob_key(md5)).await {
                Ok(()) => freed = size,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok((victims.len(), freed))
    }

    async fn health(&self) -> Health {
        match self.client.head(&self.key("health-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Health::Ready,
            Err(e) => Health::Unready(map_err(e).to_string()),
        }
    }

    async fn usage(&self) -> Option<(u64, u64)> {
        *lock(&self.usage)
    }

    async fn shared_changes(
        &self,
        cursor: Option<&str>,
    ) -> Result<Option<SharedChanges>, StoreError> {
        // The cursor is the time (Unix ms) the previous poll started; entries may still
        // appear up to SETTLE behind it, so each poll re-reads that much (the feed
        // ignores duplicates).
        let now = SystemTime::now();
        let now_ms = to_millis(now);
        let settle = SETTLE.as_millis() as u64;
        let from_ms = match cursor.and_then(|c| c.parse::<u64>().ok()) {
            Some(prev) => prev.saturating_sub(settle + 1000),
            None => now_ms.saturating_sub(FIRST_POLL_LOOKBACK.as_millis() as u64),
        };
        let offset = self.change_key_at(from_ms);
        let mut list = self
            .client
            .list_with_offset(Some(&self.changes_dir()), &offset);
        let mut seen = BTreeSet::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(map_err)?;
            if let Some(entry) = meta.location.filename().and_then(parse_change) {
                seen.insert(entry);
            }
        }
        self.collect_old_changes(now).await;
        Ok(Some(SharedChanges {
            entries: seen.into_iter().collect(),
            cursor: now_ms.to_string(),
            settled_ms: now_ms.saturating_sub(settle),
            covered_from_ms: from_ms,
            log_id: format!("s3:{}/{}", self.cfg.bucket, self.cfg.prefix),
        }))
    }

    async fn list(
        &self,
        after: Option<&(Md5Hex, FileName)>,
        limit: usize,
    ) -> Result<Vec<(Md5Hex, NameInfo)>, StoreError> {
        let dir = self.key("names");
        let mut list = match after {
            Some((m, n)) => self
                .client
                .list_with_offset(Some(&dir), &self.name_key(m, n)),
            None => self.client.list(Some(&dir)),
        };
        let mut out: Vec<(Md5Hex, NameInfo)> = Vec::new();
        while let Some(meta) = list.next().await {
            let meta = meta.map_err(map_err)?;
            let mut parts = meta.location.parts().collect::<Vec<_>>().into_iter().rev();
            let (Some(file), Some(md5)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Some(name), Some(md5)) = (
                FileName::from_disk(file.as_ref()),
                Md5Hex::parse(md5.as_ref()),
            ) else {
                continue;
            };
            out.push((
                md5,
                NameInfo {
                    name,
                    size: 0,
                    stored: SystemTime::from(meta.last_modified),
                    inode: blob_id(&md5),
                },
            ));
            if out.len() >= limit {
                break;
            }
        }
        // One HEAD per content, 16 at a time (names of one MD5 share it).
        let mut md5s: Vec<Md5Hex> = out.iter().map(|(m, _)| *m).collect();
        md5s.dedup();
        let sizes: Vec<(Md5Hex, Option<u64>)> = futures_util::stream::iter(md5s)
            .map(|m| async move { (m, self.head_size(&self.blob_key(&m)).await) })
            .buffered(16)
            .map(|(m, r)| r.map(|size| (m, size)))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let sizes: std::collections::HashMap<Md5Hex, u64> = sizes
            .into_iter()
            .map(|(m, s)| (m, s.unwrap_or(0)))
            .collect();
        for (md5, info) in &mut out {
            info.size = sizes.get(md5).copied().unwrap_or(0);
        }
        Ok(out)
    }
}

fn build(cfg: &S3Config, timeout: Duration, retries: usize) -> Result<AmazonS3, StoreError> {
    let mut options = ClientOptions::new()
        .with_timeout(timeout)
        .with_connect_timeout(timeout.min(Duration::from_secs(2)));
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&cfg.bucket)
        .with_region(&cfg.region)
        .with_virtual_hosted_style_request(!cfg.path_style)
        .with_retry(RetryConfig {
            max_retries: retries,
            retry_timeout: timeout,
            ..RetryConfig::default()
        });
    if let Some(endpoint) = &cfg.endpoint {
        options = options.with_allow_http(endpoint.starts_with("http://"));
        b = b.with_endpoint(endpoint);
    }
    b.with_client_options(options)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("S3 configuration: {e}")))
}

/// An id shared by every name of one content (the [`NameInfo::inode`] of disk stores).
fn blob_id(md5: &Md5Hex) -> u64 {
    u64::from_str_radix(&md5.as_str()[..16], 16).unwrap_or(0)
}

/// `<ts_ms>-<md5>-<nonce>` → (ts_ms, md5).
fn parse_change(file: &str) -> Option<(u64, Md5Hex)> {
    let mut it = file.split('-');
    let ts = it.next()?.parse().ok()?;
    let md5 = Md5Hex::parse(it.next()?)?;
    Some((ts, md5))
}

fn rand_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Object store errors → what callers answer: unreachable or refused → 503, slow → 504.
fn map_err(e: object_store::Error) -> StoreError {
    let msg = error_chain(&e);
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => {
            StoreError::Unavailable(format!("object store refused the credentials: {msg}"))
        }
        object_store::Error::NotFound { .. } => StoreError::Backend(msg),
        _ if timed_out(&e) => StoreError::Timeout(msg),
        _ => StoreError::Unavailable(msg),
    }
}

/// Whether the transport error under `e` is a timeout (as opposed to a refused or
/// broken connection, which is "unavailable").
fn timed_out(e: &object_store::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(http) = s.downcast_ref::<object_store::client::HttpError>() {
            return http.kind() == object_store::client::HttpErrorKind::Timeout;
        }
        src = s.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    msg
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            S3Config::parse_url("s3://b").unwrap(),
            ("b".into(), String::new())
        );
        assert_eq!(
            S3Config::parse_url("s3://b/p/q/").unwrap(),
            ("b".into(), "p/q".into())
        );
        assert!(S3Config::parse_url("s3:///p").is_err());
        assert!(S3Config::parse_url("/data").is_err());
    }

    #[test]
    fn parses_change_keys() {
        let md5 = Md5Hex::of(b"x");
        let key = format!("{:016}-{md5}-{:016x}", 1234, 99);
        assert_eq!(parse_change(&key), Some((1234, md5)));
        assert_eq!(parse_change("junk"), None);
    }

    #[test]
    fn change_keys_sort_by_time() {
        assert!(format!("{:016}", 999) < format!("{:016}", 1000));
    }
}
