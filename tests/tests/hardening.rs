//! Hardening, bad input (issue 7): corrupt and hostile uploads, decompression bombs,
//! resize parameters at the limits and hostile names, each against a real `sis server`.
//! Every refusal must be a 4xx with a message, quick, and leave nothing stored.
//!
//! Slow clients and connection limits are in `hardening_net.rs`, crashes, full and
//! read-only disks and the cache bound in `hardening_faults.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use sis_e2e::{
    Sis, client, gif, jpeg, md5_hex, peak_rss_bytes, png, png_declaring, raw_request, raw_status,
    url_encode, walk_files,
};

/// How long any single refusal or small resize may take: a bound on hanging, not a benchmark
/// (the suite runs the debug binary on a shared machine).
const QUICK: Duration = Duration::from_secs(5);

const LEGACY_BAD_NAME: &str = "文件名长度超出50字节限制";

struct Server {
    sis: Sis,
    // `root/data` is the data dir: anything that escapes it shows up in `root`.
    root: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[&str]) -> Server {
        let root = tempfile::tempdir().unwrap();
        let sis = Sis::server(&root.path().join("data"), extra).await;
        Server { sis, root }
    }

    fn url(&self, path: &str) -> String {
        self.sis.url(path)
    }

    fn data(&self) -> std::path::PathBuf {
        self.root.path().join("data")
    }

    /// Nothing outside the data dir, and inside it only name files in the fan-out layout
    /// (`ab/cd/<md5>/n_…`) whose content has the MD5 of their directory.
    fn assert_store_clean(&self) {
        for f in walk_files(self.root.path()) {
            let rel = f.strip_prefix(self.data()).unwrap_or_else(|_| {
                panic!("file outside the data dir: {}", f.display());
            });
            let parts: Vec<_> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts.first().is_some_and(|p| p == ".tmp") {
                continue;
            }
            assert_eq!(parts.len(), 4, "unexpected file {}", rel.display());
            assert!(
                parts[3].starts_with("n_"),
                "unexpected file {}",
                rel.display()
            );
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(
                md5_hex(&bytes),
                parts[2],
                "content of {} does not match",
                rel.display()
            );
        }
    }

    fn stored_files(&self) -> usize {
        walk_files(&self.data())
            .iter()
            .filter(|p| !p.components().any(|c| c.as_os_str() == ".tmp"))
            .count()
    }
}

/// One hand-built multipart part: field name, file name (`None`: a plain field), content.
type RawPart<'a> = (&'a [u8], Option<&'a [u8]>, &'a [u8]);

/// A multipart body built by hand, so names can hold any bytes.
fn multipart(parts: &[RawPart<'_>]) -> (String, Vec<u8>) {
    let boundary = "sisHardeningBoundary7MA4YWxk";
    let mut body = Vec::new();
    for (field, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; name=\"");
        body.extend_from_slice(field);
        body.push(b'"');
        if let Some(name) = filename {
            body.extend_from_slice(b"; filename=\"");
            body.extend_from_slice(name);
            body.push(b'"');
        }
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// POSTs a hand-built multipart body; returns status, body and how long it took.
async fn post_multipart(url: &str, content_type: &str, body: Vec<u8>) -> (u16, String, Duration) {
    let start = Instant::now();
    let resp = client()
        .post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, text, start.elapsed())
}

async fn upload_one(s: &Server, path: &str, name: &[u8], bytes: &[u8]) -> (u16, String) {
    let (ct, body) = multipart(&[(b"file", Some(name), bytes)]);
    let (status, text, took) = post_multipart(&s.url(path), &ct, body).await;
    assert!(took < QUICK, "{path} took {took:?}");
    (status, text)
}

async fn raw_v1_upload(s: &Server, name: &str, bytes: &[u8]) -> (u16, String) {
    let resp = client()
        .post(s.url(&format!("/v1/images?name={}", url_encode(name))))
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

async fn get(url: &str) -> (u16, Vec<u8>, Duration) {
    let start = Instant::now();
    let resp = client().get(url).send().await.expect("GET");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap_or_default().to_vec();
    (status, bytes, start.elapsed())
}

/// Uploads `bytes` on every upload surface and expects a 4xx with a message each time,
/// and nothing stored.
async fn assert_refused_everywhere(s: &Server, label: &str, name: &str, bytes: &[u8]) {
    for path in ["/up", "/v1/images"] {
        let (status, text) = upload_one(s, path, name.as_bytes(), bytes).await;
        assert!(
            (400..500).contains(&status) && !text.trim().is_empty(),
            "{label} via {path}: {status} {text:?}"
        );
    }
    let (status, text) = raw_v1_upload(s, name, bytes).await;
    assert!((400..500).contains(&status), "{label} raw: {status} {text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{text}");
    let (status, _, _) = get(&s.url(&format!("/simple_down?md5={}", md5_hex(bytes)))).await;
    assert_eq!(status, 404, "{label} was stored");
}

fn scrambled(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let start = out.len() / 3;
    for (i, b) in out[start..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31) ^ 0xA5;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_images_and_empty_files_are_refused() {
    let s = Server::start(&[]).await;
    assert_refused_everywhere(&s, "zero bytes", "empty.png", b"").await;
    assert_refused_everywhere(
        &s,
        "html as jpg",
        "page.jpg",
        b"<html><body>hi</body></html>",
    )
    .await;
    assert_refused_everywhere(&s, "script as gif", "x.gif", b"#!/bin/sh\nrm -rf /\n").await;
    assert_eq!(s.stored_files(), 0);
    s.assert_store_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_corrupt_images_are_refused() {
    let s = Server::start(&[]).await;
    let j = jpeg(96, 64, 3);
    let p = sis_e2e::noise_png(64, 64, 3);
    let g = gif(32, 32, 1, None);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("jpeg cut in half", "half.jpg", j[..j.len() / 2].to_vec()),
        (
            "jpeg without its last 40 bytes",
            "tail.jpg",
            j[..j.len() - 40].to_vec(),
        ),
        ("jpeg scrambled", "scr.jpg", scrambled(&j)),
        ("png cut in half", "half.png", p[..p.len() / 2].to_vec()),
        ("png scrambled", "scr.png", scrambled(&p)),
        ("gif cut in half", "half.gif", g[..g.len() / 2].to_vec()),
        ("gif scrambled", "scr.gif", scrambled(&g)),
    ];
    // A magic number alone is not an image.
    assert_refused_everywhere(&s, "bare PNG magic", "m.png", b"\x89PNG\r\n\x1a\n").await;
    assert_refused_everywhere(&s, "bare GIF magic", "m.gif", b"GIF89a").await;
    assert_refused_everywhere(&s, "bare JPEG magic", "m.jpg", b"\xff\xd8\xff").await;
    for (label, name, bytes) in &cases {
        assert_refused_everywhere(&s, label, name, bytes).await;
    }
    assert_eq!(s.stored_files(), 0);
    // The intact originals are fine.
    for (name, bytes) in [("ok.jpg", &j), ("ok.png", &p), ("ok.gif", &g)] {
        let (status, text) = upload_one(&s, "/up", name.as_bytes(), bytes).await;
        assert_eq!(status, 200, "{name}: {text}");
    }
    s.assert_store_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_without_files_unterminated_and_ten_thousand_parts() {
    let s = Server::start(&[]).await;
    let img = png(16, 16, 1);
    for path in ["/up", "/derect_up", "/v1/images"] {
        // Only plain fields.
        let (ct, body) = multipart(&[(b"title", None, b"hello"), (b"other", None, b"x")]);
        let (status, text, took) = post_multipart(&s.url(path), &ct, body).await;
        assert!(
            (400..500).contains(&status) && !text.is_empty(),
            "{path} no file: {status} {text}"
        );
        assert!(took < QUICK);

        // No closing boundary: the body just stops.
        let (ct, mut body) = multipart(&[(b"file", Some(b"a.png"), &img)]);
        body.truncate(body.len() - 40);
        let (status, text, took) = post_multipart(&s.url(path), &ct, body).await;
        assert!(
            (400..500).contains(&status),
            "{path} unterminated: {status} {text}"
        );
        assert!(took < QUICK);

        // Not even one boundary.
        let (status, _, _) = post_multipart(
            &s.url(path),
            "multipart/form-data; boundary=nope",
            b"just some bytes".to_vec(),
        )
        .await;
        assert!((400..500).contains(&status), "{path} no boundary: {status}");
        let (status, _, _) = post_multipart(&s.url(path), "multipart/form-data", img.clone()).await;
        assert!(
            (400..500).contains(&status),
            "{path} no boundary param: {status}"
        );

        // 10,000 tiny parts: answered quickly with a 4xx, nothing stored.
        let names: Vec<String> = (0..10_000).map(|i| format!("{i}.png")).collect();
        let parts: Vec<RawPart<'_>> = names
            .iter()
            .map(|n| (&b"f"[..], Some(n.as_bytes()), &b"x"[..]))
            .collect();
        let (ct, body) = multipart(&parts);
        let (status, text, took) = post_multipart(&s.url(path), &ct, body).await;
        assert!(
            (400..500).contains(&status),
            "{path} 10k parts: {status} {text}"
        );
        assert!(took < QUICK, "{path} 10k parts took {took:?}");
    }
    assert_eq!(s.stored_files(), 0);
    let (status, _, _) = get(&s.url("/healthz")).await;
    assert_eq!(status, 200);
    s.assert_store_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_parts_is_refused_with_a_message() {
    let s = Server::start(&["--max-upload-parts", "100"]).await;
    let img = gif(4, 4, 1, None);
    let names: Vec<String> = (0..101).map(|i| format!("{i}.gif")).collect();
    let parts: Vec<RawPart<'_>> = names
        .iter()
        .map(|n| (&b"f"[..], Some(n.as_bytes()), &img[..]))
        .collect();
    let (ct, body) = multipart(&parts);
    let (status, text, _) = post_multipart(&s.url("/v1/images"), &ct, body).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("parts"), "{text}");
    // 100 parts are fine.
    let (ct, body) = multipart(&parts[..100]);
    let (status, text, _) = post_multipart(&s.url("/up"), &ct, body).await;
    assert_eq!(status, 200, "{text}");
}

/// A 50,000 × 50,000 PNG, a GIF with a 50,000 × 50,000 screen and a GIF with 5,000 frames:
/// tiny files that would need gigabytes once decoded. Whatever the upload answers, resizing
/// them is refused from the headers, and the server's peak RSS stays far below 500 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_never_decoded() {
    let s = Server::start(&[]).await;
    let bombs = [
        ("png50k.png", png_declaring(50_000, 50_000)),
        ("gif50k.gif", gif(1, 1, 1, Some((50_000, 50_000)))),
        ("frames.gif", gif(2, 2, 5_000, None)),
    ];
    for (name, bytes) in &bombs {
        let md5 = md5_hex(bytes);
        for path in ["/up", "/v1/images"] {
            let (status, text) = upload_one(&s, path, name.as_bytes(), bytes).await;
            assert!(status < 500, "{name} via {path}: {status} {text}");
        }
        for url in [
            format!("/stretch_simple_down?md5={md5}&w=100&h=100"),
            format!("/v1/images/{md5}?w=100"),
            format!("/v1/images/{md5}/{name}?w=50&h=50&fit=cover&format=webp"),
        ] {
            let (status, body, took) = get(&s.url(&url)).await;
            assert!((400..500).contains(&status), "{url}: {status}");
            assert!(took < QUICK, "{url} took {took:?}");
            assert!(body.len() < 1024);
        }
    }
    let peak = peak_rss_bytes(s.sis.pid());
    assert!(peak < 500 << 20, "peak RSS {} MiB", peak >> 20);
    eprintln!("bombs: server peak RSS {} MiB", peak >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_are_refused_at_upload() {
    let s = Server::start(&[]).await;
    for (name, bytes) in [
        ("png50k.png", png_declaring(50_000, 50_000)),
        ("gif50k.gif", gif(1, 1, 1, Some((50_000, 50_000)))),
        ("frames.gif", gif(2, 2, 5_000, None)),
    ] {
        assert_refused_everywhere(&s, name, name, &bytes).await;
    }
    assert_eq!(s.stored_files(), 0);
    let peak = peak_rss_bytes(s.sis.pid());
    assert!(peak < 500 << 20, "peak RSS {} MiB", peak >> 20);
}

/// What a resize should give: `Some((w, h))` an image of that size, `None` a refusal.
type Expect = Option<(u32, u32)>;

/// One resize request: `Some((w, h))` expects 200 with that size, `None` a 4xx; in QUICK.
async fn check_resize(s: &Server, url: &str, legacy: bool, expect: Option<(u32, u32)>) {
    let (status, body, took) = get(&s.url(url)).await;
    assert!(took < QUICK, "{url} took {took:?}");
    match expect {
        Some(dims) => {
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
            assert_eq!(sis_e2e::dimensions(&body), dims, "{url}");
        }
        None if legacy => assert_eq!(status, 404, "{url}"),
        None => {
            assert!((400..500).contains(&status), "{url}: {status}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"].is_string(), "{url}: {v}");
        }
    }
}

/// The same bounds on both APIs: each side in [5, max], w*h at most the pixel limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_limits_are_the_same_on_legacy_and_v1() {
    let s = Server::start(&["--max-side", "1000", "--max-output-pixels", "200000"]).await;
    let img = jpeg(64, 48, 9);
    let (status, text) = upload_one(&s, "/up", b"src.jpg", &img).await;
    assert_eq!(status, 200, "{text}");
    let md5 = md5_hex(&img);
    let ok = |w: u32, h: u32| Some((w, h));
    let cases: &[(&str, &str, Expect)] = &[
        ("0", "10", None),
        ("10", "0", None),
        ("4", "10", None),
        ("10", "4", None),
        ("5", "5", ok(5, 5)),
        ("5", "10", ok(5, 10)),
        ("1000", "5", ok(1000, 5)),
        ("5", "1000", ok(5, 1000)),
        ("1001", "5", None),
        ("5", "1001", None),
        ("500", "400", ok(500, 400)),
        ("500", "401", None),
        ("1000", "1000", None),
        ("abc", "10", None),
        ("10", "1e3", None),
        ("-5", "10", None),
        ("10", "-1", None),
        ("99999999999", "10", None),
        ("10", "99999999999999999999999", None),
        ("", "10", None),
        ("5.5", "10", None),
        ("0x10", "10", None),
    ];
    for (w, h, expect) in cases {
        let q = format!("w={w}&h={h}");
        check_resize(
            &s,
            &format!("/stretch_simple_down?md5={md5}&{q}"),
            true,
            *expect,
        )
        .await;
        check_resize(
            &s,
            &format!("/stretch_full_down?md5={md5}&file_name=src.jpg&{q}"),
            true,
            *expect,
        )
        .await;
        check_resize(
            &s,
            &format!("/v1/images/{md5}?{q}&fit=fill"),
            false,
            *expect,
        )
        .await;
        check_resize(
            &s,
            &format!("/v1/images/{md5}/src.jpg?{q}&fit=stretch"),
            false,
            *expect,
        )
        .await;
    }
    // /v1 with one side keeps the aspect ratio, and the computed side counts too.
    check_resize(&s, &format!("/v1/images/{md5}?w=500"), false, ok(500, 375)).await;
    check_resize(&s, &format!("/v1/images/{md5}?h=5"), false, ok(7, 5)).await;
    check_resize(&s, &format!("/v1/images/{md5}?w=4"), false, None).await;
    check_resize(&s, &format!("/v1/images/{md5}?h=1001"), false, None).await;
    // 1000 wide keeps the ratio: 1000x750 is over 200,000 px.
    check_resize(&s, &format!("/v1/images/{md5}?w=1000"), false, None).await;
    // Legacy needs both sides.
    check_resize(
        &s,
        &format!("/stretch_simple_down?md5={md5}&w=10"),
        true,
        None,
    )
    .await;
    check_resize(
        &s,
        &format!("/stretch_simple_down?md5={md5}&h=10"),
        true,
        None,
    )
    .await;
    // Other /v1 parameters at their bounds.
    for q in [
        "q=0",
        "q=101",
        "q=-1",
        "q=x",
        "fit=zoom",
        "format=bmp",
        "format=../x",
    ] {
        check_resize(&s, &format!("/v1/images/{md5}?w=10&{q}"), false, None).await;
    }
    for q in ["q=1", "q=100"] {
        check_resize(
            &s,
            &format!("/v1/images/{md5}?w=10&h=10&fit=fill&{q}"),
            false,
            ok(10, 10),
        )
        .await;
    }
}

/// The default bounds: 8192 px per side, 40 MP in total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_limits_default_max() {
    let s = Server::start(&[]).await;
    let img = png(32, 32, 4);
    let (status, _) = upload_one(&s, "/up", b"d.png", &img).await;
    assert_eq!(status, 200);
    let md5 = md5_hex(&img);
    for (q, expect) in [
        ("w=8192&h=5", Some((8192, 5))),
        ("w=8193&h=5", None),
        ("w=5&h=8193", None),
        ("w=8192&h=8192", None),
        ("w=7000&h=6000", None),
    ] {
        check_resize(
            &s,
            &format!("/stretch_simple_down?md5={md5}&{q}"),
            true,
            expect,
        )
        .await;
        check_resize(&s, &format!("/v1/images/{md5}?{q}&fit=fill"), false, expect).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_are_refused_and_never_reach_the_disk() {
    let s = Server::start(&[]).await;
    let img = png(8, 8, 7);
    let md5 = md5_hex(&img);
    let long51 = format!("{}.png", "a".repeat(47));
    let ok50 = format!("{}.png", "b".repeat(46));
    assert_eq!((long51.len(), ok50.len()), (51, 50));
    let bad: Vec<Vec<u8>> = vec![
        b"../x.jpg".to_vec(),
        b"../../../../tmp/x.jpg".to_vec(),
        b"a/b.jpg".to_vec(),
        b"/abs.jpg".to_vec(),
        b"a\\b.jpg".to_vec(),
        b"..".to_vec(),
        b".".to_vec(),
        b"a\x00b.jpg".to_vec(),
        b"a\x01b.jpg".to_vec(),
        b"a\x1b[31mred.jpg".to_vec(),
        b"a\x7fb.jpg".to_vec(),
        b"tab\there.jpg".to_vec(),
        long51.clone().into_bytes(),
        "测".repeat(17).into_bytes(), // 51 bytes
    ];
    for name in &bad {
        let (status, text) = upload_one(&s, "/up", name, &img).await;
        assert!(
            status == 413 && text == LEGACY_BAD_NAME || (400..500).contains(&status),
            "/up {:?}: {status} {text}",
            String::from_utf8_lossy(name)
        );
        let (status, text) = upload_one(&s, "/v1/images", name, &img).await;
        assert!(
            (400..500).contains(&status),
            "/v1 {name:?}: {status} {text}"
        );
    }
    // Names that are plain text come through /up's legacy 413 exactly.
    for name in ["../x.jpg", "a/b.jpg", "..", long51.as_str()] {
        let (status, text) = upload_one(&s, "/up", name.as_bytes(), &img).await;
        assert_eq!((status, text.as_str()), (413, LEGACY_BAD_NAME), "{name}");
    }
    // Raw /v1 bodies named by the query.
    let long_pct = "%41".repeat(3000);
    for name in ["../x.jpg", "a/b.jpg", "..", "a\u{0}b", long51.as_str()] {
        let (status, text) = raw_v1_upload(&s, name, &img).await;
        assert!(
            (400..500).contains(&status),
            "raw {name:?}: {status} {text}"
        );
    }
    let resp = client()
        .post(s.url(&format!("/v1/images?name={long_pct}")))
        .body(img.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert_eq!(s.stored_files(), 0, "a hostile name was stored");

    // Invalid UTF-8 in a multipart file name: a clear 400, never stored under a changed
    // name (tests/tests/non_utf8_names.rs covers every upload route and agents).
    let (status, text) = upload_one(&s, "/up", b"\xff\xfe\xc3(.png", &img).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("UTF-8"), "{text}");
    assert_eq!(s.stored_files(), 0, "a non-UTF-8 name was stored");
    // The 50-byte name is fine.
    let (status, text) = upload_one(&s, "/up", ok50.as_bytes(), &img).await;
    assert_eq!(status, 200, "{text}");

    // Reads with hostile names and MD5s.
    let bad_reads = [
        format!("/full_down?md5={md5}&file_name=../x.jpg"),
        format!("/full_down?md5={md5}&file_name=..%2F..%2Fetc%2Fpasswd"),
        format!("/full_down?md5={md5}&file_name={long_pct}"),
        format!("/full_down?md5={md5}&file_name=%00"),
        "/full_down?md5=../../etc/passwd&file_name=passwd".to_string(),
        "/simple_down?md5=../../etc/passwd".to_string(),
        "/simple_down?md5=%2e%2e%2f%2e%2e%2fetc%2fpasswd".to_string(),
        "/simple_down?md5=".to_string(),
        "/simple_down".to_string(),
        format!("/simple_down?md5={}", "a".repeat(33)),
        format!("/simple_down?md5={}g", "a".repeat(31)),
        "/stretch_simple_down?md5=../../etc/passwd&w=10&h=10".to_string(),
        "/v1/images/..%2F..%2Fetc%2Fpasswd".to_string(),
        "/v1/images/../../etc/passwd".to_string(),
        format!("/v1/images/{md5}/..%2F..%2Fetc%2Fpasswd"),
        format!("/v1/images/{md5}/%2e%2e"),
        format!("/v1/images/{md5}/{long_pct}"),
        format!("/v1/images/{md5}/a%00b.png"),
        "/v1/images/..%2F..%2Fetc%2Fpasswd/meta".to_string(),
    ];
    for url in &bad_reads {
        let (status, _, took) = get(&s.url(url)).await;
        assert!((400..500).contains(&status), "{url}: {status}");
        assert!(took < QUICK);
    }
    for url in [
        format!("/v1/images/{md5}/..%2F..%2Fx"),
        "/v1/images/..%2F..%2Fetc%2Fpasswd".to_string(),
    ] {
        let resp = client().delete(s.url(&url)).send().await.unwrap();
        assert!(
            resp.status().is_client_error(),
            "DELETE {url}: {}",
            resp.status()
        );
    }

    // The raw request line: invalid UTF-8 bytes, and a very long name.
    let mut req = format!("GET /full_down?md5={md5}&file_name=").into_bytes();
    req.extend_from_slice(b"\xff\xfe\x80.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let resp = raw_request(s.sis.addr, &req, QUICK).await;
    let status = raw_status(&resp);
    assert!(
        status.is_some_and(|c| (400..500).contains(&c)),
        "{status:?}"
    );
    let req = format!(
        "GET /full_down?md5={md5}&file_name={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "%E6%B5%8B".repeat(3000)
    );
    let resp = raw_request(s.sis.addr, req.as_bytes(), QUICK).await;
    let status = raw_status(&resp);
    assert!(
        status.is_some_and(|c| (400..500).contains(&c)),
        "{status:?}"
    );
    // Raw UTF-8 in the request line is how legacy clients ask: it works.
    let (status, text) = upload_one(&s, "/up", "测试2.png".as_bytes(), &img).await;
    assert_eq!(status, 200, "{text}");
    let mut req = format!("GET /full_down?md5={md5}&file_name=").into_bytes();
    req.extend_from_slice("测试2.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".as_bytes());
    let resp = raw_request(s.sis.addr, &req, QUICK).await;
    assert_eq!(raw_status(&resp), Some(200));

    // Still alive, and nothing escaped the data dir.
    let (status, _, _) = get(&s.url("/healthz")).await;
    assert_eq!(status, 200);
    s.assert_store_clean();
    assert!(!Path::new("/tmp/x.jpg").exists());
}
