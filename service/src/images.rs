//! The image service between HTTP and storage: **ingest** (hash, check, store),
//! **read** (originals through the cache) and **delete** (store, cache, change feed).
//! The legacy, `/v1` and internal handlers parse requests and build answers; what
//! happens to an image happens here, once, for all of them. Requests, bodies and status
//! codes stay in [`crate::http`] (only the cached headers' values are built here).

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::error::Error;
use crate::id::{FileName, Md5Hex};
use crate::imaging::{self, Format, Probe};
use crate::state::{AppState, CachedImage, ImageHeaders, ImageKey};
use crate::store::PutOutcome;

/// An upload that passed every check and may be stored.
pub struct Checked {
    pub md5: Md5Hex,
    pub name: FileName,
    pub bytes: Bytes,
}

/// MD5 of an upload, hashed on the blocking pool (up to 50 MiB of work).
pub async fn md5_of(bytes: &Bytes) -> Md5Hex {
    let b = bytes.clone();
    match tokio::task::spawn_blocking(move || Md5Hex::of(&b)).await {
        Ok(m) => m,
        Err(_) => Md5Hex::of(bytes),
    }
}

/// Checks that `bytes` are a whole image sis can serve, before anything is stored: a known
/// format ([`Error::UnsupportedMedia`] otherwise), a declared size within
/// `max_input_pixels` and sane animation headers (decompression bombs are refused from the
/// headers alone, before any pixel buffer exists), and data that really decodes (truncated
/// or corrupt files behind a valid header, see [`imaging::check_decodes`]), on the bounded
/// resize pool so it never queues without bound ([`Error::Busy`] when the pool is full).
///
/// # Errors
/// [`Error::UnsupportedMedia`], [`Error::Unprocessable`] (bomb, truncated, corrupt),
/// [`Error::Busy`].
pub async fn validate(state: &AppState, bytes: &Bytes) -> Result<(Format, Probe), Error> {
    let format = imaging::sniff(bytes).ok_or(Error::UnsupportedMedia)?;
    let probe = imaging::probe(bytes, &state.limits)?;
    let (b, limits) = (bytes.clone(), state.limits.clone());
    let (width, height) = (probe.width, probe.height);
    state
        .pool
        .run_fn(move || imaging::check_decodes(&b, format, width, height, &limits))
        .await?;
    Ok((format, probe))
}

/// [`validate`] and the MD5 of the same bytes, side by side: the hash runs on the
/// blocking pool while a resize worker checks the image.
pub async fn hash_and_validate(
    state: &AppState,
    bytes: &Bytes,
) -> (Md5Hex, Result<(Format, Probe), Error>) {
    tokio::join!(md5_of(bytes), validate(state, bytes))
}

/// An upload as it will be stored: with `--strip-metadata`, its GPS (or all) metadata
/// removed without re-encoding, on the resize pool. Unknown formats pass through (the
/// checks after this refuse them).
///
/// # Errors
/// [`Error::Busy`] when the pool is full.
pub async fn prepare(state: &AppState, bytes: Bytes) -> Result<Bytes, Error> {
    let Some(what) = state.strip else {
        return Ok(bytes);
    };
    let Some(format) = imaging::sniff(&bytes) else {
        return Ok(bytes);
    };
    let b = bytes.clone();
    let stripped = state
        .pool
        .run_fn(move || Ok(imaging::strip_metadata(&b, format, what)))
        .await?;
    Ok(stripped.map_or(bytes, Bytes::from))
}

/// Stores checked uploads in order; each is durable when this returns `Ok`.
///
/// # Errors
/// The first storage failure (earlier items stay stored: each is whole on its own).
pub async fn store_all(state: &AppState, items: &[Checked]) -> Result<(), Error> {
    for item in items {
        state
            .store
            .put_if_absent(item.md5, item.name.clone(), item.bytes.clone())
            .await?;
    }
    Ok(())
}

/// Stores bytes an agent sends for (md5, name): the MD5 is verified and the type sniffed
/// here (the agent checked the image before sending it).
///
/// # Errors
/// [`Error::Md5Mismatch`], [`Error::UnsupportedMedia`], storage errors.
pub async fn put_verified(
    state: &AppState,
    md5: Md5Hex,
    name: FileName,
    bytes: Bytes,
) -> Result<PutOutcome, Error> {
    if md5_of(&bytes).await != md5 {
        return Err(Error::Md5Mismatch);
    }
    imaging::sniff(&bytes).ok_or(Error::UnsupportedMedia)?;
    Ok(state.store.put_if_absent(md5, name, bytes).await?)
}

/// Loads an original through the cache (single-flight on misses).
///
/// # Errors
/// [`Error::NotFound`] when missing; storage errors.
pub async fn load_original(
    state: &AppState,
    md5: &Md5Hex,
    name: Option<&FileName>,
) -> Result<CachedImage, Error> {
    let key = ImageKey::Original {
        md5: *md5,
        name: name.cloned(),
    };
    state
        .cache
        .get_or_load(key, || async {
            let obj = state.store.get(md5, name).await?.ok_or(Error::NotFound)?;
            let format = imaging::sniff(&obj.bytes).ok_or(Error::UnsupportedMedia)?;
            let headers = ImageHeaders::new(original_etag(md5), obj.modified, obj.bytes.len());
            Ok(CachedImage {
                bytes: obj.bytes,
                format,
                name: obj.name,
                modified: obj.modified,
                headers,
            })
        })
        .await
}

/// The ETag of an original: its MD5, quoted.
fn original_etag(md5: &Md5Hex) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{md5}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// Deletes a name (or every name) of `md5`: from the store, from this node's cache, and
/// into the change feed for agents (on a server). Returns (names removed, bytes freed).
///
/// # Errors
/// Storage errors.
pub async fn delete(
    state: &AppState,
    md5: &Md5Hex,
    name: Option<&FileName>,
) -> Result<(usize, u64), Error> {
    let (removed, freed) = state.store.delete(md5, name).await?;
    state.cache.remove_where(|k: &ImageKey| k.md5() == md5);
    if removed > 0 {
        state.role.record_delete(md5);
    }
    Ok((removed, freed))
}
