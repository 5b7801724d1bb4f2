//! `sis-operator`: a Kubernetes operator for sis (`SisCluster`, `sis.dev/v1alpha1`).
//!
//! # Layout
//! - [`crd`] — the custom resource: spec, status, generated CRD (`sis-operator crd`).
//! - [`controller`] — `Context`, `reconcile`, `error_policy`, and `run` (leader election +
//!   kube-rs `Controller`). A reconcile is a pipeline of the modules below:
//!   - [`validate`] — spec → `ValidatedCluster`, defaults applied (pure);
//!   - [`dereference`] — hashes of the Secret values the pods read (client, read-only);
//!   - [`build`] — `ValidatedCluster` → workloads, Services, HPA, PodDisruptionBudgets (pure);
//!   - [`apply`] — server-side apply with field manager `sis-operator`;
//!   - [`status`] — conditions, phase, replica counts (pure) and the status write.
//! - [`leader`] — Lease-based leader election.
//! - [`metrics`] — every metric; [`http`] — `/metrics`, `/healthz`, `/readyz`.
//! - [`bytesize`] — Kubernetes quantities → `sis --cache-size` values.
//! - [`error`] — the controller's error enum (variants double as metric labels).
//!
//! # What a SisCluster `<name>` in namespace `<ns>` creates
//! - with a volume (`spec.server.storage.size`, the default): StatefulSet `<name>-server`
//!   (1 replica, `sis server --listen 0.0.0.0:3333 --data-dir /data --cache-size
//!   <server.cacheSize>`, volume claim template `data` mounted at `/data`) and the headless
//!   Service `<name>-server` (port 3333);
//! - with S3 (`spec.server.storage.s3`): Deployment `<name>-server` (`spec.server.replicas`,
//!   default 2, `sis server --storage s3://BUCKET[/PREFIX] [--s3-endpoint URL] [--s3-region R]
//!   [--s3-path-style]`, keys from a Secret, no PVC), a ClusterIP Service `<name>-server` and a
//!   PodDisruptionBudget `<name>-server`; switching an existing cluster between the two is
//!   refused (`Degraded/StorageSwitchRefused`, nothing deleted);
//! - Deployment `<name>-agent` (`sis agent --listen 0.0.0.0:3333 --upstream
//!   http://<name>-server.<ns>.svc:3333 --cache-size <agent.cacheSize>`), Service
//!   `<name>-agent` (`agent.service.type`, port `agent.service.port` → 3333), a
//!   PodDisruptionBudget `<name>-agent` and, with `agent.autoscaling`, a HorizontalPodAutoscaler
//!   `<name>-agent` (then the Deployment's replicas are the HPA's).
//!
//! The agents reach the server tier through its Service name, which works whatever the cluster
//! domain is. The CRD's scale subresource scales the agents (`kubectl scale sis/<name>`).
//!
//! Every child has a controller owner reference, so deleting the SisCluster deletes them (garbage
//! collection). The PVC `data-<name>-server-0` is created by the StatefulSet controller and has
//! no owner: **it is kept** — data is never deleted implicitly; delete the PVC by hand to free it.
//!
//! # Supported Kubernetes versions
//! 1.20 and later. The operator uses `apps/v1`, `coordination.k8s.io/v1` Leases,
//! `events.k8s.io/v1` Events and `apiextensions.k8s.io/v1` CRDs with structural schemas and
//! defaults (all GA by 1.19/1.20), the HPA and PodDisruptionBudget under the version the
//! cluster serves (`autoscaling/v2` / `policy/v1`, or `v2beta2` / `v1beta1` on 1.20, found by
//! discovery), and sends only fields 1.20 knows, because server-side apply on
//! 1.20 rejects unknown fields. It is tested against a real kube-apiserver and
//! kube-controller-manager 1.20.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod apply;
pub mod build;
pub mod bytesize;
pub mod controller;
pub mod crd;
pub mod dereference;
pub mod error;
#[cfg(test)]
pub mod fixtures;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod validate;

pub use crd::{SisCluster, SisClusterSpec, SisClusterStatus};
pub use error::Error;
