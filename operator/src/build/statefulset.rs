//! The server's StatefulSet: `<cluster>-server`, one `sis server` pod with the `data` claim.
//!
//! The claim comes from `volumeClaimTemplates`, so its PVC (`data-<cluster>-server-0`) is created
//! by the StatefulSet controller without an owner reference: deleting the SisCluster deletes the
//! StatefulSet but keeps the PVC and the images on it. Kubernetes forbids changing
//! `volumeClaimTemplates` after creation; [`keep_existing_claims`] makes the applied object agree
//! with the existing one so that a changed `storage` does not block other updates.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::deployment::SERVER_GRACE_SECONDS;
use super::labels::{self, Component};
use super::{
    DATA_DIR, DATA_VOLUME, SIS_PORT, component_selector, object_meta, sis_container,
    sis_pod_template,
};
use crate::crd::DEFAULT_STORAGE_SIZE;
use crate::validate::{ServerStorage, ValidatedCluster};

/// Command-line arguments of the server container (after `sis`).
pub fn server_args(cluster: &ValidatedCluster) -> Vec<String> {
    vec![
        "server".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{SIS_PORT}"),
        "--data-dir".to_owned(),
        DATA_DIR.to_owned(),
        "--cache-size".to_owned(),
        cluster.server.cache_size.to_cli(),
    ]
}

/// Build the server StatefulSet (volume storage; with S3 the server tier is a Deployment and
/// this is not applied).
pub fn build_server_statefulset(cluster: &ValidatedCluster) -> StatefulSet {
    let component = Component::Server;
    let container = sis_container(
        cluster,
        server_args(cluster),
        cluster.server.resources.as_ref(),
        vec![VolumeMount {
            name: DATA_VOLUME.to_owned(),
            mount_path: DATA_DIR.to_owned(),
            ..VolumeMount::default()
        }],
        Vec::new(),
    );
    let template = sis_pod_template(cluster, component, container, SERVER_GRACE_SECONDS);
    StatefulSet {
        metadata: object_meta(cluster, component),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(component.resource_name(&cluster.name)),
            selector: component_selector(cluster, component),
            template,
            volume_claim_templates: Some(vec![claim_template(cluster)]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn claim_template(cluster: &ValidatedCluster) -> PersistentVolumeClaim {
    let (size, storage_class_name) = match &cluster.server.storage {
        ServerStorage::Volume {
            size,
            storage_class_name,
        } => (size.clone(), storage_class_name.clone()),
        ServerStorage::S3(_) => (DEFAULT_STORAGE_SIZE.to_owned(), None),
    };
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(labels::selector_labels(cluster, Component::Server)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), Quantity(size))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Storage settings of a claim template: (size, storage class).
fn claim_settings(claim: &PersistentVolumeClaim) -> (Option<String>, Option<String>) {
    let spec = claim.spec.as_ref();
    let size = spec
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    (size, spec.and_then(|s| s.storage_class_name.clone()))
}

/// If the existing StatefulSet was created with other storage settings, apply those instead of
/// the desired ones (they cannot change) and return a message saying what was ignored.
pub fn keep_existing_claims(desired: &mut StatefulSet, existing: &StatefulSet) -> Option<String> {
    let existing_claim = existing
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .and_then(|c| {
            c.iter()
                .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))
        })?;
    let desired_claim = desired
        .spec
        .as_mut()
        .and_then(|s| s.volume_claim_templates.as_mut())
        .and_then(|c| {
            c.iter_mut()
                .find(|c| c.metadata.name.as_deref() == Some(DATA_VOLUME))
        })?;
    let (want_size, want_class) = claim_settings(desired_claim);
    let (have_size, have_class) = claim_settings(existing_claim);
    // The apiserver canonicalizes quantities, so compare the byte values.
    let same_size = match (&want_size, &have_size) {
        (Some(a), Some(b)) => {
            crate::bytesize::ByteSize::parse_quantity(a).ok()
                == crate::bytesize::ByteSize::parse_quantity(b).ok()
        }
        (a, b) => a == b,
    };
    let same_class = want_class.is_none() || want_class == have_class;
    if same_size && same_class {
        // Re-send the existing text of the quantity so the applied object matches exactly.
        if let (Some(size), Some(spec)) = (have_size, desired_claim.spec.as_mut())
            && let Some(requests) = spec.resources.as_mut().and_then(|r| r.requests.as_mut())
        {
            requests.insert("storage".to_owned(), Quantity(size));
        }
        if want_class.is_none()
            && let Some(spec) = desired_claim.spec.as_mut()
        {
            spec.storage_class_name = None;
        }
        return None;
    }
    if let Some(spec) = desired_claim.spec.as_mut() {
        if let Some(requests) = spec.resources.as_mut().and_then(|r| r.requests.as_mut()) {
            match &have_size {
                Some(size) => requests.insert("storage".to_owned(), Quantity(size.clone())),
                None => requests.remove("storage"),
            };
        }
        spec.storage_class_name = have_class.clone();
    }
    Some(format!(
        "spec.server.storage cannot change after the server was created: keeping size {} and storage class {} (requested {} / {})",
        have_size.as_deref().unwrap_or("-"),
        have_class.as_deref().unwrap_or("-"),
        want_size.as_deref().unwrap_or("-"),
        want_class.as_deref().unwrap_or("-"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::validate::{Defaults, validate};

    fn sample_statefulset() -> StatefulSet {
        build_server_statefulset(&validate(&fixtures::sample(), &Defaults::default()).unwrap())
    }

    fn storage_of(s: &StatefulSet) -> (Option<String>, Option<String>) {
        claim_settings(
            &s.spec
                .as_ref()
                .unwrap()
                .volume_claim_templates
                .as_ref()
                .unwrap()[0],
        )
    }

    /// Whole-object comparison for the same reasons as the agent Deployment's: the claim
    /// template, security context and probes are all part of the contract with the apiserver
    /// and the image.
    #[test]
    fn server_statefulset_of_the_sample() {
        let actual = serde_json::to_value(sample_statefulset()).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("testdata/server-statefulset.json")).unwrap();
        assert_eq!(
            actual,
            expected,
            "{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }

    #[test]
    fn existing_claims_win_and_are_reported() {
        let mut existing = sample_statefulset();
        {
            let claim = &mut existing
                .spec
                .as_mut()
                .unwrap()
                .volume_claim_templates
                .as_mut()
                .unwrap()[0];
            let spec = claim.spec.as_mut().unwrap();
            spec.storage_class_name = Some("slow".into());
            spec.resources
                .as_mut()
                .unwrap()
                .requests
                .as_mut()
                .unwrap()
                .insert("storage".into(), Quantity("5Gi".into()));
        }
        let mut desired = sample_statefulset();
        let warning = keep_existing_claims(&mut desired, &existing).unwrap();
        assert!(
            warning.contains("keeping size 5Gi and storage class slow"),
            "{warning}"
        );
        assert_eq!(
            storage_of(&desired),
            (Some("5Gi".into()), Some("slow".into()))
        );
    }

    #[test]
    fn equal_claims_in_another_spelling_are_not_a_change() {
        let mut existing = sample_statefulset();
        existing
            .spec
            .as_mut()
            .unwrap()
            .volume_claim_templates
            .as_mut()
            .unwrap()[0]
            .spec
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("storage".into(), Quantity("10240Mi".into()));
        let mut desired = sample_statefulset();
        assert_eq!(keep_existing_claims(&mut desired, &existing), None);
        assert_eq!(storage_of(&desired).0.as_deref(), Some("10240Mi"));
    }

    #[test]
    fn server_arguments() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        assert_eq!(
            server_args(&v),
            [
                "server",
                "--listen",
                "0.0.0.0:3333",
                "--data-dir",
                "/data",
                "--cache-size",
                "0"
            ]
        );
    }
}
