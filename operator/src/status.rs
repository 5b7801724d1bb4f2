//! Last step of a reconcile: what happened → `SisClusterStatus` (pure), and writing it.
//!
//! [`compute`] derives the status from the outcome of the reconcile and the children's own
//! status (which the controller-manager maintains from the pods). Conditions keep their
//! `lastTransitionTime` while their status does not change, so an unchanged cluster produces an
//! identical status and [`write`] sends nothing: status writes trigger reconciles, and this is
//! what keeps the loop from spinning.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::build::ServerWorkload;
use crate::crd::{ReplicaStatus, SisCluster, SisClusterStatus};
use crate::error::Error;

/// Condition types.
pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Phases (the printer column summarizing the conditions).
pub const PHASE_RUNNING: &str = "Running";
pub const PHASE_PROGRESSING: &str = "Progressing";
pub const PHASE_DEGRADED: &str = "Degraded";

/// How the reconcile went.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// The spec failed validation; nothing was applied.
    InvalidSpec(String),
    /// Applying the children failed (it will be retried).
    ApplyFailed(String),
    /// Nothing was applied on purpose (a storage switch); `reason` names why.
    Refused {
        reason: &'static str,
        message: String,
    },
    /// Every child was applied; these are the workloads as the apiserver returned them.
    Applied {
        deployment: &'a Deployment,
        server: &'a ServerWorkload,
        endpoint: String,
        /// The agents' label selector as a string (for the scale subresource).
        agent_selector: String,
        /// Set when part of the spec could not be honoured (storage of an existing server).
        warning: Option<String>,
    },
}

/// Rollout state of one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rollout {
    desired: i32,
    ready: i32,
    /// All pods run the current template and the controller has seen the current spec.
    updated: bool,
}

impl Rollout {
    fn of_deployment(d: &Deployment) -> Rollout {
        let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = d.status.clone().unwrap_or_default();
        let seen = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let updated_replicas = status.updated_replicas.unwrap_or(0);
        let total = status.replicas.unwrap_or(0);
        Rollout {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated: seen && updated_replicas >= desired && total <= updated_replicas,
        }
    }

    fn of_statefulset(s: &StatefulSet) -> Rollout {
        let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let status = s.status.clone().unwrap_or_default();
        let seen = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
        let revisions_match = match (&status.current_revision, &status.update_revision) {
            (Some(current), Some(update)) => current == update,
            _ => false,
        };
        let updated = seen && (revisions_match || status.updated_replicas.unwrap_or(0) >= desired);
        Rollout {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated,
        }
    }

    fn done(&self) -> bool {
        self.updated && self.ready >= self.desired
    }
}

/// The status after a reconcile with `outcome`, given the status the object had before.
pub fn compute(cluster: &SisCluster, outcome: &Outcome<'_>, now: &Time) -> SisClusterStatus {
    let previous = cluster.status.clone().unwrap_or_default();
    let generation = cluster.metadata.generation;
    let mut status = SisClusterStatus {
        observed_generation: generation,
        conditions: previous.conditions.clone(),
        ..previous.clone()
    };
    let mut set = |type_: &str, ok: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            Condition {
                type_: type_.to_owned(),
                status: if ok { "True" } else { "False" }.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time: now.clone(),
            },
        );
    };
    let phase = match outcome {
        Outcome::InvalidSpec(message) => {
            set(
                READY,
                false,
                "InvalidSpec",
                "the spec is invalid, see Degraded".to_owned(),
            );
            set(
                PROGRESSING,
                false,
                "InvalidSpec",
                "waiting for a valid spec".to_owned(),
            );
            set(DEGRADED, true, "InvalidSpec", message.clone());
            PHASE_DEGRADED
        }
        Outcome::ApplyFailed(message) => {
            set(
                READY,
                false,
                "ApplyFailed",
                "applying the children failed, see Degraded".to_owned(),
            );
            set(
                PROGRESSING,
                false,
                "ApplyFailed",
                "retrying with backoff".to_owned(),
            );
            set(DEGRADED, true, "ApplyFailed", message.clone());
            PHASE_DEGRADED
        }
        Outcome::Refused { reason, message } => {
            set(
                READY,
                false,
                reason,
                "the spec was refused, see Degraded".to_owned(),
            );
            set(
                PROGRESSING,
                false,
                reason,
                "waiting for a spec the operator can apply".to_owned(),
            );
            set(DEGRADED, true, reason, message.clone());
            PHASE_DEGRADED
        }
        Outcome::Applied {
            deployment,
            server,
            endpoint,
            agent_selector,
            warning,
        } => {
            let agents = Rollout::of_deployment(deployment);
            let server = match server {
                ServerWorkload::StatefulSet(s) => Rollout::of_statefulset(s),
                ServerWorkload::Deployment(d) => Rollout::of_deployment(d),
            };
            status.endpoint = Some(endpoint.clone());
            status.agent = Some(ReplicaStatus {
                replicas: agents.desired,
                ready_replicas: agents.ready,
                selector: Some(agent_selector.clone()),
            });
            status.server = Some(ReplicaStatus {
                replicas: server.desired,
                ready_replicas: server.ready,
                selector: None,
            });
            let counts = format!(
                "agents {}/{} ready, server {}/{} ready",
                agents.ready, agents.desired, server.ready, server.desired
            );
            let ready = agents.done() && server.done();
            let (ready_reason, progressing_reason) = if ready {
                ("AllReplicasReady", "RolloutComplete")
            } else if !server.updated || !agents.updated {
                ("RollingOut", "RollingOut")
            } else if server.ready < server.desired {
                ("ServerNotReady", "WaitingForPods")
            } else {
                ("AgentsNotReady", "WaitingForPods")
            };
            set(READY, ready, ready_reason, counts.clone());
            set(PROGRESSING, !ready, progressing_reason, counts);
            match warning {
                Some(message) => set(DEGRADED, true, "StorageImmutable", message.clone()),
                None => set(
                    DEGRADED,
                    false,
                    "AsExpected",
                    "all children applied".to_owned(),
                ),
            }
            if warning.is_some() {
                PHASE_DEGRADED
            } else if ready {
                PHASE_RUNNING
            } else {
                PHASE_PROGRESSING
            }
        }
    };
    status.phase = Some(phase.to_owned());
    status
}

/// Replace or add a condition, keeping `lastTransitionTime` when its status did not change.
fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
    let order = |t: &str| [READY, PROGRESSING, DEGRADED].iter().position(|x| *x == t);
    conditions.sort_by_key(|c| order(&c.type_));
}

/// Write `status` unless it equals what the object already has. Returns whether it wrote.
///
/// # Errors
/// [`Error::Status`] when the patch fails.
pub async fn write(
    api: &Api<SisCluster>,
    cluster: &SisCluster,
    status: &SisClusterStatus,
) -> Result<bool, Error> {
    if cluster.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    // A merge patch replaces `conditions` as a whole, which is what we want.
    let patch = json!({ "status": status });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|source| Error::Status { name, source })?;
    Ok(true)
}

/// The condition of `type_`, if present.
pub fn condition<'a>(status: &'a SisClusterStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::jiff::Timestamp;

    fn time(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn deployment(replicas: i32, ready: i32, updated: i32) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(updated),
                updated_replicas: Some(updated),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
        }
    }

    fn statefulset(ready: i32) -> ServerWorkload {
        ServerWorkload::StatefulSet(StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                ready_replicas: Some(ready),
                current_revision: Some("r1".into()),
                update_revision: Some("r1".into()),
                ..Default::default()
            }),
        })
    }

    fn applied<'a>(d: &'a Deployment, s: &'a ServerWorkload) -> Outcome<'a> {
        Outcome::Applied {
            deployment: d,
            server: s,
            endpoint: "http://photos-agent.media.svc:80".into(),
            agent_selector: "app.kubernetes.io/component=agent".into(),
            warning: None,
        }
    }

    #[test]
    fn all_ready_means_running() {
        let cluster = fixtures::sample();
        let (d, s) = (deployment(3, 3, 3), statefulset(1));
        let status = compute(&cluster, &applied(&d, &s), &time(100));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.agent,
            Some(ReplicaStatus {
                replicas: 3,
                ready_replicas: 3,
                selector: Some("app.kubernetes.io/component=agent".into())
            })
        );
        assert_eq!(
            status.server,
            Some(ReplicaStatus {
                replicas: 1,
                ready_replicas: 1,
                selector: None
            })
        );
        let ready = condition(&status, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AllReplicasReady")
        );
        assert_eq!(condition(&status, PROGRESSING).unwrap().status, "False");
        assert_eq!(condition(&status, DEGRADED).unwrap().status, "False");
        let types: Vec<_> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Progressing", "Degraded"]);
    }

    #[test]
    fn waiting_for_pods_is_progressing() {
        let cluster = fixtures::sample();
        let (d, s) = (deployment(3, 1, 3), statefulset(1));
        let status = compute(&cluster, &applied(&d, &s), &time(100));
        assert_eq!(status.phase.as_deref(), Some("Progressing"));
        let ready = condition(&status, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "AgentsNotReady")
        );
        assert_eq!(ready.message, "agents 1/3 ready, server 1/1 ready");
        let (d, s) = (deployment(3, 3, 2), statefulset(1));
        let status = compute(&cluster, &applied(&d, &s), &time(100));
        assert_eq!(
            condition(&status, PROGRESSING).unwrap().reason,
            "RollingOut"
        );
    }

    #[test]
    fn transition_time_only_moves_on_transitions() {
        let mut cluster = fixtures::sample();
        let (d, s) = (deployment(3, 1, 3), statefulset(0));
        let first = compute(&cluster, &applied(&d, &s), &time(100));
        cluster.status = Some(first.clone());
        let again = compute(&cluster, &applied(&d, &s), &time(200));
        assert_eq!(first, again, "same inputs, same status: nothing to write");
        let (d, s) = (deployment(3, 3, 3), statefulset(1));
        let ready = compute(&cluster, &applied(&d, &s), &time(300));
        assert_eq!(
            condition(&ready, READY).unwrap().last_transition_time,
            time(300)
        );
        assert_eq!(
            condition(&ready, DEGRADED).unwrap().last_transition_time,
            time(100)
        );
    }

    #[test]
    fn invalid_spec_is_degraded_and_keeps_counts() {
        let mut cluster = fixtures::sample();
        let (d, s) = (deployment(3, 3, 3), statefulset(1));
        cluster.status = Some(compute(&cluster, &applied(&d, &s), &time(100)));
        let status = compute(
            &cluster,
            &Outcome::InvalidSpec("spec.agent.replicas must be >= 0, got -1".into()),
            &time(200),
        );
        assert_eq!(status.phase.as_deref(), Some("Degraded"));
        let degraded = condition(&status, DEGRADED).unwrap();
        assert_eq!(degraded.status, "True");
        assert_eq!(degraded.reason, "InvalidSpec");
        assert!(degraded.message.contains("replicas"));
        assert_eq!(status.agent.unwrap().ready_replicas, 3);
    }

    #[test]
    fn storage_warning_is_degraded() {
        let cluster = fixtures::sample();
        let (d, s) = (deployment(3, 3, 3), statefulset(1));
        let outcome = Outcome::Applied {
            deployment: &d,
            server: &s,
            endpoint: "e".into(),
            agent_selector: String::new(),
            warning: Some("storage cannot change".into()),
        };
        let status = compute(&cluster, &outcome, &time(1));
        assert_eq!(status.phase.as_deref(), Some("Degraded"));
        assert_eq!(
            condition(&status, DEGRADED).unwrap().reason,
            "StorageImmutable"
        );
        assert_eq!(condition(&status, READY).unwrap().status, "True");
    }
}
