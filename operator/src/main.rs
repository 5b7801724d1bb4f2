//! `sis-operator [run]` runs the controller; `sis-operator crd` prints the CRD YAML.
//!
//! Thin on purpose: flags, logging, signals and the metrics server; the work is in the library.
//!
//! # RBAC the operator needs (see also `operator/RBAC.md`)
//! Cluster-wide (ClusterRole), unless `--watch-namespace` is set (then a Role there suffices,
//! except for the Lease which lives in the operator's own namespace):
//! - `sis.dev` `sisclusters`: get, list, watch — the resources it reconciles
//! - `sis.dev` `sisclusters/status`: patch — writes status (merge patch)
//! - `apps` `statefulsets`, `deployments`: get, list, watch, create, patch — server-side apply
//!   (a PATCH; create is for the first apply of a missing object)
//! - `""` (core) `services`: get, list, watch, create, patch, delete — same; delete only to
//!   re-create the server Service when it must change between headless and ClusterIP
//! - `autoscaling` `horizontalpodautoscalers`, `policy` `poddisruptionbudgets`: get, list,
//!   watch, create, patch, delete — the agents' HPA and the budgets: watched (owned), deleted
//!   when the spec turns them off
//! - `""` (core) `secrets`: get, list, watch — hashes of the values the pods read (token, S3
//!   keys) so that a new value rolls the pods; the watch is metadata-only
//! - `events.k8s.io` `events`: create, patch — the event recorder (patch updates a series)
//! - `coordination.k8s.io` `leases`: get, create, update — leader election; namespaced to the
//!   operator's namespace (`POD_NAMESPACE`), may be restricted to `resourceNames: [sis-operator]`
//!   for get/update (create cannot be restricted by name)
//!
//! Not needed: pods, PVCs (the StatefulSet controller creates them), delete on workloads
//! (garbage collection removes children; a storage switch is refused, never done by deleting),
//! `sisclusters/finalizers` (no `blockOwnerDeletion`), `customresourcedefinitions` (the CRD is
//! installed by the chart / `kubectl apply`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sis_operator::controller::{self, Health, RunConfig};
use sis_operator::http::{self, HttpState};
use sis_operator::leader::LeaseConfig;
use sis_operator::metrics::Metrics;
use sis_operator::validate::{Defaults, default_image};
use tokio_util::sync::CancellationToken;

/// How long a requested shutdown may take before the process leaves anyway (below the usual
/// 30 s `terminationGracePeriodSeconds`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Parser, Debug)]
#[command(
    name = "sis-operator",
    version,
    about = "Kubernetes operator for sis (SisCluster, sis.dev/v1alpha1)"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (the default).
    Run(RunArgs),
    /// Print the SisCluster CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(
        long,
        env = "SIS_OPERATOR_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Image for SisClusters that do not set spec.image.
    #[arg(long, env = "SIS_OPERATOR_DEFAULT_IMAGE", default_value_t = default_image())]
    default_image: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "SIS_OPERATOR_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Use a Lease so that only one replica reconciles.
    #[arg(long, env = "SIS_OPERATOR_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SIS_OPERATOR_LEASE_NAME", default_value = "sis-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    #[arg(long, env = "SIS_OPERATOR_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "SIS_OPERATOR_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,
    /// Seconds after which a leader that could not renew steps down (< lease duration).
    #[arg(long, env = "SIS_OPERATOR_RENEW_DEADLINE", default_value_t = 10)]
    renew_deadline: u64,
    /// Seconds between acquire/renew attempts.
    #[arg(long, env = "SIS_OPERATOR_RETRY_PERIOD", default_value_t = 2)]
    retry_period: u64,
    /// Log format.
    #[arg(long, env = "SIS_OPERATOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => match sis_operator::crd::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("sis-operator: rendering the CRD failed: {error}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run(args: RunArgs) -> ExitCode {
    init_tracing(&args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "starting the runtime failed");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(args));
    // Do not wait for stray blocking tasks (e.g. a forcefully stopped reconcile).
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

async fn serve(args: RunArgs) -> ExitCode {
    install_crypto_provider();
    if args.renew_deadline >= args.lease_duration {
        tracing::error!("--renew-deadline must be shorter than --lease-duration");
        return ExitCode::from(2);
    }
    let metrics = match Metrics::new() {
        Ok(m) => m,
        Err(error) => {
            tracing::error!(%error, "registering metrics failed");
            return ExitCode::FAILURE;
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "no Kubernetes client configuration (KUBECONFIG or in-cluster)");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_on_signal(shutdown.clone()));

    let health = Arc::new(Health::default());
    let listener = match tokio::net::TcpListener::bind(args.metrics_addr).await {
        Ok(l) => l,
        Err(error) => {
            tracing::error!(%error, addr = %args.metrics_addr, "binding the metrics address failed");
            return ExitCode::FAILURE;
        }
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!("metrics server listening on {local}");
    let app = http::router(HttpState {
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let http_shutdown = shutdown.clone();
    let http_server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
    });

    let identity = LeaseConfig::identity_from_env();
    let lease = args.leader_elect.then(|| LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args
            .lease_namespace
            .clone()
            .unwrap_or_else(LeaseConfig::namespace_from_env),
        identity: identity.clone(),
        lease_duration: Duration::from_secs(args.lease_duration),
        renew_deadline: Duration::from_secs(args.renew_deadline),
        retry_period: Duration::from_secs(args.retry_period.max(1)),
    });
    let config = RunConfig {
        defaults: Defaults {
            image: args.default_image.clone(),
        },
        watch_namespace: args.watch_namespace.clone(),
        lease,
        identity,
        versions: None,
    };
    let run = controller::run(client, config, metrics, health, shutdown.clone());
    let result = tokio::select! {
        result = run => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            // A controller whose watches never started (e.g. the CRD is not installed) may not
            // wind down on its own; leave before the kubelet's SIGKILL instead of hanging.
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "the controller did not stop in time; exiting");
            Ok(())
        }
    };
    shutdown.cancel();
    if let Ok(Err(error)) = http_server.await {
        tracing::warn!(%error, "metrics server failed");
    }
    match result {
        Ok(()) => {
            tracing::info!("shut down cleanly");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "the apiserver could not be reached");
            ExitCode::FAILURE
        }
    }
}

/// Make ring rustls' process-wide crypto provider before any TLS client exists. kube's client
/// asks rustls for the default provider; when the build enables more than one (the workspace
/// built as a whole: `sis` brings aws-lc-rs through object_store), rustls cannot choose and
/// panics. An already installed provider (a test harness) is kept.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Cancel `token` on SIGTERM or Ctrl-C.
async fn shutdown_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested");
    token.cancel();
}
