//! Building image responses shared by the legacy and `/v1` surfaces: load through
//! the cache, conditional requests (ETag / Last-Modified → 304), byte ranges for
//! originals (206 / 416), and variants resized on the pool with single-flight.

use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;

use crate::error::Error;
use crate::imaging::{self, ImagingError, ResizeSpec};
use crate::state::{AppState, CachedImage, ImageHeaders, ImageKey};
use crate::store::{FileName, Md5Hex};

const CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The ETag of a variant: MD5 plus a hash of the resolved name and the canonical
/// parameters.
fn variant_etag(md5: &Md5Hex, name: &FileName, params: &str) -> HeaderValue {
    let tag = format!("\"{md5}-{}\"", short_hash(&format!("{name}|{params}")));
    HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""))
}

fn etag_matches(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Some(inm) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    inm.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/") == Some(etag))
}

fn not_modified_since(headers: &HeaderMap, modified: SystemTime) -> bool {
    if headers.contains_key(header::IF_NONE_MATCH) {
        return false;
    }
    let Some(ims) = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return false;
    };
    // HTTP dates have second precision.
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    secs(modified) <= secs(ims)
}

fn base_headers(h: &mut HeaderMap, etag: &HeaderValue, last_modified: &HeaderValue) {
    h.insert(header::ETAG, etag.clone());
    h.insert(header::LAST_MODIFIED, last_modified.clone());
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
}

fn not_modified(etag: &HeaderValue, last_modified: &HeaderValue, vary: bool) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    base_headers(r.headers_mut(), etag, last_modified);
    if vary {
        r.headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    r
}

/// A satisfiable single byte range `start..=end`.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // multiple ranges: serve the whole thing
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || len == 0 {
            return Some(Err(()));
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().ok()?.min(len.saturating_sub(1))
        };
        if start >= len || start > end {
            return Some(Err(()));
        }
        (start, end)
    };
    Some(Ok(range))
}

/// Answers an original: 304, 206, 416 or 200.
///
/// # Errors
/// [`Error::RangeNotSatisfiable`].
pub fn original_response(headers: &HeaderMap, img: &CachedImage) -> Result<Response, Error> {
    let h = &img.headers;
    if etag_matches(headers, &h.etag) || not_modified_since(headers, img.modified) {
        return Ok(not_modified(&h.etag, &h.last_modified, false));
    }
    let len = img.bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let (status, body, content_range) = match range {
        Some(Err(())) => return Err(Error::RangeNotSatisfiable(len)),
        Some(Ok((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            img.bytes.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        None => (StatusCode::OK, img.bytes.clone(), None),
    };
    let mut r = bytes_response(status, body, img, false);
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::CONTENT_RANGE, cr);
    }
    Ok(r)
}

/// `body` is `img.bytes` or a range of it.
fn bytes_response(status: StatusCode, body: Bytes, img: &CachedImage, vary: bool) -> Response {
    let len = body.len();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    base_headers(h, &img.headers.etag, &img.headers.last_modified);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(img.format.mime()),
    );
    let content_length = if len == img.bytes.len() {
        img.headers.content_length.clone()
    } else {
        HeaderValue::from(len)
    };
    h.insert(header::CONTENT_LENGTH, content_length);
    if vary {
        h.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    r
}

/// Short stable hash for variant ETags.
fn short_hash(s: &str) -> String {
    // FNV-1a, 64 bit: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Answers a resized variant; the ETag comes from MD5 + name + parameters, so a
/// conditional request is answered before any image work.
///
/// # Errors
/// Not found, busy, image errors.
pub async fn variant_response(
    state: &AppState,
    headers: &HeaderMap,
    md5: &Md5Hex,
    name: Option<&FileName>,
    spec: ResizeSpec,
    params: String,
    vary: bool,
) -> Result<Response, Error> {
    variant_response_for(state, headers, md5, name, move |_| (spec, params), vary).await
}

/// [`variant_response`] whose spec and canonical parameters depend on the original's format
/// (`/v1` normalises against it, so equivalent requests share one cache entry and ETag).
///
/// # Errors
/// Not found, busy, image errors.
pub async fn variant_response_for(
    state: &AppState,
    headers: &HeaderMap,
    md5: &Md5Hex,
    name: Option<&FileName>,
    resolve: impl FnOnce(imaging::Format) -> (ResizeSpec, String),
    vary: bool,
) -> Result<Response, Error> {
    let original = crate::images::load_original(state, md5, name).await?;
    let (spec, params) = resolve(original.format);
    // Conditional requests are answered before any image work; the tag is only built
    // when one is asked (a cached variant carries its own).
    if headers.contains_key(header::IF_NONE_MATCH)
        || headers.contains_key(header::IF_MODIFIED_SINCE)
    {
        let etag = variant_etag(md5, &original.name, &params);
        if etag_matches(headers, &etag) || not_modified_since(headers, original.modified) {
            return Ok(not_modified(&etag, &original.headers.last_modified, vary));
        }
    }
    let key = ImageKey::Variant {
        md5: *md5,
        name: name.cloned(),
        params: params.clone(),
    };
    let variant = state
        .cache
        .get_or_load(key, || async {
            let start = Instant::now();
            let res = state
                .pool
                .run(original.bytes.clone(), spec, state.limits.clone())
                .await;
            match &res {
                Ok(_) => state
                    .metrics
                    .resize_duration
                    .observe(start.elapsed().as_secs_f64()),
                Err(ImagingError::Busy) => state.metrics.resize_rejected.inc(),
                Err(_) => {}
            }
            let enc = res?;
            let etag = variant_etag(md5, &original.name, &params);
            Ok(CachedImage {
                // The encoder's buffer grew by doubling; the cache weighs `len()`, so keep
                // an exact-size copy (a few KB once per variant) rather than the slack.
                bytes: Bytes::copy_from_slice(&enc.bytes),
                format: enc.format,
                name: original.name.clone(),
                modified: original.modified,
                headers: ImageHeaders {
                    etag,
                    last_modified: original.headers.last_modified.clone(),
                    content_length: HeaderValue::from(enc.bytes.len()),
                },
            })
        })
        .await?;
    let mut resp = bytes_response(StatusCode::OK, variant.bytes.clone(), &variant, vary);
    // The variant's ETag was built from the name the original resolved to when it was made;
    // if `name: None` now resolves to another name (same bytes, another upload), answer with
    // the tag the conditional check above uses.
    if variant.name != original.name {
        resp.headers_mut()
            .insert(header::ETAG, variant_etag(md5, &original.name, &params));
    }
    Ok(resp)
}

/// Cache key (beside the variants of the same MD5, so a delete drops it too) of an image's
/// placeholder.
const PLACEHOLDER_KEY: &str = "placeholder:blurhash+dominant";

/// The BlurHash and dominant colour of `original`: computed once on the resize pool, then kept
/// in the byte-bounded cache like a tiny variant (single-flight on misses).
///
/// # Errors
/// Busy, or the image errors of [`imaging::placeholder`].
pub async fn placeholder(
    state: &AppState,
    md5: &Md5Hex,
    original: &CachedImage,
) -> Result<imaging::Placeholder, Error> {
    let key = ImageKey::Variant {
        md5: *md5,
        name: None,
        params: PLACEHOLDER_KEY.into(),
    };
    let cached = state
        .cache
        .get_or_load(key, || async {
            let (bytes, limits) = (original.bytes.clone(), state.limits.clone());
            let p = state
                .pool
                .run_fn(move || imaging::placeholder(&bytes, &limits))
                .await?;
            let body = Bytes::from(format!("{}\n{}", p.blurhash, p.dominant_hex()));
            Ok(CachedImage {
                headers: ImageHeaders::new(
                    original.headers.etag.clone(),
                    original.modified,
                    body.len(),
                ),
                bytes: body,
                format: original.format,
                name: original.name.clone(),
                modified: original.modified,
            })
        })
        .await?;
    let text = std::str::from_utf8(&cached.bytes).unwrap_or("");
    let (blurhash, hex) = text.split_once('\n').unwrap_or(("", ""));
    let channel =
        |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("ff"), 16).unwrap_or(255);
    Ok(imaging::Placeholder {
        blurhash: blurhash.to_owned(),
        dominant: [channel(1), channel(3), channel(5)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=50-500", 100), Some(Ok((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn etags() {
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"a\", W/\"b\""),
        );
        assert!(etag_matches(&h, &HeaderValue::from_static("\"a\"")));
        assert!(etag_matches(&h, &HeaderValue::from_static("\"b\"")));
        assert!(!etag_matches(&h, &HeaderValue::from_static("\"c\"")));
        assert_eq!(short_hash("x"), short_hash("x"));
        assert_ne!(short_hash("x"), short_hash("y"));
    }
}
