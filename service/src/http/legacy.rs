//! The sis 1.x/2.x API, wire-compatible: `/up`, `/derect_up` (sic), `/simple_down`,
//! `/full_down`, `/stretch_simple_down`, `/stretch_full_down`. Errors answer the
//! legacy plain-text bodies (see [`crate::error`]).

use std::borrow::Cow;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use crate::error::{Error, Failure};
use crate::images::{self, Checked};
use crate::state::AppState;
use crate::store::{FileName, Md5Hex};

use super::upload::{Part, read_multipart};
use super::{admit_upload_body, authorize, params, query_get, query_pairs, serve};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/up", post(up).fallback(bad_method))
        .route("/derect_up", post(derect_up).fallback(bad_method))
        .route("/simple_down", get(simple_down))
        .route("/full_down", get(full_down))
        .route("/stretch_simple_down", get(stretch_simple_down))
        .route("/stretch_full_down", get(stretch_full_down))
}

async fn bad_method() -> Failure {
    Failure::legacy(Error::BadMethod)
}

#[derive(Serialize)]
struct UpResult {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "MD5")]
    md5: String,
}

/// Authorizes, applies the early 413, and reads the multipart body.
pub(crate) async fn read_upload(
    state: &AppState,
    req: Request,
    surface: fn(Error) -> Failure,
) -> Result<Vec<Part>, Response> {
    let (parts, body) = req.into_parts();
    authorize(state, &parts.headers).map_err(|e| surface(e).into_response())?;
    let body = admit_upload_body(&parts.headers, body, || {
        surface(Error::TooLarge).into_response()
    })?;
    let limits = parts
        .extensions
        .get::<super::upload::UploadLimits>()
        .copied()
        .unwrap_or_default();
    read_multipart(&parts.headers, body, limits.max_parts)
        .await
        .map_err(|e| close_if_too_large(&e, surface(e.clone()).into_response()))
}

/// A 413 found while streaming: the rest of the body is being drained, so ask
/// the client to close afterwards.
pub(crate) fn close_if_too_large(e: &Error, mut resp: Response) -> Response {
    if matches!(e, Error::TooLarge) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn up(State(state): State<AppState>, req: Request) -> Response {
    let parts = match read_upload(&state, req, Failure::legacy).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match up_inner(&state, parts).await {
        Ok(r) => r,
        Err(e) => Failure::legacy(e).into_response(),
    }
}

async fn up_inner(state: &AppState, parts: Vec<Part>) -> Result<Response, Error> {
    let mut named = Vec::new();
    for part in parts {
        let Some(filename) = part.filename.clone() else {
            continue; // plain form field
        };
        named.push((
            FileName::parse(&filename).map_err(Error::InvalidName)?,
            part,
        ));
    }
    let mut items = Vec::new();
    for (name, part) in named {
        let bytes = images::prepare(state, part.bytes).await?;
        let (md5, valid) = images::hash_and_validate(state, &bytes).await;
        valid?;
        items.push(Checked { md5, name, bytes });
    }
    if items.is_empty() {
        return Err(Error::BadRequest("no file in the upload".into()));
    }
    images::store_all(state, &items).await?;
    let out: Vec<UpResult> = items
        .iter()
        .map(|i| UpResult {
            name: i.name.as_str().to_owned(),
            md5: i.md5.to_string(),
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn derect_up(State(state): State<AppState>, req: Request) -> Response {
    let parts = match read_upload(&state, req, Failure::legacy).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    match derect_up_inner(&state, parts).await {
        Ok(r) => r,
        Err(e) => Failure::legacy(e).into_response(),
    }
}

async fn derect_up_inner(state: &AppState, parts: Vec<Part>) -> Result<Response, Error> {
    let mut items = Vec::new();
    for part in parts {
        let Some(filename) = part.filename.clone() else {
            continue;
        };
        let claimed = part
            .field
            .as_deref()
            .and_then(Md5Hex::parse)
            .ok_or(Error::InvalidMd5)?;
        let name = FileName::parse(&filename).map_err(Error::InvalidName)?;
        let (md5, valid) = images::hash_and_validate(state, &part.bytes).await;
        if md5 != claimed {
            return Err(Error::Md5Mismatch);
        }
        valid?;
        // The client named the file by its MD5: it cannot be stored under another one.
        if images::prepare(state, part.bytes.clone()).await? != part.bytes {
            return Err(Error::BadRequest(
                "this server strips metadata from uploads, which changes the MD5 given: \
                 upload through /up or /v1/images instead"
                    .into(),
            ));
        }
        items.push(Checked {
            md5: claimed,
            name,
            bytes: part.bytes,
        });
    }
    if items.is_empty() {
        return Err(Error::BadRequest("no file in the upload".into()));
    }
    images::store_all(state, &items).await?;
    let mut r = "上传完成".into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

fn md5_param(pairs: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<Md5Hex, Error> {
    query_get(pairs, "md5")
        .and_then(Md5Hex::parse)
        .ok_or(Error::InvalidMd5)
}

fn name_param(pairs: &[(Cow<'_, str>, Cow<'_, str>)]) -> Result<FileName, Error> {
    let raw = query_get(pairs, "file_name").ok_or(Error::NotFound)?;
    FileName::parse(raw).map_err(|_| Error::NotFound)
}

async fn download(state: AppState, req: Request, with_name: bool, stretch: bool) -> Response {
    // Only the head is used; holding the (non-Sync) body across awaits is not needed.
    let (req, _body) = req.into_parts();
    let result = async {
        let pairs = query_pairs(req.uri.query());
        let md5 = md5_param(&pairs)?;
        let name = if with_name {
            Some(name_param(&pairs)?)
        } else {
            None
        };
        if stretch {
            // The variant policy applies here too; `md5` and `file_name` address the image.
            let guard = req.extensions.get();
            let pairs =
                super::guard::admit(&state, guard, req.uri.path(), pairs, &["md5", "file_name"])?;
            let spec = params::legacy_size(&pairs, &state.limits)?;
            let canonical = params::canonical(&spec);
            serve::variant_response(
                &state,
                &req.headers,
                &md5,
                name.as_ref(),
                spec,
                canonical,
                false,
            )
            .await
        } else {
            let img = images::load_original(&state, &md5, name.as_ref()).await?;
            serve::original_response(&req.headers, &img)
        }
    }
    .await;
    result.unwrap_or_else(|e| Failure::legacy(e).into_response())
}

async fn simple_down(State(state): State<AppState>, req: Request) -> Response {
    download(state, req, false, false).await
}

async fn full_down(State(state): State<AppState>, req: Request) -> Response {
    download(state, req, true, false).await
}

async fn stretch_simple_down(State(state): State<AppState>, req: Request) -> Response {
    download(state, req, false, true).await
}

async fn stretch_full_down(State(state): State<AppState>, req: Request) -> Response {
    download(state, req, true, true).await
}
