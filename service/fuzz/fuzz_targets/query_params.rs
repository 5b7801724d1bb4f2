//! Query strings, through the real router: the legacy `/stretch_*` and `/simple_down` and the
//! `/v1/images/{md5}` routes get `?<fuzz input>` against a store holding one small image, with
//! small limits, so parameters that pass validation really resize. Checks: no panic, no 5xx,
//! and the pure parsers in [`sis::http::params`] agree with their own bounds.
//!
//! Input layout: byte 0 picks the route, the rest is the query (bytes the URI grammar does
//! not allow are percent-encoded, so `query_pairs` still sees them after decoding).
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, CONTROLS, percent_encode};
use sis::http::params;
use sis::imaging::Limits;
use sis::state::{AppState, StateOptions};
use sis::role::Role;
use sis::store::{DiskStore, FileName, Md5Hex};
use tower::ServiceExt;

/// Bytes escaped before they go into the URI (`&`, `=`, `%`, `+` stay: they are the syntax).
const QUERY: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'#').add(b'<').add(b'>').add(b'`')
    .add(b'{').add(b'}').add(b'|').add(b'\\').add(b'^').add(b'[').add(b']');

fn limits() -> Limits {
    Limits { max_side: 64, max_output_pixels: 2048, max_input_pixels: 1 << 20 }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    router: sis::http::App,
    md5: Md5Hex,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = DiskStore::open(dir.path()).expect("store");
        // An 8x8 grey PNG (stored uncompressed), small enough to resize in microseconds.
        let png = include_bytes!("../fixtures/8x8.png").to_vec();
        let md5 = Md5Hex::of(&png);
        store.put(&md5, &FileName::parse("a.png").expect("name"), &png).expect("put");
        let opts = StateOptions {
            cache_bytes: 1 << 20,
            limits: limits(),
            resize_workers: 1,
            resize_queue: 4,
            ..StateOptions::default()
        };
        let state = rt.block_on(async {
            AppState::new(store.shared(), Role::server(), opts).expect("state")
        });
        Fixture { router: sis::http::app(state), rt, md5, _dir: dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, query)) = data.split_first() else {
        return;
    };
    check_parsers(query);
    let f = fixture();
    let md5 = &f.md5;
    let path = match route % 5 {
        0 => format!("/stretch_simple_down?md5={md5}&"),
        1 => format!("/stretch_full_down?md5={md5}&file_name=a.png&"),
        2 => format!("/v1/images/{md5}?"),
        3 => format!("/v1/images/{md5}/a.png?"),
        _ => "/full_down?".to_string(),
    };
    let uri = format!("{path}{}", percent_encode(query, QUERY));
    let Ok(req) = Request::get(uri.as_str()).body(Body::empty()) else {
        return;
    };
    let resp = f.rt.block_on(f.router.clone().oneshot(req)).expect("infallible");
    let status = resp.status();
    assert!(
        !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
        "{uri} -> {status}"
    );
});

/// The parsers alone, on pairs split the simple way: whatever they accept is in bounds.
fn check_parsers(query: &[u8]) {
    let text = String::from_utf8_lossy(query);
    let pairs: Vec<(String, String)> = text
        .split('&')
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let l = limits();
    let in_bounds = |v: Option<u32>| v.is_none_or(|v| (params::MIN_SIDE..=l.max_side).contains(&v));
    if let Ok(spec) = params::legacy_size(&pairs, &l) {
        let (w, h) = (spec.width.expect("w"), spec.height.expect("h"));
        assert!(in_bounds(Some(w)) && in_bounds(Some(h)));
        assert!(u64::from(w) * u64::from(h) <= l.max_output_pixels);
    }
    if let Ok(Some(p)) = params::v1(&pairs, &l) {
        assert!(in_bounds(p.width) && in_bounds(p.height));
        if let (Some(w), Some(h)) = (p.width, p.height) {
            assert!(u64::from(w) * u64::from(h) <= l.max_output_pixels);
        }
        assert!(p.quality.is_none_or(|q| (1..=100).contains(&q)));
        let accepts = params::Accepts { avif: true, webp: true };
        for source in sis::imaging::Format::ALL {
            let ((spec, a), (_, b)) = (p.resolve(accepts, source), p.resolve(accepts, source));
            assert_eq!(a, b, "canonical form is deterministic");
            // Normalising is idempotent: a normalised spec keys the same.
            assert_eq!(params::v1_canonical(&params::normalise(spec, source)), a);
        }
    }
}
