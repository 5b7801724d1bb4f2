//! Reading uploads: multipart parts with their field and file names, and raw bodies.
//!
//! `Content-Disposition` is parsed here from raw header bytes (not by multer) so all
//! the ways clients send names work: raw UTF-8 in `filename="测试2.png"`,
//! percent-encoded names, and RFC 5987 `filename*=UTF-8''%E6%B5%8B.png` (which wins
//! over `filename`). A file name whose bytes (raw, or after percent-decoding an RFC 5987
//! value) are not UTF-8 is refused ([`Error::NameNotUtf8`]), never stored under a
//! lossily changed name. Bodies are bounded by [`MAX_UPLOAD_BYTES`] while streaming.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::error::Error;
use crate::state::MAX_UPLOAD_BYTES;

/// Default of [`UploadLimits::max_parts`].
pub const DEFAULT_MAX_UPLOAD_PARTS: usize = 1000;

/// Per-request upload limits, set as a request extension by [`crate::serve_with`]
/// (`--max-upload-parts`); the defaults apply when it is missing (e.g. in router tests).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Most parts in one multipart body.
    pub max_parts: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_parts: DEFAULT_MAX_UPLOAD_PARTS,
        }
    }
}

/// One part of a multipart body.
#[derive(Debug, Clone)]
pub struct Part {
    /// The form field name (`name=`); the MD5 on legacy `/derect_up`.
    pub field: Option<String>,
    /// The client's file name; `None` for plain form fields.
    pub filename: Option<String>,
    pub bytes: Bytes,
}

/// Names found in a `Content-Disposition` header value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Disposition {
    pub name: Option<String>,
    pub filename: Option<String>,
    /// A `filename` or `filename*` whose bytes are not UTF-8 was given: the upload is
    /// refused rather than stored under a changed name.
    pub filename_not_utf8: bool,
}

/// Parses a `Content-Disposition` value given as raw bytes.
pub fn parse_disposition(raw: &[u8]) -> Disposition {
    let mut out = Disposition::default();
    let mut ext_filename: Option<String> = None;
    let mut i = 0;
    // Skip the disposition type.
    while i < raw.len() && raw[i] != b';' {
        i += 1;
    }
    while i < raw.len() {
        // At a ';'.
        i += 1;
        while i < raw.len() && (raw[i] == b' ' || raw[i] == b'\t') {
            i += 1;
        }
        let key_start = i;
        while i < raw.len() && raw[i] != b'=' && raw[i] != b';' {
            i += 1;
        }
        let key = String::from_utf8_lossy(&raw[key_start..i])
            .trim()
            .to_ascii_lowercase();
        if i >= raw.len() || raw[i] == b';' {
            continue;
        }
        i += 1; // '='
        while i < raw.len() && raw[i] == b' ' {
            i += 1;
        }
        let mut value = Vec::new();
        if i < raw.len() && raw[i] == b'"' {
            i += 1;
            while i < raw.len() && raw[i] != b'"' {
                // Backslash escapes, except before a non-quote (Windows paths from old browsers).
                if raw[i] == b'\\' && i + 1 < raw.len() && matches!(raw[i + 1], b'"' | b'\\') {
                    i += 1;
                }
                value.push(raw[i]);
                i += 1;
            }
            // Skip closing quote and anything up to the next ';'.
            while i < raw.len() && raw[i] != b';' {
                i += 1;
            }
        } else {
            while i < raw.len() && raw[i] != b';' {
                value.push(raw[i]);
                i += 1;
            }
            while value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.pop();
            }
        }
        match key.as_str() {
            "name" => out.name = Some(String::from_utf8_lossy(&value).into_owned()),
            "filename" => match decode_maybe_percent(&value) {
                Some(f) => out.filename = Some(f),
                None => out.filename_not_utf8 = true,
            },
            "filename*" => match decode_ext_value(&value) {
                Some(Ok(f)) => ext_filename = Some(f),
                Some(Err(NotUtf8)) => out.filename_not_utf8 = true,
                None => {}
            },
            _ => {}
        }
    }
    if ext_filename.is_some() {
        out.filename = ext_filename;
    }
    out
}

/// Raw UTF-8 as-is; `%XX` escapes decoded when the result is valid UTF-8. `None` when
/// the raw bytes are not UTF-8.
fn decode_maybe_percent(value: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(value).ok()?.to_owned();
    if has_percent_escape(&text)
        && let Ok(decoded) = percent_encoding::percent_decode_str(&text).decode_utf8()
    {
        return Some(decoded.into_owned());
    }
    Some(text)
}

/// A UTF-8 `filename*` decoded to bytes that are not UTF-8.
struct NotUtf8;

fn has_percent_escape(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// RFC 5987 `charset'lang'pct-encoded`; UTF-8 and ISO-8859-1 charsets. `None` when it is
/// not such a value (ignored), `Err` when a UTF-8 value's bytes are not UTF-8.
fn decode_ext_value(value: &[u8]) -> Option<Result<String, NotUtf8>> {
    let text = String::from_utf8_lossy(value);
    let mut parts = text.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    match charset.as_str() {
        "utf-8" | "" => Some(String::from_utf8(bytes).map_err(|_| NotUtf8)),
        "iso-8859-1" => Some(Ok(bytes.iter().map(|&b| char::from(b)).collect())),
        _ => None,
    }
}

/// True when the request is `multipart/form-data`.
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// Reads every part of a multipart body, bounded by [`MAX_UPLOAD_BYTES`] in total and by
/// `max_parts` parts.
///
/// # Errors
/// [`Error::TooLarge`] past the byte bound, [`Error::TooManyParts`] past the part bound;
/// [`Error::NameNotUtf8`] for a file name that is not UTF-8; [`Error::BadRequest`] for a
/// malformed body.
pub async fn read_multipart(
    headers: &HeaderMap,
    body: Body,
    max_parts: usize,
) -> Result<Vec<Part>, Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::BadRequest("missing Content-Type".into()))?;
    let boundary = multer::parse_boundary(ct)
        .map_err(|e| Error::BadRequest(format!("bad multipart Content-Type: {e}")))?;
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(MAX_UPLOAD_BYTES));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        };
        if parts.len() >= max_parts {
            return Err(Error::TooManyParts(max_parts));
        }
        let disp = field
            .headers()
            .get(header::CONTENT_DISPOSITION)
            .map(|v| parse_disposition(v.as_bytes()))
            .unwrap_or_default();
        if disp.filename_not_utf8 {
            return Err(Error::NameNotUtf8);
        }
        let bytes = field.bytes().await.map_err(multipart_error)?;
        parts.push(Part {
            field: disp.name,
            filename: disp.filename,
            bytes,
        });
    }
    Ok(parts)
}

fn multipart_error(e: multer::Error) -> Error {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            Error::TooLarge
        }
        other if other.to_string().contains(super::BODY_TOO_LARGE) => Error::TooLarge,
        other => Error::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// Reads a raw body, bounded by [`MAX_UPLOAD_BYTES`].
///
/// # Errors
/// [`Error::TooLarge`] past the bound; [`Error::BadRequest`] on a broken stream.
pub async fn read_raw(body: Body) -> Result<Bytes, Error> {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if e.to_string().contains(super::BODY_TOO_LARGE) {
                Error::TooLarge
            } else {
                Error::BadRequest(format!("reading body: {e}"))
            }
        })?;
        if (buf.len() + chunk.len()) as u64 > MAX_UPLOAD_BYTES {
            return Err(Error::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Disposition {
        parse_disposition(s.as_bytes())
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn parts_are_bounded() {
        let mut body = String::new();
        for i in 0..5 {
            body.push_str(&format!(
                "--X\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
            ));
        }
        body.push_str("--X--\r\n");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=X".parse().unwrap(),
        );
        let parts = read_multipart(&h, Body::from(body.clone()), 5)
            .await
            .unwrap();
        assert_eq!(parts.len(), 5);
        let r = read_multipart(&h, Body::from(body), 4).await;
        assert!(matches!(r, Err(Error::TooManyParts(4))), "{r:?}");
    }

    #[test]
    fn raw_utf8() {
        let v = d(r#"form-data; name="file"; filename="测试2.png""#);
        assert_eq!(v.name.as_deref(), Some("file"));
        assert_eq!(v.filename.as_deref(), Some("测试2.png"));
    }

    #[test]
    fn percent_encoded() {
        let v = d(r#"form-data; name="f"; filename="%E6%B5%8B%E8%AF%952.png""#);
        assert_eq!(v.filename.as_deref(), Some("测试2.png"));
        // Not an escape: kept.
        assert_eq!(
            d(r#"form-data; filename="100%.png""#).filename.as_deref(),
            Some("100%.png")
        );
    }

    #[test]
    fn rfc5987_wins() {
        let v = d(
            "form-data; name=\"f\"; filename=\"fallback.png\"; filename*=UTF-8''%E6%B5%8B%E8%AF%952.png",
        );
        assert_eq!(v.filename.as_deref(), Some("测试2.png"));
        let v = d("form-data; filename*=utf-8'en'a%20b.png");
        assert_eq!(v.filename.as_deref(), Some("a b.png"));
    }

    #[test]
    fn non_utf8_names_are_flagged_not_changed() {
        let raw = parse_disposition(b"form-data; name=\"f\"; filename=\"\xff\xfe.jpg\"");
        assert!(raw.filename_not_utf8);
        assert_eq!(raw.filename, None);
        let ext = d("form-data; filename=\"ok.jpg\"; filename*=UTF-8''%FF%FE.jpg");
        assert!(ext.filename_not_utf8);
        // Latin-1 is a charset with every byte valid: decoded, not refused.
        let latin = d("form-data; filename*=iso-8859-1''%E9.jpg");
        assert_eq!(latin.filename.as_deref(), Some("\u{e9}.jpg"));
        assert!(!latin.filename_not_utf8);
    }

    #[tokio::test]
    #[allow(clippy::unwrap_used)]
    async fn multipart_with_non_utf8_name_is_refused() {
        let body = b"--X\r\nContent-Disposition: form-data; name=\"f\"; filename=\"\xff\xfe.jpg\"\r\n\r\nv\r\n--X--\r\n".to_vec();
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=X".parse().unwrap(),
        );
        let r = read_multipart(&h, Body::from(body), 5).await;
        assert!(matches!(r, Err(Error::NameNotUtf8)), "{r:?}");
    }

    #[test]
    fn quoting_and_unquoted() {
        let v = d(r#"form-data; name="d41d8cd98f00b204e9800998ecf8427e"; filename="a\"b.png""#);
        assert_eq!(v.name.as_deref(), Some("d41d8cd98f00b204e9800998ecf8427e"));
        assert_eq!(v.filename.as_deref(), Some("a\"b.png"));
        let v = d("form-data; name=file; filename=plain.gif");
        assert_eq!(v.name.as_deref(), Some("file"));
        assert_eq!(v.filename.as_deref(), Some("plain.gif"));
        let v = d(r#"form-data; name="x; y"; filename="semi;colon.png""#);
        assert_eq!(v.name.as_deref(), Some("x; y"));
        assert_eq!(v.filename.as_deref(), Some("semi;colon.png"));
        assert_eq!(d("form-data; name=\"only\"").filename, None);
        assert!(!d("form-data; name=\"only\"").filename_not_utf8);
        // Traversal attempts come through verbatim; name validation refuses them.
        assert_eq!(
            d(r#"form-data; filename="../../etc/passwd""#)
                .filename
                .as_deref(),
            Some("../../etc/passwd")
        );
    }
}
