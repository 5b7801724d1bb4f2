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
    listener.local_addr().expect("local address of a bound socket")
}

/// One running `sis` process, killed when dropped so a failing test leaves nothing behind.
pub struct Sis {
    child: Option<Child>,
    pub addr: SocketAddr,
    args: Vec<String>,
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
        let logs = tempfile::tempdir().expect("temp dir for logs");
        let mut sis = Sis {
            child: None,
            addr: free_addr(),
            args,
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
        assert!(self.child.is_none(), "stop the process before restarting it");
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
