//! The server's internal API for agents (`/internal/v1/...`) and its change feed,
//! driven in-process through `router()`; plus an in-process agent (`Origin::Upstream`)
//! in front of a real server on port 0. The cross-process flows and faults are in
//! the workspace's `tests/tests/agent.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::{md5_hex, png};
use sis::metrics::Metrics;
use sis::role::Role;
use sis::state::{AppState, StateOptions};
use sis::store::{DiskStore, SharedStore};
use sis::upstream::{Upstream, UpstreamConfig};

fn server() -> (tempfile::TempDir, AppState, sis::http::App) {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let state = AppState::new(store.shared(), Role::server(), StateOptions::default()).unwrap();
    let router = sis::http::app(state.clone());
    (dir, state, router)
}

async fn send(
    router: &sis::http::App,
    req: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn put_verifies_md5_and_type_then_get_names_delete_feed() {
    let (_dir, _state, r) = server();
    let img = png(12, 8, 3);
    let m = md5_hex(&img);
    let put = |md5: &str, name: &str, body: Vec<u8>| {
        Request::put(format!("/internal/v1/objects/{md5}/{name}"))
            .body(Body::from(body))
            .unwrap()
    };
    // Wrong MD5: 400 md5-mismatch, nothing stored.
    let (s, _, b) = send(&r, put(&md5_hex(b"x"), "a.png", img.clone())).await;
    assert_eq!(
        (s, json(&b)["code"].clone()),
        (StatusCode::BAD_REQUEST, "md5-mismatch".into())
    );
    // Not an image: 415.
    let (s, _, _) = send(&r, put(&md5_hex(b"text"), "a.txt", b"text".to_vec())).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Stored (201), then a no-op (200).
    let (s, _, b) = send(&r, put(&m, "%E6%B5%8B.png", img.clone())).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(json(&b)["created"], true);
    let (s, _, b) = send(&r, put(&m, "%E6%B5%8B.png", img.clone())).await;
    assert_eq!(
        (s, json(&b)["created"].clone()),
        (StatusCode::OK, false.into())
    );
    // Object with its name and time in headers.
    let (s, h, b) = send(
        &r,
        Request::get(format!("/internal/v1/objects/{m}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((s, b == img), (StatusCode::OK, true));
    assert_eq!(h["x-sis-name"], "%E6%B5%8B.png");
    assert!(
        h["x-sis-modified"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    let (s, _, b) = send(
        &r,
        Request::get(format!("/internal/v1/names/{m}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)[0]["name"], "测.png");
    // The feed: empty, then the delete.
    let feed = |since: &str| {
        Request::get(format!("/internal/v1/changes{since}"))
            .body(Body::empty())
            .unwrap()
    };
    let (_, _, b) = send(&r, feed("")).await;
    let start = json(&b);
    assert_eq!(start["seq"], 0);
    let (s, _, b) = send(
        &r,
        Request::delete(format!("/internal/v1/objects/{m}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((s, json(&b)["removed"].clone()), (StatusCode::OK, 1.into()));
    let (_, _, b) = send(&r, feed("?since=0")).await;
    let c = json(&b);
    assert_eq!(
        (c["seq"].clone(), c["reset"].clone()),
        (1.into(), false.into())
    );
    assert_eq!(c["md5s"][0], m.as_str());
    assert_eq!(c["epoch"], start["epoch"]);
    // Public deletes are in the feed too.
    send(&r, put(&m, "b.png", img.clone())).await;
    let (s, _, _) = send(
        &r,
        Request::delete(format!("/v1/images/{m}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, _, b) = send(&r, feed("?since=1")).await;
    assert_eq!(json(&b)["seq"], 2);
    let (s, _, _) = send(&r, feed("?since=x")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn internal_api_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::open(dir.path()).unwrap();
    let opts = StateOptions {
        api_token: Some("t".into()),
        ..StateOptions::default()
    };
    let state = AppState::new(store.shared(), Role::server(), opts).unwrap();
    let r = sis::http::app(state);
    let (s, _, _) = send(
        &r,
        Request::get("/internal/v1/changes")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = send(
        &r,
        Request::get("/internal/v1/changes")
            .header("authorization", "Bearer t")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

/// An agent state in front of a real server on port 0: uploads land on the server,
/// reads come back, the agent has no internal API of its own.
#[tokio::test]
async fn agent_origin_round_trip() {
    let (_dir, server_state, _) = server();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sis::serve(
        listener,
        server_state,
        async {
            let _ = rx.await;
        },
        Duration::from_secs(1),
    ));
    let metrics = Metrics::new("agent").unwrap();
    let up = Arc::new(
        Upstream::new(
            UpstreamConfig {
                base: format!("http://{addr}"),
                ..UpstreamConfig::default()
            },
            metrics.clone(),
        )
        .unwrap(),
    );
    let agent = AppState::with_metrics(
        up as SharedStore,
        Role::Agent,
        StateOptions::default(),
        metrics,
    );
    let r = sis::http::app(agent);
    let img = png(30, 20, 5);
    let m = md5_hex(&img);
    let (ct, body) = common::multipart(&[common::P {
        disposition: "name=\"f\"; filename=\"a.b.png\"",
        bytes: &img,
    }]);
    let (s, _, b) = send(
        &r,
        Request::post("/v1/images")
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        json(&b)["images"][0]["url"],
        format!("/v1/images/{m}/a.b.png")
    );
    let (s, _, b) = send(
        &r,
        Request::get(format!("/v1/images/{m}/a.b.png?w=15"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(common::dims(&b).0, 15);
    let (s, _, _) = send(
        &r,
        Request::get("/internal/v1/changes")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let _ = tx.send(());
}
