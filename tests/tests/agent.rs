//! Agent mode end to end (issue 3): one `sis server` and two `sis agent`s as separate
//! processes on loopback ports. Uploads through one agent are readable (and resized)
//! through the other; deletes stop being served within the invalidation window; the
//! server going down, coming back, being slow or restarting mid-stream gives clean
//! answers. Agents here use a short window (2 s) so the tests run in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use sis_e2e::{
    Sis, client, dimensions, get_text, jpeg, legacy_upload, md5_hex, metric_sum, noise_png, png,
    url_encode, walk_files,
};

/// Flags for test agents: a 2 s invalidation window polled every 200 ms.
const FAST: &[&str] = &[
    "--invalidation-window",
    "2s",
    "--poll-interval",
    "200ms",
    "--upstream-timeout",
    "3s",
];

struct Cluster {
    data: tempfile::TempDir,
    server: Sis,
    a1: Sis,
    a2: Sis,
}

async fn cluster(agent_extra: &[&str]) -> Cluster {
    let data = tempfile::tempdir().unwrap();
    let server = Sis::server(data.path(), &[]).await;
    let upstream = server.url("");
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend_from_slice(agent_extra);
    let mut a1 = Sis::agent(&upstream, &args).await;
    let mut a2 = Sis::agent(&upstream, &args).await;
    a1.wait_for_status("/readyz", 200, Duration::from_secs(10))
        .await;
    a2.wait_for_status("/readyz", 200, Duration::from_secs(10))
        .await;
    Cluster {
        data,
        server,
        a1,
        a2,
    }
}

async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap_or_default().to_vec())
}

async fn v1_upload(base: &str, name: &str, bytes: &[u8]) -> (u16, serde_json::Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    );
    let resp = client()
        .post(format!("{base}/v1/images"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

async fn metrics(sis: &Sis) -> String {
    get_text(&sis.url("/metrics")).await
}

/// Every name file below `data` holds content with the MD5 of its directory.
fn assert_only_whole_images(data: &Path) {
    for f in walk_files(data) {
        let rel = f.strip_prefix(data).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        if parts[0] == ".tmp" {
            continue;
        }
        assert_eq!(parts.len(), 4, "stray file {}", rel.display());
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(md5_hex(&bytes), parts[2], "partial file {}", rel.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_through_one_agent_read_through_the_other() {
    let c = cluster(&[]).await;
    let a = png(64, 48, 1);
    let b = jpeg(80, 60, 2);
    let (ma, mb) = (md5_hex(&a), md5_hex(&b));

    // Legacy /up through agent 1: same wire format as the server.
    let (status, body) = legacy_upload(
        &c.a1.url(""),
        &[("a.png", a.clone()), ("测试2.jpg", b.clone())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"Name": "a.png", "MD5": ma}, {"Name": "测试2.jpg", "MD5": mb}])
    );
    // A 200 from the agent means the server has it already.
    let (s, bytes) = get(&c
        .server
        .url(&format!("/full_down?md5={ma}&file_name=a.png")))
    .await;
    assert_eq!((s, bytes == a), (200, true));

    // Read through agent 2: originals (legacy and v1), resized (legacy and v1).
    let (s, bytes) = get(&c.a2.url(&format!("/simple_down?md5={ma}"))).await;
    assert_eq!((s, bytes == a), (200, true));
    let (s, bytes) = get(&c.a2.url(&format!(
        "/full_down?md5={mb}&file_name={}",
        url_encode("测试2.jpg")
    )))
    .await;
    assert_eq!((s, bytes == b), (200, true));
    let (s, bytes) = get(&c.a2.url(&format!(
        "/stretch_full_down?md5={mb}&file_name={}&w=30&h=10",
        url_encode("测试2.jpg")
    )))
    .await;
    assert_eq!(s, 200);
    assert_eq!(dimensions(&bytes), (30, 10));
    let (s, bytes) = get(&c.a2.url(&format!("/v1/images/{ma}/a.png?w=32"))).await;
    assert_eq!(s, 200);
    assert_eq!(dimensions(&bytes), (32, 24));
    let (s, meta) = get(&c.a2.url(&format!("/v1/images/{ma}/meta"))).await;
    assert_eq!(s, 200);
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    assert_eq!(meta["names"][0]["name"], "a.png");
    assert_eq!(meta["width"], 64);

    // v1 upload through agent 2, read through agent 1.
    let d = png(20, 20, 9);
    let (s, v) = v1_upload(&c.a2.url(""), "d.v1.png", &d).await;
    assert_eq!(s, 201, "{v}");
    let img = &v["images"][0];
    assert_eq!(img["md5"], md5_hex(&d));
    assert_eq!(
        (img["width"].clone(), img["format"].clone()),
        (20.into(), "png".into())
    );
    assert_eq!(img["url"], format!("/v1/images/{}/d.v1.png", md5_hex(&d)));
    let (s, bytes) = get(&c.a1.url(img["url"].as_str().unwrap())).await;
    assert_eq!((s, bytes == d), (200, true));

    // /derect_up through agent 1: verified MD5 (mismatch 400), then stored.
    let e = png(10, 10, 42);
    let form = |field: &str| {
        reqwest::multipart::Form::new().part(
            field.to_string(),
            reqwest::multipart::Part::bytes(e.clone()).file_name("e.png"),
        )
    };
    let r = client()
        .post(c.a1.url("/derect_up"))
        .multipart(form(&ma))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client()
        .post(c.a1.url("/derect_up"))
        .multipart(form(&md5_hex(&e)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "上传完成");
    let (s, _) = get(&c.a2.url(&format!("/simple_down?md5={}", md5_hex(&e)))).await;
    assert_eq!(s, 200);

    // The same image again: a no-op success. Not an image: 415. Missing: 404.
    let (s, _) = legacy_upload(&c.a2.url(""), &[("a.png", a.clone())]).await;
    assert_eq!(s, 200);
    let (s, v) = v1_upload(&c.a1.url(""), "x.txt", b"hello, not an image").await;
    assert_eq!(
        (s, v["code"].clone()),
        (415, "unsupported-media-type".into())
    );
    let (s, _) = get(&c.a1.url(&format!("/v1/images/{}", md5_hex(b"missing")))).await;
    assert_eq!(s, 404);

    // Resizing happened on the agents, not on the server; the agents count upstream calls.
    let server_m = metrics(&c.server).await;
    assert_eq!(
        metric_sum(&server_m, "sis_resize_duration_seconds_count"),
        0.0
    );
    assert!(metric_sum(&server_m, "sis_images_stored_total") >= 4.0);
    let a2m = metrics(&c.a2).await;
    assert!(metric_sum(&a2m, "sis_resize_duration_seconds_count") >= 2.0);
    assert!(a2m.contains("sis_build_info{mode=\"agent\""));
    assert!(
        metric_sum(&a2m, "sis_upstream_requests_total") >= 3.0,
        "{a2m}"
    );
    assert!(metric_sum(&a2m, "sis_upstream_request_duration_seconds_count") >= 3.0);
    assert_eq!(metric_sum(&a2m, "sis_storage_objects"), 0.0);
    // A repeated read is a cache hit on the agent, not another upstream call.
    let before = metric_sum(&a2m, "sis_upstream_requests_total{op=\"get\"");
    let (s, _) = get(&c.a2.url(&format!("/v1/images/{ma}/a.png?w=32"))).await;
    assert_eq!(s, 200);
    let after = metric_sum(
        &metrics(&c.a2).await,
        "sis_upstream_requests_total{op=\"get\"",
    );
    assert_eq!(before, after);
    // The internal API is the server's only.
    let (s, _) = get(&c.a1.url("/internal/v1/changes")).await;
    assert_eq!(s, 404);
    assert_only_whole_images(c.data.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_through_agent_1_stops_agent_2_within_the_window() {
    let c = cluster(&[]).await;
    let a = png(50, 50, 7);
    let m = md5_hex(&a);
    let (s, _) = legacy_upload(&c.a1.url(""), &[("gone.png", a.clone())]).await;
    assert_eq!(s, 200);
    // Agent 2 caches the original and a variant.
    let orig = c.a2.url(&format!("/full_down?md5={m}&file_name=gone.png"));
    let variant = c.a2.url(&format!("/v1/images/{m}?w=10"));
    assert_eq!(get(&orig).await.0, 200);
    assert_eq!(get(&variant).await.0, 200);
    let r = client()
        .delete(c.a1.url(&format!("/v1/images/{m}/gone.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let deleted = Instant::now();
    // Agent 1 and the server: gone at once.
    assert_eq!(
        get(&c.a1.url(&format!("/simple_down?md5={m}"))).await.0,
        404
    );
    assert_eq!(
        get(&c.server.url(&format!("/simple_down?md5={m}"))).await.0,
        404
    );
    // Agent 2: gone within the 2 s window (plus slack for a loaded machine; with
    // 200 ms polls it typically takes well under half a second).
    loop {
        let (so, _) = get(&orig).await;
        let (sv, _) = get(&variant).await;
        if so == 404 && sv == 404 {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_millis(3_500),
            "agent 2 still serves a deleted image after {:?} ({so}, {sv})",
            deleted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Deleting again: 404 through either agent.
    let r = client()
        .delete(c.a2.url(&format!("/v1/images/{m}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_then_back() {
    let mut c = cluster(&[]).await;
    let cached = png(40, 40, 3);
    let uncached = png(40, 40, 4);
    let (mc, mu) = (md5_hex(&cached), md5_hex(&uncached));
    assert_eq!(
        legacy_upload(&c.a1.url(""), &[("c.png", cached.clone())])
            .await
            .0,
        200
    );
    assert_eq!(
        legacy_upload(&c.a2.url(""), &[("u.png", uncached.clone())])
            .await
            .0,
        200
    );
    let cached_orig = c.a1.url(&format!("/full_down?md5={mc}&file_name=c.png"));
    let cached_variant = c.a1.url(&format!("/v1/images/{mc}?w=20"));
    assert_eq!(get(&cached_orig).await.0, 200);
    assert_eq!(get(&cached_variant).await.0, 200);

    c.server.crash();
    // Cached reads still answer (within the window).
    let (s, bytes) = get(&cached_orig).await;
    assert_eq!((s, bytes == cached), (200, true));
    assert_eq!(get(&cached_variant).await.0, 200);
    // Uncached reads fail fast with 502/503.
    let start = Instant::now();
    let (s, _) = get(&c.a1.url(&format!("/simple_down?md5={mu}"))).await;
    assert!(s == 502 || s == 503, "{s}");
    let (s, _) = get(&c.a1.url(&format!("/v1/images/{mu}?w=10"))).await;
    assert!(s == 502 || s == 503, "{s}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Uploads: 503 with a clear message on each surface; nothing stored.
    let fresh = png(30, 30, 5);
    let (s, body) = legacy_upload(&c.a1.url(""), &[("f.png", fresh.clone())]).await;
    assert_eq!(s, 503);
    assert!(body.contains("image server unavailable"), "{body}");
    let (s, v) = v1_upload(&c.a2.url(""), "f.png", &fresh).await;
    assert_eq!(s, 503);
    assert_eq!(v["code"], "upstream-unavailable");
    assert!(v["error"].as_str().unwrap().contains("unavailable"));
    // Readiness turns 503 after a few failed probes.
    c.a1.wait_for_status("/readyz", 503, Duration::from_secs(3))
        .await;
    c.a2.wait_for_status("/readyz", 503, Duration::from_secs(3))
        .await;

    c.server.restart().await;
    c.a1.wait_for_status("/readyz", 200, Duration::from_secs(5))
        .await;
    c.a2.wait_for_status("/readyz", 200, Duration::from_secs(5))
        .await;
    assert!(
        !walk_files(c.data.path())
            .iter()
            .any(|f| f.to_string_lossy().contains(&md5_hex(&fresh))),
        "a refused upload left something on the server"
    );
    assert_eq!(
        legacy_upload(&c.a1.url(""), &[("f.png", fresh)]).await.0,
        200
    );
    let (s, bytes) = get(&c.a1.url(&format!("/simple_down?md5={mu}"))).await;
    assert_eq!((s, bytes == uncached), (200, true));
    assert_eq!(get(&cached_variant).await.0, 200);
    assert_only_whole_images(c.data.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_feed_flushes_after_the_window() {
    let mut c = cluster(&[]).await;
    let a = png(30, 30, 11);
    let m = md5_hex(&a);
    assert_eq!(legacy_upload(&c.a1.url(""), &[("a.png", a)]).await.0, 200);
    let url = c.a1.url(&format!("/simple_down?md5={m}"));
    assert_eq!(get(&url).await.0, 200);
    c.server.crash();
    let crashed = Instant::now();
    assert_eq!(get(&url).await.0, 200);
    // After the 2 s window without the feed the agent cannot vouch for its cache.
    loop {
        let (s, _) = get(&url).await;
        if s == 502 || s == 503 {
            break;
        }
        assert_eq!(s, 200);
        assert!(
            crashed.elapsed() < Duration::from_secs(5),
            "cached bytes still served {:?} after the feed went away",
            crashed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        crashed.elapsed() > Duration::from_millis(1_500),
        "flushed too early"
    );
    assert!(
        c.a1.log().contains("flushed the agent cache"),
        "{}",
        c.a1.log()
    );
}

/// A fake upstream that accepts connections and never answers.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_gives_504() {
    let addr = silent_server().await;
    let mut agent = Sis::agent(
        &format!("http://{addr}"),
        &["--upstream-timeout", "1s", "--invalidation-window", "2s"],
    )
    .await;
    let m = md5_hex(b"whatever");
    for path in [
        format!("/simple_down?md5={m}"),
        format!("/v1/images/{m}?w=10"),
    ] {
        let start = Instant::now();
        let (s, _) = get(&agent.url(&path)).await;
        assert_eq!(s, 504, "{path}");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
    let start = Instant::now();
    let (s, v) = v1_upload(&agent.url(""), "a.png", &png(10, 10, 1)).await;
    assert_eq!((s, v["code"].clone()), (504, "upstream-timeout".into()));
    let (s, _) = legacy_upload(&agent.url(""), &[("a.png", png(10, 10, 1))]).await;
    assert_eq!(s, 504);
    assert!(start.elapsed() < Duration::from_secs(5));
    // Its feed polls time out too: not ready, but alive.
    agent
        .wait_for_status("/readyz", 503, Duration::from_secs(5))
        .await;
    assert_eq!(get(&agent.url("/healthz")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restarted_mid_stream() {
    let mut c = cluster(&[]).await;
    // A few big originals so calls are in flight when the server dies.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let base = if i % 2 == 0 {
            c.a1.url("")
        } else {
            c.a2.url("")
        };
        let reader = if i % 2 == 0 {
            c.a2.url("")
        } else {
            c.a1.url("")
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut stored: Vec<(String, String)> = Vec::new();
            let mut statuses = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                // New content (a new MD5) each round.
                let bytes = noise_png(500, 500, i * 10_000 + n);
                let name = format!("r{i}-{n}.png");
                let (s, _) = legacy_upload(&base, &[(&name, bytes.clone())]).await;
                statuses.push(s);
                if s == 200 {
                    stored.push((md5_hex(&bytes), name.clone()));
                }
                let (s, _) = get(&format!("{reader}/v1/images/{}?w=50", md5_hex(&bytes))).await;
                statuses.push(s);
            }
            (stored, statuses)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.server.crash();
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.server.restart().await;
    c.a1.wait_for_status("/readyz", 200, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut stored = Vec::new();
    let mut failures = 0;
    for t in tasks {
        let (s, statuses) = t.await.unwrap();
        stored.extend(s);
        for st in statuses {
            // Success, a miss for an upload that failed, or a clean gateway error.
            assert!(
                matches!(st, 200 | 404 | 502 | 503 | 504),
                "unexpected status {st}"
            );
            failures += usize::from(st >= 500);
        }
    }
    assert!(failures > 0, "the crash should have failed something");
    // Everything the agents confirmed is on the server, whole.
    for (m, name) in &stored {
        let (s, _) = get(&c
            .server
            .url(&format!("/full_down?md5={m}&file_name={name}")))
        .await;
        assert_eq!(s, 200, "{name} was confirmed but is missing");
    }
    assert_only_whole_images(c.data.path());
    // And later requests succeed.
    let z = png(12, 12, 77);
    assert_eq!(
        legacy_upload(&c.a2.url(""), &[("z.png", z.clone())])
            .await
            .0,
        200
    );
    let (s, b) = get(&c.a1.url(&format!("/simple_down?md5={}", md5_hex(&z)))).await;
    assert_eq!((s, b == z), (200, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_forwarded_to_the_server() {
    let c = cluster(&[]).await;
    let a = png(16, 16, 21);
    let m = md5_hex(&a);
    let form = reqwest::multipart::Form::new()
        .part("f", reqwest::multipart::Part::bytes(a).file_name("rid.png"));
    let r = client()
        .post(c.a1.url("/up"))
        .header("x-request-id", "e2e-upload-rid-31337")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-request-id"], "e2e-upload-rid-31337");
    let r = client()
        .get(c.a2.url(&format!("/simple_down?md5={m}")))
        .header("x-request-id", "e2e-read-rid-4242")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let log = c.server.log();
    assert!(log.contains("e2e-upload-rid-31337"), "{log}");
    assert!(log.contains("e2e-read-rid-4242"), "{log}");
    // The agent logs its upstream calls as child spans of the request.
    let agent_log = c.a2.log();
    assert!(agent_log.contains("e2e-read-rid-4242"), "{agent_log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_flags_and_api_token() {
    let data = tempfile::tempdir().unwrap();
    let server = Sis::server(data.path(), &["--api-token", "s3cret"]).await;
    // The Go binary's flags: -localStore=false -image=http://host:port.
    let mut agent = Sis::start(vec![
        "-localStore=false".into(),
        format!("-image={}", server.url("")),
        "--api-token".into(),
        "s3cret".into(),
    ])
    .await;
    agent
        .wait_for_status("/readyz", 200, Duration::from_secs(5))
        .await;
    assert!(
        metrics(&agent)
            .await
            .contains("sis_build_info{mode=\"agent\"")
    );
    let a = png(20, 20, 8);
    // Without the token: 401 from the agent itself.
    assert_eq!(
        legacy_upload(&agent.url(""), &[("a.png", a.clone())])
            .await
            .0,
        401
    );
    let form = reqwest::multipart::Form::new().part(
        "f",
        reqwest::multipart::Part::bytes(a.clone()).file_name("a.png"),
    );
    let r = client()
        .post(agent.url("/up"))
        .bearer_auth("s3cret")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (s, b) = get(&agent.url(&format!("/simple_down?md5={}", md5_hex(&a)))).await;
    assert_eq!((s, b == a), (200, true));
    // The server's internal API needs the token too.
    let (s, _) = get(&server.url("/internal/v1/changes")).await;
    assert_eq!(s, 401);
    let r = client()
        .put(server.url(&format!("/internal/v1/objects/{}/b.png", md5_hex(b"x"))))
        .bearer_auth("s3cret")
        .body(a.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "MD5 verified by the server");
    // An agent with the wrong token is not ready and cannot store.
    let mut wrong = Sis::agent(&server.url(""), &["--upstream-token", "nope"]).await;
    wrong
        .wait_for_status("/readyz", 503, Duration::from_secs(5))
        .await;
    let (s, _) = legacy_upload(&wrong.url(""), &[("w.png", png(8, 8, 1))]).await;
    assert_eq!(s, 502);
}
