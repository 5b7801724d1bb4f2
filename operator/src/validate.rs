//! Step 1 of a reconcile: `SisCluster` → [`ValidatedCluster`] (pure, no client).
//!
//! Everything the builders need is decided here, once: defaults applied, quantities turned into
//! exact byte counts, names checked against the limits of the child objects. The builders then
//! cannot fail. A [`ValidationError`] is the user's mistake: the controller reports it as a
//! `Degraded` condition and an event and waits for the next spec change instead of retrying.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::bytesize::{ByteSize, QuantityError};
use crate::crd::{
    AutoscalingSpec, DEFAULT_STORAGE_SIZE, DisruptionBudgetSpec, IntOrPercent, PullPolicy,
    Resources, S3Spec, SecretKeyRef, ServiceType, SisCluster, StripMetadata, VariantPolicy,
    VariantsSpec,
};

/// The longest SisCluster name the children allow: `<name>-server` StatefulSet pods carry a
/// `controller-revision-hash` label `<name>-server-<10 chars>` that must fit in 63 characters.
pub const MAX_NAME_LEN: usize = 45;

/// Settings that come from the operator rather than from the SisCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Image used when `spec.image` is unset.
    pub image: String,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            image: default_image(),
        }
    }
}

/// The image matching this operator's version (overridable with `--default-image`).
pub fn default_image() -> String {
    format!("ghcr.io/sis-dev/sis:{}", env!("CARGO_PKG_VERSION"))
}

/// A SisCluster that passed every check, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    /// Controller owner reference to the SisCluster, put on every child so the garbage
    /// collector removes them with it.
    pub owner: OwnerReference,
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub agent: ValidatedAgent,
    pub server: ValidatedServer,
    pub api_token_secret: Option<SecretKeyRef>,
    /// The variant guard, the same on both tiers.
    pub variants: ValidatedVariants,
    /// `--strip-metadata`, the same on both tiers.
    pub strip_metadata: StripMetadata,
    /// Hashes of the values of the Secrets each tier's pods read, put on the pod templates so
    /// that a changed value rolls the pods. `validate` leaves them empty: reading Secrets
    /// needs a client, so the controller fills them in ([`SecretHashes`]).
    pub secret_hashes: SecretHashes,
}

/// The variant guard every pod gets (`SIS_VARIANTS`, `SIS_PRESETS`, `SIS_SIGN_KEYS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatedVariants {
    pub policy: VariantPolicy,
    /// Each preset as `sis --preset` takes it: `NAME=key:value,...[,public]`.
    pub presets: Vec<String>,
    pub signing_key_secret: Option<SecretKeyRef>,
}

/// The `/v1` variant parameters a preset may set (sis's `V1_KEYS`).
pub const PRESET_PARAMS: &[&str] = &[
    "w",
    "h",
    "fit",
    "format",
    "q",
    "gravity",
    "fp",
    "pad",
    "bg",
    "enlarge",
    "dpr",
    "rotate",
    "flip",
    "blur",
    "sharpen",
    "progressive",
    "lossless",
    "frames",
];

/// Per-tier hash of the Secret values the pods consume (see [`ValidatedCluster::secret_hashes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretHashes {
    pub agent: Option<String>,
    pub server: Option<String>,
}

/// Agent settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedAgent {
    /// Replicas to write into the Deployment; `None` while an HPA owns the count.
    pub replicas: Option<i32>,
    /// `spec.agent.replicas` as written (reported when the HPA is off).
    pub spec_replicas: i32,
    pub cache_size: ByteSize,
    pub resources: Option<Resources>,
    pub service_type: ServiceType,
    pub service_port: i32,
    /// Set when autoscaling is enabled.
    pub autoscaling: Option<AutoscalingSpec>,
    /// `maxUnavailable` of the PodDisruptionBudget; `None`: no budget.
    pub disruption_budget: Option<IntOrPercent>,
    pub max_surge: IntOrPercent,
    pub max_unavailable: IntOrPercent,
    pub pre_stop_seconds: i32,
    pub placement: Placement,
}

/// Where and how pods of one tier are scheduled.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Placement {
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    pub priority_class_name: Option<String>,
}

/// Server settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedServer {
    pub cache_size: ByteSize,
    pub storage: ServerStorage,
    /// Server pods: 1 with a volume, `spec.server.replicas` (default 2) with S3.
    pub replicas: i32,
    pub resources: Option<Resources>,
    /// `maxUnavailable` of the servers' PodDisruptionBudget; only with more than one server.
    pub disruption_budget: Option<IntOrPercent>,
    pub placement: Placement,
}

/// The server tier's storage, which decides its workload kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ServerStorage {
    /// One server in a StatefulSet with a volume claim; `size` as written (the apiserver
    /// parses it for the claim).
    Volume {
        size: String,
        storage_class_name: Option<String>,
    },
    /// Stateless servers in a Deployment over one bucket.
    S3(S3Spec),
}

impl ServerStorage {
    /// Whether the server tier is a StatefulSet (volume) rather than a Deployment (S3).
    pub fn is_volume(&self) -> bool {
        matches!(self, ServerStorage::Volume { .. })
    }
}

/// Default number of servers over S3.
pub const DEFAULT_S3_SERVER_REPLICAS: i32 = 2;

/// Why a SisCluster cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("metadata.{0} is missing")]
    MissingMetadata(&'static str),
    #[error(
        "name {0:?} must start with a letter, contain only lower-case letters, digits and '-', and be at most {MAX_NAME_LEN} characters (the child Service and StatefulSet names derive from it)"
    )]
    Name(String),
    #[error("spec.agent.replicas must be >= 0, got {0}")]
    Replicas(i32),
    #[error("spec.agent.service.port must be between 1 and 65535, got {0}")]
    Port(i32),
    #[error("spec.image must not be empty")]
    EmptyImage,
    #[error("{field}: {source}")]
    Quantity {
        field: &'static str,
        #[source]
        source: QuantityError,
    },
    #[error("{field}: resource quantity {value:?} is not a Kubernetes quantity")]
    ResourceQuantity { field: String, value: String },
    #[error("spec.apiTokenSecret needs a non-empty name and key")]
    Secret,
    #[error(
        "spec.server.storage: set either a volume (size, storageClassName) or s3 (a bucket), not both"
    )]
    StorageConflict,
    #[error(
        "spec.server.replicas must be 1 with a volume (one server owns its PersistentVolumeClaim), got {0}; use spec.server.storage.s3 for more servers"
    )]
    VolumeReplicas(i32),
    #[error("spec.agent.autoscaling.minReplicas ({min}) must not exceed maxReplicas ({max})")]
    AutoscalingBounds { min: i32, max: i32 },
    #[error("{0}: must be a count >= 0 or a percentage such as 25%")]
    IntOrPercent(&'static str),
    #[error("spec.agent.rollout: maxSurge and maxUnavailable must not both be 0")]
    RolloutStuck,
    #[error("spec.agent.preStopSeconds must be between 0 and 120, got {0}")]
    PreStop(i32),
    #[error(
        "spec.variants.policy is signed but spec.variants.signingKeySecret is not set: the pods need a key to check signed URLs"
    )]
    SignedWithoutKey,
    #[error("spec.variants.signingKeySecret needs a non-empty name and key")]
    SigningKeySecret,
    #[error("spec.variants.presets: {0}")]
    Preset(String),
}

/// Check a SisCluster and apply defaults.
///
/// # Errors
/// A [`ValidationError`] describing the first problem found.
pub fn validate(
    cluster: &SisCluster,
    defaults: &Defaults,
) -> Result<ValidatedCluster, ValidationError> {
    let name = cluster
        .metadata
        .name
        .clone()
        .ok_or(ValidationError::MissingMetadata("name"))?;
    let namespace = cluster
        .namespace()
        .ok_or(ValidationError::MissingMetadata("namespace"))?;
    if cluster.metadata.uid.is_none() {
        return Err(ValidationError::MissingMetadata("uid"));
    }
    if !valid_name(&name) {
        return Err(ValidationError::Name(name));
    }
    let owner = cluster
        .controller_owner_ref(&())
        .ok_or(ValidationError::MissingMetadata("uid"))?;

    let spec = &cluster.spec;
    let image = match &spec.image {
        Some(image) if image.trim().is_empty() => return Err(ValidationError::EmptyImage),
        Some(image) => image.clone(),
        None => defaults.image.clone(),
    };
    if spec.agent.replicas < 0 {
        return Err(ValidationError::Replicas(spec.agent.replicas));
    }
    let port = spec.agent.service.port;
    if !(1..=65535).contains(&port) {
        return Err(ValidationError::Port(port));
    }
    let agent_cache = bytes("spec.agent.cacheSize", &spec.agent.cache_size.0)?;
    let server_cache = bytes("spec.server.cacheSize", &spec.server.cache_size.0)?;
    let storage = server_storage(cluster)?;
    let server_replicas = match (&storage, spec.server.replicas) {
        (ServerStorage::Volume { .. }, None | Some(1)) => 1,
        (ServerStorage::Volume { .. }, Some(n)) => return Err(ValidationError::VolumeReplicas(n)),
        (ServerStorage::S3(_), n) => n.unwrap_or(DEFAULT_S3_SERVER_REPLICAS),
    };
    check_resources("spec.agent.resources", spec.agent.resources.as_ref())?;
    check_resources("spec.server.resources", spec.server.resources.as_ref())?;
    if let Some(secret) = &spec.api_token_secret
        && (secret.name.trim().is_empty() || secret.key.trim().is_empty())
    {
        return Err(ValidationError::Secret);
    }
    let autoscaling = spec.agent.autoscaling.clone().filter(|a| a.enabled);
    if let Some(a) = &autoscaling
        && a.min_replicas > a.max_replicas
    {
        return Err(ValidationError::AutoscalingBounds {
            min: a.min_replicas,
            max: a.max_replicas,
        });
    }
    let rollout = &spec.agent.rollout;
    check_int_or_percent("spec.agent.rollout.maxSurge", &rollout.max_surge)?;
    check_int_or_percent(
        "spec.agent.rollout.maxUnavailable",
        &rollout.max_unavailable,
    )?;
    if rollout.max_surge.is_zero() && rollout.max_unavailable.is_zero() {
        return Err(ValidationError::RolloutStuck);
    }
    if !(0..=120).contains(&spec.agent.pre_stop_seconds) {
        return Err(ValidationError::PreStop(spec.agent.pre_stop_seconds));
    }
    let agent_budget = budget(
        "spec.agent.disruptionBudget.maxUnavailable",
        &spec.agent.disruption_budget,
    )?;
    let server_budget = budget(
        "spec.server.disruptionBudget.maxUnavailable",
        &spec.server.disruption_budget,
    )?
    .filter(|_| server_replicas > 1);
    let variants = variants(&spec.variants)?;

    Ok(ValidatedCluster {
        name,
        namespace,
        owner,
        image,
        image_pull_policy: spec.image_pull_policy,
        agent: ValidatedAgent {
            replicas: if autoscaling.is_some() {
                None
            } else {
                Some(spec.agent.replicas)
            },
            spec_replicas: spec.agent.replicas,
            cache_size: agent_cache,
            resources: non_empty(spec.agent.resources.as_ref()),
            service_type: spec.agent.service.type_,
            service_port: port,
            autoscaling,
            disruption_budget: agent_budget,
            max_surge: rollout.max_surge.clone(),
            max_unavailable: rollout.max_unavailable.clone(),
            pre_stop_seconds: spec.agent.pre_stop_seconds,
            placement: Placement {
                node_selector: spec.agent.node_selector.clone(),
                tolerations: spec.agent.tolerations.clone(),
                affinity: non_empty_affinity(spec.agent.affinity.as_ref()),
                topology_spread_constraints: spec.agent.topology_spread_constraints.clone(),
                priority_class_name: non_empty_string(spec.agent.priority_class_name.as_ref()),
            },
        },
        server: ValidatedServer {
            cache_size: server_cache,
            storage,
            replicas: server_replicas,
            resources: non_empty(spec.server.resources.as_ref()),
            disruption_budget: server_budget,
            placement: Placement {
                node_selector: spec.server.node_selector.clone(),
                tolerations: spec.server.tolerations.clone(),
                affinity: non_empty_affinity(spec.server.affinity.as_ref()),
                topology_spread_constraints: spec.server.topology_spread_constraints.clone(),
                priority_class_name: non_empty_string(spec.server.priority_class_name.as_ref()),
            },
        },
        api_token_secret: spec.api_token_secret.clone(),
        variants,
        strip_metadata: spec.strip_metadata,
        secret_hashes: SecretHashes::default(),
    })
}

/// The variant guard: a signed policy needs a key, presets are rendered as `sis --preset`
/// takes them, with names and parameters checked so that a mistake is a `Degraded` condition
/// rather than pods that refuse to start (sis checks the values themselves at start-up).
fn variants(spec: &VariantsSpec) -> Result<ValidatedVariants, ValidationError> {
    if let Some(secret) = &spec.signing_key_secret
        && (secret.name.trim().is_empty() || secret.key.trim().is_empty())
    {
        return Err(ValidationError::SigningKeySecret);
    }
    if spec.policy == VariantPolicy::Signed && spec.signing_key_secret.is_none() {
        return Err(ValidationError::SignedWithoutKey);
    }
    let mut presets = Vec::with_capacity(spec.presets.len());
    let mut names = std::collections::BTreeSet::new();
    for preset in &spec.presets {
        let name = &preset.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ValidationError::Preset(format!(
                "name {name:?}: 1-64 of A-Za-z0-9_-"
            )));
        }
        if !names.insert(name.as_str()) {
            return Err(ValidationError::Preset(format!(
                "{name:?} is defined twice"
            )));
        }
        if preset.params.is_empty() {
            return Err(ValidationError::Preset(format!("{name:?}: no params")));
        }
        let mut items = Vec::with_capacity(preset.params.len() + 1);
        for (key, value) in &preset.params {
            if !PRESET_PARAMS.contains(&key.as_str()) {
                return Err(ValidationError::Preset(format!(
                    "{name:?}: unknown parameter {key:?} (known: {})",
                    PRESET_PARAMS.join(", ")
                )));
            }
            let value = value.to_string();
            if value.trim().is_empty() || value.contains([',', ';']) || value != value.trim() {
                return Err(ValidationError::Preset(format!(
                    "{name:?}: {key} must be a non-empty value without ',' or ';', got {value:?}"
                )));
            }
            items.push(format!("{key}:{value}"));
        }
        if preset.public {
            items.push("public".to_owned());
        }
        presets.push(format!("{name}={}", items.join(",")));
    }
    Ok(ValidatedVariants {
        policy: spec.policy,
        presets,
        signing_key_secret: spec.signing_key_secret.clone(),
    })
}

/// The server's storage: a volume (the default) or S3, never both.
fn server_storage(cluster: &SisCluster) -> Result<ServerStorage, ValidationError> {
    let storage = &cluster.spec.server.storage;
    if let Some(s3) = &storage.s3 {
        if storage.size.is_some() || storage.storage_class_name.is_some() {
            return Err(ValidationError::StorageConflict);
        }
        return Ok(ServerStorage::S3(s3.clone()));
    }
    let size = storage
        .size
        .as_ref()
        .map_or(DEFAULT_STORAGE_SIZE, |q| q.0.as_str());
    let storage_bytes = bytes("spec.server.storage.size", size)?;
    if storage_bytes.0 == 0 {
        return Err(ValidationError::Quantity {
            field: "spec.server.storage.size",
            source: QuantityError::Syntax("0 (a volume needs a size)".to_owned()),
        });
    }
    Ok(ServerStorage::Volume {
        size: size.trim().to_owned(),
        storage_class_name: storage.storage_class_name.clone(),
    })
}

fn budget(
    field: &'static str,
    spec: &DisruptionBudgetSpec,
) -> Result<Option<IntOrPercent>, ValidationError> {
    if !spec.enabled {
        return Ok(None);
    }
    check_int_or_percent(field, &spec.max_unavailable)?;
    Ok(Some(spec.max_unavailable.clone()))
}

/// The schema checks the same (`minimum`, [`crate::crd::PERCENT_PATTERN`]); this guards objects that
/// reached us some other way.
fn check_int_or_percent(field: &'static str, value: &IntOrPercent) -> Result<(), ValidationError> {
    let ok = match value {
        IntOrPercent::Int(n) => *n >= 0,
        IntOrPercent::Percent(p) => p
            .strip_suffix('%')
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n <= 100),
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::IntOrPercent(field))
    }
}

fn bytes(field: &'static str, quantity: &str) -> Result<ByteSize, ValidationError> {
    ByteSize::parse_quantity(quantity).map_err(|source| ValidationError::Quantity { field, source })
}

fn check_resources(field: &str, resources: Option<&Resources>) -> Result<(), ValidationError> {
    let Some(resources) = resources else {
        return Ok(());
    };
    for (kind, map) in [
        ("limits", &resources.limits),
        ("requests", &resources.requests),
    ] {
        for (resource, quantity) in map {
            if !is_quantity(&quantity.0) {
                return Err(ValidationError::ResourceQuantity {
                    field: format!("{field}.{kind}.{resource}"),
                    value: quantity.0.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Quantities for CPU may be fractional (`500m`), so only the grammar is checked here.
fn is_quantity(text: &str) -> bool {
    match ByteSize::parse_quantity(text) {
        Ok(_) | Err(QuantityError::Fractional(_)) => true,
        Err(_) => false,
    }
}

/// `affinity: {}` (as a chart's values render it) means no affinity, so the default spread of
/// the agents still applies.
fn non_empty_affinity(affinity: Option<&Affinity>) -> Option<Affinity> {
    affinity.filter(|a| **a != Affinity::default()).cloned()
}

fn non_empty_string(value: Option<&String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty()).cloned()
}

fn non_empty(resources: Option<&Resources>) -> Option<Resources> {
    resources
        .filter(|r| !r.limits.is_empty() || !r.requests.is_empty())
        .cloned()
}

/// A DNS-1035 label short enough for every child name.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn sample_is_valid_with_defaults_applied() {
        let cluster = fixtures::cluster_from_yaml(
            r#"
            apiVersion: sis.dev/v1alpha1
            kind: SisCluster
            metadata: {name: photos, namespace: media, uid: "1234", generation: 1}
            spec: {}
            "#,
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        assert_eq!(v.image, default_image());
        assert_eq!(v.agent.replicas, Some(2));
        assert_eq!(v.agent.cache_size.to_cli(), "256MiB");
        assert_eq!(v.agent.service_port, 80);
        assert_eq!(v.agent.service_type, ServiceType::ClusterIP);
        assert_eq!(v.server.cache_size.to_cli(), "0");
        assert_eq!(
            v.server.storage,
            ServerStorage::Volume {
                size: "10Gi".into(),
                storage_class_name: None
            }
        );
        assert_eq!(v.server.replicas, 1);
        assert_eq!(v.agent.disruption_budget, Some(IntOrPercent::Int(1)));
        assert_eq!(v.server.disruption_budget, None, "one server: no budget");
        assert_eq!(v.agent.autoscaling, None);
        assert_eq!(v.agent.pre_stop_seconds, 5);
        assert_eq!(v.owner.kind, "SisCluster");
        assert_eq!(v.owner.controller, Some(true));
    }

    #[test]
    fn variants_render_as_sis_flags() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        assert_eq!(v.variants.policy, VariantPolicy::Signed);
        assert_eq!(
            v.variants.presets,
            [
                "thumb=fit:cover,h:200,w:300",
                "avatar=fit:cover,gravity:smart,h:64,w:64,public"
            ]
        );
        assert_eq!(v.strip_metadata, StripMetadata::Gps);
        let message = validate(
            &fixtures::cluster_from_yaml(
                "metadata: {name: p, namespace: m, uid: '1'}\nspec: {variants: {policy: signed}}",
            ),
            &Defaults::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("signingKeySecret"), "{message}");
        let defaults = validate(
            &fixtures::cluster_from_yaml("metadata: {name: p, namespace: m, uid: '1'}"),
            &Defaults::default(),
        )
        .unwrap();
        assert_eq!(defaults.variants, ValidatedVariants::default());
        assert_eq!(defaults.strip_metadata, StripMetadata::Off);
    }

    #[test]
    fn integer_cache_size_is_accepted() {
        let cluster = fixtures::cluster_from_yaml(
            r#"
            metadata: {name: photos, namespace: media, uid: "1"}
            spec: {agent: {cacheSize: 1048576}, server: {cacheSize: 0}}
            "#,
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        assert_eq!(v.agent.cache_size.to_cli(), "1MiB");
    }

    #[test]
    fn user_mistakes_are_reported_not_panicked() {
        type Check = fn(&ValidationError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("{agent: {replicas: -1}}", |e| {
                matches!(e, ValidationError::Replicas(-1))
            }),
            ("{agent: {service: {port: 0}}}", |e| {
                matches!(e, ValidationError::Port(0))
            }),
            ("{agent: {cacheSize: 1.5}}", |e| {
                matches!(
                    e,
                    ValidationError::Quantity {
                        field: "spec.agent.cacheSize",
                        ..
                    }
                )
            }),
            ("{server: {cacheSize: -1Mi}}", |e| {
                matches!(
                    e,
                    ValidationError::Quantity {
                        field: "spec.server.cacheSize",
                        ..
                    }
                )
            }),
            ("{server: {storage: {size: 0}}}", |e| {
                matches!(
                    e,
                    ValidationError::Quantity {
                        field: "spec.server.storage.size",
                        ..
                    }
                )
            }),
            ("{image: ' '}", |e| matches!(e, ValidationError::EmptyImage)),
            ("{agent: {resources: {limits: {cpu: lots}}}}", |e| {
                matches!(e, ValidationError::ResourceQuantity { .. })
            }),
            ("{apiTokenSecret: {name: '', key: token}}", |e| {
                matches!(e, ValidationError::Secret)
            }),
            (
                "{server: {storage: {size: 5Gi, s3: {bucket: photos}}}}",
                |e| matches!(e, ValidationError::StorageConflict),
            ),
            (
                "{server: {storage: {storageClassName: fast, s3: {bucket: photos}}}}",
                |e| matches!(e, ValidationError::StorageConflict),
            ),
            ("{server: {replicas: 3}}", |e| {
                matches!(e, ValidationError::VolumeReplicas(3))
            }),
            (
                "{agent: {autoscaling: {minReplicas: 5, maxReplicas: 2}}}",
                |e| matches!(e, ValidationError::AutoscalingBounds { min: 5, max: 2 }),
            ),
            (
                "{agent: {rollout: {maxSurge: 0, maxUnavailable: '0%'}}}",
                |e| matches!(e, ValidationError::RolloutStuck),
            ),
            (
                "{agent: {disruptionBudget: {maxUnavailable: '150%'}}}",
                |e| matches!(e, ValidationError::IntOrPercent(_)),
            ),
            ("{agent: {preStopSeconds: -1}}", |e| {
                matches!(e, ValidationError::PreStop(-1))
            }),
            ("{variants: {policy: signed}}", |e| {
                matches!(e, ValidationError::SignedWithoutKey)
            }),
            ("{variants: {signingKeySecret: {name: s, key: ''}}}", |e| {
                matches!(e, ValidationError::SigningKeySecret)
            }),
            (
                "{variants: {presets: [{name: 'a b', params: {w: 5}}]}}",
                |e| matches!(e, ValidationError::Preset(m) if m.contains("name")),
            ),
            (
                "{variants: {presets: [{name: a, params: {w: 5}}, {name: a, params: {h: 5}}]}}",
                |e| matches!(e, ValidationError::Preset(m) if m.contains("twice")),
            ),
            (
                "{variants: {presets: [{name: a, params: {}}]}}",
                |e| matches!(e, ValidationError::Preset(m) if m.contains("no params")),
            ),
            (
                "{variants: {presets: [{name: a, params: {sig: x}}]}}",
                |e| matches!(e, ValidationError::Preset(m) if m.contains("unknown parameter")),
            ),
            (
                "{variants: {presets: [{name: a, params: {fp: '0.3,0.6'}}]}}",
                |e| matches!(e, ValidationError::Preset(m) if m.contains("without ','")),
            ),
            ("{variants: {presets: [{name: a, params: {w: ''}}]}}", |e| {
                matches!(e, ValidationError::Preset(_))
            }),
        ];
        for (spec, expected) in cases {
            let cluster = fixtures::cluster_from_yaml(&format!(
                "metadata: {{name: photos, namespace: media, uid: '1'}}\nspec: {spec}"
            ));
            let err = validate(&cluster, &Defaults::default()).unwrap_err();
            assert!(expected(&err), "{spec}: unexpected {err:?}");
        }
    }

    #[test]
    fn names_must_fit_the_children() {
        for (name, ok) in [
            ("photos", true),
            ("a", true),
            ("a-1", true),
            ("1photos", false),
            ("photos-", false),
            ("Photos", false),
            ("pho.tos", false),
            (&"a".repeat(MAX_NAME_LEN), true),
            (&"a".repeat(MAX_NAME_LEN + 1), false),
        ] {
            let cluster = fixtures::cluster_from_yaml(&format!(
                "metadata: {{name: '{name}', namespace: media, uid: '1'}}\nspec: {{}}"
            ));
            assert_eq!(
                validate(&cluster, &Defaults::default()).is_ok(),
                ok,
                "{name}"
            );
        }
    }

    #[test]
    fn s3_storage_means_replicated_servers_with_a_budget() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        assert_eq!(v.server.replicas, DEFAULT_S3_SERVER_REPLICAS);
        assert!(!v.server.storage.is_volume());
        assert_eq!(v.server.disruption_budget, Some(IntOrPercent::Int(1)));
        let mut one = fixtures::s3_sample();
        one.spec.server.replicas = Some(1);
        let v = validate(&one, &Defaults::default()).unwrap();
        assert_eq!((v.server.replicas, v.server.disruption_budget), (1, None));
        let message = validate(
            &fixtures::cluster_from_yaml(
                "metadata: {name: p, namespace: m, uid: '1'}\nspec: {server: {storage: {size: 1Gi, s3: {bucket: b-1}}}}",
            ),
            &Defaults::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("not both"), "{message}");
    }

    /// The shipped examples are valid as the operator sees them (the CRD schema is checked
    /// against them by tests/helm/run.sh with a server dry run).
    #[test]
    fn deploy_examples_validate() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let mut cluster = fixtures::cluster_from_yaml(&text);
            cluster.metadata.uid = Some("1".into());
            let v = validate(&cluster, &Defaults::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if path.ends_with("siscluster-s3.yaml") {
                assert_eq!(v.server.replicas, 3);
                assert!(!v.server.storage.is_volume());
                assert!(v.agent.autoscaling.is_some());
            }
            seen += 1;
        }
        assert!(seen >= 2, "examples in {}", dir.display());
    }

    #[test]
    fn empty_placement_values_mean_unset() {
        let cluster = fixtures::cluster_from_yaml(
            "metadata: {name: p, namespace: m, uid: '1'}\nspec: {agent: {affinity: {}, priorityClassName: '', nodeSelector: {}}}",
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        assert_eq!(v.agent.placement, Placement::default());
    }

    #[test]
    fn cpu_millis_are_fine_in_resources() {
        let cluster = fixtures::cluster_from_yaml(
            "metadata: {name: p, namespace: m, uid: '1'}\nspec: {agent: {resources: {requests: {cpu: 100m, memory: 64Mi}}}}",
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        assert!(v.agent.resources.is_some());
        assert!(v.server.resources.is_none());
    }
}
