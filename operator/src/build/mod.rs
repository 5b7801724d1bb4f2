//! Step 2 of a reconcile: [`ValidatedCluster`] → the child objects (pure, no client).
//!
//! One module per kind: [`statefulset`] (the server on a volume), [`deployment`] (the agents,
//! and the servers over S3), [`service`] (both Services), [`autoscaler`] (the agents' HPA),
//! [`disruption`] (PodDisruptionBudgets), [`labels`]. This module holds what the pods share: the
//! pod template (`sis_pod_template`) with its placement, the `sis` container, probes, security
//! context, prometheus annotations, the label selector and the config and secret hashes.
//!
//! Every object is complete and self-contained, ready for server-side apply: it has
//! `apiVersion`/`kind`, namespace, labels and a controller owner reference, and it only uses fields
//! that Kubernetes 1.20 knows (server-side apply there rejects unknown fields). List entries that
//! are keyed by `protocol` on the server (container and Service ports) always set it, because
//! server-side apply on 1.20 does not default list-map keys.

pub mod autoscaler;
pub mod deployment;
pub mod disruption;
pub mod labels;
pub mod service;
pub mod statefulset;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext, Service,
    TopologySpreadConstraint, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::crd::{Resources, StripMetadata, VariantPolicy};
use crate::validate::{Placement, ValidatedCluster};
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
/// Pod-template annotation holding the hash of the Secret values the pods read (API token, S3
/// keys): a new value in a Secret changes it and rolls the pods.
pub const SECRET_HASH_ANNOTATION: &str = "sis.dev/secret-hash";

/// The server tier's workload: a StatefulSet on a volume, or a Deployment over S3.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerWorkload {
    StatefulSet(StatefulSet),
    Deployment(Deployment),
}

impl ServerWorkload {
    /// The pod template of either kind.
    pub fn pod_template(&self) -> Option<&PodTemplateSpec> {
        match self {
            ServerWorkload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.template),
            ServerWorkload::Deployment(d) => d.spec.as_ref().map(|s| &s.template),
        }
    }

    /// The kind, as Kubernetes spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerWorkload::StatefulSet(_) => "StatefulSet",
            ServerWorkload::Deployment(_) => "Deployment",
        }
    }
}

/// All children of one SisCluster.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub server: ServerWorkload,
    pub server_service: Service,
    pub agent_deployment: Deployment,
    pub agent_service: Service,
    /// Present while autoscaling is enabled (`autoscaling/v2` shape; applied as `v2beta2`
    /// where `v2` is not served, the fields used are the same).
    pub agent_autoscaler: Option<HorizontalPodAutoscaler>,
    /// `policy/v1` shape; applied as `v1beta1` where `v1` is not served.
    pub agent_disruption_budget: Option<PodDisruptionBudget>,
    pub server_disruption_budget: Option<PodDisruptionBudget>,
}

/// Build every child.
pub fn build_children(cluster: &ValidatedCluster) -> Children {
    let server = if cluster.server.storage.is_volume() {
        ServerWorkload::StatefulSet(statefulset::build_server_statefulset(cluster))
    } else {
        ServerWorkload::Deployment(deployment::build_server_deployment(cluster))
    };
    Children {
        server,
        server_service: service::build_server_service(cluster),
        agent_deployment: deployment::build_agent_deployment(cluster),
        agent_service: service::build_agent_service(cluster),
        agent_autoscaler: autoscaler::build_agent_autoscaler(cluster),
        agent_disruption_budget: disruption::build_disruption_budget(cluster, Component::Agent),
        server_disruption_budget: disruption::build_disruption_budget(cluster, Component::Server),
    }
}

/// The selector of a component's pods as a label-selector string (`k=v,k=v`), what the scale
/// subresource reports in `status.agent.selector`.
pub fn selector_string(cluster: &ValidatedCluster, component: Component) -> String {
    labels::selector_labels(cluster, component)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The URL the agents use to reach the server tier: its Service (headless for the one
/// StatefulSet server, a ClusterIP spreading over the S3 servers).
/// `<cluster>-server.<namespace>.svc` works with any cluster domain.
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
    extra_env: Vec<EnvVar>,
) -> Container {
    volume_mounts.push(VolumeMount {
        name: "tmp".to_owned(),
        mount_path: "/tmp".to_owned(),
        ..VolumeMount::default()
    });
    let mut env: Vec<EnvVar> = cluster
        .api_token_secret
        .iter()
        .map(|secret| secret_env("SIS_API_TOKEN", &secret.name, &secret.key))
        .collect();
    env.extend(guard_env(cluster));
    env.extend(extra_env);
    let env = (!env.is_empty()).then_some(env);
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

/// The variant guard and metadata stripping, the same for both tiers (an agent enforces its
/// own guard and hashes uploads itself). Defaults (`open`, no presets, no key, `off`) add
/// nothing, so clusters that do not use them render exactly as before.
fn guard_env(cluster: &ValidatedCluster) -> Vec<EnvVar> {
    let variants = &cluster.variants;
    let mut env = Vec::new();
    if variants.policy != VariantPolicy::Open {
        env.push(plain_env("SIS_VARIANTS", variants.policy.as_str()));
    }
    if !variants.presets.is_empty() {
        env.push(plain_env("SIS_PRESETS", &variants.presets.join(";")));
    }
    if let Some(secret) = &variants.signing_key_secret {
        env.push(secret_env("SIS_SIGN_KEYS", &secret.name, &secret.key));
    }
    if cluster.strip_metadata != StripMetadata::Off {
        env.push(plain_env(
            "SIS_STRIP_METADATA",
            cluster.strip_metadata.as_str(),
        ));
    }
    env
}

/// An environment variable with a literal value.
fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// An environment variable taken from a Secret key.
pub(crate) fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
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
/// prometheus annotations, the secret hash, the `tmp` volume, pod security, placement and the
/// [`CONFIG_HASH_ANNOTATION`].
pub(crate) fn sis_pod_template(
    cluster: &ValidatedCluster,
    component: Component,
    container: Container,
    termination_grace_period_seconds: i64,
) -> PodTemplateSpec {
    let mut annotations = pod_annotations();
    let (placement, secret_hash) = match component {
        Component::Agent => (&cluster.agent.placement, &cluster.secret_hashes.agent),
        Component::Server => (&cluster.server.placement, &cluster.secret_hashes.server),
    };
    if let Some(hash) = secret_hash {
        annotations.insert(SECRET_HASH_ANNOTATION.to_owned(), hash.clone());
    }
    let mut spec = PodSpec {
        containers: vec![container],
        volumes: Some(vec![tmp_volume()]),
        security_context: Some(pod_security_context()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(termination_grace_period_seconds),
        ..PodSpec::default()
    };
    apply_placement(&mut spec, placement);
    if component == Component::Agent
        && placement.affinity.is_none()
        && placement.topology_spread_constraints.is_empty()
    {
        let (affinity, spread) = default_agent_spread(cluster);
        spec.affinity = Some(affinity);
        spec.topology_spread_constraints = Some(spread);
    }
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::labels(cluster, component)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(spec),
    };
    stamp_config_hash(&mut template);
    template
}

/// Copy a tier's placement into its pod spec (empty settings stay unset).
fn apply_placement(spec: &mut PodSpec, placement: &Placement) {
    spec.node_selector =
        (!placement.node_selector.is_empty()).then(|| placement.node_selector.clone());
    spec.tolerations = (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone());
    spec.affinity = placement.affinity.clone();
    spec.topology_spread_constraints = (!placement.topology_spread_constraints.is_empty())
        .then(|| placement.topology_spread_constraints.clone());
    spec.priority_class_name = placement.priority_class_name.clone();
}

/// Node label of a host (`kubernetes.io/hostname`) and of a zone.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";
pub const ZONE_TOPOLOGY: &str = "topology.kubernetes.io/zone";

/// The agents' placement when the spec sets none: prefer one agent per node (soft pod
/// anti-affinity) and spread over zones as evenly as possible, never blocking scheduling.
fn default_agent_spread(cluster: &ValidatedCluster) -> (Affinity, Vec<TopologySpreadConstraint>) {
    let selector = component_selector(cluster, Component::Agent);
    let affinity = Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(selector.clone()),
                        topology_key: HOSTNAME_TOPOLOGY.to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            required_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    };
    let spread = vec![TopologySpreadConstraint {
        label_selector: Some(selector),
        max_skew: 1,
        topology_key: ZONE_TOPOLOGY.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        ..TopologySpreadConstraint::default()
    }];
    (affinity, spread)
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
        assert_eq!(
            container.env, None,
            "default variants and stripping add no env"
        );
        assert_eq!(container.image_pull_policy, None);
        assert_eq!(
            serde_json::to_value(&container.resources).unwrap(),
            serde_json::json!({"limits": {"memory": "512Mi"}, "requests": {"cpu": "100m"}})
        );
        let server = sis_container_of(c.server.pod_template().unwrap());
        assert_eq!(server.resources, None);
    }

    #[test]
    fn placement_is_rendered_into_both_tiers() {
        let cluster = fixtures::cluster_from_yaml(
            r#"
            metadata: {name: p, namespace: m, uid: "1"}
            spec:
              agent:
                nodeSelector: {pool: edge}
                tolerations: [{key: dedicated, operator: Equal, value: sis, effect: NoSchedule}]
                priorityClassName: high
                affinity:
                  nodeAffinity:
                    requiredDuringSchedulingIgnoredDuringExecution:
                      nodeSelectorTerms: [{matchExpressions: [{key: arch, operator: In, values: [amd64]}]}]
              server:
                nodeSelector: {disk: ssd}
                tolerations: [{key: storage, operator: Exists}]
                priorityClassName: critical
                topologySpreadConstraints:
                  - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule}
            "#,
        );
        let c = children(&cluster);
        let agent = serde_json::to_value(agent_template(&c).spec.as_ref().unwrap()).unwrap();
        assert_eq!(agent["nodeSelector"], serde_json::json!({"pool": "edge"}));
        assert_eq!(agent["tolerations"][0]["key"], "dedicated");
        assert_eq!(agent["priorityClassName"], "high");
        assert_eq!(
            agent["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
                [0]["matchExpressions"][0]["values"],
            serde_json::json!(["amd64"])
        );
        assert!(
            agent["affinity"].get("podAntiAffinity").is_none()
                && agent.get("topologySpreadConstraints").is_none(),
            "a user affinity replaces the default spread: {agent}"
        );
        let server =
            serde_json::to_value(c.server.pod_template().unwrap().spec.as_ref().unwrap()).unwrap();
        assert_eq!(server["nodeSelector"], serde_json::json!({"disk": "ssd"}));
        assert_eq!(server["tolerations"][0]["operator"], "Exists");
        assert_eq!(server["priorityClassName"], "critical");
        assert_eq!(
            server["topologySpreadConstraints"][0]["whenUnsatisfiable"],
            "DoNotSchedule"
        );
        assert!(server.get("affinity").is_none(), "no default for servers");
    }

    #[test]
    fn secret_values_roll_only_the_tiers_that_read_them() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        let before = build_children(&v);
        let mut rotated = v.clone();
        rotated.secret_hashes = crate::validate::SecretHashes {
            agent: Some("aaaa".into()),
            server: Some("bbbb".into()),
        };
        let after = build_children(&rotated);
        let annotation = |t: &PodTemplateSpec| {
            t.metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()
                .get(SECRET_HASH_ANNOTATION)
                .cloned()
        };
        assert_eq!(annotation(agent_template(&before)), None);
        assert_eq!(annotation(agent_template(&after)).as_deref(), Some("aaaa"));
        assert_eq!(
            annotation(after.server.pod_template().unwrap()).as_deref(),
            Some("bbbb")
        );
        assert_ne!(
            hash_of(agent_template(&before)),
            hash_of(agent_template(&after))
        );
        let mut server_only = rotated.clone();
        server_only.secret_hashes.server = Some("cccc".into());
        let again = build_children(&server_only);
        assert_eq!(
            agent_template(&again),
            agent_template(&after),
            "an S3 key change leaves the agents alone"
        );
        assert_ne!(again.server, after.server);
    }

    #[test]
    fn both_tiers_get_the_guard_and_a_signing_key_change_rolls_both() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        let mut guarded = fixtures::s3_sample();
        guarded.spec.variants.policy = crate::crd::VariantPolicy::Presets;
        guarded.spec.strip_metadata = StripMetadata::All;
        let g = validate(&guarded, &Defaults::default()).unwrap();
        let c = build_children(&g);
        for template in [agent_template(&c), c.server.pod_template().unwrap()] {
            let env = serde_json::to_value(&sis_container_of(template).env).unwrap();
            let names: Vec<_> = env
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            assert!(names.contains(&"SIS_VARIANTS".to_owned()), "{env}");
            assert!(names.contains(&"SIS_STRIP_METADATA".to_owned()), "{env}");
            assert!(!names.contains(&"SIS_PRESETS".to_owned()), "{env}");
        }
        assert_ne!(
            hash_of(agent_template(&c)),
            hash_of(agent_template(&build_children(&v)))
        );
        let (agent, server) = crate::dereference::consumed_keys(
            &validate(&fixtures::sample(), &Defaults::default()).unwrap(),
        );
        let sign = ("sis-sign".to_owned(), "keys".to_owned());
        assert!(agent.contains(&sign) && server.contains(&sign));
    }

    #[test]
    fn urls_use_service_names() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        assert_eq!(upstream_url(&v), "http://photos-server.media.svc:3333");
        assert_eq!(endpoint_url(&v), "http://photos-agent.media.svc:80");
    }
}
