//! `--strip-metadata` on the upload path: what is stored, under which MD5, and the one
//! upload form that cannot take it (`/derect_up`, where the client names the MD5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::{P, dims, jpeg, md5_hex, multipart};
use sis::imaging::Strip;
use sis::state::{AppState, StateOptions};

const XMP: &[u8] = b"<x:xmpmeta><exif:GPSLatitude>51,30N</exif:GPSLatitude></x:xmpmeta>";

/// A JPEG carrying an XMP packet with a location, right after SOI.
fn jpeg_with_location() -> Vec<u8> {
    let plain = jpeg(48, 32, 9);
    let mut payload = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    payload.extend_from_slice(XMP);
    let len = u16::try_from(payload.len() + 2).unwrap();
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&plain[2..]);
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn send(app: &sis::http::App, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (
        status,
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn app(strip: Option<Strip>) -> (sis::http::App, Option<tempfile::TempDir>) {
    let (store, role, dir) = common::test_store();
    let opts = StateOptions {
        strip,
        ..StateOptions::default()
    };
    let state = AppState::new(store, role, opts).unwrap();
    (sis::http::app(state), dir)
}

fn upload(uri: &str, disposition: &str, bytes: &[u8]) -> Request<Body> {
    let (ct, body) = multipart(&[P { disposition, bytes }]);
    Request::post(uri)
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn stripped_uploads_are_stored_under_the_stripped_md5() {
    let original = jpeg_with_location();
    assert!(contains(&original, XMP));
    let (app, _dir) = app(Some(Strip::Gps));
    let (s, body) = send(
        &app,
        upload("/v1/images", r#"name="f"; filename="p.jpg""#, &original),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let md5 = json["images"][0]["md5"].as_str().unwrap().to_string();
    assert_ne!(md5, md5_hex(&original), "the MD5 is the stripped file's");
    let (s, stored) = send(
        &app,
        Request::get(format!("/v1/images/{md5}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(md5_hex(&stored), md5);
    assert!(!contains(&stored, b"GPSLatitude"), "location still stored");
    let (w, h, _) = dims(&stored);
    assert_eq!((w, h), (48, 32), "pixels untouched");
    // The legacy upload strips the same way.
    let (s, body) = send(
        &app,
        upload("/up", r#"name="f"; filename="q.jpg""#, &original),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains(&md5));
    // /derect_up names the MD5 of the bytes sent: refused rather than stored elsewhere.
    let disposition = format!(r#"name="{}"; filename="r.jpg""#, md5_hex(&original));
    let (s, body) = send(&app, upload("/derect_up", &disposition, &original)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("strips metadata"));
}

#[tokio::test]
async fn without_the_flag_uploads_are_kept_byte_for_byte() {
    let original = jpeg_with_location();
    let (app, _dir) = app(None);
    let (s, body) = send(
        &app,
        upload("/v1/images", r#"name="f"; filename="p.jpg""#, &original),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["images"][0]["md5"], md5_hex(&original));
}
