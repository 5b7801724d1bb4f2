//! The whole HTTP API driven in-process through `router()` with `oneshot`, on a
//! temp data dir — or on a real S3 bucket when `SIS_TEST_S3_BUCKET` is set (see
//! `common::test_store`). Covers every endpoint and error of the legacy and `/v1` APIs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::BodyExt;
use image::ImageFormat;
use tower::ServiceExt;

use common::{P, dims, gif, jpeg, md5_hex, multipart, png};
use sis::state::{AppState, StateOptions};

struct App {
    router: sis::http::App,
    state: AppState,
    dir: Option<tempfile::TempDir>,
}

fn app_with(opts: StateOptions) -> App {
    let (store, role, dir) = common::test_store();
    let state = AppState::new(store, role, opts).unwrap();
    App {
        router: sis::http::app(state.clone()),
        state,
        dir,
    }
}

fn app() -> App {
    app_with(StateOptions::default())
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not json: {}", self.text()))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl App {
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Resp {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    async fn get_with(&self, uri: &str, h: &[(&str, &str)]) -> Resp {
        let mut b = Request::get(uri);
        for (k, v) in h {
            b = b.header(*k, *v);
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    async fn post_multipart(&self, uri: &str, parts: &[P<'_>], auth: Option<&str>) -> Resp {
        let (ct, body) = multipart(parts);
        let mut b = Request::post(uri).header(header::CONTENT_TYPE, ct);
        if let Some(t) = auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    async fn up(&self, name: &str, bytes: &[u8]) -> Resp {
        let disp = format!("name=\"file\"; filename=\"{name}\"");
        self.post_multipart(
            "/up",
            &[P {
                disposition: &disp,
                bytes,
            }],
            None,
        )
        .await
    }

    async fn stored_files(&self) -> usize {
        fn walk(p: &std::path::Path) -> usize {
            std::fs::read_dir(p)
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        }
        match &self.dir {
            Some(dir) => walk(dir.path()),
            None => self.state.store.list(None, 10_000).await.unwrap().len(),
        }
    }
}

#[tokio::test]
async fn up_many_files_in_order_and_download() {
    let app = app();
    let a = png(40, 30, 1);
    let b = jpeg(20, 10, 2);
    let c = gif(8, 8, 3);
    let r = app
        .post_multipart(
            "/up",
            &[
                P {
                    disposition: "name=\"x\"; filename=\"测试2.png\"",
                    bytes: &a,
                },
                P {
                    disposition: "name=\"plain\"",
                    bytes: b"ignored form field",
                },
                P {
                    disposition: "name=\"y\"; filename=\"b.jpg\"",
                    bytes: &b,
                },
                P {
                    disposition: "name=\"z\"; filename*=UTF-8''%E5%9B%BE.gif",
                    bytes: &c,
                },
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        serde_json::json!([
            {"Name": "测试2.png", "MD5": md5_hex(&a)},
            {"Name": "b.jpg", "MD5": md5_hex(&b)},
            {"Name": "图.gif", "MD5": md5_hex(&c)},
        ])
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // Raw UTF-8 in the query and percent-encoded both work.
    let r = app
        .get(&format!(
            "/full_down?md5={}&file_name=测试2.png",
            md5_hex(&a)
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], &a[..]);
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_eq!(
        r.header("content-length"),
        Some(a.len().to_string().as_str())
    );
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.header("etag").is_some() && r.header("last-modified").is_some());
    let r = app
        .get(&format!(
            "/full_down?md5={}&file_name=%E6%B5%8B%E8%AF%952.png",
            md5_hex(&a)
        ))
        .await;
    assert_eq!(&r.body[..], &a[..]);
    let r = app.get(&format!("/simple_down?md5={}", md5_hex(&b))).await;
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(&r.body[..], &b[..]);
    // Missing things are 404.
    let r = app
        .get(&format!(
            "/full_down?md5={}&file_name=nope.png",
            md5_hex(&a)
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .get(&format!("/simple_down?md5={}", md5_hex(b"zz")))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn simple_down_is_first_name_by_byte_order() {
    let app = app();
    let a = png(10, 10, 9);
    for name in ["zeta.png", "Alpha.png", "beta.png"] {
        assert_eq!(app.up(name, &a).await.status, StatusCode::OK);
    }
    // Stored once (hard links): three names, content deduplicated.
    let r = app.get(&format!("/v1/images/{}/meta", md5_hex(&a))).await;
    let names: Vec<String> = r.json()["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Alpha.png", "beta.png", "zeta.png"]);
    let r = app.get(&format!("/simple_down?md5={}", md5_hex(&a))).await;
    assert_eq!(&r.body[..], &a[..]);
    assert_eq!(app.state.metrics.storage_objects.get(), 3);
    assert_eq!(app.state.metrics.storage_bytes.get(), a.len() as i64);
}

#[tokio::test]
async fn conflicts_dedup_and_idempotent_reupload() {
    let app = app();
    let a = png(10, 10, 1);
    let b = png(10, 10, 2);
    assert_eq!(app.up("same.png", &a).await.status, StatusCode::OK);
    assert_eq!(app.up("same.png", &a).await.status, StatusCode::OK);
    // Different content under a different MD5 but same name is fine...
    assert_eq!(app.up("same.png", &b).await.status, StatusCode::OK);
    // ...but the same (md5, name) with other bytes is 409: use /derect_up to claim it.
    let disp = format!("name=\"{}\"; filename=\"same.png\"", md5_hex(&a));
    let r = app
        .post_multipart(
            "/derect_up",
            &[P {
                disposition: &disp,
                bytes: &b,
            }],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "mismatch is 400");
    assert_eq!(app.state.metrics.images_stored.get(), 2);
}

#[tokio::test]
async fn v1_conflict_is_409() {
    // Simulate a collision: write different content under an MD5 directly.
    let app = app();
    let a = png(10, 10, 1);
    let md5 = sis::store::Md5Hex::of(&a);
    app.state
        .store
        .put_if_absent(
            md5,
            sis::store::FileName::parse("x.png").unwrap(),
            Bytes::from(png(12, 12, 5)),
        )
        .await
        .unwrap();
    let r = app.up("x.png", &a).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let r = app
        .post_multipart(
            "/v1/images",
            &[P {
                disposition: "name=\"f\"; filename=\"x.png\"",
                bytes: &a,
            }],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["code"], "conflict");
}

#[tokio::test]
async fn derect_up_uses_field_name_as_md5() {
    let app = app();
    let a = png(16, 16, 4);
    let disp = format!("name=\"{}\"; filename=\"测试.png\"", md5_hex(&a));
    let r = app
        .post_multipart(
            "/derect_up",
            &[P {
                disposition: &disp,
                bytes: &a,
            }],
            None,
        )
        .await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "上传完成"));
    let r = app
        .get(&format!(
            "/full_down?md5={}&file_name=测试.png",
            md5_hex(&a)
        ))
        .await;
    assert_eq!(&r.body[..], &a[..]);
    // Upper-case hex claimed: accepted (normalised).
    let disp = format!(
        "name=\"{}\"; filename=\"u.png\"",
        md5_hex(&a).to_uppercase()
    );
    let r = app
        .post_multipart(
            "/derect_up",
            &[P {
                disposition: &disp,
                bytes: &a,
            }],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    for bad in ["nothex", "../../etc", "d41d8cd98f00b204e9800998ecf8427"] {
        let disp = format!("name=\"{bad}\"; filename=\"v.png\"");
        let r = app
            .post_multipart(
                "/derect_up",
                &[P {
                    disposition: &disp,
                    bytes: &a,
                }],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn legacy_errors() {
    let app = app();
    let a = png(10, 10, 1);
    // Wrong method.
    for m in ["GET", "PUT", "DELETE"] {
        let r = app
            .send(
                Request::builder()
                    .method(m)
                    .uri("/up")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            (r.status, r.text().as_str()),
            (StatusCode::BAD_REQUEST, "不要乱来"),
            "{m}"
        );
    }
    // Names: 51 bytes, traversal, separators, dot names; nothing stored.
    let long = "a".repeat(47) + ".png"; // 51 bytes
    for name in [
        long.as_str(),
        "../../x.png",
        "a/b.png",
        "a\\\\b.png",
        "..",
        ".",
    ] {
        let r = app
            .post_multipart(
                "/up",
                &[
                    P {
                        disposition: "name=\"f\"; filename=\"ok.png\"",
                        bytes: &a,
                    },
                    P {
                        disposition: &format!("name=\"g\"; filename=\"{name}\""),
                        bytes: &a,
                    },
                ],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{name}");
        assert_eq!(r.text(), "文件名长度超出50字节限制");
    }
    assert_eq!(app.stored_files().await, 0, "nothing stored");
    let fifty = "b".repeat(46) + ".png";
    assert_eq!(app.up(&fifty, &a).await.status, StatusCode::OK);
    // Not an image.
    let r = app.up("x.png", b"hello, not an image").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // Bad MD5 strings on downloads.
    for q in [
        "md5=xyz",
        "md5=../../../etc/passwd",
        "",
        "md5=D41D8CD98F00B204E9800998ECF8427G",
    ] {
        let r = app.get(&format!("/simple_down?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
    }
    // Traversal in file_name is simply not found.
    let r = app
        .get(&format!(
            "/full_down?md5={}&file_name=../../../etc/passwd",
            md5_hex(&a)
        ))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Early 413 by Content-Length.
    let r = app
        .send(
            Request::post("/up")
                .header(
                    header::CONTENT_TYPE,
                    format!("multipart/form-data; boundary={}", common::BOUNDARY),
                )
                .header(header::CONTENT_LENGTH, (50 * 1024 * 1024 + 1).to_string())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.text(), "上传文件超出50M限制");
}

#[tokio::test]
async fn cors_and_options() {
    let app = app();
    for path in ["/up", "/derect_up", "/v1/images"] {
        let r = app
            .send(
                Request::builder()
                    .method("OPTIONS")
                    .uri(path)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(r.header("access-control-allow-method"), Some("POST"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }
    for path in ["/", "/healthz", "/nope", "/simple_down?md5=x"] {
        assert_eq!(
            app.get(path).await.header("access-control-allow-origin"),
            Some("*"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn conditional_range_and_head() {
    let app = app();
    let a = png(50, 50, 7);
    app.up("a.png", &a).await;
    let uri = format!("/full_down?md5={}&file_name=a.png", md5_hex(&a));
    let r = app.get(&uri).await;
    let etag = r.header("etag").unwrap().to_owned();
    let lm = r.header("last-modified").unwrap().to_owned();
    let r = app.get_with(&uri, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = app.get_with(&uri, &[("if-modified-since", &lm)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    let r = app
        .get_with(
            &uri,
            &[("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = app.get_with(&uri, &[("range", "bytes=0-9")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &a[..10]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 0-9/{}", a.len()).as_str())
    );
    let r = app.get_with(&uri, &[("range", "bytes=-5")]).await;
    assert_eq!(&r.body[..], &a[a.len() - 5..]);
    let r = app.get_with(&uri, &[("range", "bytes=999999-")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let r = app
        .send(Request::head(&uri).body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("content-length"),
        Some(a.len().to_string().as_str())
    );
    let r = app
        .send(
            Request::head(format!("/v1/images/{}", md5_hex(&a)))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("image/png"));
}

#[tokio::test]
async fn legacy_stretch_exact_size_same_format() {
    let app = app();
    let cases = [
        ("a.jpg", jpeg(64, 48, 1), ImageFormat::Jpeg),
        ("a.png", png(64, 48, 2), ImageFormat::Png),
        ("a.gif", gif(64, 48, 3), ImageFormat::Gif),
    ];
    for (name, bytes, fmt) in &cases {
        app.up(name, bytes).await;
        let md5 = md5_hex(bytes);
        let r = app
            .get(&format!(
                "/stretch_full_down?md5={md5}&file_name={name}&w=100&h=7"
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text());
        assert_eq!(dims(&r.body), (100, 7, *fmt));
        let r = app
            .get(&format!("/stretch_simple_down?md5={md5}&w=5&h=5"))
            .await;
        assert_eq!(dims(&r.body), (5, 5, *fmt));
        // Variant ETag → 304 without image work.
        let etag = r.header("etag").unwrap().to_owned();
        let r = app
            .get_with(
                &format!("/stretch_simple_down?md5={md5}&w=5&h=5"),
                &[("if-none-match", &etag)],
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        for bad in ["w=4&h=10", "w=10&h=8193", "w=10", "w=a&h=10"] {
            let r = app
                .get(&format!("/stretch_simple_down?md5={md5}&{bad}"))
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
        }
    }
}

#[tokio::test]
async fn v1_upload_get_fit_formats_meta_delete() {
    let app = app();
    let a = png(200, 100, 1);
    let b = jpeg(30, 60, 2);
    let r = app
        .post_multipart(
            "/v1/images",
            &[
                P {
                    disposition: "name=\"file\"; filename=\"wide.png\"",
                    bytes: &a,
                },
                P {
                    disposition: "name=\"file\"; filename=\"tall 图.jpg\"",
                    bytes: &b,
                },
            ],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let j = r.json();
    let imgs = j["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 2);
    assert_eq!(imgs[0]["name"], "wide.png");
    assert_eq!(imgs[0]["md5"], md5_hex(&a));
    assert_eq!(imgs[0]["format"], "png");
    assert_eq!(
        (imgs[0]["width"].as_u64(), imgs[0]["height"].as_u64()),
        (Some(200), Some(100))
    );
    assert_eq!(imgs[0]["size"].as_u64(), Some(a.len() as u64));
    let url_b = imgs[1]["url"].as_str().unwrap().to_owned();
    let r = app.get(&url_b).await;
    assert_eq!(&r.body[..], &b[..]);

    let m = md5_hex(&a);
    let check = |q: &'static str, w: u32, h: u32, f: ImageFormat| (q, w, h, f);
    for (q, w, h, f) in [
        check("w=100", 100, 50, ImageFormat::Png),
        check("h=20", 40, 20, ImageFormat::Png),
        check("w=50&h=50", 50, 25, ImageFormat::Png),
        check("w=50&h=50&fit=contain", 50, 25, ImageFormat::Png),
        check("w=50&h=50&fit=cover", 50, 50, ImageFormat::Png),
        check("w=50&h=50&fit=fill", 50, 50, ImageFormat::Png),
        check("w=50&h=50&fit=stretch", 50, 50, ImageFormat::Png),
        check("w=40&format=jpeg&q=50", 40, 20, ImageFormat::Jpeg),
        check("w=40&format=webp", 40, 20, ImageFormat::WebP),
        check("w=40&format=gif", 40, 20, ImageFormat::Gif),
    ] {
        let r = app.get(&format!("/v1/images/{m}/wide.png?{q}")).await;
        assert_eq!(r.status, StatusCode::OK, "{q}: {}", r.text());
        assert_eq!(dims(&r.body), (w, h, f), "{q}");
    }
    // format=auto negotiates on Accept and varies.
    let r = app
        .get_with(
            &format!("/v1/images/{m}?w=20&format=auto"),
            &[("accept", "image/webp,*/*")],
        )
        .await;
    assert_eq!(r.header("vary"), Some("Accept"));
    assert_eq!(r.header("content-type"), Some("image/webp"));
    let webp_etag = r.header("etag").unwrap().to_owned();
    let r = app.get(&format!("/v1/images/{m}?w=20&format=auto")).await;
    assert_eq!(r.header("content-type"), Some("image/png"));
    assert_ne!(r.header("etag").unwrap(), webp_etag);
    // Bad parameters.
    for q in [
        "w=4",
        "w=9000",
        "fit=zoom",
        "format=bmp",
        "q=0",
        "q=101",
        "w=8000&h=8000",
    ] {
        let r = app.get(&format!("/v1/images/{m}?{q}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.json()["code"], "invalid-params");
    }
    let r = app.get("/v1/images/not-an-md5").await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-md5"))
    );
    let r = app.get(&format!("/v1/images/{m}/..")).await;
    assert_ne!(r.status, StatusCode::OK);
    let r = app.get(&format!("/v1/images/{m}/nope.png")).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not-found"))
    );

    // Meta.
    let r = app.get(&format!("/v1/images/{m}/meta")).await;
    let j = r.json();
    assert_eq!(j["md5"], m);
    assert_eq!(j["format"], "png");
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(200), Some(100))
    );
    assert_eq!(j["size"].as_u64(), Some(a.len() as u64));
    assert!(j["stored"].is_string());

    // Delete: variants and originals leave the cache too.
    assert!(!app.state.cache.is_empty());
    let r = app
        .send(
            Request::delete(format!("/v1/images/{m}/wide.png"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/v1/images/{m}/wide.png")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/v1/images/{m}?w=100")).await.status,
        StatusCode::NOT_FOUND
    );
    let r = app
        .send(
            Request::delete(format!("/v1/images/{m}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let mb = md5_hex(&b);
    let r = app
        .send(
            Request::delete(format!("/v1/images/{mb}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(app.state.metrics.storage_objects.get(), 0);
    assert_eq!(app.state.metrics.storage_bytes.get(), 0);
}

#[tokio::test]
async fn v1_raw_upload_and_errors() {
    let app = app();
    let a = gif(12, 34, 5);
    let r = app
        .send(
            Request::post("/v1/images?name=%E5%8E%9F.gif")
                .header(header::CONTENT_TYPE, "image/gif")
                .body(Body::from(a.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let j = r.json();
    assert_eq!(j["images"][0]["name"], "原.gif");
    assert_eq!(j["images"][0]["format"], "gif");
    assert_eq!(
        j["images"][0]["url"],
        format!("/v1/images/{}/%E5%8E%9F.gif", md5_hex(&a))
    );
    let r = app.get(j["images"][0]["url"].as_str().unwrap()).await;
    assert_eq!(&r.body[..], &a[..]);
    // Non-images → 415 JSON.
    let r = app
        .send(
            Request::post("/v1/images?name=x.txt")
                .body(Body::from("text"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(r.json()["code"], "unsupported-media-type");
    // Bad names → 400 JSON.
    let r = app
        .send(
            Request::post("/v1/images?name=..%2Fx.gif")
                .body(Body::from(a.clone()))
                .unwrap(),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-name"))
    );
}

#[tokio::test]
async fn token_protects_uploads_and_deletes_only() {
    let app = app_with(StateOptions {
        api_token: Some("s3cret".into()),
        ..StateOptions::default()
    });
    let a = png(10, 10, 1);
    let disp = "name=\"f\"; filename=\"a.png\"";
    for uri in ["/up", "/v1/images"] {
        let r = app
            .post_multipart(
                uri,
                &[P {
                    disposition: disp,
                    bytes: &a,
                }],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        let r = app
            .post_multipart(
                uri,
                &[P {
                    disposition: disp,
                    bytes: &a,
                }],
                Some("wrong"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let dd = format!("name=\"{}\"; filename=\"a.png\"", md5_hex(&a));
    let r = app
        .post_multipart(
            "/derect_up",
            &[P {
                disposition: &dd,
                bytes: &a,
            }],
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .post_multipart(
            "/up",
            &[P {
                disposition: disp,
                bytes: &a,
            }],
            Some("s3cret"),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Reads are public.
    assert_eq!(
        app.get(&format!("/simple_down?md5={}", md5_hex(&a)))
            .await
            .status,
        StatusCode::OK
    );
    let del = |auth: Option<&str>| {
        let mut b = Request::delete(format!("/v1/images/{}", md5_hex(&a)));
        if let Some(t) = auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(app.send(del(None)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.send(del(Some("s3cret"))).await.status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn health_page_and_metrics() {
    let app = app();
    let r = app.get("/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().to_lowercase().contains("<html"));
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);
    app.state.set_ready(false);
    assert_eq!(
        app.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.state.set_ready(true);
    for i in 0..3u8 {
        app.up(&format!("{i}.png"), &png(10, 10, i)).await;
    }
    let a = png(10, 10, 0);
    app.get(&format!("/simple_down?md5={}", md5_hex(&a))).await;
    app.get(&format!("/simple_down?md5={}", md5_hex(&a))).await;
    app.get(&format!("/v1/images/{}?w=5", md5_hex(&a))).await;
    let text = app.get("/metrics").await.text();
    for want in [
        "sis_images_stored_total 3",
        "sis_storage_objects 3",
        "sis_http_requests_total{method=\"POST\",mode=\"server\",route=\"/up\",status=\"200\"} 3",
        "sis_http_request_duration_seconds_count{mode=\"server\",route=\"/simple_down\"} 2",
        "sis_cache_hits_total{kind=\"original\"}",
        "sis_cache_misses_total{kind=\"variant\"} 1",
        "sis_cache_capacity_bytes{kind=\"all\"} 104857600",
        "sis_resize_duration_seconds_count 1",
        "sis_resize_queue_depth 0",
        "sis_build_info{mode=\"server\",version=\"0.1.0\"} 1",
        "sis_http_requests_in_flight{mode=\"server\"}",
        "route=\"/v1/images/{md5}\"",
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
    assert!(!text.contains(&md5_hex(&a)), "raw md5 in a label");
    assert!(
        !text.contains(
            "sis_http_request_duration_seconds_count{mode=\"server\",route=\"/healthz\"}"
        )
    );
}

#[tokio::test]
async fn zero_cache_still_serves() {
    let app = app_with(StateOptions {
        cache_bytes: 0,
        ..StateOptions::default()
    });
    let a = png(30, 30, 1);
    app.up("a.png", &a).await;
    let r = app.get(&format!("/v1/images/{}?w=10", md5_hex(&a))).await;
    assert_eq!(dims(&r.body).0, 10);
    assert_eq!(app.state.cache.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_resize_queue_answers_503_with_retry_after() {
    let app = Arc::new(app_with(StateOptions {
        resize_workers: 1,
        resize_queue: 0,
        ..StateOptions::default()
    }));
    let big = png(800, 800, 3);
    assert_eq!(app.up("big.png", &big).await.status, StatusCode::OK);
    let m = md5_hex(&big);
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let app = Arc::clone(&app);
        let uri = format!("/v1/images/{m}?w={}", 100 + i);
        tasks.push(tokio::spawn(async move { app.get(&uri).await }));
    }
    let mut busy = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                busy += 1;
                assert_eq!(r.header("retry-after"), Some("1"));
                assert_eq!(r.json()["code"], "busy");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert!(busy > 0, "no request was refused");
    assert_eq!(app.state.metrics.resize_rejected.get(), busy);
    // Legacy surface: 503 too.
    let r = app
        .get(&format!("/stretch_simple_down?md5={m}&w=10&h=10"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "idle pool serves again");
}
