//! The reconcile loop: [`Context`], [`reconcile`], [`error_policy`], and [`run`] which wires
//! them to a kube-rs `Controller` behind leader election.
//!
//! A reconcile is a pipeline, one module per step:
//! [`validate`](crate::validate) (pure) → [`dereference`](crate::dereference) (reads the
//! Secrets' values into hashes) → [`build`](crate::build) (pure) → a storage-switch check →
//! [`apply`](crate::apply) (server-side apply) → [`status`](crate::status).
//! An invalid spec stops after `validate`, a volume ↔ S3 switch before `apply`, each with a
//! `Degraded` condition, and waits for the next change; a failing apply returns an [`Error`]
//! and is retried with exponential backoff.
//!
//! Besides SisClusters the controller watches what they own (workloads, Services, and the HPA
//! and budgets under the served versions) and Secrets (metadata only), mapping a Secret to the
//! SisClusters that name it.
//!
//! Children are tied to their SisCluster by a controller owner reference, so deleting it lets
//! the garbage collector remove them: no finalizer is needed. The server's PVC has no owner
//! and stays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::apply::{self, ApiVersions, Change};
use crate::build::{self, labels::MANAGED_BY};
use crate::crd::SisCluster;
use crate::dereference;
use crate::error::Error;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::metrics::Metrics;
use crate::status::{self, Outcome};
use crate::validate::{self, Defaults};

/// How often a healthy SisCluster is reconciled even without a change.
pub const RESYNC: Duration = Duration::from_secs(300);
/// First retry delay after a failure; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub defaults: Defaults,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per SisCluster (`namespace/name`), for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Served HPA and PodDisruptionBudget versions, discovered on first use.
    versions: tokio::sync::OnceCell<ApiVersions>,
}

impl Context {
    /// Context for a controller whose events name `instance` as the reporting instance.
    pub fn new(client: Client, defaults: Defaults, metrics: Metrics, instance: String) -> Context {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGED_BY.to_owned(),
                instance: Some(instance),
            },
        );
        Context {
            client,
            defaults,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            versions: tokio::sync::OnceCell::new(),
        }
    }

    async fn versions(&self) -> Result<&ApiVersions, Error> {
        self.versions
            .get_or_try_init(|| ApiVersions::discover(&self.client))
            .await
    }

    fn record_failure(&self, key: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    fn reset_failures(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    async fn publish(&self, cluster: &SisCluster, type_: EventType, reason: &str, note: String) {
        self.publish_related(cluster, type_, reason, note, None)
            .await;
    }

    /// Publish an event about `cluster`, optionally naming a child as the related object.
    /// (The recorder folds events with the same reason and related object into one series, so
    /// per-child events must name their child.)
    async fn publish_related(
        &self,
        cluster: &SisCluster,
        type_: EventType,
        reason: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate(note, 1000)),
            action: "Reconcile".to_owned(),
            secondary: related,
        };
        if let Err(error) = self
            .recorder
            .publish(&event, &cluster.object_ref(&()))
            .await
        {
            tracing::warn!(%error, reason, "publishing event failed");
        }
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn key(cluster: &SisCluster) -> String {
    format!(
        "{}/{}",
        cluster.namespace().unwrap_or_default(),
        cluster.name_any()
    )
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Bring one SisCluster's children and status in line with its spec.
///
/// # Errors
/// Any failure to read or write the apiserver; the controller retries via [`error_policy`].
pub async fn reconcile(cluster: Arc<SisCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.start_reconcile();
    let namespace = cluster
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    if cluster.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes the children; re-applying them would
        // only fight it.
        return Ok(Action::await_change());
    }
    let api: Api<SisCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    tracing::debug!(cluster = %key(&cluster), generation = ?cluster.metadata.generation, "reconciling");

    let validated = match validate::validate(&cluster, &ctx.defaults) {
        Ok(v) => v,
        Err(invalid) => {
            ctx.metrics.reconcile_failed("invalid_spec");
            let message = invalid.to_string();
            tracing::warn!(cluster = %key(&cluster), %message, "invalid spec");
            let new = status::compute(&cluster, &Outcome::InvalidSpec(message.clone()), &now());
            if status::write(&api, &cluster, &new).await? {
                ctx.publish(&cluster, EventType::Warning, "InvalidSpec", message)
                    .await;
            }
            ctx.reset_failures(&key(&cluster));
            return Ok(Action::await_change());
        }
    };

    let mut validated = validated;
    validated.secret_hashes =
        dereference::secret_hashes(&ctx.client, &namespace, &validated).await?;
    let children = build::build_children(&validated);
    if let Some(message) = apply::storage_switch(&ctx.client, &namespace, &children).await? {
        ctx.metrics.reconcile_failed("storage_switch");
        tracing::warn!(cluster = %key(&cluster), %message, "storage switch refused");
        let outcome = Outcome::Refused {
            reason: "StorageSwitchRefused",
            message: message.clone(),
        };
        let new = status::compute(&cluster, &outcome, &now());
        if status::write(&api, &cluster, &new).await? {
            ctx.publish(
                &cluster,
                EventType::Warning,
                "StorageSwitchRefused",
                message,
            )
            .await;
        }
        ctx.reset_failures(&key(&cluster));
        return Ok(Action::await_change());
    }
    let versions = ctx.versions().await?;
    let applied = match apply::apply_children(&ctx.client, &namespace, children, versions).await {
        Ok(applied) => applied,
        Err(error) => {
            let message = error.to_string();
            ctx.publish(&cluster, EventType::Warning, "ApplyFailed", message.clone())
                .await;
            let new = status::compute(&cluster, &Outcome::ApplyFailed(message), &now());
            if let Err(status_error) = status::write(&api, &cluster, &new).await {
                tracing::warn!(error = %status_error, "recording the failure in status failed");
            }
            return Err(error);
        }
    };
    for child in &applied.children {
        let (reason, verb) = match child.change {
            Change::Created => ("Created", "created"),
            Change::Updated => ("Updated", "updated"),
            Change::Deleted => ("Deleted", "deleted"),
            Change::Unchanged => continue,
        };
        tracing::info!(cluster = %key(&cluster), kind = child.kind, name = %child.name, "{verb}");
        ctx.publish_related(
            &cluster,
            EventType::Normal,
            reason,
            format!("{} {} {verb}", child.kind, child.name),
            Some(child.reference.clone()),
        )
        .await;
    }

    let outcome = Outcome::Applied {
        deployment: &applied.deployment,
        server: &applied.server,
        endpoint: build::endpoint_url(&validated),
        agent_selector: build::selector_string(&validated, build::labels::Component::Agent),
        warning: applied.warning.clone(),
    };
    let new = status::compute(&cluster, &outcome, &now());
    let was_ready = cluster
        .status
        .as_ref()
        .and_then(|s| status::condition(s, status::READY))
        .map(|c| c.status == "True");
    let wrote = status::write(&api, &cluster, &new).await?;
    if wrote {
        if let Some(warning) = &applied.warning {
            ctx.publish(
                &cluster,
                EventType::Warning,
                "StorageImmutable",
                warning.clone(),
            )
            .await;
        }
        let is_ready = status::condition(&new, status::READY).map(|c| c.status == "True");
        if is_ready == Some(true) && was_ready != Some(true) {
            ctx.publish(
                &cluster,
                EventType::Normal,
                "Ready",
                "all replicas are ready".to_owned(),
            )
            .await;
        }
    }
    ctx.reset_failures(&key(&cluster));
    Ok(Action::requeue(RESYNC))
}

/// Retry a failed reconcile after an exponential backoff (2 s, 4 s, … up to 5 min).
pub fn error_policy(cluster: Arc<SisCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(&error.metric_label());
    let failures = ctx.record_failure(&key(&cluster));
    let delay = backoff(failures);
    tracing::warn!(cluster = %key(&cluster), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

/// Settings of [`run`].
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub defaults: Defaults,
    /// Watch only this namespace (all namespaces when `None`).
    pub watch_namespace: Option<String>,
    /// Leader election; `None` runs the controller unconditionally (a single replica).
    pub lease: Option<LeaseConfig>,
    /// Identity used in events when leader election is off.
    pub identity: String,
    /// Served HPA/PodDisruptionBudget versions; [`run`] discovers them (leave `None`).
    pub versions: Option<ApiVersions>,
}

/// Flags the HTTP server reports.
#[derive(Debug, Default)]
pub struct Health {
    /// Set once the apiserver answered; `/readyz` is 200 from then on (leader or standby).
    pub ready: AtomicBool,
    /// Set while this replica runs the controller.
    pub leading: AtomicBool,
}

/// Run the controller until `shutdown` is cancelled, as leader if leader election is on.
///
/// # Errors
/// When the apiserver cannot be reached at start.
pub async fn run(
    client: Client,
    config: RunConfig,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(), kube::Error> {
    let version = client.apiserver_version().await?;
    tracing::info!(apiserver = %version.git_version, "connected to the apiserver");
    let versions = ApiVersions::from_groups(&client.list_api_groups().await?);
    tracing::info!(
        autoscaler = %versions.autoscaler.api_version,
        disruption_budget = %versions.disruption_budget.api_version,
        "served versions"
    );
    let config = RunConfig {
        versions: Some(versions),
        ..config
    };
    health.ready.store(true, Ordering::SeqCst);
    match config.lease.clone() {
        None => {
            set_leading(&metrics, &health, true);
            run_controller(client, &config, metrics.clone(), shutdown).await;
            set_leading(&metrics, &health, false);
            Ok(())
        }
        Some(lease) => {
            run_with_leader_election(client, &config, lease, metrics, health, shutdown).await;
            Ok(())
        }
    }
}

fn set_leading(metrics: &Metrics, health: &Health, leading: bool) {
    health.leading.store(leading, Ordering::SeqCst);
    metrics.leader.set(i64::from(leading));
}

async fn run_with_leader_election(
    client: Client,
    config: &RunConfig,
    lease: LeaseConfig,
    metrics: Metrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let retry = lease.retry_period;
    let renew_deadline = lease.renew_deadline;
    let mut elector = LeaderElector::new(client.clone(), lease);
    let identity = elector.config().identity.clone();
    tracing::info!(
        identity = %identity,
        lease = %format!("{}/{}", elector.config().namespace, elector.config().name),
        "waiting for leadership"
    );
    let mut config = config.clone();
    config.identity = identity.clone();
    while !shutdown.is_cancelled() {
        match elector.try_acquire_or_renew().await {
            Ok(true) => {}
            Ok(false) => {
                sleep_or_cancel(retry, &shutdown).await;
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "leader election: reading the Lease failed");
                sleep_or_cancel(retry, &shutdown).await;
                continue;
            }
        }
        tracing::info!(identity = %identity, "became leader; starting the controller");
        set_leading(&metrics, &health, true);
        let term = shutdown.child_token();
        let controller = tokio::spawn(run_controller(
            client.clone(),
            &config,
            metrics.clone(),
            term.clone(),
        ));
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            sleep_or_cancel(retry, &shutdown).await;
            if shutdown.is_cancelled() {
                break;
            }
            match elector.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; stopping the controller");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing the Lease failed");
                    if last_renewal.elapsed() >= renew_deadline {
                        tracing::error!(
                            "could not renew the Lease in time; stopping the controller"
                        );
                        break;
                    }
                }
            }
        }
        term.cancel();
        if let Err(error) = controller.await {
            tracing::error!(%error, "controller task failed");
        }
        set_leading(&metrics, &health, false);
        if shutdown.is_cancelled() {
            if let Err(error) = elector.release().await {
                tracing::warn!(%error, "releasing the Lease failed");
            } else {
                tracing::info!("released the Lease");
            }
        }
    }
}

async fn sleep_or_cancel(duration: Duration, token: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = token.cancelled() => {}
    }
}

/// The kube-rs Controller: watches SisClusters and the children they own; returns after
/// `stop` is cancelled and in-flight reconciles have finished.
fn run_controller(
    client: Client,
    config: &RunConfig,
    metrics: Metrics,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let (clusters, deployments, statefulsets, services) = match &config.watch_namespace {
        Some(ns) => (
            Api::<SisCluster>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<Service>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<SisCluster>::all(client.clone()),
            Api::<Deployment>::all(client.clone()),
            Api::<StatefulSet>::all(client.clone()),
            Api::<Service>::all(client.clone()),
        ),
    };
    // Only our children matter; the label keeps the watch caches small.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    let mut context = Context::new(
        client,
        config.defaults.clone(),
        metrics,
        config.identity.clone(),
    );
    if let Some(versions) = &config.versions {
        context.versions = tokio::sync::OnceCell::from(versions.clone());
    }
    let ctx = Arc::new(context);
    let secrets = match &config.watch_namespace {
        Some(ns) => Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), ns),
        None => Api::<PartialObjectMeta<Secret>>::all(ctx.client.clone()),
    };
    let controller = Controller::new(clusters, watcher::Config::default());
    let store = controller.store();
    // A Secret's new value must roll the pods that read it (dereference.rs): any change to a
    // Secret (metadata watch: no values cached here) reconciles the SisClusters naming it.
    let mut controller = controller
        .owns(deployments, owned.clone())
        .owns(statefulsets, owned.clone())
        .owns(services, owned.clone());
    // The HPA and the budgets too, under the served versions: a deleted or edited one is
    // restored at once rather than at the next resync.
    if let Some(versions) = &config.versions {
        for resource in [&versions.autoscaler, &versions.disruption_budget] {
            let api = match &config.watch_namespace {
                Some(ns) => Api::<DynamicObject>::namespaced_with(ctx.client.clone(), ns, resource),
                None => Api::<DynamicObject>::all_with(ctx.client.clone(), resource),
            };
            controller = controller.owns_with(api, resource.clone(), owned.clone());
        }
    }
    let controller = controller
        .watches(secrets, watcher::Config::default(), move |secret| {
            let namespace = secret.metadata.namespace.clone();
            let name = secret.metadata.name.clone().unwrap_or_default();
            store
                .state()
                .into_iter()
                .filter(|c| c.metadata.namespace == namespace && names_secret(c, &name))
                .map(|c| ObjectRef::from_obj(&*c))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx);
    async move {
        controller
            .for_each(|result| async move {
                match result {
                    Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                    Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                        tracing::debug!(object = %object, %error, "reconcile failed");
                    }
                    Err(error) => tracing::warn!(%error, "controller"),
                }
            })
            .await;
        tracing::info!("controller stopped");
    }
}

/// Whether the SisCluster's pods read the Secret `name` (API token, signing keys or S3 keys).
fn names_secret(cluster: &SisCluster, name: &str) -> bool {
    let spec = &cluster.spec;
    spec.api_token_secret
        .as_ref()
        .is_some_and(|s| s.name == name)
        || spec
            .variants
            .signing_key_secret
            .as_ref()
            .is_some_and(|s| s.name == name)
        || spec
            .server
            .storage
            .s3
            .as_ref()
            .and_then(|s3| s3.credentials_secret.as_ref())
            .is_some_and(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_that_reconcile_a_cluster() {
        let s3 = crate::fixtures::s3_sample();
        assert!(names_secret(&s3, "sis-token"));
        assert!(names_secret(&s3, "photos-s3"));
        assert!(!names_secret(&s3, "unrelated"));
        assert!(!names_secret(&crate::fixtures::sample(), "photos-s3"));
        assert!(names_secret(&crate::fixtures::sample(), "sis-sign"));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(2), Duration::from_secs(4));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), Duration::from_secs(300));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn long_event_notes_are_cut_on_a_char_boundary() {
        let s = "é".repeat(600);
        let t = truncate(s, 1000);
        assert!(t.len() <= 1000);
        assert!(t.chars().all(|c| c == 'é'));
    }
}
