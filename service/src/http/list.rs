//! `GET /v1/images?limit=&cursor=&prefix=`: pages through every stored (MD5, name) in key
//! order (MD5, then the name's bytes on disk) through [`crate::store::ImageStore::list`], so
//! it works the same on disk, on S3 and on an agent (whose store is its server's internal
//! `GET /internal/v1/list`).
//!
//! Capability model: an image's address (its MD5) is the capability to read it, so reads
//! by address stay public; a listing hands out every address at once, so it needs the API
//! token whenever one is set, like uploads and deletes.
//!
//! The cursor is opaque to clients (hex of `md5/name`): the key of the last entry
//! returned, so pages stay stable while images are added or removed elsewhere. The prefix
//! filter (1–32 hex digits of the MD5) starts the store's walk just before the first
//! possible key, and stops at the first key past the prefix.
//!
//! Format and dimensions come from the image's header ([`imaging::probe`]); stores hand out
//! whole objects, so each MD5 is read once and its header facts remembered (a bounded
//! process-wide memo, [`MEMO_CAPACITY`] MD5s); a later page or listing costs no reads.
//! What must not happen here: loading listed images through the image cache (a listing
//! would evict the hot set).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;

use crate::error::{Error, Failure};
use crate::id::{FileName, Md5Hex};
use crate::imaging::{self, Format};
use crate::state::AppState;
use crate::store::NameInfo;
use crate::wire::to_millis;

use super::{authorize, query_get, query_pairs};

/// Entries per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;
/// Most MD5s whose header facts are remembered (then the memo starts over).
pub const MEMO_CAPACITY: usize = 65_536;
/// Images read at once to probe their headers.
const PROBE_CONCURRENCY: usize = 8;
/// Store calls for one page at most (a prefix page skips at most the names of one MD5).
const MAX_STORE_CALLS: usize = 8;

/// One listed (MD5, name).
#[derive(Debug, Serialize)]
pub struct Entry {
    pub md5: String,
    pub name: String,
    pub size: u64,
    /// `jpeg`, `png`, …; `null` when the stored bytes could not be read or probed.
    pub format: Option<&'static str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// When the name was stored (HTTP date) and the same in Unix milliseconds.
    pub stored: String,
    pub stored_ms: u64,
    /// The `/v1` URL of the original.
    pub url: String,
}

/// One page.
#[derive(Debug, Serialize)]
pub struct Page {
    pub images: Vec<Entry>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What a listing request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: usize,
    pub after: Option<(Md5Hex, FileName)>,
    /// Lower-case hex digits the MD5 must start with (empty: all).
    pub prefix: String,
}

impl ListQuery {
    /// Parses `limit`, `cursor` and `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidParams`] naming the parameter.
    pub fn parse(query: Option<&str>) -> Result<Self, Error> {
        let pairs = query_pairs(query);
        for (k, _) in &pairs {
            if !matches!(k.as_ref(), "limit" | "cursor" | "prefix") {
                return Err(Error::InvalidParams(format!(
                    "{k}: unknown parameter (limit, cursor, prefix)"
                )));
            }
        }
        let limit = match query_get(&pairs, "limit") {
            None => DEFAULT_LIMIT,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Error::InvalidParams(format!("limit: must be an integer in [1, {MAX_LIMIT}]"))
                })?,
        };
        let after = match query_get(&pairs, "cursor") {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                Error::InvalidParams("cursor: not a cursor from a previous page".into())
            })?),
        };
        let prefix = query_get(&pairs, "prefix")
            .unwrap_or("")
            .to_ascii_lowercase();
        if prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidParams(
                "prefix: must be up to 32 hex digits of an MD5".into(),
            ));
        }
        Ok(Self {
            limit,
            after,
            prefix,
        })
    }
}

/// The opaque cursor of a key.
pub fn encode_cursor(md5: &Md5Hex, name: &FileName) -> String {
    hex::encode(format!("{md5}/{}", name.as_str()))
}

/// The key in a cursor; `None` when it is not one.
pub fn decode_cursor(c: &str) -> Option<(Md5Hex, FileName)> {
    let raw = String::from_utf8(hex::decode(c).ok()?).ok()?;
    let (m, n) = raw.split_once('/')?;
    Some((Md5Hex::parse(m)?, FileName::parse(n).ok()?))
}

/// Where the store's walk starts for `prefix`: just before every MD5 that starts with it
/// (the MD5 one below `prefix` padded with zeros; its own names are skipped by the
/// prefix check). `None`: from the very beginning.
fn start_of(prefix: &str) -> Option<(Md5Hex, FileName)> {
    if prefix.is_empty() {
        return None;
    }
    let padded = format!("{prefix:0<32}");
    let n = u128::from_str_radix(&padded, 16).ok()?;
    let below = Md5Hex::parse(&format!("{:032x}", n.checked_sub(1)?))?;
    // Any valid name: names of `below` are filtered out by the prefix anyway.
    Some((below, FileName::parse("0").ok()?))
}

/// A stored (md5, name) key.
pub type Key = (Md5Hex, FileName);
/// Entries of a page and the key to continue after (when there may be more).
pub type PageOf = (Vec<(Md5Hex, NameInfo)>, Option<Key>);

/// One page of (md5, name) entries matching `q` from the store, and the key to continue
/// after (when there may be more).
///
/// # Errors
/// Store errors.
pub async fn page_of(state: &AppState, q: &ListQuery) -> Result<PageOf, Error> {
    let start = start_of(&q.prefix);
    let mut after = match (&q.after, start) {
        (Some(a), Some(s)) => Some(a.clone().max(s)),
        (a, s) => a.clone().or(s),
    };
    let mut out = Vec::new();
    for _ in 0..MAX_STORE_CALLS {
        // One more than wanted tells whether another page exists.
        let want = q.limit + 1 - out.len();
        let batch = state.store.list(after.as_ref(), want).await?;
        let exhausted = batch.len() < want;
        for (md5, info) in batch {
            after = Some((md5, info.name.clone()));
            if md5.as_str().starts_with(&q.prefix) {
                out.push((md5, info));
            } else if md5.as_str() > q.prefix.as_str() {
                // Past every MD5 with the prefix.
                return Ok(finish(out, q.limit));
            }
        }
        if exhausted {
            return Ok(finish(out, q.limit));
        }
        if out.len() > q.limit {
            break;
        }
    }
    // Out of store calls with the page not full: continue from where the walk got.
    if out.len() <= q.limit {
        return Ok((out, after));
    }
    Ok(finish(out, q.limit))
}

/// Trims to `limit`; a next key only when more than `limit` matched.
fn finish(mut out: Vec<(Md5Hex, NameInfo)>, limit: usize) -> PageOf {
    if out.len() > limit {
        out.truncate(limit);
        let next = out.last().map(|(m, i)| (*m, i.name.clone()));
        (out, next)
    } else {
        (out, None)
    }
}

type Facts = Option<(Format, u32, u32)>;

fn memo() -> &'static Mutex<HashMap<Md5Hex, Facts>> {
    static MEMO: OnceLock<Mutex<HashMap<Md5Hex, Facts>>> = OnceLock::new();
    MEMO.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Format and displayed size of the image stored as (md5, name), from its header; read from
/// the store once per MD5 (content-addressed: every name of an MD5 has the same bytes).
async fn facts(state: &AppState, md5: &Md5Hex, name: &FileName) -> Facts {
    if let Ok(m) = memo().lock()
        && let Some(f) = m.get(md5)
    {
        return *f;
    }
    let obj = match state.store.get(md5, Some(name)).await {
        Ok(Some(o)) => o,
        // Deleted meanwhile, or the store failed: say nothing, remember nothing.
        Ok(None) | Err(_) => return None,
    };
    let f = imaging::probe(&obj.bytes, &state.limits)
        .ok()
        .map(|p| (p.format, p.width, p.height));
    if let Ok(mut m) = memo().lock() {
        if m.len() >= MEMO_CAPACITY {
            m.clear();
        }
        m.insert(*md5, f);
    }
    f
}

/// `GET /v1/images`.
pub async fn list(State(state): State<AppState>, req: Request) -> Result<Response, Failure> {
    authorize(&state, req.headers())?;
    let q = ListQuery::parse(req.uri().query())?;
    let (entries, next) = page_of(&state, &q).await?;
    let state = &state;
    let images: Vec<Entry> = futures_util::stream::iter(entries)
        .map(|(md5, info)| async move {
            let f = facts(state, &md5, &info.name).await;
            Entry {
                md5: md5.to_string(),
                url: super::v1::image_url(&md5, &info.name),
                name: info.name.as_str().to_owned(),
                size: info.size,
                format: f.map(|f| f.0.extension()),
                width: f.map(|f| f.1),
                height: f.map(|f| f.2),
                stored: httpdate::fmt_http_date(info.stored),
                stored_ms: to_millis(info.stored),
            }
        })
        .buffered(PROBE_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(Page {
        images,
        next_cursor: next.map(|(m, n)| encode_cursor(&m, &n)),
    })
    .into_response())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let m = Md5Hex::parse("0123456789abcdef0123456789abcdef").unwrap();
        let n = FileName::parse("测试 a.png").unwrap();
        let c = encode_cursor(&m, &n);
        assert_eq!(decode_cursor(&c), Some((m, n)));
        for bad in [
            "",
            "zz",
            "00",
            &hex::encode("x/y.png"),
            &hex::encode(format!("{m}/../x")),
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_is_strict() {
        let q = ListQuery::parse(None).unwrap();
        assert_eq!(
            (q.limit, q.after, q.prefix.as_str()),
            (DEFAULT_LIMIT, None, "")
        );
        let q = ListQuery::parse(Some("limit=5&prefix=AB")).unwrap();
        assert_eq!((q.limit, q.prefix.as_str()), (5, "ab"));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "prefix=xyz",
            &format!("prefix={}", "a".repeat(33)),
            "cursor=nothex",
            "w=100",
        ] {
            assert!(
                matches!(ListQuery::parse(Some(bad)), Err(Error::InvalidParams(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefix_starts_just_below() {
        assert_eq!(start_of(""), None);
        assert_eq!(start_of("0"), None, "nothing is below the zero MD5");
        let (m, _) = start_of("ab").unwrap();
        assert_eq!(m.as_str(), "aaffffffffffffffffffffffffffffff");
        let (m, _) = start_of("1").unwrap();
        assert_eq!(m.as_str(), "0fffffffffffffffffffffffffffffff");
    }
}
