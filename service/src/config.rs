//! Command line and environment: `sis [server|agent] --flags`, every flag also from
//! a `SIS_*` variable, plus the Go binary's legacy flags rewritten before clap sees
//! them. Defaults need no config file. Validation happens here, once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `sis`: a simple, content-addressed image server.
#[derive(Debug, Parser)]
#[command(name = "sis", version, about)]
#[command(mut_subcommand("agent", |s| s.mut_arg("cache_size", |a| a.default_value(AGENT_CACHE_SIZE))))]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Store images on local disk and serve them (the default).
    Server(ServerArgs),
    /// Cache and resize in front of a sis server.
    Agent(AgentArgs),
    /// Copy every stored image from one store to another (a directory or
    /// `s3://BUCKET[/PREFIX]`), verifying each MD5; resumable, and a second run copies
    /// nothing.
    Migrate(MigrateArgs),
    /// Sign a variant URL for `--variants signed` (prints the URL with `sig=`, and `exp=`
    /// when an expiry is given).
    Sign(SignArgs),
}

/// `sis sign`.
#[derive(Debug, Clone, Args)]
pub struct SignArgs {
    /// The URL to sign: `http://HOST:PORT/v1/images/MD5/NAME?w=300` or just the path and query.
    pub url: String,
    /// Key to sign with (the first of SIS_SIGN_KEYS when not given).
    #[arg(
        long,
        env = "SIS_SIGN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sign_key: Vec<String>,
    /// Valid for this long from now (`3600s`, `1h`, `7d` is not supported: use hours).
    #[arg(long, value_parser = parse_duration, conflicts_with = "exp")]
    pub expires_in: Option<Duration>,
    /// Valid until this Unix time (seconds).
    #[arg(long)]
    pub exp: Option<u64>,
}

/// What uploads lose before they are hashed and stored (`--strip-metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum StripMetadata {
    /// Store uploads byte for byte.
    #[default]
    Off,
    /// Remove location: the EXIF GPS block and XMP packets.
    Gps,
    /// Remove every metadata segment that does not change how the image looks (the ICC
    /// profile and the orientation stay).
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Flags shared by both modes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on (API, /healthz, /readyz, /metrics).
    #[arg(long, env = "SIS_LISTEN", default_value = "0.0.0.0:3333")]
    pub listen: SocketAddr,
    /// Memory cache size in bytes (`0` = off; `512KiB`, `100MiB`, `1GiB`); the
    /// agent's default is 256MiB.
    #[arg(long, env = "SIS_CACHE_SIZE", default_value = "100MiB", value_parser = parse_size)]
    pub cache_size: u64,
    /// When set, uploads and deletes need `Authorization: Bearer <token>`.
    #[arg(long, env = "SIS_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Log format; defaults to text on a terminal, JSON otherwise.
    #[arg(long, env = "SIS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (e.g. `info`, `sis=debug`); falls back to RUST_LOG, then `info`.
    #[arg(long, env = "SIS_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// How long in-flight requests may run after SIGTERM/SIGINT (`30s`, `500ms`, `2m`).
    #[arg(long, env = "SIS_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Largest width or height a resize may produce.
    #[arg(long, env = "SIS_MAX_SIDE", default_value_t = 8192)]
    pub max_side: u32,
    /// Largest pixel count a resize may produce.
    #[arg(long, env = "SIS_MAX_OUTPUT_PIXELS", default_value_t = 40_000_000)]
    pub max_output_pixels: u64,
    /// Largest pixel count of an image that will be decoded.
    #[arg(long, env = "SIS_MAX_INPUT_PIXELS", default_value_t = 100_000_000)]
    pub max_input_pixels: u64,
    /// Resize worker threads (0 = number of CPUs).
    #[arg(long, env = "SIS_RESIZE_WORKERS", default_value_t = 0)]
    pub resize_workers: usize,
    /// Resize jobs that may wait before requests get 503.
    #[arg(long, env = "SIS_RESIZE_QUEUE", default_value_t = 64)]
    pub resize_queue: usize,
    /// Threads serving connections, one event loop each (0 = number of CPUs). Image work
    /// runs on the resize workers, disk reads on a blocking pool, not on these.
    #[arg(long, env = "SIS_IO_THREADS", default_value_t = 0)]
    pub io_threads: usize,
    /// Most parts in one multipart upload; more are refused with 413 (CPU and memory spent
    /// on bodies made of thousands of tiny parts).
    #[arg(long, env = "SIS_MAX_UPLOAD_PARTS", default_value_t = 1000)]
    pub max_upload_parts: usize,
    /// Longest a client may take to send a request's headers; also how long an idle
    /// keep-alive connection stays open (slowloris protection).
    #[arg(long, env = "SIS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Longest a request with a body (an upload) may take, body included; slower ones get
    /// 408 and the connection is closed. 600s lets 50 MiB through at ~0.7 Mbit/s; trickled
    /// bodies are cut much sooner by --min-body-rate.
    #[arg(long, env = "SIS_BODY_READ_TIMEOUT", default_value = "600s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    /// Most client connections open at once; more get 503 and are closed.
    #[arg(long, env = "SIS_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest request head (request line + headers); larger gets 431.
    #[arg(long, env = "SIS_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_size)]
    pub max_header_size: u64,
    /// Strip metadata from JPEG, PNG and WebP uploads, losslessly, before they are hashed
    /// and stored: the stored MD5 is then that of the stripped file. Agents hash uploads
    /// too: give agents and servers the same value.
    #[arg(long, env = "SIS_STRIP_METADATA", value_enum, default_value_t = StripMetadata::Off)]
    pub strip_metadata: StripMetadata,
    /// Most connections open at once from one client address (0 = no cap); more get 503
    /// and are closed. Agents keep up to 64 idle connections to their server.
    #[arg(long, env = "SIS_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256)]
    pub max_connections_per_client: usize,
    /// Slowest average rate a request body may arrive at, per second, once the grace period
    /// is over (`0` = off); slower bodies get 408 and the connection is closed.
    #[arg(long, env = "SIS_MIN_BODY_RATE", default_value = "8KiB", value_parser = parse_size)]
    pub min_body_rate: u64,
    /// How long a body may take before --min-body-rate applies.
    #[arg(long, env = "SIS_BODY_RATE_GRACE", default_value = "5s", value_parser = parse_duration)]
    pub body_rate_grace: Duration,
    /// Which resize variants are rendered: `open` (any parameters), `presets` (only
    /// `?preset=NAME`, plus `format`), `signed` (only signed URLs, or presets marked
    /// `public`). A valid signature admits any parameters under every policy.
    #[arg(long, env = "SIS_VARIANTS", value_enum, default_value = "open")]
    pub variants: crate::http::guard::Policy,
    /// A named parameter set, `NAME=key:value,key:value[,public]`, e.g.
    /// `thumb=w:300,h:200,fit:cover`; repeatable (in SIS_PRESETS separated by `;`).
    #[arg(long = "preset", env = "SIS_PRESETS", value_delimiter = ';')]
    pub presets: Vec<String>,
    /// A file of presets, one `NAME=key:value,…` per line (`#` comments).
    #[arg(long, env = "SIS_PRESETS_FILE")]
    pub presets_file: Option<PathBuf>,
    /// Key for signed variant URLs (HMAC-SHA256); repeat (in SIS_SIGN_KEYS separated by `,`)
    /// to accept several during a rotation.
    #[arg(
        long = "sign-key",
        env = "SIS_SIGN_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sign_keys: Vec<String>,
}

impl CommonArgs {
    /// The variant guard of these flags: presets from `--preset` and `--presets-file`,
    /// checked against the resize limits.
    ///
    /// # Errors
    /// An unreadable presets file, a bad preset or key, `signed` without keys.
    pub fn variant_guard(
        &self,
        limits: &crate::imaging::Limits,
    ) -> Result<crate::http::guard::VariantGuard, String> {
        let mut defs: Vec<String> = Vec::new();
        if let Some(path) = &self.presets_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--presets-file {}: {e}", path.display()))?;
            defs.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        defs.extend(
            self.presets
                .iter()
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty()),
        );
        let keys: Vec<String> = self
            .sign_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        crate::http::guard::VariantGuard::new(self.variants, &defs, &keys, limits)
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Directory holding the images (when --storage is not given).
    #[arg(long, env = "SIS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where images are stored: a directory, or `s3://BUCKET[/PREFIX]` for S3-compatible
    /// object storage shared by any number of servers (credentials from
    /// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN). Default: --data-dir.
    #[arg(long, env = "SIS_STORAGE")]
    pub storage: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// How often a server over shared (S3) storage reads the other servers' deletes.
    #[arg(long, env = "SIS_REPLICA_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub replica_poll_interval: Duration,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// How to reach S3-compatible storage (`--storage s3://…`, `sis migrate`).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint URL, e.g. `http://rgw.ceph:7480` (default: AWS for the region).
    #[arg(long, env = "SIS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// Region name (also AWS_REGION); most S3-compatible stores accept any.
    #[arg(long, env = "SIS_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Path-style requests (`http://host/bucket/key`): Ceph RGW and MinIO without
    /// wildcard DNS need this.
    #[arg(long, env = "SIS_S3_PATH_STYLE")]
    pub s3_path_style: bool,
    /// Timeout of each call to the object store; a slow store answers 503/504, never hangs.
    #[arg(long, env = "SIS_S3_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub s3_timeout: Duration,
    /// Uploads larger than this are sent as S3 multipart uploads.
    #[arg(long, env = "SIS_S3_MULTIPART_THRESHOLD", default_value = "8MiB", value_parser = parse_size)]
    pub s3_multipart_threshold: u64,
    /// How often the storage gauges are recounted from a listing of the bucket (in the
    /// background; start-up never lists the bucket).
    #[arg(long, env = "SIS_S3_USAGE_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub s3_usage_interval: Duration,
}

/// `sis migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Source store: a directory or `s3://BUCKET[/PREFIX]`.
    #[arg(long)]
    pub from: String,
    /// Destination store: a directory or `s3://BUCKET[/PREFIX]`.
    #[arg(long)]
    pub to: String,
    /// Images copied at once.
    #[arg(long, env = "SIS_MIGRATE_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The sis server that stores the images, e.g. `http://sis:3333` (http only).
    #[arg(long, env = "SIS_UPSTREAM")]
    pub upstream: Option<String>,
    /// Timeout for connecting to the server (each call).
    #[arg(long, env = "SIS_UPSTREAM_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub upstream_connect_timeout: Duration,
    /// Timeout for a whole call to the server (connect, send, answer, body); an
    /// expired one answers the client 504.
    #[arg(long, env = "SIS_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// Extra attempts for reads from the server after a connection error or a
    /// 502/503/504 (uploads and deletes are never retried; timeouts neither).
    #[arg(long, env = "SIS_UPSTREAM_RETRIES", default_value_t = 2)]
    pub upstream_retries: u32,
    /// Wait before the first retry, doubled for each next one (at most 2s).
    #[arg(long, env = "SIS_UPSTREAM_BACKOFF", default_value = "50ms", value_parser = parse_duration)]
    pub upstream_backoff: Duration,
    /// Bearer token for the server's API (its --api-token); defaults to --api-token.
    #[arg(long, env = "SIS_UPSTREAM_TOKEN", hide_env_values = true)]
    pub upstream_token: Option<String>,
    /// Longest time a deleted image may still be served from this agent's cache.
    /// Also: when the server's change feed cannot be reached for this long, the
    /// cache is flushed (cached data can no longer be vouched for).
    #[arg(long, env = "SIS_INVALIDATION_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub invalidation_window: Duration,
    /// How often the server's change feed is polled (default: a fifth of the
    /// window, at least 100ms); must be under half the window.
    #[arg(long, env = "SIS_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Failed polls in a row before /readyz answers 503.
    #[arg(long, env = "SIS_READY_FAILURES", default_value_t = 3)]
    pub ready_failures: u32,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The agent's memory cache default (`--cache-size` when not given).
pub const AGENT_CACHE_SIZE: &str = "256MiB";

impl AgentArgs {
    /// Checks the flags that clap cannot; returns the poll interval to use.
    ///
    /// # Errors
    /// No or a non-http upstream, a zero window, a poll interval not under half the window.
    pub fn validate(&self) -> Result<Duration, String> {
        let up = self
            .upstream
            .as_deref()
            .ok_or("agent mode needs --upstream http://HOST:PORT (or SIS_UPSTREAM)")?;
        if !up.starts_with("http://") {
            return Err(format!(
                "--upstream {up:?}: only http://HOST:PORT is supported"
            ));
        }
        if self.invalidation_window.is_zero() {
            return Err("--invalidation-window must be more than 0".into());
        }
        let interval = self
            .poll_interval
            .unwrap_or_else(|| (self.invalidation_window / 5).max(Duration::from_millis(100)));
        if interval.is_zero() || interval * 2 > self.invalidation_window {
            return Err(format!(
                "--poll-interval {interval:?} must be more than 0 and at most half of --invalidation-window {:?}",
                self.invalidation_window
            ));
        }
        Ok(interval)
    }
}

impl Cli {
    /// Parses `std::env::args` after [`normalize_args`].
    pub fn parse_args() -> Self {
        Self::parse_normalized(normalize_args(std::env::args().collect()))
    }

    /// Parses already normalized arguments; exits with clap's message on errors.
    /// (The agent's `--cache-size` default, [`AGENT_CACHE_SIZE`], is set on the
    /// subcommand by the `mut_subcommand` attribute above.)
    pub fn parse_normalized(args: Vec<String>) -> Self {
        Self::parse_from(args)
    }
}

/// Rewrites the Go binary's flags (`-port 4444`, `-cache 0` in MiB, `-image DIR`,
/// `-localStore=true|false`) to the new form and inserts `server` when no
/// subcommand is given.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    let mut iter = args.into_iter();
    let prog = iter.next().unwrap_or_else(|| "sis".into());
    let mut rest: Vec<String> = Vec::new();
    let mut agent = false;
    let mut image: Option<String> = None;
    let mut legacy = false;
    let rest_in: Vec<String> = iter.collect();
    let mut i = 0;
    while i < rest_in.len() {
        let arg = &rest_in[i];
        let stripped = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .unwrap_or("");
        let (flag, inline) = match stripped.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (stripped, None),
        };
        let take_value = |i: &mut usize| -> Option<String> {
            if inline.is_some() {
                inline.clone()
            } else {
                *i += 1;
                rest_in.get(*i).cloned()
            }
        };
        match flag {
            "port" => {
                legacy = true;
                if let Some(v) = take_value(&mut i) {
                    rest.push("--listen".into());
                    rest.push(format!("0.0.0.0:{v}"));
                }
            }
            "cache" => {
                legacy = true;
                if let Some(v) = take_value(&mut i) {
                    rest.push("--cache-size".into());
                    rest.push(if v.chars().all(|c| c.is_ascii_digit()) {
                        format!("{v}MiB")
                    } else {
                        v
                    });
                }
            }
            "image" => {
                legacy = true;
                image = take_value(&mut i);
            }
            "localStore" => {
                legacy = true;
                agent = matches!(
                    inline.as_deref(),
                    Some("false" | "0" | "f" | "F" | "FALSE" | "False")
                );
            }
            _ => rest.push(arg.clone()),
        }
        i += 1;
    }
    let first = rest.first().map(String::as_str);
    let has_sub = matches!(
        first,
        Some(
            "server" | "agent" | "migrate" | "sign" | "help" | "--help" | "-h" | "--version" | "-V"
        )
    );
    let mut out = vec![prog];
    if legacy && !has_sub {
        out.push(if agent { "agent" } else { "server" }.into());
    } else if !has_sub {
        out.push("server".into());
    }
    out.extend(rest);
    if let Some(img) = image {
        out.push(if agent { "--upstream" } else { "--data-dir" }.into());
        out.push(img);
    }
    out
}

/// Parses `0`, `4096`, `512KiB`, `100MiB`, `1GiB`, `10MB`, `100M`.
///
/// # Errors
/// Not a number with a known unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        _ => return Err(format!("invalid size unit in {s:?} (use KiB, MiB, GiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Parses `30s`, `500ms`, `2m`, `1h`, or plain seconds.
///
/// # Errors
/// Not a number with a known unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}")),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn legacy_flags_rewritten() {
        assert_eq!(norm(&["sis"]), ["sis", "server"]);
        assert_eq!(
            norm(&["sis", "-port", "4444", "-cache", "0", "-image", "/d"]),
            [
                "sis",
                "server",
                "--listen",
                "0.0.0.0:4444",
                "--cache-size",
                "0MiB",
                "--data-dir",
                "/d"
            ]
        );
        assert_eq!(
            norm(&[
                "sis",
                "-port=4444",
                "-localStore=false",
                "-image=http://h:1"
            ]),
            [
                "sis",
                "agent",
                "--listen",
                "0.0.0.0:4444",
                "--upstream",
                "http://h:1"
            ]
        );
        assert_eq!(
            norm(&["sis", "--listen", "x"]),
            ["sis", "server", "--listen", "x"]
        );
        assert_eq!(norm(&["sis", "agent"]), ["sis", "agent"]);
        assert_eq!(norm(&["sis", "--version"]), ["sis", "--version"]);
        let cli = Cli::parse_normalized(norm(&["sis", "-localStore=false", "-image=http://h:1"]));
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.upstream.as_deref(), Some("http://h:1"));
        assert_eq!(a.common.cache_size, 256 << 20);
        assert_eq!(a.validate(), Ok(Duration::from_secs(2)));
        let cli = Cli::parse_normalized(norm(&["sis", "agent", "--cache-size", "1MiB"]));
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(a.common.cache_size, 1 << 20);
        assert!(a.validate().is_err(), "no upstream");
        let cli = Cli::parse_normalized(norm(&[
            "sis",
            "agent",
            "--upstream",
            "http://h:1",
            "--invalidation-window",
            "2s",
            "--poll-interval",
            "1500ms",
        ]));
        let Command::Agent(a) = cli.command else {
            panic!("not agent")
        };
        assert!(a.validate().is_err(), "poll interval over half the window");
        let cli = Cli::parse_from(norm(&["sis", "-port", "4444", "-cache", "5"]));
        let Command::Server(s) = cli.command else {
            panic!("not server")
        };
        assert_eq!(s.common.cache_size, 5 << 20);
        assert_eq!(s.common.listen.port(), 4444);
    }
}
