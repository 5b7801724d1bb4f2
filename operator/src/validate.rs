//! Step 1 of a reconcile: `SisCluster` → [`ValidatedCluster`] (pure, no client).
//!
//! Everything the builders need is decided here, once: defaults applied, quantities turned into
//! exact byte counts, names checked against the limits of the child objects. The builders then
//! cannot fail. A [`ValidationError`] is the user's mistake: the controller reports it as a
//! `Degraded` condition and an event and waits for the next spec change instead of retrying.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

use crate::bytesize::{ByteSize, QuantityError};
use crate::crd::{PullPolicy, Resources, SecretKeyRef, ServiceType, SisCluster};

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
}

/// Agent settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedAgent {
    pub replicas: i32,
    pub cache_size: ByteSize,
    pub resources: Option<Resources>,
    pub service_type: ServiceType,
    pub service_port: i32,
}

/// Server settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedServer {
    pub cache_size: ByteSize,
    /// The quantity as written (the apiserver parses it for the claim).
    pub storage_size: String,
    pub storage_class_name: Option<String>,
    pub resources: Option<Resources>,
}

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
    let storage = &spec.server.storage;
    let storage_bytes = bytes("spec.server.storage.size", &storage.size.0)?;
    if storage_bytes.0 == 0 {
        return Err(ValidationError::Quantity {
            field: "spec.server.storage.size",
            source: QuantityError::Syntax("0 (a volume needs a size)".to_owned()),
        });
    }
    check_resources("spec.agent.resources", spec.agent.resources.as_ref())?;
    check_resources("spec.server.resources", spec.server.resources.as_ref())?;
    if let Some(secret) = &spec.api_token_secret
        && (secret.name.trim().is_empty() || secret.key.trim().is_empty())
    {
        return Err(ValidationError::Secret);
    }

    Ok(ValidatedCluster {
        name,
        namespace,
        owner,
        image,
        image_pull_policy: spec.image_pull_policy,
        agent: ValidatedAgent {
            replicas: spec.agent.replicas,
            cache_size: agent_cache,
            resources: non_empty(spec.agent.resources.as_ref()),
            service_type: spec.agent.service.type_,
            service_port: port,
        },
        server: ValidatedServer {
            cache_size: server_cache,
            storage_size: storage.size.0.trim().to_owned(),
            storage_class_name: storage.storage_class_name.clone(),
            resources: non_empty(spec.server.resources.as_ref()),
        },
        api_token_secret: spec.api_token_secret.clone(),
    })
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
        assert_eq!(v.agent.replicas, 2);
        assert_eq!(v.agent.cache_size.to_cli(), "256MiB");
        assert_eq!(v.agent.service_port, 80);
        assert_eq!(v.agent.service_type, ServiceType::ClusterIP);
        assert_eq!(v.server.cache_size.to_cli(), "0");
        assert_eq!(v.server.storage_size, "10Gi");
        assert_eq!(v.owner.kind, "SisCluster");
        assert_eq!(v.owner.controller, Some(true));
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
    fn cpu_millis_are_fine_in_resources() {
        let cluster = fixtures::cluster_from_yaml(
            "metadata: {name: p, namespace: m, uid: '1'}\nspec: {agent: {resources: {requests: {cpu: 100m, memory: 64Mi}}}}",
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        assert!(v.agent.resources.is_some());
        assert!(v.server.resources.is_none());
    }
}
