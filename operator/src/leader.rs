//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one runs the controller (kube-rs has no stable helper for this).
//!
//! The algorithm is client-go's: a candidate takes the Lease when it is free, released
//! (`holderIdentity` empty) or expired, and the holder renews it every `retry_period`. Every
//! write is an update carrying the `resourceVersion` that was read, so two candidates racing
//! for the same Lease cannot both win: the loser gets `409 Conflict` and stays a follower.
//!
//! Expiry is judged on this process's monotonic clock, from when the current holder's record was
//! last seen to change, never by comparing the `renewTime` written by another machine's clock
//! with ours: clock skew between nodes cannot make two leaders.
//!
//! A leader that cannot renew for `renew_deadline` (shorter than `lease_duration`) steps down
//! before anyone else may take over. On shutdown the leader releases the Lease so a follower
//! takes over at once instead of after `lease_duration`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace (`POD_NAMESPACE`, else `default`).
    pub namespace: String,
    /// This replica's identity (`POD_NAME`, else `<hostname>-<pid>`).
    pub identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long steps down (must be < `lease_duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Identity from `POD_NAME`, falling back to `<hostname>-<pid>`.
    pub fn identity_from_env() -> String {
        std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id()))
    }

    /// Namespace from `POD_NAMESPACE`, falling back to `default`.
    pub fn namespace_from_env() -> String {
        std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_owned())
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "sis-operator".to_owned())
}

/// What a candidate should do with the Lease record it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it over.
    Acquire,
    /// Someone else holds a live Lease.
    Follow,
}

/// Decide from the Lease spec, given how long ago (on our clock) its current record was first
/// seen. Pure, so the rules are unit-tested.
pub fn decide(
    spec: &LeaseSpec,
    identity: &str,
    unchanged_for: Duration,
    default_duration: Duration,
) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::Acquire;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(default_duration);
    if unchanged_for >= duration {
        Decision::Acquire
    } else {
        Decision::Follow
    }
}

/// Identifies a Lease record: changes whenever the holder renews or changes.
type RecordKey = (Option<String>, Option<String>, Option<String>);

fn record_key(lease: &Lease) -> RecordKey {
    let spec = lease.spec.clone().unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0.to_string()),
        lease.metadata.resource_version.clone(),
    )
}

/// One replica's view of the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<(RecordKey, Instant)>,
}

impl LeaderElector {
    /// An elector for `config` (does not touch the apiserver yet).
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        let api = Api::namespaced(client, &config.namespace);
        LeaderElector {
            api,
            config,
            observed: None,
        }
    }

    /// Settings in use.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Try once to acquire or renew. `Ok(true)`: we are the leader until at least
    /// `renew_deadline` from now. `Ok(false)`: someone else is, or we lost a race.
    ///
    /// # Errors
    /// Errors from the apiserver other than the conflicts of a lost race.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let unchanged_for = self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let decision = decide(
            &spec,
            &self.config.identity,
            unchanged_for,
            self.config.lease_duration,
        );
        if decision == Decision::Follow {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if decision == Decision::Renew {
            LeaseSpec {
                renew_time: Some(now),
                lease_duration_seconds: Some(duration_secs),
                ..spec
            }
        } else {
            LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(transitions + 1),
                ..spec
            }
        };
        lease.spec = Some(new_spec);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the Lease up (if we hold it) so a follower can take over immediately.
    ///
    /// # Errors
    /// Errors from the apiserver.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remember when the record last changed; returns how long it has been unchanged.
    fn observe(&mut self, lease: &Lease) -> Duration {
        let key = record_key(lease);
        match &self.observed {
            Some((seen, at)) if *seen == key => at.elapsed(),
            _ => {
                self.observed = Some((key, Instant::now()));
                Duration::ZERO
            }
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, secs: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: secs,
            ..LeaseSpec::default()
        }
    }

    const D: Duration = Duration::from_secs(15);

    #[test]
    fn holder_renews() {
        assert_eq!(
            decide(
                &spec(Some("me"), Some(15)),
                "me",
                Duration::from_secs(99),
                D
            ),
            Decision::Renew
        );
    }

    #[test]
    fn free_or_released_lease_is_acquired() {
        assert_eq!(
            decide(&spec(None, None), "me", Duration::ZERO, D),
            Decision::Acquire
        );
        assert_eq!(
            decide(&spec(Some(""), Some(1)), "me", Duration::ZERO, D),
            Decision::Acquire
        );
    }

    #[test]
    fn live_lease_of_another_is_followed_until_it_expires_on_our_clock() {
        let s = spec(Some("other"), Some(10));
        assert_eq!(
            decide(&s, "me", Duration::from_secs(9), D),
            Decision::Follow
        );
        assert_eq!(
            decide(&s, "me", Duration::from_secs(10), D),
            Decision::Acquire
        );
        let no_duration = spec(Some("other"), None);
        assert_eq!(
            decide(&no_duration, "me", Duration::from_secs(14), D),
            Decision::Follow
        );
    }

    #[test]
    fn identity_falls_back_to_host_and_pid() {
        let id = LeaseConfig::identity_from_env();
        if std::env::var("POD_NAME").is_err() {
            assert!(id.ends_with(&format!("-{}", std::process::id())), "{id}");
        }
    }
}
