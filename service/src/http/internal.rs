//! The server's internal API for agents, under `/internal/v1/` (off the public
//! API's namespace; mounted only in server mode; behind the API token when one is
//! set, reads included, since the change feed is not for clients):
//!
//! - `PUT /internal/v1/objects/{md5}/{name}`: raw bytes; the server verifies the
//!   MD5 and the image type, stores, and answers `{"created", "new_bytes"}` (201
//!   new, 200 already there) only once the write is durable. 400 `md5-mismatch`,
//!   409 `conflict`, 415, 413.
//! - `GET /internal/v1/objects/{md5}[/{name}]`: the original bytes (first name
//!   when none is given) with `x-sis-name` (percent-encoded) and `x-sis-modified`
//!   (Unix ms); 404 when missing.
//! - `GET /internal/v1/names/{md5}`: `[{"name","size","stored_ms","inode"}]`.
//! - `DELETE /internal/v1/objects/{md5}[/{name}]`: `{"removed","freed"}` (404 when
//!   nothing matched); recorded in the change feed.
//! - `GET /internal/v1/changes[?since=SEQ]`: the change feed ([`crate::feed`]).
//! - `GET /internal/v1/list?limit=N[&after=CURSOR]`: up to N (≤ 1000) stored (MD5, name)
//!   after the key in `CURSOR` (see [`super::list::encode_cursor`]), in the store's key
//!   order: `[{"md5","name","size","stored_ms","inode"}]` — the agent's
//!   [`crate::store::ImageStore::list`].
//!
//! Errors are `/v1` JSON, so the agent can map the `code` back.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use percent_encoding::utf8_percent_encode;

use crate::error::{Error, Failure};
use crate::id::{FileName, Md5Hex, URL_COMPONENT};
use crate::images;
use crate::state::AppState;
use crate::store::PutOutcome;
use crate::wire::{
    DeleteReply, ListEntry, MODIFIED_HEADER, NAME_HEADER, NameReply, PutReply, to_millis,
};

use super::upload::read_raw;
use super::{ImagePath, admit_upload_body, authorize, query_get, query_pairs};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/objects/{md5}", get(read).delete(remove))
        .route(
            "/internal/v1/objects/{md5}/{name}",
            get(read).put(put).delete(remove),
        )
        .route("/internal/v1/names/{md5}", get(names))
        .route("/internal/v1/changes", get(changes))
        .route("/internal/v1/list", get(list))
}

fn md5(s: &str) -> Result<Md5Hex, Error> {
    Md5Hex::parse(s).ok_or(Error::InvalidMd5)
}

fn name(s: &str) -> Result<FileName, Error> {
    FileName::parse(s).map_err(Error::InvalidName)
}

async fn put(
    State(state): State<AppState>,
    Path((m, n)): Path<(String, String)>,
    req: Request,
) -> Response {
    let (head, body) = req.into_parts();
    let fail = |e: Error| Failure::v1(e).into_response();
    let result = async {
        authorize(&state, &head.headers).map_err(fail)?;
        let md5 = md5(&m).map_err(fail)?;
        let name = name(&n).map_err(fail)?;
        let body = admit_upload_body(&head.headers, body, || fail(Error::TooLarge))?;
        let bytes = read_raw(body).await.map_err(fail)?;
        let outcome = images::put_verified(&state, md5, name, bytes)
            .await
            .map_err(fail)?;
        Ok(match outcome {
            PutOutcome::Created { new_bytes } => (
                StatusCode::CREATED,
                Json(PutReply {
                    created: true,
                    new_bytes,
                }),
            )
                .into_response(),
            PutOutcome::Exists => Json(PutReply {
                created: false,
                new_bytes: 0,
            })
            .into_response(),
        })
    }
    .await;
    result.unwrap_or_else(|r| r)
}

async fn get_object(
    state: &AppState,
    headers: &HeaderMap,
    md5: &str,
    name: Option<&str>,
) -> Result<Response, Error> {
    authorize(state, headers)?;
    let md5 = self::md5(md5)?;
    let name = name.map(self::name).transpose()?;
    let obj = state
        .store
        .get(&md5, name.as_ref())
        .await?
        .ok_or(Error::NotFound)?;
    let mut r = obj.bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) =
        HeaderValue::from_str(&utf8_percent_encode(obj.name.as_str(), URL_COMPONENT).to_string())
    {
        h.insert(NAME_HEADER, v);
    }
    h.insert(MODIFIED_HEADER, HeaderValue::from(to_millis(obj.modified)));
    Ok(r)
}

async fn read(
    State(state): State<AppState>,
    Path(p): Path<ImagePath>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    Ok(get_object(&state, &headers, &p.md5, p.name.as_deref()).await?)
}

async fn names(
    State(state): State<AppState>,
    Path(md5): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    authorize(&state, &headers)?;
    let md5 = self::md5(&md5)?;
    let list: Vec<NameReply> = state
        .store
        .names(&md5)
        .await
        .map_err(Error::from)?
        .into_iter()
        .map(|n| NameReply {
            name: n.name.as_str().to_owned(),
            size: n.size,
            stored_ms: to_millis(n.stored),
            inode: n.inode,
        })
        .collect();
    Ok(Json(list).into_response())
}

async fn delete(
    state: &AppState,
    headers: &HeaderMap,
    md5: &str,
    name: Option<&str>,
) -> Result<Response, Error> {
    authorize(state, headers)?;
    let md5 = self::md5(md5)?;
    let name = name.map(self::name).transpose()?;
    let (removed, freed) = images::delete(state, &md5, name.as_ref()).await?;
    if removed == 0 {
        return Err(Error::NotFound);
    }
    Ok(Json(DeleteReply { removed, freed }).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Path(p): Path<ImagePath>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    Ok(delete(&state, &headers, &p.md5, p.name.as_deref()).await?)
}

async fn changes(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    authorize(&state, &headers)?;
    let pairs = query_pairs(uri.query());
    let since = match query_get(&pairs, "since") {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| Error::InvalidParams("since: want a sequence number".into()))?,
        ),
    };
    let feed = state.role.feed().ok_or(Error::NotFound)?;
    Ok(Json(feed.since(since)).into_response())
}

async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Response, Failure> {
    authorize(&state, &headers)?;
    let pairs = query_pairs(uri.query());
    let limit = query_get(&pairs, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| (1..=super::list::MAX_LIMIT + 1).contains(l))
        .ok_or_else(|| Error::InvalidParams("limit: want 1..=1001".into()))?;
    let after = match query_get(&pairs, "after") {
        None | Some("") => None,
        Some(c) => Some(
            super::list::decode_cursor(c)
                .ok_or_else(|| Error::InvalidParams("after: not a cursor".into()))?,
        ),
    };
    let entries: Vec<ListEntry> = state
        .store
        .list(after.as_ref(), limit)
        .await
        .map_err(Error::from)?
        .into_iter()
        .map(|(md5, n)| ListEntry {
            md5: md5.to_string(),
            name: n.name.as_str().to_owned(),
            size: n.size,
            stored_ms: to_millis(n.stored),
            inode: n.inode,
        })
        .collect();
    Ok(Json(entries).into_response())
}
