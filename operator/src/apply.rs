//! Step 3 of a reconcile: send the built children to the apiserver with server-side apply.
//!
//! Field manager `sis-operator`, `force` (the operator owns these fields; a `kubectl edit` of
//! them is undone on the next reconcile). A field the builders stop sending is removed by the
//! apiserver, so removing e.g. `resources` from the spec removes it from the pods.
//!
//! Each child is read first, which tells created from updated (for events) and lets the
//! StatefulSet keep its immutable `volumeClaimTemplates`.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::build::Children;
use crate::build::labels::MANAGED_BY;
use crate::build::statefulset::keep_existing_claims;
use crate::error::Error;

/// What applying one child did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
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
    pub statefulset: StatefulSet,
    pub children: Vec<AppliedChild>,
    /// Why part of the spec was not applied (storage of an existing StatefulSet).
    pub warning: Option<String>,
}

/// Apply all children of one SisCluster in `namespace`: the server first, so the agents'
/// upstream exists before they start.
///
/// # Errors
/// [`Error::Fetch`] / [`Error::Apply`] naming the child that failed.
pub async fn apply_children(
    client: &Client,
    namespace: &str,
    children: Children,
) -> Result<Applied, Error> {
    let Children {
        mut server_statefulset,
        server_service,
        agent_deployment,
        agent_service,
    } = children;
    let mut applied = Vec::new();

    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    applied.push(apply(&services, "Service", &server_service, None).await?.1);

    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let mut warning = None;
    let existing = get(&statefulsets, "StatefulSet", &server_statefulset.name_any()).await?;
    if let Some(existing) = &existing {
        warning = keep_existing_claims(&mut server_statefulset, existing);
    }
    let (statefulset, change) = apply(
        &statefulsets,
        "StatefulSet",
        &server_statefulset,
        Some(existing),
    )
    .await?;
    applied.push(change);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let (deployment, change) = apply(&deployments, "Deployment", &agent_deployment, None).await?;
    applied.push(change);

    applied.push(apply(&services, "Service", &agent_service, None).await?.1);

    Ok(Applied {
        deployment,
        statefulset,
        children: applied,
        warning,
    })
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
    let change = match &before {
        None => Change::Created,
        // Workloads bump `generation` on spec changes only; Services have no generation, and
        // their resourceVersion only moves when something changed.
        Some(before) if before.meta().generation.is_some() => {
            if before.meta().generation == after.meta().generation {
                Change::Unchanged
            } else {
                Change::Updated
            }
        }
        Some(before) => {
            if before.resource_version() == after.resource_version() {
                Change::Unchanged
            } else {
                Change::Updated
            }
        }
    };
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
