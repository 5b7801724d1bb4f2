//! The `/v1` API: upload (multipart or raw body), download with resize
//! parameters, metadata and delete. Errors answer `{"error", "code"}` JSON.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::utf8_percent_encode;
use serde::Serialize;

use crate::error::{Error, Failure};
use crate::id::URL_COMPONENT;
use crate::images::{self, Checked};
use crate::imaging;
use crate::state::AppState;
use crate::store::{FileName, Md5Hex};

use super::upload::{Part, is_multipart, read_raw};
use super::{ImagePath, admit_upload_body, authorize, params, query_pairs, serve};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/images",
            axum::routing::post(upload).get(super::list::list),
        )
        .route("/v1/images/{md5}", get(read).delete(remove))
        .route("/v1/images/{md5}/meta", get(meta))
        .route("/v1/images/{md5}/{name}", get(read).delete(remove))
}

#[derive(Serialize)]
struct Uploaded {
    name: String,
    md5: String,
    size: u64,
    format: &'static str,
    width: Option<u32>,
    height: Option<u32>,
    url: String,
}

/// The `/v1` URL of a stored image.
pub fn image_url(md5: &Md5Hex, name: &FileName) -> String {
    format!(
        "/v1/images/{md5}/{}",
        utf8_percent_encode(name.as_str(), URL_COMPONENT)
    )
}

async fn upload(State(state): State<AppState>, req: Request) -> Response {
    match upload_inner(&state, req).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

async fn upload_inner(state: &AppState, req: Request) -> Result<Response, Response> {
    let fail = |e: Error| Failure::v1(e).into_response();
    let uri = req.uri().clone();
    let parts = if is_multipart(req.headers()) {
        super::legacy::read_upload(state, req, Failure::v1).await?
    } else {
        let (head, body) = req.into_parts();
        authorize(state, &head.headers).map_err(fail)?;
        let body = admit_upload_body(&head.headers, body, || fail(Error::TooLarge))?;
        let bytes = read_raw(body)
            .await
            .map_err(|e| super::legacy::close_if_too_large(&e, fail(e.clone())))?;
        let name = match super::query_get_utf8(uri.query(), "name").map_err(fail)? {
            Some(n) => n,
            None => {
                let ext = imaging::sniff(&bytes)
                    .map(|f| f.extension())
                    .unwrap_or("bin");
                format!("{}.{ext}", images::md5_of(&bytes).await)
            }
        };
        vec![Part {
            field: None,
            filename: Some(name),
            bytes,
        }]
    };
    let mut named = Vec::new();
    for part in parts {
        let Some(filename) = part.filename.clone() else {
            continue;
        };
        let name = FileName::parse(&filename)
            .map_err(Error::InvalidName)
            .map_err(fail)?;
        named.push((name, part));
    }
    if named.is_empty() {
        return Err(fail(Error::BadRequest("no file in the upload".into())));
    }
    let mut items = Vec::new();
    let mut probes = Vec::new();
    for (name, part) in named {
        let bytes = images::prepare(state, part.bytes).await.map_err(fail)?;
        let (md5, valid) = images::hash_and_validate(state, &bytes).await;
        let (format, probe) = valid.map_err(fail)?;
        probes.push((format, Some((probe.width, probe.height))));
        items.push(Checked { md5, name, bytes });
    }
    images::store_all(state, &items).await.map_err(fail)?;
    let images: Vec<Uploaded> = items
        .iter()
        .zip(probes)
        .map(|(i, (format, dims))| Uploaded {
            name: i.name.as_str().to_owned(),
            md5: i.md5.to_string(),
            size: i.bytes.len() as u64,
            format: format.extension(),
            width: dims.map(|d| d.0),
            height: dims.map(|d| d.1),
            url: image_url(&i.md5, &i.name),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "images": images })),
    )
        .into_response())
}

fn parse_md5(s: &str) -> Result<Md5Hex, Error> {
    Md5Hex::parse(s).ok_or(Error::InvalidMd5)
}

fn parse_name(s: &str) -> Result<FileName, Error> {
    FileName::parse(s).map_err(Error::InvalidName)
}

async fn get_image(
    state: &AppState,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    guard: Option<&std::sync::Arc<super::guard::VariantGuard>>,
    md5: &str,
    name: Option<&str>,
) -> Result<Response, Error> {
    let md5 = parse_md5(md5)?;
    let name = name.map(parse_name).transpose()?;
    // The variant policy (presets, signed URLs) admits the parameters before they are parsed.
    let pairs = super::guard::admit(state, guard, uri.path(), query_pairs(uri.query()), &[])?;
    match params::v1(&pairs, &state.limits)? {
        None => {
            let img = images::load_original(state, &md5, name.as_ref()).await?;
            serve::original_response(headers, &img)
        }
        Some(p) => {
            let accepts = params::Accepts::from_header(
                headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
            );
            let vary = p.format == params::FormatChoice::Auto;
            let resolve = move |source| p.resolve(accepts, source);
            serve::variant_response_for(state, headers, &md5, name.as_ref(), resolve, vary).await
        }
    }
}

// The request is taken whole (not `HeaderMap` + `Uri` extractors, which clone them):
// this is the hot read path.
async fn read(
    State(state): State<AppState>,
    Path(p): Path<ImagePath>,
    req: Request,
) -> Result<Response, Failure> {
    let (headers, uri, guard) = (req.headers(), req.uri(), req.extensions().get());
    Ok(get_image(&state, headers, uri, guard, &p.md5, p.name.as_deref()).await?)
}

#[derive(Serialize)]
struct MetaName {
    name: String,
    size: u64,
    stored: String,
    url: String,
}

async fn meta(State(state): State<AppState>, Path(md5): Path<String>) -> Result<Response, Failure> {
    let md5 = parse_md5(&md5)?;
    let names = state.store.names(&md5).await.map_err(Error::from)?;
    let first = names.first().ok_or(Error::NotFound)?;
    let img = images::load_original(&state, &md5, Some(&first.name)).await?;
    let dims = imaging::probe(&img.bytes, &state.limits).ok();
    // Placeholders are best effort: an image they fail on still has its metadata.
    let placeholder = serve::placeholder(&state, &md5, &img).await.ok();
    let stored = names.iter().map(|n| n.stored).min().unwrap_or(first.stored);
    let list: Vec<MetaName> = names
        .iter()
        .map(|n| MetaName {
            name: n.name.as_str().to_owned(),
            size: n.size,
            stored: httpdate::fmt_http_date(n.stored),
            url: image_url(&md5, &n.name),
        })
        .collect();
    Ok(Json(serde_json::json!({
        "md5": md5.to_string(),
        "names": list,
        "size": first.size,
        "format": img.format.extension(),
        "mime": img.format.mime(),
        "width": dims.as_ref().map(|d| d.width),
        "height": dims.as_ref().map(|d| d.height),
        "stored": httpdate::fmt_http_date(stored),
        "blurhash": placeholder.as_ref().map(|p| p.blurhash.clone()),
        "dominant_color": placeholder.as_ref().map(imaging::Placeholder::dominant_hex),
    }))
    .into_response())
}

async fn delete(
    state: &AppState,
    headers: &HeaderMap,
    md5: &str,
    name: Option<&str>,
) -> Result<Response, Error> {
    authorize(state, headers)?;
    let md5 = parse_md5(md5)?;
    let name = name.map(parse_name).transpose()?;
    // Also drops every cached original and variant of this MD5 (names may have
    // shifted) and, on the server, tells agents through the change feed.
    let (removed, _freed) = images::delete(state, &md5, name.as_ref()).await?;
    if removed == 0 {
        return Err(Error::NotFound);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(p): Path<ImagePath>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    Ok(delete(&state, &headers, &p.md5, p.name.as_deref()).await?)
}
