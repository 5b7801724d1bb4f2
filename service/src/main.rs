//! The `sis` binary: parse flags, set up logging, run the chosen mode.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use sis::agent::FeedOptions;
use sis::config::{
    AgentArgs, Cli, Command, CommonArgs, LogFormat, MigrateArgs, S3Args, ServerArgs, SignArgs,
    StripMetadata,
};
use sis::imaging::{Limits, Strip};
use sis::metrics::Metrics;
use sis::role::Role;
use sis::state::{AppState, StateOptions};
use sis::store::{DiskStore, S3Config, S3Store, SharedStore};
use sis::upstream::{Upstream, UpstreamConfig};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse_args();
    match cli.command {
        Command::Server(args) => {
            init_logging(&args.common);
            run_server(args)
        }
        Command::Agent(args) => {
            let poll_interval = match args.validate() {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("sis agent: {e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&args.common);
            run(agent(args, poll_interval))
        }
        Command::Migrate(args) => run(migrate(args)),
        Command::Sign(args) => sign(&args),
    }
}

/// `sis sign URL`: prints the signed URL.
fn sign(args: &SignArgs) -> ExitCode {
    let Some(key) = args.sign_key.iter().find(|k| !k.is_empty()) else {
        eprintln!("sis sign: give --sign-key KEY (or SIS_SIGN_KEYS)");
        return ExitCode::from(2);
    };
    let exp = args.exp.or_else(|| {
        args.expires_in
            .map(|d| sis::http::guard::now_unix().saturating_add(d.as_secs()))
    });
    match sis::http::guard::sign_url(&args.url, key.as_bytes(), exp) {
        Ok(url) => {
            println!("{url}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sis sign: {e}");
            ExitCode::from(2)
        }
    }
}

/// Connection limits and the variant guard from the flags.
fn serve_options(c: &CommonArgs) -> Result<sis::ServeOptions, Box<dyn std::error::Error>> {
    let guard = c
        .variant_guard(&state_options(c).limits)
        .map_err(|e| format!("variant policy: {e}"))?;
    tracing::info!(
        variants = ?guard.policy(),
        "variant policy"
    );
    let mut opts = sis::ServeOptions::from(c);
    opts.variant_guard = Some(Arc::new(guard));
    Ok(opts)
}

/// glibc gives every thread that allocates its own malloc arena (up to 8 per core), and
/// memory freed in one arena is rarely handed back to the system: image buffers allocated
/// on resize workers, blocking-pool threads and connection threads stayed resident and a
/// loaded process grew tens of MiB past its cache. Two arenas keep the memory budget
/// (`--cache-size` + 64 MiB) without measurable cost in the bench. An arena limit set by the
/// operator (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`) wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() && !tunables.contains("arena_max") {
        // SAFETY: mallopt only changes allocator tuning; it is called first thing in
        // `main`, before any thread exists, as glibc requires for arena settings.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    // glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
    // which decode buffers (ours and libjpeg-turbo's) come from the arenas and stay resident.
    // A fixed threshold keeps every buffer of 256 KiB or more in its own mapping, returned to
    // the system when freed. `MALLOC_MMAP_THRESHOLD_` or `mmap_threshold` in GLIBC_TUNABLES wins.
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && !tunables.contains("mmap_threshold")
    {
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn init_logging(common: &CommonArgs) {
    let filter = common
        .log_level
        .as_deref()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let tty = std::io::stderr().is_terminal();
    let format = common.log_format.unwrap_or(if tty {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.with_ansi(tty).init(),
    }
}

fn run_server(args: ServerArgs) -> ExitCode {
    run(server(args))
}

fn run(
    mode: impl std::future::Future<Output = Result<(), Box<dyn std::error::Error>>>,
) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sis failed");
            ExitCode::FAILURE
        }
    }
}

fn state_options(c: &CommonArgs) -> StateOptions {
    StateOptions {
        cache_bytes: c.cache_size,
        limits: Limits {
            max_side: c.max_side,
            max_output_pixels: c.max_output_pixels,
            max_input_pixels: c.max_input_pixels,
        },
        resize_workers: c.resize_workers,
        resize_queue: c.resize_queue,
        api_token: c.api_token.clone(),
        strip: match c.strip_metadata {
            StripMetadata::Off => None,
            StripMetadata::Gps => Some(Strip::Gps),
            StripMetadata::All => Some(Strip::All),
        },
    }
}

async fn agent(
    args: AgentArgs,
    poll_interval: std::time::Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let c = &args.common;
    let opts = serve_options(c)?;
    let metrics = Metrics::new("agent")?;
    let upstream = Arc::new(Upstream::new(
        UpstreamConfig {
            base: args.upstream.clone().unwrap_or_default(),
            connect_timeout: args.upstream_connect_timeout,
            request_timeout: args.upstream_timeout,
            retries: args.upstream_retries,
            backoff: args.upstream_backoff,
            token: args
                .upstream_token
                .clone()
                .or_else(|| c.api_token.clone())
                .filter(|t| !t.is_empty()),
        },
        metrics.clone(),
    )?);
    let state = AppState::with_metrics(
        Arc::clone(&upstream) as SharedStore,
        Role::Agent,
        state_options(c),
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(c.listen).await?;
    let addr = listener.local_addr()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let feed = tokio::spawn(sis::agent::run_feed(
        state.clone(),
        Arc::clone(&upstream),
        FeedOptions {
            window: args.invalidation_window,
            poll_interval,
            ready_failures: args.ready_failures,
        },
        stop.clone(),
    ));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        upstream = upstream.base(),
        cache_bytes = c.cache_size,
        invalidation_window_ms = args.invalidation_window.as_millis() as u64,
        poll_interval_ms = poll_interval.as_millis() as u64,
        auth = c.api_token.is_some(),
        "listening on {addr}"
    );
    let shutdown = {
        let stop = stop.clone();
        async move {
            sis::shutdown::signal().await;
            stop.cancel();
        }
    };
    let served = sis::serve_with(listener, state, shutdown, opts).await;
    stop.cancel();
    let _ = feed.await;
    served?;
    tracing::info!("sis stopped");
    Ok(())
}

/// A store opened from `--storage` (or a migration end): a directory or `s3://…`.
struct Opened {
    store: SharedStore,
    /// Set for S3: the store shared with other servers.
    s3: Option<Arc<S3Store>>,
    describe: String,
}

async fn open_store(spec: &str, s3: &S3Args) -> Result<Opened, Box<dyn std::error::Error>> {
    if spec.starts_with("s3://") {
        let (bucket, prefix) = S3Config::parse_url(spec)?;
        let store = Arc::new(S3Store::new(S3Config {
            bucket,
            prefix,
            endpoint: s3.s3_endpoint.clone(),
            region: s3.s3_region.clone(),
            path_style: s3.s3_path_style,
            timeout: s3.s3_timeout,
            multipart_threshold: s3.s3_multipart_threshold,
        })?);
        // Say so at start-up when the bucket or the credentials are wrong; the server
        // still starts (unready) and recovers when the store does.
        if let Err(e) = store.check().await {
            tracing::error!(error = %e, storage = spec, "object store check failed: /readyz answers 503 until it passes");
        }
        let describe = format!("{spec} at {}", s3.s3_endpoint.as_deref().unwrap_or("AWS"));
        Ok(Opened {
            store: Arc::clone(&store) as SharedStore,
            s3: Some(store),
            describe,
        })
    } else {
        let dir = std::path::PathBuf::from(spec);
        let describe = dir.display().to_string();
        let store = tokio::task::spawn_blocking(move || DiskStore::open(dir)).await??;
        Ok(Opened {
            store: store.shared(),
            s3: None,
            describe,
        })
    }
}

async fn server(args: ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let c = &args.common;
    let opts = serve_options(c)?;
    let spec = args
        .storage
        .clone()
        .unwrap_or_else(|| args.data_dir.display().to_string());
    let opened = open_store(&spec, &args.s3).await?;
    let role = match &opened.s3 {
        Some(s3) => {
            s3.spawn_usage_scan(args.s3.s3_usage_interval);
            let cfg = s3.config();
            Role::shared_server(format!("s3:{}/{}", cfg.bucket, cfg.prefix))
        }
        None => Role::server(),
    };
    let state = AppState::new(opened.store, role, state_options(c))?;
    // Disk: counted now; S3: set by the background scan's first pass.
    state.refresh_storage_gauges().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let follower = tokio::spawn(sis::replicas::follow_shared_log(
        state.clone(),
        args.replica_poll_interval,
        stop.clone(),
    ));
    let gauges = opened.s3.is_some().then(|| {
        let state = state.clone();
        let every = args.s3.s3_usage_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every.min(std::time::Duration::from_secs(60))).await;
                state.refresh_storage_gauges().await;
            }
        })
    });
    let listener = tokio::net::TcpListener::bind(c.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        storage = %opened.describe,
        cache_bytes = c.cache_size,
        auth = c.api_token.is_some(),
        "listening on {addr}"
    );
    let served = sis::serve_with(listener, state, sis::shutdown::signal(), opts).await;
    stop.cancel();
    let _ = follower.await;
    if let Some(g) = gauges {
        g.abort();
    }
    served?;
    tracing::info!("sis stopped");
    Ok(())
}

async fn migrate(args: MigrateArgs) -> Result<(), Box<dyn std::error::Error>> {
    let from = open_store(&args.from, &args.s3).await?;
    let to = open_store(&args.to, &args.s3).await?;
    eprintln!("sis migrate: {} -> {}", from.describe, to.describe);
    let done = sis::migrate::run(from.store, to.store, args.concurrency, |p, secs| {
        eprintln!(
            "sis migrate: {} copied, {} already there, {} MiB read, {:.1} s",
            p.copied,
            p.skipped,
            p.bytes >> 20,
            secs
        );
    })
    .await?;
    for what in &done.corrupt {
        eprintln!("sis migrate: NOT copied, damaged in the source: {what}");
    }
    println!(
        "copied {} skipped {} corrupt {} vanished {}",
        done.copied,
        done.skipped,
        done.corrupt.len(),
        done.vanished
    );
    if done.corrupt.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} damaged image(s) in the source were not copied",
            done.corrupt.len()
        )
        .into())
    }
}
