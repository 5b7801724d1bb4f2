//! Hardening, faults (issue 7): `kill -9` during concurrent uploads, a full disk, a
//! read-only data dir, and the memory cache staying within `--cache-size` under load.
//! The disk tests mount a small tmpfs (they need root) and unmount it in a drop guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sis_e2e::{
    Sis, Tmpfs, client, get_text, legacy_upload, md5_hex, metric_sum, metric_values, noise_png,
    url_encode, walk_files,
};

/// Every file below `data` outside `.tmp` is a name file whose content has the MD5 of its
/// directory: no partial or temp file is visible.
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
        assert!(parts[3].starts_with("n_"), "stray file {}", rel.display());
        let bytes = std::fs::read(&f).unwrap();
        assert_eq!(md5_hex(&bytes), parts[2], "partial file {}", rel.display());
    }
}

fn tmp_files(data: &Path) -> Vec<std::path::PathBuf> {
    walk_files(&data.join(".tmp"))
}

async fn download(sis: &Sis, md5: &str, name: &str) -> (u16, Vec<u8>) {
    let resp = client()
        .get(sis.url(&format!(
            "/full_down?md5={md5}&file_name={}",
            url_encode(name)
        )))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.bytes().await.unwrap_or_default().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_50_uploads_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut sis = Sis::server(&data, &[]).await;
    let base = sis.url("");
    let images: Vec<(String, Vec<u8>)> = (0..50)
        .map(|i| (format!("crash{i}.png"), noise_png(160, 160, 1000 + i)))
        .collect();
    let first_done = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for (name, bytes) in images.clone() {
        let base = base.clone();
        let first_done = first_done.clone();
        tasks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(
                Duration::from_secs(20),
                legacy_upload_quiet(&base, &name, bytes),
            )
            .await
            .ok()
            .flatten();
            if r == Some(200) {
                first_done.notify_one();
            }
            r
        }));
    }
    // Crash as soon as some uploads are acknowledged and others are still in flight.
    let _ = tokio::time::timeout(Duration::from_secs(10), first_done.notified()).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = sis.crash();
    assert!(!status.success());
    let mut acked = Vec::new();
    for (task, (name, bytes)) in tasks.into_iter().zip(&images) {
        if task.await.unwrap() == Some(200) {
            acked.push((name.clone(), bytes.clone()));
        }
    }
    eprintln!(
        "kill -9: {} of 50 uploads acknowledged before the crash",
        acked.len()
    );
    assert!(!acked.is_empty(), "no upload finished before the crash");
    // What a crash can leave behind: temp files. Plant one more to be sure.
    std::fs::write(data.join(".tmp").join("leftover-from-crash"), b"partial").unwrap();
    sis.restart().await;
    assert!(
        tmp_files(&data).is_empty(),
        "temp files left: {:?}",
        tmp_files(&data)
    );
    assert_only_whole_images(&data);
    for (name, bytes) in &acked {
        let md5 = md5_hex(bytes);
        let (status, body) = download(&sis, &md5, name).await;
        assert_eq!(
            status, 200,
            "{name} acknowledged but missing after the crash"
        );
        assert_eq!(md5_hex(&body), md5, "{name} corrupted");
    }
    // Uploads work again, including the ones that were cut off.
    for (name, bytes) in images.iter().take(5) {
        let (status, text) = legacy_upload(&base, &[(name.as_str(), bytes.clone())]).await;
        assert_eq!(status, 200, "{text}");
    }
    assert!(sis.terminate().success());
}

/// `legacy_upload` without panicking on a dropped connection.
async fn legacy_upload_quiet(base: &str, name: &str, bytes: Vec<u8>) -> Option<u16> {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
    let form = reqwest::multipart::Form::new().part("file", part);
    let resp = client()
        .post(format!("{base}/up"))
        .multipart(form)
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    // A 200 counts only once its body arrived (the store is done before the head is sent).
    resp.bytes().await.ok()?;
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_answers_507_reads_keep_working_and_space_comes_back() {
    let fs = Tmpfs::mount("4m");
    let data = fs.path().join("data");
    let sis = Sis::server(&data, &[]).await;
    let base = sis.url("");
    // ~300 KB incompressible images until the disk is full.
    let mut stored = Vec::new();
    let mut full = None;
    for i in 0..40 {
        let bytes = noise_png(320, 320, 5000 + i);
        let name = format!("fill{i}.png");
        let (status, text) = legacy_upload(&base, &[(name.as_str(), bytes.clone())]).await;
        if status == 200 {
            stored.push((name, bytes));
        } else {
            full = Some((status, text, bytes));
            break;
        }
    }
    let (status, text, rejected) = full.expect("the 4 MiB disk never filled up");
    assert_eq!(status, 507, "legacy: {text}");
    assert!(
        text.to_lowercase().contains("storage") || text.to_lowercase().contains("space"),
        "unclear message: {text}"
    );
    assert!(
        stored.len() >= 5,
        "only {} images fit in 4 MiB",
        stored.len()
    );
    // /v1 says the same in JSON.
    let resp = client()
        .post(sis.url("/v1/images?name=more.png"))
        .body(rejected.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 507);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "insufficient-storage", "{v}");
    // No temp file is left behind by the failed writes, nothing partial is visible.
    assert!(tmp_files(&data).is_empty(), "{:?}", tmp_files(&data));
    assert_only_whole_images(&data);
    // Reads keep working.
    for (name, bytes) in &stored {
        let (status, body) = download(&sis, &md5_hex(bytes), name).await;
        assert_eq!(status, 200);
        assert_eq!(md5_hex(&body), md5_hex(bytes));
    }
    let r = client().get(sis.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a full disk is not a read outage");
    // Free space through the API; the rejected upload now succeeds.
    for (_, bytes) in stored.iter().take(3) {
        let r = client()
            .delete(sis.url(&format!("/v1/images/{}", md5_hex(bytes))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let (status, text) = legacy_upload(&base, &[("again.png", rejected.clone())]).await;
    assert_eq!(status, 200, "{text}");
    let (status, body) = download(&sis, &md5_hex(&rejected), "again.png").await;
    assert_eq!((status, md5_hex(&body)), (200, md5_hex(&rejected)));
    drop(sis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_data_dir_turns_readyz_503_and_uploads_fail_cleanly() {
    let fs = Tmpfs::mount("16m");
    let data = fs.path().join("data");
    let mut sis = Sis::server(&data, &[]).await;
    let base = sis.url("");
    let kept = noise_png(64, 64, 77);
    let (status, _) = legacy_upload(&base, &[("kept.png", kept.clone())]).await;
    assert_eq!(status, 200);
    sis.wait_for_status("/readyz", 200, Duration::from_secs(2))
        .await;

    fs.remount(true);
    // Make sure we really are read-only (root ignores permissions, not a ro mount).
    assert!(std::fs::write(data.join("probe"), b"x").is_err());
    sis.wait_for_status("/readyz", 503, Duration::from_secs(5))
        .await;
    let fresh = noise_png(64, 64, 78);
    let start = Instant::now();
    let (status, text) = legacy_upload(&base, &[("fresh.png", fresh.clone())]).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        status >= 500 && !text.is_empty(),
        "legacy upload on ro disk: {status} {text}"
    );
    assert!(
        !text.contains(data.to_str().unwrap()),
        "path leaked: {text}"
    );
    let resp = client()
        .post(sis.url("/v1/images?name=fresh.png"))
        .body(fresh.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_server_error(), "{}", resp.status());
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["error"].is_string() && v["code"].is_string(), "{v}");
    // Reads and liveness are unaffected.
    let (status, body) = download(&sis, &md5_hex(&kept), "kept.png").await;
    assert_eq!((status, md5_hex(&body)), (200, md5_hex(&kept)));
    let r = client().get(sis.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Writable again: ready again, uploads work.
    fs.remount(false);
    sis.wait_for_status("/readyz", 200, Duration::from_secs(5))
        .await;
    let (status, text) = legacy_upload(&base, &[("fresh.png", fresh)]).await;
    assert_eq!(status, 200, "{text}");
    assert_only_whole_images(&data);
    assert!(sis.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_bytes_never_exceed_cache_size_under_load() {
    const LIMIT: f64 = (10 << 20) as f64;
    let dir = tempfile::tempdir().unwrap();
    let sis = Sis::server(&dir.path().join("data"), &["--cache-size", "10MiB"]).await;
    let base = sis.url("");
    // 64 distinct ~190 KB images: 12 MB of originals, plus their variants.
    let start = Instant::now();
    let mut md5s = Vec::new();
    for i in 0..64u64 {
        let bytes = noise_png(250, 250, 9000 + i);
        md5s.push(md5_hex(&bytes));
        let (status, _) = legacy_upload(&base, &[(&format!("c{i}.png"), bytes)]).await;
        assert_eq!(status, 200);
    }
    eprintln!("cache: uploads took {:?}", start.elapsed());
    let metrics_url = sis.url("/metrics");
    let text = get_text(&metrics_url).await;
    let capacity = metric_values(&text, "sis_cache_capacity_bytes");
    assert!(
        !capacity.is_empty() && capacity.iter().all(|c| *c == LIMIT),
        "{capacity:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut max, mut samples) = (0f64, 0);
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = client().get(&metrics_url).send().await
                    && let Ok(t) = r.text().await
                {
                    max = max.max(metric_sum(&t, "sis_cache_bytes"));
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (max, samples)
        })
    };
    let md5s = Arc::new(md5s);
    let mut workers = Vec::new();
    for w in 0..8usize {
        let md5s = md5s.clone();
        let base = base.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            for round in 0..2usize {
                for k in 0..md5s.len() {
                    let md5 = &md5s[(k * 7 + w * 5 + round) % md5s.len()];
                    // Mostly originals (cheap), some variants (resized by a debug build).
                    let url = match (k + w) % 8 {
                        0 => format!("{base}/stretch_simple_down?md5={md5}&w={}&h=60", 50 + w),
                        1 => format!("{base}/v1/images/{md5}?w={}", 60 + round),
                        _ => format!("{base}/simple_down?md5={md5}"),
                    };
                    let r = c.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200, "{url}");
                    r.bytes().await.unwrap();
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (max, samples) = sampler.await.unwrap();
    let text = get_text(&sis.url("/metrics")).await;
    let last = metric_sum(&text, "sis_cache_bytes");
    eprintln!("cache: load took {:?}", start.elapsed());
    eprintln!("cache: max {max} bytes over {samples} samples, last {last}, limit {LIMIT}");
    assert!(samples >= 5, "too few samples");
    assert!(
        max.max(last) <= LIMIT,
        "cache grew to {} bytes",
        max.max(last)
    );
    assert!(
        last > LIMIT / 2.0,
        "the cache was barely used ({last} bytes)"
    );
}
