//! S3 storage end to end (issue 12) against a real Ceph cluster (mon + memstore OSD +
//! RADOS Gateway, started by tests/s3/run.sh): several `sis server` processes over one
//! bucket with agents in front, a crash in the middle of uploads, the gateway going
//! away and coming back, and `sis migrate` from disk into the bucket and back.
//!
//! Needs `SIS_TEST_S3_ENDPOINT`, `SIS_TEST_S3_BUCKET`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and, for the gateway restart, `SIS_TEST_CEPH_DIR`, all set
//! by tests/s3/run.sh; the plain `cargo test` stage skips them with a message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sis_e2e::{
    Sis, bin, client, dimensions, get_text, legacy_upload, md5_hex, noise_png, png, walk_files,
};

/// The gateway and bucket under test, or `None` (skip) outside CI.
struct Ceph {
    endpoint: String,
    bucket: String,
    dir: Option<String>,
}

fn ceph() -> Option<Ceph> {
    let endpoint = std::env::var("SIS_TEST_S3_ENDPOINT").ok();
    let bucket = std::env::var("SIS_TEST_S3_BUCKET").ok();
    match (endpoint, bucket) {
        (Some(endpoint), Some(bucket)) => Some(Ceph {
            endpoint,
            bucket,
            dir: std::env::var("SIS_TEST_CEPH_DIR").ok(),
        }),
        // The plain `cargo test` stage: these run in the s3 stage (tests/s3/run.sh),
        // which starts Ceph and fails loudly when it cannot.
        _ => {
            eprintln!("skipped here: runs in the s3 stage (tests/s3/run.sh starts Ceph)");
            None
        }
    }
}

impl Ceph {
    /// A fresh `s3://bucket/prefix` per test, so tests never see each other's images.
    fn fresh_url(&self, test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("s3://{}/{test}-{nanos}", self.bucket)
    }

    fn s3_flags(&self, url: &str) -> Vec<String> {
        vec![
            "--storage".into(),
            url.into(),
            "--s3-endpoint".into(),
            self.endpoint.clone(),
            "--s3-path-style".into(),
        ]
    }

    async fn server(&self, url: &str, extra: &[&str]) -> Sis {
        let mut args = vec!["server".to_string()];
        args.extend(self.s3_flags(url));
        args.extend(extra.iter().map(|s| s.to_string()));
        Sis::start(args).await
    }
}

/// Agent flags: the default 10 s invalidation window, polled every second.
const AGENT: &[&str] = &["--invalidation-window", "10s", "--poll-interval", "1s"];

async fn get(url: &str) -> (u16, Vec<u8>) {
    let resp = client().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap_or_default().to_vec())
}

async fn v1_upload(base: &str, name: &str, bytes: &[u8]) -> (u16, String) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string()),
    );
    match client()
        .post(format!("{base}/v1/images"))
        .multipart(form)
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `url` until it answers `status`; returns how long that took.
async fn until_status(url: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if get(url).await.0 == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{url} did not answer {status} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_two_agents_over_one_bucket() {
    let Some(ceph) = ceph() else { return };
    let url = ceph.fresh_url("replicas");
    let s1 = ceph.server(&url, &[]).await;
    let s2 = ceph.server(&url, &[]).await;
    let a1 = Sis::agent(&s1.url(""), AGENT).await;
    let a2 = Sis::agent(&s2.url(""), AGENT).await;

    // Written through one server, readable through the other at once, and resized
    // through an agent of the other.
    let img = png(90, 60, 7);
    let md5 = md5_hex(&img);
    let (status, body) = legacy_upload(&s1.url(""), &[("first.png", img.clone())]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&md5), "{body}");
    let (s, bytes) = get(&s2.url(&format!("/v1/images/{md5}"))).await;
    assert_eq!((s, md5_hex(&bytes)), (200, md5.clone()));
    let (s, bytes) = get(&a2.url(&format!("/v1/images/{md5}?w=30"))).await;
    assert_eq!(s, 200);
    assert_eq!(dimensions(&bytes), (30, 20));

    // 20 concurrent uploads through both servers: every acknowledged image intact
    // through the other one.
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let base = if i % 2 == 0 { s1.url("") } else { s2.url("") };
        let other = if i % 2 == 0 { s2.url("") } else { s1.url("") };
        tasks.push(tokio::spawn(async move {
            let img = noise_png(64, 48, 1000 + i);
            let (status, body) = v1_upload(&base, &format!("c{i}.png"), &img).await;
            (status, body, img, other)
        }));
    }
    for t in tasks {
        let (status, body, img, other) = t.await.unwrap();
        assert_eq!(status, 201, "{body}");
        let md5 = md5_hex(&img);
        let (s, bytes) = get(&format!("{other}/v1/images/{md5}")).await;
        assert_eq!(s, 200);
        assert_eq!(
            md5_hex(&bytes),
            md5,
            "byte-identical through the other server"
        );
    }

    // Listing pages through the bucket the same way from a server and through an agent.
    for node in [&s2, &a1] {
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = node.url("/v1/images?limit=6");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let (s, body) = get(&url).await;
            assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
            let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
            for e in page["images"].as_array().unwrap() {
                assert!(e["size"].as_u64().unwrap() > 0, "{e}");
                assert_eq!(e["format"], "png", "{e}");
                listed.push(e["name"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        listed.sort();
        let mut want: Vec<String> = (0..20).map(|i| format!("c{i}.png")).collect();
        want.push("first.png".into());
        want.sort();
        assert_eq!(listed, want);
    }

    // Warm every cache, then delete through server 1: unserved by both servers and both
    // agents within the agents' 10 s window.
    let path = format!("/v1/images/{md5}");
    for node in [&s1, &s2, &a1, &a2] {
        assert_eq!(get(&node.url(&path)).await.0, 200);
        assert_eq!(get(&node.url(&format!("{path}?w=20"))).await.0, 200);
    }
    let resp = client().delete(s1.url(&path)).send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let start = Instant::now();
    for node in [&s1, &s2, &a1, &a2] {
        for p in [path.clone(), format!("{path}?w=20")] {
            let left = Duration::from_secs(10).saturating_sub(start.elapsed());
            until_status(&node.url(&p), 404, left.max(Duration::from_millis(1))).await;
        }
    }
    eprintln!("delete unserved everywhere after {:?}", start.elapsed());
}

/// The ETag the gateway reports for `key` in the bucket (a signed HEAD with curl).
fn gateway_etag(ceph: &Ceph, key: &str) -> String {
    let auth = format!(
        "{}:{}",
        std::env::var("AWS_ACCESS_KEY_ID").unwrap(),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap()
    );
    let out = Command::new("curl")
        .args(["-s", "-I", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &auth])
        .args([
            "-H",
            "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ])
        .arg(format!("{}/{}/{key}", ceph.endpoint, ceph.bucket))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("etag:"))
        .unwrap_or_else(|| panic!("no ETag for {key}: {head}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_uploads_go_as_multipart_uploads() {
    let Some(ceph) = ceph() else { return };
    let url = ceph.fresh_url("multipart");
    let s1 = ceph
        .server(&url, &["--s3-multipart-threshold", "5MiB"])
        .await;
    let s2 = ceph.server(&url, &[]).await;
    // Noise does not compress: ~9.7 MB, two parts of the 8 MiB part size.
    let big = noise_png(1800, 1800, 77);
    assert!(big.len() > 8 << 20, "{}", big.len());
    let (status, body) = v1_upload(&s1.url(""), "big.png", &big).await;
    assert_eq!(status, 201, "{body}");
    let md5 = md5_hex(&big);
    let (s, got) = get(&s2.url(&format!("/v1/images/{md5}/big.png"))).await;
    assert_eq!((s, md5_hex(&got)), (200, md5.clone()));
    let prefix = url.trim_start_matches(&format!("s3://{}/", ceph.bucket));
    let etag = gateway_etag(&ceph, &format!("{prefix}/blobs/{md5}"));
    assert!(
        etag.ends_with("-2\""),
        "not a 2-part multipart object: {etag}"
    );
    // A small one is a single PUT.
    let small = png(20, 20, 1);
    assert_eq!(v1_upload(&s1.url(""), "small.png", &small).await.0, 201);
    let etag = gateway_etag(&ceph, &format!("{prefix}/blobs/{}", md5_hex(&small)));
    assert!(!etag.contains('-'), "{etag}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_in_the_middle_of_50_uploads() {
    let Some(ceph) = ceph() else { return };
    let url = ceph.fresh_url("crash");
    let mut s1 = ceph.server(&url, &[]).await;
    let s2 = ceph.server(&url, &[]).await;
    let base = s1.url("");
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            // Staggered so some are acknowledged before the crash and some are not.
            tokio::time::sleep(Duration::from_millis(20 * i)).await;
            let img = noise_png(200, 150, 5000 + i);
            let (status, _) = v1_upload(&base, &format!("k{i}.png"), &img).await;
            (status, img)
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    s1.crash();
    let mut acked = 0;
    for t in tasks {
        let (status, img) = t.await.unwrap();
        let md5 = md5_hex(&img);
        let (s, bytes) = get(&s2.url(&format!("/v1/images/{md5}"))).await;
        if status == 201 {
            acked += 1;
            assert_eq!(s, 200, "acknowledged upload {md5} lost");
        }
        // Never half-visible: either absent or whole.
        if s == 200 {
            assert_eq!(md5_hex(&bytes), md5, "partial image visible");
        } else {
            assert_eq!(s, 404);
        }
    }
    eprintln!("{acked} of 50 uploads acknowledged before the crash");
    assert!(
        acked > 0,
        "the crash came before any upload was acknowledged"
    );
    assert!(acked < 50, "the crash came after every upload finished");
}

/// Stops the gateway (the OSD keeps the data) and returns how to start it again.
fn stop_gateway(dir: &str) {
    let pid_file = format!("{dir}/run/client.rgw.a.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let pid = pid.trim().to_string();
    Command::new("kill").arg(&pid).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "radosgw did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_gateway(dir: &str) {
    let status = Command::new("radosgw")
        .args(["-c", &format!("{dir}/ceph.conf"), "-n", "client.rgw.a"])
        .status()
        .unwrap();
    assert!(status.success());
}

fn gateway_pid(dir: &str) -> String {
    std::fs::read_to_string(format!("{dir}/run/client.rgw.a.pid"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_down_slow_and_back() {
    let Some(ceph) = ceph() else { return };
    let dir = ceph
        .dir
        .clone()
        .expect("SIS_TEST_CEPH_DIR (set by tests/s3/run.sh) to stop and start the gateway");
    let url = ceph.fresh_url("faults");
    let mut server = ceph.server(&url, &["--s3-timeout", "2s"]).await;
    server
        .wait_for_status("/readyz", 200, Duration::from_secs(10))
        .await;
    let img = png(40, 30, 3);
    let md5 = md5_hex(&img);
    assert_eq!(v1_upload(&server.url(""), "kept.png", &img).await.0, 201);
    let path = format!("/v1/images/{md5}");
    assert_eq!(get(&server.url(&path)).await.0, 200, "now cached");

    // Slow: the gateway frozen. Calls end at the timeout with 503/504, never hang.
    let pid = gateway_pid(&dir);
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let start = Instant::now();
    let (status, body) = v1_upload(&server.url(""), "slow.png", &png(41, 30, 4)).await;
    let took = start.elapsed();
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(matches!(status, 503 | 504), "{status} {body}");
    assert!(
        took < Duration::from_secs(15),
        "slow store held an upload {took:?}"
    );
    eprintln!("frozen gateway: upload answered {status} after {took:?}");

    // Down: uploads 503 with a clear message, /readyz 503, cached reads still answer.
    stop_gateway(&dir);
    let (status, body) = v1_upload(&server.url(""), "down.png", &png(42, 30, 5)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage"), "{body}");
    server
        .wait_for_status("/readyz", 503, Duration::from_secs(15))
        .await;
    let (s, bytes) = get(&server.url(&path)).await;
    assert_eq!((s, md5_hex(&bytes)), (200, md5.clone()));

    // Back: ready again and storing, without a restart.
    start_gateway(&dir);
    server
        .wait_for_status("/readyz", 200, Duration::from_secs(60))
        .await;
    assert_eq!(
        v1_upload(&server.url(""), "back.png", &png(43, 30, 6))
            .await
            .0,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_credentials_are_reported() {
    let Some(ceph) = ceph() else { return };
    let url = ceph.fresh_url("creds");
    let mut args = vec!["server".to_string()];
    args.extend(ceph.s3_flags(&url));
    let mut server = Sis::start_with_env(
        args,
        &[
            ("AWS_ACCESS_KEY_ID", "wrong"),
            ("AWS_SECRET_ACCESS_KEY", "wrong-secret"),
        ],
    )
    .await;
    server
        .wait_for_status("/readyz", 503, Duration::from_secs(10))
        .await;
    let body = get_text(&server.url("/readyz")).await;
    assert!(body.contains("credentials"), "{body}");
    assert!(
        server.log().contains("object store check failed"),
        "{}",
        server.log()
    );
}

fn migrate(ceph: &Ceph, from: &str, to: &str) -> String {
    let out = Command::new(bin("sis"))
        .args(["migrate", "--from", from, "--to", to])
        .args(["--s3-endpoint", &ceph.endpoint, "--s3-path-style"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Relative path → bytes of every stored file (temp files aside).
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    walk_files(dir)
        .into_iter()
        .filter(|p| !p.strip_prefix(dir).unwrap().starts_with(".tmp"))
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_disk_to_bucket_and_back() {
    let Some(ceph) = ceph() else { return };
    let data = tempfile::tempdir().unwrap();
    let mut disk = Sis::server(data.path(), &[]).await;
    let mut files = Vec::new();
    for i in 0..12u64 {
        let img = noise_png(50, 40, 9000 + i);
        files.push((format!("m{i}.png"), img.clone()));
        if i % 4 == 0 {
            files.push((format!("alias{i}.png"), img));
        }
    }
    for (name, bytes) in &files {
        assert_eq!(v1_upload(&disk.url(""), name, bytes).await.0, 201);
    }
    disk.terminate();

    let url = ceph.fresh_url("migrate");
    let first = migrate(&ceph, &data.path().display().to_string(), &url);
    assert!(
        first.contains(&format!("copied {} skipped 0", files.len())),
        "{first}"
    );
    let second = migrate(&ceph, &data.path().display().to_string(), &url);
    assert!(
        second.contains(&format!("copied 0 skipped {}", files.len())),
        "{second}"
    );

    // Served from the bucket.
    let server = ceph.server(&url, &[]).await;
    for (name, bytes) in &files {
        let md5 = md5_hex(bytes);
        let (s, got) = get(&server.url(&format!("/v1/images/{md5}/{name}"))).await;
        assert_eq!((s, md5_hex(&got)), (200, md5));
    }

    // And back: the same files, byte for byte, names shared as hard links again.
    let back = tempfile::tempdir().unwrap();
    let out = migrate(&ceph, &url, &back.path().display().to_string());
    assert!(out.contains(&format!("copied {}", files.len())), "{out}");
    assert_eq!(tree(data.path()), tree(back.path()));
}
