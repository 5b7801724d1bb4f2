//! Harness for end-to-end tests: start the real `sis` binary as child processes on loopback
//! ports, wait until they answer, talk HTTP to them, and stop them the way an orchestrator
//! would (SIGTERM, or SIGKILL for crash tests).
//!
//! The binaries are the ones `cargo build --workspace` left in the target directory;
//! `scripts/test.sh` builds them before it runs the tests. Cargo cannot build another
//! package's binaries from inside a running test (the build directory is locked), so a
//! missing binary is reported instead of built.
//!
//! Test images are generated in code, so the suite needs no binary fixtures.

// A panic in the harness is a failed test with its message, which is what we want here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::File;
use std::io::Cursor;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Path of a workspace binary (`sis`, `sis-operator`) in the debug target directory.
///
/// # Panics
/// When the binary has not been built: run `cargo build --workspace` first.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the end-to-end tests",
        path.display()
    );
    path
}

/// A loopback port that was free a moment ago. Binding port 0 ourselves (instead of letting
/// the child do it) lets a test restart a process on the same address.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("local address of a bound socket")
}

/// One running `sis` process, killed when dropped so a failing test leaves nothing behind.
pub struct Sis {
    child: Option<Child>,
    pub addr: SocketAddr,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    // Keeps the log directory alive as long as the process.
    _logs: tempfile::TempDir,
}

impl Sis {
    /// `sis server` on a fresh loopback port with its data in `data_dir`.
    pub async fn server(data_dir: &Path, extra: &[&str]) -> Sis {
        let mut args = vec![
            "server".to_string(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sis::start(args).await
    }

    /// `sis agent` on a fresh loopback port in front of `upstream` (a base URL).
    pub async fn agent(upstream: &str, extra: &[&str]) -> Sis {
        let mut args = vec![
            "agent".to_string(),
            "--upstream".to_string(),
            upstream.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Sis::start(args).await
    }

    /// Starts `sis ARGS --listen 127.0.0.1:PORT` and waits until `/healthz` answers.
    pub async fn start(args: Vec<String>) -> Sis {
        Sis::start_with_env(args, &[]).await
    }

    /// Like [`Sis::start`], with extra environment variables for the process.
    pub async fn start_with_env(args: Vec<String>, env: &[(&str, &str)]) -> Sis {
        let logs = tempfile::tempdir().expect("temp dir for logs");
        let mut sis = Sis {
            child: None,
            addr: free_addr(),
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log_path: logs.path().join("sis.log"),
            _logs: logs,
        };
        sis.spawn();
        sis.wait_healthy().await;
        sis
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open log file");
        let child = Command::new(bin("sis"))
            .args(&self.args)
            .args(["--listen", &self.addr.to_string(), "--log-format", "text"])
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn sis");
        self.child = Some(child);
    }

    /// Base URL plus `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("process is running");
        Pid::from_raw(child.id() as i32)
    }

    /// Polls `/healthz` until it answers 200 (10 s at most).
    pub async fn wait_healthy(&mut self) {
        self.wait_for_status("/healthz", 200, Duration::from_secs(10))
            .await
    }

    /// Polls `path` until it answers `status`, failing the test with the log when it does not.
    pub async fn wait_for_status(&mut self, path: &str, status: u16, within: Duration) {
        let client = client();
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!("sis exited early with {exit}; log:\n{}", self.log());
            }
            if let Ok(resp) = client.get(self.url(path)).send().await
                && resp.status().as_u16() == status
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not answer {status} within {within:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit (30 s at most).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGTERM, Duration::from_secs(30))
    }

    /// SIGKILL: a crash, with no chance to clean up.
    pub fn crash(&mut self) -> ExitStatus {
        self.signal_and_wait(Signal::SIGKILL, Duration::from_secs(10))
    }

    fn signal_and_wait(&mut self, signal: Signal, within: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("process is running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal sis");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for sis") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "sis did not exit within {within:?} of {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same command again on the same address (after `terminate` or `crash`).
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop the process before restarting it"
        );
        self.spawn();
        self.wait_healthy().await;
    }
}

impl Drop for Sis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The body of a GET of `url` as text (any status), failing the test when the request fails.
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// An HTTP client with a timeout, so a hung server fails a test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build HTTP client")
}

/// Lower-case hex MD5 of `bytes`, as sis reports it.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `width`×`height` PNG whose pixels depend on `seed`, so different seeds give different MD5s.
pub fn png(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8).wrapping_add(seed),
            (y as u8).wrapping_mul(3),
            seed,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode PNG");
    out.into_inner()
}

/// A `width`×`height` JPEG whose pixels depend on `seed`.
pub fn jpeg(width: u32, height: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x as u8) ^ seed,
            (y as u8).wrapping_add(seed),
            ((x + y) as u8) / 2,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode JPEG");
    out.into_inner()
}

/// Dimensions of an encoded image (PNG or JPEG), to check what a resize returned.
pub fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("decode image");
    (img.width(), img.height())
}

/// `POST /up` with one multipart part per `(file name, bytes)`; returns status and body.
pub async fn legacy_upload(base: &str, files: &[(&str, Vec<u8>)]) -> (u16, String) {
    let mut form = reqwest::multipart::Form::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let part = reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string());
        form = form.part(format!("file{i}"), part);
    }
    let resp = client()
        .post(format!("{base}/up"))
        .multipart(form)
        .send()
        .await
        .expect("POST /up");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

// ---- Helpers for the hardening tests (issue 7) ----

/// Peak resident set size (`VmHWM`) of a process, in bytes.
pub fn peak_rss_bytes(pid: Pid) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

/// Current resident set size (`VmRSS`) of a process, in bytes.
pub fn rss_bytes(pid: Pid) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

fn proc_status_kib(pid: Pid, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// A `width`×`height` RGB PNG of pseudo-random pixels, stored without compression (fast to
/// build even in a debug build): its size is about `3 * width * height` bytes and every seed
/// gives different content (for filling disks and caches).
pub fn noise_png(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let row = 1 + 3 * width as usize;
    let mut raw = vec![0u8; row * height as usize];
    for (i, b) in raw.iter_mut().enumerate() {
        if i % row == 0 {
            continue; // filter type 0
        }
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    // zlib stream of stored deflate blocks.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(&mut out, b"IDAT", &z);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A valid `width`×`height` GIF with `frames` frames (hand-encoded: LZW with a clear code
/// every two pixels keeps the codes 3 bits wide). `screen` overrides the logical screen size
/// the header declares, to build decompression bombs from tiny files.
pub fn gif(width: u16, height: u16, frames: usize, screen: Option<(u16, u16)>) -> Vec<u8> {
    let (sw, sh) = screen.unwrap_or((width, height));
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&sw.to_le_bytes());
    out.extend_from_slice(&sh.to_le_bytes());
    out.extend_from_slice(&[0x81, 0, 0]);
    out.extend_from_slice(&[0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]);
    let mut codes = Vec::new();
    let pixels: Vec<u32> = (0..u32::from(height))
        .flat_map(|y| (0..u32::from(width)).map(move |x| (x + y) % 4))
        .collect();
    for pair in pixels.chunks(2) {
        codes.push(4);
        codes.extend_from_slice(pair);
    }
    codes.push(5);
    let mut data = Vec::new();
    let (mut bits, mut nbits) = (0u32, 0u32);
    for c in codes {
        bits |= c << nbits;
        nbits += 3;
        while nbits >= 8 {
            data.push((bits & 0xFF) as u8);
            bits >>= 8;
            nbits -= 8;
        }
    }
    if nbits > 0 {
        data.push((bits & 0xFF) as u8);
    }
    let mut frame = vec![0x21, 0xF9, 4, 0, 0, 0, 0, 0, 0x2C, 0, 0, 0, 0];
    frame.extend_from_slice(&width.to_le_bytes());
    frame.extend_from_slice(&height.to_le_bytes());
    frame.extend_from_slice(&[0, 2]);
    for block in data.chunks(255) {
        frame.push(block.len() as u8);
        frame.extend_from_slice(block);
    }
    frame.push(0);
    for _ in 0..frames {
        out.extend_from_slice(&frame);
    }
    out.push(0x3B);
    out
}

/// A ~70-byte PNG whose header declares `width`×`height` RGBA pixels (a decompression bomb:
/// the data holds almost nothing).
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream: stored block holding one zero byte.
    png_chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x01, 0x00, 0xFE, 0xFF, 0x00, 0x00, 0x01, 0x00, 0x01,
        ],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Sends `request` as raw bytes on a new connection and returns everything the server
/// answered before it closed the connection or `within` passed.
pub async fn raw_request(addr: SocketAddr, request: &[u8], within: Duration) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, s.read_to_end(&mut out)).await;
    out
}

/// The status code of a raw HTTP/1.1 response (`None` when there is none).
pub fn raw_status(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Every sample of `name` (all label sets) in Prometheus text.
pub fn metric_values(text: &str, name: &str) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .collect()
}

/// Sum of every sample of `name` (all label sets) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    metric_values(text, name).iter().sum()
}

/// A tmpfs mounted on a fresh temp dir (needs root); unmounted when dropped.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=…`, e.g. `4m`).
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount (the hardening tests need root)");
        assert!(status.success(), "mount tmpfs failed (not root?)");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts read-only (`ro = true`) or read-write.
    pub fn remount(&self, ro: bool) {
        let opt = if ro { "remount,ro" } else { "remount,rw" };
        let status = Command::new("mount")
            .args(["-o", opt])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -o {opt} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy unmount: a process that still has files open there cannot block it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Every regular file below `dir`, recursively.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => out.push(path),
                _ => {}
            }
        }
    }
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
