//! Helpers shared by the integration tests: generated images, hand-built multipart
//! bodies (so file names go on the wire exactly as legacy clients send them), and a
//! running `sis` binary on an ephemeral port.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Cursor};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, RgbImage};

pub fn image_bytes(w: u32, h: u32, seed: u8, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(7).wrapping_add(seed),
            (y as u8).wrapping_mul(5),
            seed,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

pub fn png(w: u32, h: u32, seed: u8) -> Vec<u8> {
    image_bytes(w, h, seed, ImageFormat::Png)
}

pub fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    image_bytes(w, h, seed, ImageFormat::Jpeg)
}

pub fn gif(w: u32, h: u32, seed: u8) -> Vec<u8> {
    image_bytes(w, h, seed, ImageFormat::Gif)
}

pub fn md5_hex(bytes: &[u8]) -> String {
    sis::store::Md5Hex::of(bytes).to_string()
}

pub fn dims(bytes: &[u8]) -> (u32, u32, ImageFormat) {
    let fmt = image::guess_format(bytes).unwrap();
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height(), fmt)
}

pub const BOUNDARY: &str = "sisTestBoundary7MA4YWxkTrZu0gW";

/// One multipart part: `disposition` is the raw text after `form-data; `.
pub struct P<'a> {
    pub disposition: &'a str,
    pub bytes: &'a [u8],
}

/// Builds `multipart/form-data` with raw (unescaped) header bytes.
pub fn multipart(parts: &[P<'_>]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        body.extend_from_slice(b"Content-Disposition: form-data; ");
        body.extend_from_slice(p.disposition.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(p.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// A running `sis` binary; killed on drop.
pub struct Server {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: tempfile::TempDir,
    pub log: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        Self::start_env(dir, extra, &[])
    }

    /// [`Self::start_in`] with extra environment variables for the server process.
    pub fn start_env(dir: tempfile::TempDir, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sis"));
        cmd.envs(env.iter().copied());
        cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(["--log-format", "json"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server did not log 'listening on'");
            if let Some(i) = line.find("listening on ") {
                let rest = &line[i + "listening on ".len()..];
                let addr: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                break addr;
            }
        };
        Self {
            child: Some(child),
            addr,
            dir,
            log: rx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Sends SIGTERM.
    pub fn term(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for exit and returns the exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("server did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// All log lines received so far.
    pub fn drain_log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends raw bytes on a new connection and returns the whole raw response.
pub fn raw_request(addr: &str, request: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Status code and body of a raw HTTP/1.1 response (Content-Length framed).
pub fn parse_raw(resp: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, resp[end + 4..].to_vec())
}

/// The store the in-process API tests run on: a temp directory, or — when
/// `SIS_TEST_S3_BUCKET` is set (tests/s3/run.sh, against a real Ceph RGW) — a fresh
/// prefix in that bucket, reached with `SIS_TEST_S3_ENDPOINT` and the `AWS_*` keys.
/// Returns the store, the role a server on it has, and the directory to keep alive.
pub fn test_store() -> (
    sis::store::SharedStore,
    sis::role::Role,
    Option<tempfile::TempDir>,
) {
    match std::env::var("SIS_TEST_S3_BUCKET") {
        Ok(bucket) if !bucket.is_empty() => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let prefix = format!(
                "t{}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            let store = sis::store::S3Store::new(sis::store::S3Config {
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                endpoint: std::env::var("SIS_TEST_S3_ENDPOINT").ok(),
                region: "us-east-1".into(),
                path_style: true,
                timeout: Duration::from_secs(10),
                multipart_threshold: 1 << 20,
            })
            .unwrap();
            let role = sis::role::Role::shared_server(format!("s3:{bucket}/{prefix}"));
            (std::sync::Arc::new(store), role, None)
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let store = sis::store::DiskStore::open(dir.path()).unwrap().shared();
            (store, sis::role::Role::server(), Some(dir))
        }
    }
}
