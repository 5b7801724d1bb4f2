//! The `sis` binary: parse flags, set up logging, run the chosen mode.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use sis::config::{Cli, Command, CommonArgs, LogFormat, ServerArgs};
use sis::imaging::Limits;
use sis::state::{AppState, StateOptions};
use sis::store::{DiskStore, Origin};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse_args();
    match cli.command {
        Command::Server(args) => {
            init_logging(&args.common);
            run_server(args)
        }
        Command::Agent(_) => {
            eprintln!(
                "sis: agent mode: not yet in this build (run `sis server`, or `-localStore=true`)"
            );
            ExitCode::from(2)
        }
    }
}

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
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sis: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(server(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "sis server failed");
            ExitCode::FAILURE
        }
    }
}

async fn server(args: ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let c = &args.common;
    let data_dir = args.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || DiskStore::open(data_dir)).await??;
    let opts = StateOptions {
        mode: "server",
        cache_bytes: c.cache_size,
        limits: Limits {
            max_side: c.max_side,
            max_output_pixels: c.max_output_pixels,
            max_input_pixels: c.max_input_pixels,
        },
        resize_workers: c.resize_workers,
        resize_queue: c.resize_queue,
        api_token: c.api_token.clone(),
    };
    let state = AppState::new(Origin::Local(Arc::new(store)), opts)?;
    state.refresh_storage_gauges().await;
    let listener = tokio::net::TcpListener::bind(c.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %args.data_dir.display(),
        cache_bytes = c.cache_size,
        auth = c.api_token.is_some(),
        "listening on {addr}"
    );
    sis::serve(listener, state, sis::shutdown::signal(), c.shutdown_timeout).await?;
    tracing::info!("sis stopped");
    Ok(())
}
