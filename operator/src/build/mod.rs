//! Step 2 of a reconcile: [`ValidatedCluster`] → the child objects (pure, no client).
//!
//! One module per kind: [`statefulset`] (the server), [`deployment`] (the agents), [`service`]
//! (both Services), [`labels`]. This module holds what the pods share: the pod template
//! (`sis_pod_template`), the `sis` container, probes, security context, prometheus annotations,
//! the label selector and the config hash.
//!
//! Every object is complete and self-contained, ready for server-side apply: it has
//! `apiVersion`/`kind`, namespace, labels and a controller owner reference, and it only uses fields
//! that Kubernetes 1.20 knows (server-side apply there rejects unknown fields). List entries that
//! are keyed by `protocol` on the server (container and Service ports) always set it, because
//! server-side apply on 1.20 does not default list-map keys.

pub mod deployment;
pub mod labels;
pub mod service;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SeccompProfile, SecretKeySelector, SecurityContext, Service, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::crd::Resources;
use crate::validate::ValidatedCluster;
use labels::Component;

/// Port both sis modes listen on inside the pod.
pub const SIS_PORT: i32 = 3333;
/// Name of that port (probes and Services refer to it by name).
pub const PORT_NAME: &str = "http";
/// The server's data directory, where the `data` volume is mounted.
pub const DATA_DIR: &str = "/data";
/// Name of the server's volume claim template (PVCs are `data-<cluster>-server-0`).
pub const DATA_VOLUME: &str = "data";
/// UID/GID the pods run as (non-root; matches the image's user).
pub const RUN_AS_USER: i64 = 10001;
/// Pod-template annotation holding [`config_hash`]; a spec change changes it and rolls pods.
pub const CONFIG_HASH_ANNOTATION: &str = "sis.dev/config-hash";

/// All children of one SisCluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub server_statefulset: StatefulSet,
    pub server_service: Service,
    pub agent_deployment: Deployment,
    pub agent_service: Service,
}

/// Build every child.
pub fn build_children(cluster: &ValidatedCluster) -> Children {
    Children {
        server_statefulset: statefulset::build_server_statefulset(cluster),
        server_service: service::build_server_service(cluster),
        agent_deployment: deployment::build_agent_deployment(cluster),
        agent_service: service::build_agent_service(cluster),
    }
}

/// The URL the agents use to reach the server: the server's headless Service, which resolves to
/// the ready server pod. `<cluster>-server.<namespace>.svc` works with any cluster domain.
pub fn upstream_url(cluster: &ValidatedCluster) -> String {
    format!(
        "http://{}.{}.svc:{SIS_PORT}",
        Component::Server.resource_name(&cluster.name),
        cluster.namespace
    )
}

/// The agent Service URL reported in `status.endpoint`.
pub fn endpoint_url(cluster: &ValidatedCluster) -> String {
    format!(
        "http://{}.{}.svc:{}",
        Component::Agent.resource_name(&cluster.name),
        cluster.namespace,
        cluster.agent.service_port
    )
}

/// Metadata of a child object: name, namespace, standard labels, controller owner reference.
pub(crate) fn object_meta(cluster: &ValidatedCluster, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(component.resource_name(&cluster.name)),
        namespace: Some(cluster.namespace.clone()),
        labels: Some(labels::labels(cluster, component)),
        owner_references: Some(vec![cluster.owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The `sis` container of either component, given its mode's arguments and extra mounts.
pub(crate) fn sis_container(
    cluster: &ValidatedCluster,
    args: Vec<String>,
    resources: Option<&Resources>,
    mut volume_mounts: Vec<VolumeMount>,
) -> Container {
    volume_mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    });
    let env = cluster.api_token_secret.as_ref().map(|secret| {
        vec![EnvVar {
            name: "SIS_API_TOKEN".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.name.clone(),
                    key: secret.key.clone(),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]
    });
    Container {
        name: "sis".to_owned(),
        image: Some(cluster.image.clone()),
        image_pull_policy: cluster.image_pull_policy.map(|p| p.as_str().to_owned()),
        command: Some(vec!["sis".to_owned()]),
        args: Some(args),
        env,
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.to_owned()),
            container_port: SIS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 5, 3)),
        resources: resources.map(resource_requirements),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(2),
        period_seconds: Some(period_seconds),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn resource_requirements(resources: &Resources) -> ResourceRequirements {
    let non_empty = |m: &BTreeMap<String, _>| (!m.is_empty()).then(|| m.clone());
    ResourceRequirements {
        limits: non_empty(&resources.limits),
        requests: non_empty(&resources.requests),
        claims: None,
    }
}

/// Pod-level security: non-root user and group, the volume group-owned by `fsGroup`.
fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The writable scratch directory (the root file system is read-only).
fn tmp_volume() -> Volume {
    Volume {
        name: "tmp".to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// The pod template both components share around their one `sis` container: standard labels,
/// prometheus annotations, the `tmp` volume, pod security and the [`CONFIG_HASH_ANNOTATION`].
pub(crate) fn sis_pod_template(
    cluster: &ValidatedCluster,
    component: Component,
    container: Container,
) -> PodTemplateSpec {
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::labels(cluster, component)),
            annotations: Some(pod_annotations()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![tmp_volume()]),
            security_context: Some(pod_security_context()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(40),
            ..PodSpec::default()
        }),
    };
    stamp_config_hash(&mut template);
    template
}

/// The label selector of a component's workload (the stable subset of its labels).
pub(crate) fn component_selector(
    cluster: &ValidatedCluster,
    component: Component,
) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels::selector_labels(cluster, component)),
        match_expressions: None,
    }
}

/// Pod-template annotations: prometheus scraping hints.
fn pod_annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ("prometheus.io/port".to_owned(), SIS_PORT.to_string()),
        ("prometheus.io/path".to_owned(), "/metrics".to_owned()),
    ])
}

/// Hash of a rendered pod template (first 16 hex digits of SHA-256 over its JSON), stored as
/// the [`CONFIG_HASH_ANNOTATION`] so any change to what the pods run shows up as a new value.
pub fn config_hash(template: &PodTemplateSpec) -> String {
    let mut template = template.clone();
    if let Some(annotations) = template
        .metadata
        .as_mut()
        .and_then(|m| m.annotations.as_mut())
    {
        annotations.remove(CONFIG_HASH_ANNOTATION);
    }
    // Serializing plain data structures cannot fail; an empty input would still hash.
    let json = serde_json::to_vec(&template).unwrap_or_default();
    let digest = Sha256::digest(&json);
    hex::encode(&digest[..8])
}

/// The [`CONFIG_HASH_ANNOTATION`] on a pod template, if it was stamped.
pub fn stamped_config_hash(template: &PodTemplateSpec) -> Option<&str> {
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .map(String::as_str)
}

/// Put [`config_hash`] on a pod template.
fn stamp_config_hash(template: &mut PodTemplateSpec) {
    let hash = config_hash(template);
    template
        .metadata
        .get_or_insert_with(ObjectMeta::default)
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_HASH_ANNOTATION.to_owned(), hash);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, ClusterExt};
    use crate::validate::{Defaults, validate};

    fn children(cluster: &crate::crd::SisCluster) -> Children {
        build_children(&validate(cluster, &Defaults::default()).unwrap())
    }

    fn agent_template(c: &Children) -> &PodTemplateSpec {
        &c.agent_deployment.spec.as_ref().unwrap().template
    }

    fn sis_container_of(template: &PodTemplateSpec) -> &Container {
        &template.spec.as_ref().unwrap().containers[0]
    }

    fn hash_of(template: &PodTemplateSpec) -> String {
        stamped_config_hash(template).unwrap().to_owned()
    }

    #[test]
    fn config_hash_ignores_its_own_annotation_and_is_stable() {
        let c = children(&fixtures::sample());
        let template = agent_template(&c);
        assert_eq!(config_hash(template), hash_of(template));
        assert_eq!(hash_of(template).len(), 16);
        assert_eq!(
            children(&fixtures::sample()),
            c,
            "building is deterministic"
        );
    }

    #[test]
    fn what_the_pods_run_changes_the_hash_and_replicas_do_not() {
        let base = hash_of(agent_template(&children(&fixtures::sample())));
        let scaled = children(&fixtures::sample().with_agent_replicas(5));
        assert_eq!(
            hash_of(agent_template(&scaled)),
            base,
            "scaling must not roll pods"
        );
        for changed in [
            fixtures::sample().with_agent_cache("512Mi"),
            fixtures::sample().with_image("registry.example/sis:0.2.0"),
        ] {
            assert_ne!(hash_of(agent_template(&children(&changed))), base);
        }
    }

    #[test]
    fn no_secret_means_no_env_and_resources_are_rendered() {
        let cluster = fixtures::cluster_from_yaml(
            r#"
            metadata: {name: p, namespace: m, uid: "1"}
            spec:
              image: sis:1
              agent: {resources: {limits: {memory: 512Mi}, requests: {cpu: 100m}}}
            "#,
        );
        let c = children(&cluster);
        let container = sis_container_of(agent_template(&c));
        assert_eq!(container.env, None);
        assert_eq!(container.image_pull_policy, None);
        assert_eq!(
            serde_json::to_value(&container.resources).unwrap(),
            serde_json::json!({"limits": {"memory": "512Mi"}, "requests": {"cpu": "100m"}})
        );
        let server = sis_container_of(&c.server_statefulset.spec.as_ref().unwrap().template);
        assert_eq!(server.resources, None);
    }

    #[test]
    fn urls_use_service_names() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        assert_eq!(upstream_url(&v), "http://photos-server.media.svc:3333");
        assert_eq!(endpoint_url(&v), "http://photos-agent.media.svc:80");
    }
}
