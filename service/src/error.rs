//! The crate's error type and the only `IntoResponse` for errors.
//!
//! Handlers return [`Failure`] = an [`Error`] plus the API surface it happened on:
//! legacy routes answer the plain-text bodies the Go clients expect, `/v1` routes
//! answer `{"error": "...", "code": "..."}`. Internal errors are logged here and
//! answered with a generic message; details never reach the client.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::id::NameError;
use crate::imaging::ImagingError;
use crate::store::StoreError;
use crate::wire::UpstreamError;

/// Body of the legacy 413 for an oversized upload.
pub const LEGACY_TOO_LARGE: &str = "上传文件超出50M限制";
/// Body of the legacy 413 for a bad file name.
pub const LEGACY_BAD_NAME: &str = "文件名长度超出50字节限制";
/// Body of the legacy 400 for a wrong method.
pub const LEGACY_BAD_METHOD: &str = "不要乱来";

/// Everything a request can fail with. Cheap to clone (shared by single-flight waiters).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("not found")]
    NotFound,
    #[error("invalid md5 (want 32 hex digits)")]
    InvalidMd5,
    #[error("invalid file name: {0}")]
    InvalidName(NameError),
    /// The upload named a file with bytes that are not UTF-8: refused, never stored under
    /// a changed name (a 400 on both APIs, unlike the legacy 413 for other bad names).
    #[error("file name is not valid UTF-8; send it as UTF-8 (raw or percent-encoded)")]
    NameNotUtf8,
    #[error("uploaded bytes do not match the md5 given")]
    Md5Mismatch,
    #[error("request body larger than 50 MiB")]
    TooLarge,
    #[error("not a supported image (JPEG, PNG, GIF, WebP, BMP, TIFF)")]
    UnsupportedMedia,
    #[error("this name already holds different content")]
    Conflict,
    #[error("not enough space left on the server's disk to store the image")]
    InsufficientStorage,
    #[error("the image store is read-only; uploads are refused until it is writable")]
    ReadOnlyStorage,
    #[error("more than {0} parts in one upload")]
    TooManyParts(usize),
    #[error("request body not received within {0} s")]
    BodyTimeout(u64),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// The variant policy (`--variants`, presets, signed URLs) refused the request.
    #[error("variant refused: {0}")]
    VariantRefused(crate::http::guard::Refusal),
    #[error("method not allowed")]
    BadMethod,
    #[error("image workers busy, retry later")]
    Busy,
    #[error("range not satisfiable")]
    RangeNotSatisfiable(u64),
    #[error("image cannot be processed: {0}")]
    Unprocessable(String),
    #[error("storage failure: {0}")]
    Storage(Arc<StoreError>),
    /// The object store is unreachable or refuses this server (wrong credentials).
    #[error("image storage unavailable; nothing was changed, retry later")]
    StorageUnavailable,
    /// The object store did not answer within its timeout.
    #[error("image storage did not answer in time; retry later")]
    StorageTimeout,
    /// Agent mode: the image server cannot be reached; nothing was stored.
    #[error("image server unavailable; nothing was changed, retry later")]
    UpstreamUnavailable,
    /// Agent mode: the image server did not answer in time.
    #[error("image server did not answer in time")]
    UpstreamTimeout,
    /// Agent mode: the image server's answer was unusable (details are logged).
    #[error("bad answer from the image server: {0}")]
    BadGateway(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A stable kebab-case code (JSON `code`, log field).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::InvalidMd5 => "invalid-md5",
            Self::InvalidName(_) => "invalid-name",
            Self::NameNotUtf8 => "invalid-name-encoding",
            Self::Md5Mismatch => "md5-mismatch",
            Self::TooLarge => "payload-too-large",
            Self::UnsupportedMedia => "unsupported-media-type",
            Self::Conflict => "conflict",
            Self::InsufficientStorage => "insufficient-storage",
            Self::ReadOnlyStorage => "read-only-storage",
            Self::TooManyParts(_) => "too-many-parts",
            Self::BodyTimeout(_) => "request-timeout",
            Self::BadRequest(_) => "bad-request",
            Self::InvalidParams(_) => "invalid-params",
            Self::Unauthorized => "unauthorized",
            Self::VariantRefused(r) => r.reason(),
            Self::BadMethod => "method-not-allowed",
            Self::Busy => "busy",
            Self::RangeNotSatisfiable(_) => "range-not-satisfiable",
            Self::Unprocessable(_) => "unprocessable-image",
            Self::Storage(_) => "storage",
            Self::StorageUnavailable => "storage-unavailable",
            Self::StorageTimeout => "storage-timeout",
            Self::Internal(_) => "internal",
            Self::UpstreamUnavailable => "upstream-unavailable",
            Self::UpstreamTimeout => "upstream-timeout",
            Self::BadGateway(_) => "bad-gateway",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::InvalidMd5
            | Self::Md5Mismatch
            | Self::BadRequest(_)
            | Self::InvalidParams(_)
            | Self::NameNotUtf8
            | Self::InvalidName(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMedia => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Conflict => StatusCode::CONFLICT,
            Self::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
            Self::ReadOnlyStorage => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyParts(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::VariantRefused(_) => StatusCode::FORBIDDEN,
            Self::BadMethod => StatusCode::METHOD_NOT_ALLOWED,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::RangeNotSatisfiable(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnavailable | Self::StorageUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::StorageTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Storage(_) | Self::Internal(_) | Self::BadGateway(_)
        )
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Io(io) if is_no_space(&io) => {
                tracing::warn!(error = %io, "data dir full, upload refused");
                Self::InsufficientStorage
            }
            StoreError::Io(io) if is_read_only(&io) => {
                tracing::warn!(error = %io, "data dir read-only, upload refused");
                Self::ReadOnlyStorage
            }
            StoreError::Conflict => Self::Conflict,
            StoreError::Upstream(e) => e.into(),
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "storage unavailable");
                Self::StorageUnavailable
            }
            StoreError::Timeout(why) => {
                tracing::warn!(error = %why, "storage timed out");
                Self::StorageTimeout
            }
            other => Self::Storage(Arc::new(other)),
        }
    }
}

/// `ENOSPC` or `EDQUOT`: the disk (or the quota) is full.
fn is_no_space(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || matches!(e.raw_os_error(), Some(28 | 122))
}

/// `EROFS`: the data dir is on a read-only file system.
fn is_read_only(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ReadOnlyFilesystem || e.raw_os_error() == Some(30)
}

impl From<ImagingError> for Error {
    fn from(e: ImagingError) -> Self {
        match e {
            ImagingError::Unsupported => Self::UnsupportedMedia,
            ImagingError::Busy => Self::Busy,
            ImagingError::InvalidParams(m) => Self::InvalidParams(m),
            ImagingError::Corrupt(m) | ImagingError::TooLarge(m) => Self::Unprocessable(m),
            ImagingError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<UpstreamError> for Error {
    fn from(e: UpstreamError) -> Self {
        match e {
            UpstreamError::Unreachable(_) => Error::UpstreamUnavailable,
            UpstreamError::Timeout => Error::UpstreamTimeout,
            UpstreamError::Protocol(m) => Error::BadGateway(m),
            UpstreamError::Rejected {
                status,
                code,
                message,
            } => match code.as_str() {
                "not-found" => Error::NotFound,
                "conflict" => Error::Conflict,
                "md5-mismatch" => Error::Md5Mismatch,
                "invalid-md5" => Error::InvalidMd5,
                "unsupported-media-type" => Error::UnsupportedMedia,
                "payload-too-large" => Error::TooLarge,
                "invalid-name" | "bad-request" => Error::BadRequest(message),
                "busy" => Error::UpstreamUnavailable,
                _ if status == 503 => Error::UpstreamUnavailable,
                _ if status == 504 => Error::UpstreamTimeout,
                // 401 here means the agent's --upstream-token is wrong: our fault, not the client's.
                _ => Error::BadGateway(format!("upstream answered {status} ({code}): {message}")),
            },
        }
    }
}

/// Which API a request came through; decides the error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Legacy,
    V1,
}

/// An error on a given surface: what handlers return.
#[derive(Debug)]
pub struct Failure {
    pub surface: Surface,
    pub error: Error,
}

impl Failure {
    pub fn legacy(error: Error) -> Self {
        Self {
            surface: Surface::Legacy,
            error,
        }
    }
    pub fn v1(error: Error) -> Self {
        Self {
            surface: Surface::V1,
            error,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Self::v1(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let err = &self.error;
        if err.is_internal() {
            tracing::error!(error = %err, code = err.code(), "request failed");
        }
        let status = err.status();
        let mut resp = match self.surface {
            Surface::Legacy => {
                let (status, body) = match err {
                    Error::TooLarge => (status, LEGACY_TOO_LARGE.to_string()),
                    Error::InvalidName(_) => {
                        (StatusCode::PAYLOAD_TOO_LARGE, LEGACY_BAD_NAME.into())
                    }
                    Error::BadMethod => (StatusCode::BAD_REQUEST, LEGACY_BAD_METHOD.into()),
                    // Legacy resize bounds: out of range is "not found", as in sis 1.x.
                    Error::InvalidParams(_) => {
                        (StatusCode::NOT_FOUND, "404 page not found\n".into())
                    }
                    Error::NotFound => (status, "404 page not found\n".into()),
                    Error::BadGateway(_) => (status, "bad answer from the image server".into()),
                    e if e.is_internal() => (status, "internal server error".into()),
                    e => (status, e.to_string()),
                };
                let mut r = (status, body).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            Surface::V1 => {
                let message = if let Error::BadGateway(_) = err {
                    "bad answer from the image server".to_string()
                } else if err.is_internal() {
                    "internal server error".to_string()
                } else {
                    err.to_string()
                };
                let body = serde_json::json!({ "error": message, "code": err.code() });
                (status, axum::Json(body)).into_response()
            }
        };
        match err {
            Error::Busy | Error::UpstreamUnavailable => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Error::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Error::ReadOnlyStorage => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response) -> (StatusCode, String) {
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn legacy_bodies() {
        let cases = [
            (Error::TooLarge, 413, LEGACY_TOO_LARGE),
            (Error::InvalidName(NameError::TooLong), 413, LEGACY_BAD_NAME),
            (
                Error::InvalidName(NameError::NotBaseName),
                413,
                LEGACY_BAD_NAME,
            ),
            (Error::BadMethod, 400, LEGACY_BAD_METHOD),
            (
                Error::VariantRefused(crate::http::guard::Refusal::Expired),
                403,
                "variant refused: the signed URL expired",
            ),
            (
                Error::NameNotUtf8,
                400,
                "file name is not valid UTF-8; send it as UTF-8 (raw or percent-encoded)",
            ),
            (
                Error::InsufficientStorage,
                507,
                "not enough space left on the server's disk to store the image",
            ),
            (
                Error::TooManyParts(3),
                413,
                "more than 3 parts in one upload",
            ),
            (
                Error::InvalidParams("w".into()),
                404,
                "404 page not found\n",
            ),
            (
                Error::Internal("secret path".into()),
                500,
                "internal server error",
            ),
        ];
        for (e, status, text) in cases {
            let (s, b) = body(Failure::legacy(e).into_response()).await;
            assert_eq!((s.as_u16(), b.as_str()), (status, text));
        }
    }

    #[tokio::test]
    async fn v1_json() {
        let r = Failure::v1(Error::Conflict).into_response();
        let (s, b) = body(r).await;
        assert_eq!(s, StatusCode::CONFLICT);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["code"], "conflict");
        let r = Failure::v1(Error::Busy).into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        let (s, b) = body(Failure::v1(Error::Internal("x".into())).into_response()).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!b.contains('x') || b.contains("internal server error"));
        let from_store: Error = StoreError::Conflict.into();
        assert_eq!(from_store.code(), "conflict");
        let full: Error = StoreError::Io(std::io::Error::from_raw_os_error(28)).into();
        assert_eq!(full.code(), "insufficient-storage");
        let ro: Error = StoreError::Io(std::io::Error::from_raw_os_error(30)).into();
        assert_eq!(ro.code(), "read-only-storage");
        let (s, b) = body(Failure::v1(full).into_response()).await;
        assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
        assert!(b.contains("insufficient-storage"), "{b}");
        let other: Error = StoreError::Io(std::io::Error::from_raw_os_error(5)).into();
        assert_eq!(other.code(), "storage");
        let from_img: Error = ImagingError::Busy.into();
        assert_eq!(from_img.code(), "busy");
    }
}
