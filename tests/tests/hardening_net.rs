//! Hardening, slow and greedy clients (issue 7): slowloris headers and trickled bodies are
//! cut off by timeouts, concurrent connections are capped, oversized headers get 431.
//! Each test starts its own `sis server` with small limits so it runs in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sis_e2e::{Sis, client, raw_request, raw_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server(extra: &[&str]) -> (tempfile::TempDir, Sis) {
    let dir = tempfile::tempdir().unwrap();
    let sis = Sis::server(&dir.path().join("data"), extra).await;
    (dir, sis)
}

/// Writes `prefix` at once, then `trickle` one byte every `every`, while reading. Returns
/// when the server answers or closes (with what it sent and when), or after `give_up`.
async fn trickle(
    addr: std::net::SocketAddr,
    prefix: &[u8],
    trickle: &[u8],
    every: Duration,
    give_up: Duration,
) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    });
    wr.write_all(prefix).await.unwrap();
    for b in trickle.iter().cycle() {
        if reader.is_finished() || start.elapsed() > give_up {
            break;
        }
        if wr.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .map(|r| r.unwrap())
        .unwrap_or_default();
    (out, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_are_cut_off() {
    let (_d, sis) = server(&["--header-read-timeout", "2s"]).await;
    let (out, took) = trickle(
        sis.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        Duration::from_millis(200),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        took < Duration::from_secs(8),
        "connection held for {took:?}"
    );
    // Either a 408 or a plain close; never a served request.
    assert!(
        matches!(raw_status(&out), None | Some(408)),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // An idle connection that never sends a byte is closed too.
    let start = Instant::now();
    let resp = raw_request(sis.addr, b"", Duration::from_secs(20)).await;
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "idle connection held"
    );
    assert!(matches!(raw_status(&resp), None | Some(408)));
    // Normal requests are unaffected.
    let r = client().get(sis.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_bodies_are_cut_off() {
    let (_d, sis) = server(&["--body-read-timeout", "3s"]).await;
    for (path, ct) in [
        ("/up", "multipart/form-data; boundary=X"),
        ("/v1/images?name=a.png", "image/png"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: 100000\r\n\r\n"
        );
        let (out, took) = trickle(
            sis.addr,
            head.as_bytes(),
            b"--X\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.png\"\r\n\r\n",
            Duration::from_millis(100),
            Duration::from_secs(20),
        )
        .await;
        assert!(
            took < Duration::from_secs(9),
            "{path}: body trickled for {took:?}"
        );
        assert!(
            matches!(raw_status(&out), None | Some(408)),
            "{path}: {}",
            String::from_utf8_lossy(&out)
        );
    }
    let r = client().get(sis.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_are_capped() {
    let (_d, sis) = server(&["--max-connections", "8", "--header-read-timeout", "30s"]).await;
    // Eight connections that started a request and went quiet.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(sis.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The ninth is turned away at once (503 or a close), not queued forever.
    let start = Instant::now();
    let resp = raw_request(
        sis.addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(start.elapsed() < Duration::from_secs(4));
    assert!(
        matches!(raw_status(&resp), None | Some(503)),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    // Slots come back when connections close.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = raw_request(
            sis.addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if raw_status(&resp) == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let (_d, sis) = server(&[]).await;
    let big = "a".repeat(100 * 1024);
    for head in [
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n",
            (0..2000)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        ),
    ] {
        let resp = raw_request(sis.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&resp),
            Some(431),
            "{}",
            String::from_utf8_lossy(&resp)
        );
    }
    // A smaller limit is configurable; ordinary requests stay fine.
    let (_d2, small) = server(&["--max-header-size", "16KiB"]).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20 * 1024)
    );
    let resp = raw_request(small.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&resp), Some(431));
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ok: {}\r\nConnection: close\r\n\r\n",
        "c".repeat(4 * 1024)
    );
    let resp = raw_request(small.addr, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(raw_status(&resp), Some(200));
}

/// The limits are documented in --help, each with its env var.
#[test]
fn limits_are_documented_in_help() {
    let out = std::process::Command::new(sis_e2e::bin("sis"))
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--header-read-timeout", "SIS_HEADER_READ_TIMEOUT"),
        ("--body-read-timeout", "SIS_BODY_READ_TIMEOUT"),
        ("--max-connections", "SIS_MAX_CONNECTIONS"),
        (
            "--max-connections-per-client",
            "SIS_MAX_CONNECTIONS_PER_CLIENT",
        ),
        ("--min-body-rate", "SIS_MIN_BODY_RATE"),
        ("--body-rate-grace", "SIS_BODY_RATE_GRACE"),
        ("--variants", "SIS_VARIANTS"),
        ("--sign-key", "SIS_SIGN_KEYS"),
        ("--preset", "SIS_PRESETS"),
        ("--max-header-size", "SIS_MAX_HEADER_SIZE"),
        ("--max-upload-parts", "SIS_MAX_UPLOAD_PARTS"),
        ("--max-side", "SIS_MAX_SIDE"),
        ("--max-output-pixels", "SIS_MAX_OUTPUT_PIXELS"),
        ("--max-input-pixels", "SIS_MAX_INPUT_PIXELS"),
        ("--resize-queue", "SIS_RESIZE_QUEUE"),
        ("--cache-size", "SIS_CACHE_SIZE"),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} / {env} missing:\n{help}"
        );
    }
}
