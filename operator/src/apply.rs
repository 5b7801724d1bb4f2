//! Step 3 of a reconcile: send the built children to the apiserver with server-side apply.
//!
//! Field manager `sis-operator`, `force` (the operator owns these fields; a `kubectl edit` of
//! them is undone on the next reconcile). A field the builders stop sending is removed by the
//! apiserver, so removing e.g. `resources` from the spec removes it from the pods.
//!
//! Each child is read first, which tells created from updated (for events) and lets the
//! StatefulSet keep its immutable `volumeClaimTemplates`.
//!
//! Version-dependent kinds (the HPA, the PodDisruptionBudgets) are sent as dynamic objects
//! under the version the apiserver serves ([`ApiVersions`], found by discovery once per
//! process): `autoscaling/v2` and `policy/v1` where served, else `autoscaling/v2beta2` and
//! `policy/v1beta1` (Kubernetes 1.20). Optional children that the spec no longer asks for are
//! deleted — only ones carrying our `managed-by` label and owned by this SisCluster.
//!
//! Turning autoscaling on hands `spec.replicas` of the agent Deployment over instead of just
//! dropping it: a field its only applier stops sending is removed and defaults to 1, which would
//! scale the agents down to one pod before the HPA scales them up again. So the current count is
//! first applied by a separate field manager ([`HANDOVER_MANAGER`]), then the operator's apply
//! leaves the field out and the HPA's writes take it over.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIGroupList;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::build::labels::MANAGED_BY;
use crate::build::statefulset::keep_existing_claims;
use crate::build::{Children, ServerWorkload};
use crate::error::Error;

/// Field manager that holds the agent Deployment's `spec.replicas` while an HPA takes over.
pub const HANDOVER_MANAGER: &str = "sis-operator-handover";

/// Served versions of the kinds that moved between 1.20 and today.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiVersions {
    /// `autoscaling/v2` or `autoscaling/v2beta2`.
    pub autoscaler: ApiResource,
    /// `policy/v1` or `policy/v1beta1`.
    pub disruption_budget: ApiResource,
}

fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: format!("{group}/{version}"),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    }
}

impl ApiVersions {
    /// Pick the versions from the apiserver's group list (`GET /apis`): the GA version when
    /// served, the 1.20 beta otherwise.
    pub fn from_groups(groups: &APIGroupList) -> ApiVersions {
        let serves = |group: &str, version: &str| {
            groups
                .groups
                .iter()
                .any(|g| g.name == group && g.versions.iter().any(|v| v.version == version))
        };
        let autoscaling = if serves("autoscaling", "v2") {
            "v2"
        } else {
            "v2beta2"
        };
        let policy = if serves("policy", "v1") {
            "v1"
        } else {
            "v1beta1"
        };
        ApiVersions {
            autoscaler: api_resource(
                "autoscaling",
                autoscaling,
                "HorizontalPodAutoscaler",
                "horizontalpodautoscalers",
            ),
            disruption_budget: api_resource(
                "policy",
                policy,
                "PodDisruptionBudget",
                "poddisruptionbudgets",
            ),
        }
    }

    /// Ask the apiserver.
    ///
    /// # Errors
    /// [`Error::Discovery`] when `GET /apis` fails.
    pub async fn discover(client: &Client) -> Result<ApiVersions, Error> {
        let groups = client
            .list_api_groups()
            .await
            .map_err(|source| Error::Discovery { source })?;
        Ok(ApiVersions::from_groups(&groups))
    }
}

/// What applying one child did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
    /// An optional child (HPA, budget) the spec no longer asks for.
    Deleted,
}

/// One applied child.
#[derive(Clone, Debug)]
pub struct AppliedChild {
    pub kind: &'static str,
    pub name: String,
    pub change: Change,
    /// Reference to the child (the `related` object of its events).
    pub reference: ObjectReference,
}

/// Result of applying every child.
#[derive(Clone, Debug)]
pub struct Applied {
    pub deployment: Deployment,
    pub server: ServerWorkload,
    pub children: Vec<AppliedChild>,
    /// Why part of the spec was not applied (storage of an existing StatefulSet).
    pub warning: Option<String>,
}

/// Whether the server tier's existing workload has the other kind than the spec asks for
/// (volume ↔ S3). Returns the refusal message; nothing is applied or deleted then: the data of
/// the old tier (a PVC or a bucket) is not reachable from the new one, and switching silently
/// would serve an empty store.
///
/// # Errors
/// [`Error::Fetch`] when reading the existing workloads fails.
pub async fn storage_switch(
    client: &Client,
    namespace: &str,
    children: &Children,
) -> Result<Option<String>, Error> {
    let (name, wanted) = match &children.server {
        ServerWorkload::StatefulSet(s) => (s.name_any(), "a volume (StatefulSet)"),
        ServerWorkload::Deployment(d) => (d.name_any(), "S3 (Deployment)"),
    };
    let other_kind = match &children.server {
        ServerWorkload::StatefulSet(_) => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            get(&api, "Deployment", &name).await?.map(|_| "Deployment")
        }
        ServerWorkload::Deployment(_) => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            get(&api, "StatefulSet", &name)
                .await?
                .map(|_| "StatefulSet")
        }
    };
    Ok(other_kind.map(|kind| {
        format!(
            "spec.server.storage asks for {wanted} but the server tier is {kind} {name}: switching storage on a live cluster is refused and nothing was changed or deleted. Copy the images with `sis migrate`, then delete {kind} {name} yourself (a volume's PVC is kept) to let the operator create the new tier, or revert spec.server.storage"
        )
    }))
}

/// Apply all children of one SisCluster in `namespace`: the server tier first, so the agents'
/// upstream exists before they start; then the agents, their Service, and the optional
/// HPA and budgets (created, updated or deleted).
///
/// # Errors
/// [`Error::Fetch`] / [`Error::Apply`] / [`Error::Delete`] naming the child that failed.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: Children,
    versions: &ApiVersions,
) -> Result<Applied, Error> {
    let Children {
        server,
        server_service,
        agent_deployment,
        agent_service,
        agent_autoscaler,
        agent_disruption_budget,
        server_disruption_budget,
    } = children;
    let mut applied = Vec::new();

    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    replace_if_headless_changed(&services, &server_service).await?;
    applied.push(apply(&services, "Service", &server_service, None).await?.1);

    let mut warning = None;
    let server = match server {
        ServerWorkload::StatefulSet(mut desired) => {
            let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            let existing = get(&statefulsets, "StatefulSet", &desired.name_any()).await?;
            if let Some(existing) = &existing {
                warning = keep_existing_claims(&mut desired, existing);
            }
            let (statefulset, change) =
                apply(&statefulsets, "StatefulSet", &desired, Some(existing)).await?;
            applied.push(change);
            ServerWorkload::StatefulSet(statefulset)
        }
        ServerWorkload::Deployment(desired) => {
            let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let (deployment, change) = apply(&deployments, "Deployment", &desired, None).await?;
            applied.push(change);
            ServerWorkload::Deployment(deployment)
        }
    };

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = agent_deployment.name_any();
    let existing = get(&deployments, "Deployment", &name).await?;
    let hpa_owns_replicas = agent_deployment
        .spec
        .as_ref()
        .is_some_and(|s| s.replicas.is_none());
    if hpa_owns_replicas && let Some(existing) = &existing {
        hand_over_replicas(&deployments, existing).await?;
    }
    let (deployment, change) = apply(
        &deployments,
        "Deployment",
        &agent_deployment,
        Some(existing),
    )
    .await?;
    applied.push(change);

    applied.push(apply(&services, "Service", &agent_service, None).await?.1);

    // The HPA and the agents' budget are named like the agent Deployment.
    let hpa_name = name;
    let autoscalers: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &versions.autoscaler);
    applied.extend(
        apply_or_delete(
            &autoscalers,
            &versions.autoscaler,
            &hpa_name,
            agent_autoscaler.as_ref(),
        )
        .await?,
    );
    let budgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &versions.disruption_budget);
    let server_name = match &server {
        ServerWorkload::StatefulSet(s) => s.name_any(),
        ServerWorkload::Deployment(d) => d.name_any(),
    };
    for (name, budget) in [
        (&hpa_name, agent_disruption_budget.as_ref()),
        (&server_name, server_disruption_budget.as_ref()),
    ] {
        applied.extend(apply_or_delete(&budgets, &versions.disruption_budget, name, budget).await?);
    }

    Ok(Applied {
        deployment,
        server,
        children: applied,
        warning,
    })
}

/// `clusterIP` is immutable, so a server Service that must change between headless (volume)
/// and load-balancing (S3) is deleted first and re-created by the apply that follows. A
/// Service holds no data.
async fn replace_if_headless_changed(api: &Api<Service>, desired: &Service) -> Result<(), Error> {
    let name = desired.name_any();
    let Some(existing) = get(api, "Service", &name).await? else {
        return Ok(());
    };
    let headless =
        |s: &Service| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless(&existing) == headless(desired) || !ours(existing.labels()) {
        return Ok(());
    }
    api.delete(&name, &DeleteParams::default())
        .await
        .map_err(|source| Error::Delete {
            kind: "Service",
            name: name.clone(),
            source,
        })?;
    Ok(())
}

fn ours(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels
        .get("app.kubernetes.io/managed-by")
        .map(String::as_str)
        == Some(MANAGED_BY)
}

/// Whether `manager`'s apply owns `spec.replicas` of `deployment`.
pub fn applies_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(manager) && m.operation.as_deref() == Some("Apply")
        })
        .any(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
}

/// Give the current replica count to [`HANDOVER_MANAGER`] before the operator stops sending it
/// (see the module docs). Only while the operator still owns the field.
async fn hand_over_replicas(api: &Api<Deployment>, existing: &Deployment) -> Result<(), Error> {
    if !applies_replicas(existing, MANAGED_BY) {
        return Ok(());
    }
    let name = existing.name_any();
    let replicas = existing.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let patch = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": existing.namespace()},
        "spec": {"replicas": replicas},
    });
    api.patch(
        &name,
        &PatchParams::apply(HANDOVER_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Deployment",
        name,
        source,
    })?;
    Ok(())
}

/// Apply `desired` (serialized, with the served `apiVersion`) or, when `None`, delete our
/// object of that name if there is one.
async fn apply_or_delete<T: Serialize>(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    name: &str,
    desired: Option<&T>,
) -> Result<Option<AppliedChild>, Error> {
    let kind = static_kind(&resource.kind);
    let fetch_error = |source| Error::Fetch {
        kind,
        name: name.to_owned(),
        source,
    };
    let before = api.get_opt(name).await.map_err(fetch_error)?;
    let Some(desired) = desired else {
        let Some(existing) = before else {
            return Ok(None);
        };
        if !ours(existing.labels()) {
            return Ok(None);
        }
        api.delete(name, &DeleteParams::default())
            .await
            .map_err(|source| Error::Delete {
                kind,
                name: name.to_owned(),
                source,
            })?;
        return Ok(Some(AppliedChild {
            kind,
            name: name.to_owned(),
            change: Change::Deleted,
            reference: existing.object_ref(resource),
        }));
    };
    let mut value = serde_json::to_value(desired).map_err(|e| Error::Serialize {
        kind,
        message: e.to_string(),
    })?;
    value["apiVersion"] = json!(resource.api_version);
    let params = PatchParams::apply(MANAGED_BY).force();
    let after = api
        .patch(name, &params, &Patch::Apply(&value))
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: name.to_owned(),
            source,
        })?;
    let change = change_of(before.as_ref(), &after);
    Ok(Some(AppliedChild {
        kind,
        name: name.to_owned(),
        change,
        reference: after.object_ref(resource),
    }))
}

fn static_kind(kind: &str) -> &'static str {
    match kind {
        "HorizontalPodAutoscaler" => "HorizontalPodAutoscaler",
        "PodDisruptionBudget" => "PodDisruptionBudget",
        _ => "object",
    }
}

/// Created, updated or unchanged: workloads bump `generation` on spec changes only; objects
/// without one are compared by `resourceVersion`, which only moves when something changed.
fn change_of<K: Resource>(before: Option<&K>, after: &K) -> Change {
    match before {
        None => Change::Created,
        Some(before) if before.meta().generation.is_some() => {
            if before.meta().generation == after.meta().generation {
                Change::Unchanged
            } else {
                Change::Updated
            }
        }
        Some(before) => {
            if before.meta().resource_version == after.meta().resource_version {
                Change::Unchanged
            } else {
                Change::Updated
            }
        }
    }
}

async fn get<K>(api: &Api<K>, kind: &'static str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name).await.map_err(|source| Error::Fetch {
        kind,
        name: name.to_owned(),
        source,
    })
}

/// Server-side apply one object; `existing` is the object read before, if the caller already
/// has it.
async fn apply<K>(
    api: &Api<K>,
    kind: &'static str,
    object: &K,
    existing: Option<Option<K>>,
) -> Result<(K, AppliedChild), Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let name = object.name_any();
    let before = match existing {
        Some(existing) => existing,
        None => get(api, kind, &name).await?,
    };
    let params = PatchParams::apply(MANAGED_BY).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| Error::Apply {
            kind,
            name: name.clone(),
            source,
        })?;
    let change = change_of(before.as_ref(), &after);
    let reference = after.object_ref(&());
    Ok((
        after,
        AppliedChild {
            kind,
            name,
            change,
            reference,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        APIGroup, GroupVersionForDiscovery, ManagedFieldsEntry,
    };

    fn groups(list: &[(&str, &[&str])]) -> APIGroupList {
        APIGroupList {
            groups: list
                .iter()
                .map(|(name, versions)| APIGroup {
                    name: (*name).to_owned(),
                    versions: versions
                        .iter()
                        .map(|v| GroupVersionForDiscovery {
                            group_version: format!("{name}/{v}"),
                            version: (*v).to_owned(),
                        })
                        .collect(),
                    ..APIGroup::default()
                })
                .collect(),
        }
    }

    #[test]
    fn ga_versions_where_served_betas_on_1_20() {
        let new = ApiVersions::from_groups(&groups(&[
            ("autoscaling", &["v2", "v1"]),
            ("policy", &["v1"]),
        ]));
        assert_eq!(new.autoscaler.api_version, "autoscaling/v2");
        assert_eq!(new.disruption_budget.api_version, "policy/v1");
        // What kube-apiserver 1.20 serves.
        let old = ApiVersions::from_groups(&groups(&[
            ("autoscaling", &["v1", "v2beta1", "v2beta2"]),
            ("policy", &["v1beta1"]),
        ]));
        assert_eq!(old.autoscaler.api_version, "autoscaling/v2beta2");
        assert_eq!(old.autoscaler.plural, "horizontalpodautoscalers");
        assert_eq!(old.disruption_budget.api_version, "policy/v1beta1");
        assert_eq!(old.disruption_budget.kind, "PodDisruptionBudget");
    }

    #[test]
    fn replicas_ownership_is_read_from_managed_fields() {
        let entry = |manager: &str, fields: serde_json::Value| ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some("Apply".to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        };
        let mut d = Deployment::default();
        d.metadata.managed_fields = Some(vec![
            entry(
                "sis-operator",
                json!({"f:spec": {"f:replicas": {}, "f:template": {}}}),
            ),
            entry(HANDOVER_MANAGER, json!({"f:spec": {}})),
        ]);
        assert!(applies_replicas(&d, MANAGED_BY));
        assert!(!applies_replicas(&d, HANDOVER_MANAGER));
        d.metadata.managed_fields = Some(vec![entry(
            "sis-operator",
            json!({"f:spec": {"f:template": {}}}),
        )]);
        assert!(!applies_replicas(&d, MANAGED_BY));
    }
}
