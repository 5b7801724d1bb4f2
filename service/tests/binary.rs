//! End-to-end tests against the real `sis` binary on an ephemeral port, with real
//! HTTP clients (curl, reqwest, raw TCP): the raw-UTF-8 request line, the 60 MB
//! early 413, CORS, conditional requests, auth, metrics, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use common::{P, Server, dims, md5_hex, multipart, parse_raw, png, raw_request};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs curl with `-w` status appended after a newline; returns (body, status).
fn curl_status(args: &[&str]) -> (String, u16) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let (out, err) = curl(&all);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (
        body.to_owned(),
        code.trim()
            .parse()
            .unwrap_or_else(|_| panic!("curl: {out} {err}")),
    )
}

#[test]
fn raw_utf8_request_line_and_multipart_names() {
    let srv = Server::start(&[]);
    let a = png(30, 20, 1);
    // Multipart with a raw UTF-8 filename, over raw TCP.
    let (ct, body) = multipart(&[P {
        disposition: "name=\"file\"; filename=\"测试2.png\"",
        bytes: &a,
    }]);
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let (status, _, resp) = parse_raw(&raw_request(&srv.addr, &req));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let v: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v[0]["Name"], "测试2.png");
    // Request line with unescaped UTF-8 bytes.
    let req = format!(
        "GET /full_down?md5={}&file_name=测试2.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        md5_hex(&a)
    );
    let (status, headers, body) = parse_raw(&raw_request(&srv.addr, req.as_bytes()));
    assert_eq!(status, 200);
    assert_eq!(body, a);
    assert!(headers.contains(&("content-type".into(), "image/png".into())));
    // Raw UTF-8 in a legacy resize URL and in a /v1 path.
    let req = format!(
        "GET /stretch_full_down?md5={}&file_name=测试2.png&w=9&h=11 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        md5_hex(&a)
    );
    let (status, _, body) = parse_raw(&raw_request(&srv.addr, req.as_bytes()));
    assert_eq!(status, 200);
    assert_eq!((dims(&body).0, dims(&body).1), (9, 11));
    let req = format!(
        "GET /v1/images/{}/测试2.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        md5_hex(&a)
    );
    let (status, _, body) = parse_raw(&raw_request(&srv.addr, req.as_bytes()));
    assert_eq!((status, body.len()), (200, a.len()));
    // Keep-alive: two requests with raw UTF-8 on one connection.
    let one = format!(
        "GET /full_down?md5={}&file_name=测试2.png HTTP/1.1\r\nHost: x\r\n\r\n",
        md5_hex(&a)
    );
    let two = one.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let resp = raw_request(&srv.addr, format!("{one}{two}").as_bytes());
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
}

#[test]
fn curl_upload_many_percent_and_rfc5987_names() {
    let srv = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..3u8)
        .map(|i| (format!("图片{i}.png"), png(10 + u32::from(i), 10, i)))
        .collect();
    let mut args: Vec<String> = Vec::new();
    for (name, bytes) in &files {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        args.push("-F".into());
        args.push(format!("f=@{}", path.display()));
    }
    args.push(srv.url("/up"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let (body, status) = curl_status(&argv);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for (i, (name, bytes)) in files.iter().enumerate() {
        assert_eq!(v[i]["Name"], name.as_str());
        assert_eq!(v[i]["MD5"], md5_hex(bytes));
    }
    // Percent-encoded and RFC 5987 names via raw multipart.
    let a = png(7, 7, 9);
    let (ct, body) = multipart(&[
        P {
            disposition: "name=\"a\"; filename=\"%E7%99%BE%E5%88%86.png\"",
            bytes: &a,
        },
        P {
            disposition: "name=\"b\"; filename=\"x.png\"; filename*=UTF-8''%E6%89%A9%E5%B1%95.png",
            bytes: &a,
        },
    ]);
    let tmp = dir.path().join("body");
    std::fs::write(&tmp, &body).unwrap();
    let (out, status) = curl_status(&[
        "-H",
        &format!("Content-Type: {ct}"),
        "--data-binary",
        &format!("@{}", tmp.display()),
        &srv.url("/up"),
    ]);
    assert_eq!(status, 200, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["Name"], "百分.png");
    assert_eq!(v[1]["Name"], "扩展.png");
    // curl's --get --data-urlencode (percent-encoded) download.
    let (_, status) = curl_status(&[
        "-o",
        "/dev/null",
        "-G",
        "--data-urlencode",
        &format!("md5={}", md5_hex(&a)),
        "--data-urlencode",
        "file_name=扩展.png",
        &srv.url("/full_down"),
    ]);
    assert_eq!(status, 200);
}

#[test]
fn early_413_for_60mb_upload_is_received_by_curl() {
    let srv = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        for _ in 0..60 {
            f.write_all(&chunk).unwrap();
        }
    }
    let form = format!("file=@{}", big.display());
    // With curl's default Expect: 100-continue, and with it disabled (client keeps sending).
    for extra in [&[][..], &["-H", "Expect:"][..]] {
        for url in ["/up", "/derect_up"] {
            let mut args: Vec<&str> = extra.to_vec();
            args.extend_from_slice(&["-F", &form]);
            let u = srv.url(url);
            args.push(&u);
            let (body, status) = curl_status(&args);
            assert_eq!(
                (status, body.as_str()),
                (413, "上传文件超出50M限制"),
                "{url} {extra:?}"
            );
        }
    }
    // /v1 raw body.
    let u = srv.url("/v1/images?name=big.png");
    let data = format!("@{}", big.display());
    let (body, status) = curl_status(&["-H", "Expect:", "--data-binary", &data, &u]);
    assert_eq!(status, 413);
    assert!(body.contains("payload-too-large"), "{body}");
    // No Content-Length (chunked): refused while streaming, still received by curl.
    let (body, status) = curl_status(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-F",
        &form,
        &srv.url("/up"),
    ]);
    assert_eq!((status, body.as_str()), (413, "上传文件超出50M限制"));
    let (body, status) = curl_status(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect:",
        "--data-binary",
        &data,
        &u,
    ]);
    assert_eq!(status, 413);
    assert!(body.contains("payload-too-large"), "{body}");
    // The server is fine afterwards, nothing stored.
    let (_, status) = curl_status(&["-o", "/dev/null", &srv.url("/healthz")]);
    assert_eq!(status, 200);
    let (body, _) = curl_status(&[&srv.url("/metrics")]);
    assert!(body.contains("sis_images_stored_total 0"));
}

#[test]
fn cors_conditional_range_head_with_curl() {
    let srv = Server::start(&[]);
    let (out, _) = curl(&["-i", "-X", "OPTIONS", &srv.url("/up")]);
    assert!(out.starts_with("HTTP/1.1 204"), "{out}");
    let lower = out.to_lowercase();
    assert!(lower.contains("access-control-allow-method: post"));
    assert!(lower.contains("access-control-allow-origin: *"));
    let a = png(64, 64, 3);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.png");
    std::fs::write(&p, &a).unwrap();
    let (_, status) = curl_status(&["-F", &format!("f=@{}", p.display()), &srv.url("/up")]);
    assert_eq!(status, 200);
    let url = srv.url(&format!("/full_down?md5={}&file_name=a.png", md5_hex(&a)));
    let (head, _) = curl(&["-I", &url]);
    let lower = head.to_lowercase();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(lower.contains(&format!("content-length: {}", a.len())));
    assert!(lower.contains("access-control-allow-origin: *"));
    let etag = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .starts_with("etag:")
                .then(|| l[5..].trim().to_owned())
        })
        .unwrap();
    let (_, status) = curl_status(&[
        "-o",
        "/dev/null",
        "-H",
        &format!("If-None-Match: {etag}"),
        &url,
    ]);
    assert_eq!(status, 304);
    let part = dir.path().join("part");
    let (_, status) = curl_status(&["-r", "0-99", "-o", part.to_str().unwrap(), &url]);
    assert_eq!(status, 206);
    assert_eq!(std::fs::read(&part).unwrap(), a[..100]);
    let (_, status) = curl_status(&["-o", "/dev/null", "-r", "99999999-", &url]);
    assert_eq!(status, 416);
}

#[tokio::test]
async fn reqwest_v1_roundtrip_auth_delete_metrics() {
    let srv = Server::start(&["--api-token", "tok", "--cache-size", "1MiB"]);
    let client = reqwest::Client::new();
    let a = png(120, 80, 4);
    let form = || {
        reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(a.clone()).file_name("r.png"),
        )
    };
    let r = client
        .post(srv.url("/v1/images"))
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unauthorized");
    let r = client
        .post(srv.url("/v1/images"))
        .bearer_auth("tok")
        .multipart(form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.unwrap();
    let url = v["images"][0]["url"].as_str().unwrap().to_owned();
    for (q, w, h) in [
        ("?w=60", 60, 40),
        ("?w=30&h=30&fit=cover", 30, 30),
        ("?w=30&h=30", 30, 20),
    ] {
        let r = client
            .get(srv.url(&format!("{url}{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let b = r.bytes().await.unwrap();
        assert_eq!((dims(&b).0, dims(&b).1), (w, h), "{q}");
    }
    let r = client
        .get(srv.url(&format!("/v1/images/{}/meta", md5_hex(&a))))
        .send()
        .await
        .unwrap();
    let meta: serde_json::Value = r.json().await.unwrap();
    assert_eq!(meta["width"], 120);
    let r = client.delete(srv.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .delete(srv.url(&url))
        .bearer_auth("tok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = client.get(srv.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let text = client
        .get(srv.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "sis_images_stored_total 1",
        "sis_storage_objects 0",
        "sis_cache_capacity_bytes{kind=\"all\"} 1048576",
        "sis_resize_duration_seconds_count 3",
        "process_resident_memory_bytes",
        "process_open_fds",
        "route=\"/v1/images/{md5}/{name}\"",
    ] {
        assert!(text.contains(want), "missing {want}");
    }
    // One JSON log line per request, with a request id.
    std::thread::sleep(Duration::from_millis(200));
    let logs = srv.drain_log();
    let line = logs
        .iter()
        .find(|l| l.contains("\"route\":\"/v1/images/{md5}/meta\""))
        .expect("request log line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], 200);
    assert!(
        v["span"]["request_id"].is_string() || v["request_id"].is_string(),
        "{line}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("tok\"")),
        "token leaked into logs"
    );
}

#[test]
fn sigterm_during_slow_upload_completes_then_exits_zero() {
    let mut srv = Server::start(&["--shutdown-timeout", "20s"]);
    let a = png(50, 50, 6);
    let (ct, body) = multipart(&[P {
        disposition: "name=\"file\"; filename=\"slow.png\"",
        bytes: &a,
    }]);
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let half = body.len() / 2;
    s.write_all(&body[..half]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    srv.term();
    std::thread::sleep(Duration::from_millis(500));
    // New connections are refused once shutdown starts.
    assert!(
        std::net::TcpStream::connect(&srv.addr).is_err(),
        "listener still open"
    );
    s.write_all(&body[half..]).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let (status, _, body) = parse_raw(&resp);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("slow.png"));
    assert_eq!(srv.wait(Duration::from_secs(15)), Some(0));
    // The upload is on disk: a new server on the same dir serves it.
    let dir = std::mem::replace(&mut srv.dir, tempfile::tempdir().unwrap());
    let srv2 = Server::start_in(dir, &[]);
    let (_, status) = curl_status(&[
        "-o",
        "/dev/null",
        &srv2.url(&format!("/simple_down?md5={}", md5_hex(&a))),
    ]);
    assert_eq!(status, 200);
}

#[test]
fn shutdown_timeout_bounds_a_stuck_request() {
    let mut srv = Server::start(&["--shutdown-timeout", "1s"]);
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    // A body that never completes.
    write!(
        s,
        "POST /v1/images?name=x.png HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    srv.term();
    let start = std::time::Instant::now();
    assert_eq!(srv.wait(Duration::from_secs(10)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn cli_version_legacy_flags_and_agent_flag_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_sis"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sis 0.1.0");
    // Agent mode (tested end to end in tests/tests/agent.rs): bad flags exit 2 with a message.
    for (args, msg) in [
        (
            &["-localStore=false", "-image=ftp://127.0.0.1:9"][..],
            "only http://",
        ),
        (&["agent"][..], "needs --upstream"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sis"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{args:?}"
        );
    }
    // Legacy flags start a server: pick a free port, run with -port/-cache/-image.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sis"))
        .args(["-port", &port.to_string(), "-cache", "0", "-image"])
        .arg(dir.path())
        .arg("-localStore=true")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..100 {
        let (_, status) = curl_status(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/readyz"),
        ]);
        if status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(ok, "legacy-flag server never became ready");
    assert_eq!(status.code(), Some(0));
    assert!(dir.path().join(".tmp").is_dir(), "-image is the data dir");
}

#[test]
fn sigint_exits_zero() {
    let mut srv = Server::start(&[]);
    let (_, status) = curl_status(&["-o", "/dev/null", &srv.url("/readyz")]);
    assert_eq!(status, 200);
    let ok = Command::new("kill")
        .args(["-INT", &srv.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    assert_eq!(srv.wait(Duration::from_secs(10)), Some(0));
}
