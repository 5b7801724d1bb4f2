//! The `SisCluster` custom resource (`sis.dev/v1alpha1`): spec, status and the generated CRD.
//!
//! The schema is what the apiserver validates and defaults with, so it is written for the
//! oldest supported apiserver (Kubernetes 1.20, `apiextensions.k8s.io/v1`, structural schemas):
//! no CEL rules, no `x-kubernetes-validations`, only `default`, `minimum`/`maximum`, `enum`,
//! `pattern` and `minLength`. Quantities are `x-kubernetes-int-or-string` so that both
//! `cacheSize: 0` and `cacheSize: 256Mi` are accepted, exactly like core Kubernetes quantities.
//!
//! This module only describes data; semantic checks that a schema cannot express (a quantity that
//! is not a whole number of bytes, a name too long for the child objects) live in
//! [`crate::validate`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, Toleration, TopologySpreadConstraint};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// API group of the custom resource.
pub const GROUP: &str = "sis.dev";
/// API version of the custom resource.
pub const VERSION: &str = "v1alpha1";

/// Spec of a `SisCluster`: one sis server (StatefulSet with a volume) and a set of agents
/// (Deployment) in front of it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "sis.dev",
    version = "v1alpha1",
    kind = "SisCluster",
    plural = "sisclusters",
    shortname = "sis",
    namespaced,
    status = "SisClusterStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.agent.replicas",
        status_replicas_path = ".status.agent.replicas",
        label_selector_path = ".status.agent.selector"
    ),
    doc = "A sis image service: a storage server tier (a StatefulSet with a PersistentVolumeClaim, or a Deployment of replicas over one S3 bucket) and a pool of caching agents (Deployment + Service). `kubectl scale sis/NAME --replicas=N` scales the agents.",
    printcolumn = r#"{"name":"Agents ready","type":"integer","description":"Agent pods that are ready","jsonPath":".status.agent.readyReplicas"}"#,
    printcolumn = r#"{"name":"Server ready","type":"integer","description":"Server pods that are ready","jsonPath":".status.server.readyReplicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","description":"Running, Progressing or Degraded","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SisClusterSpec {
    /// Container image for the server and agent pods. Defaults to the image matching the
    /// operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// Image pull policy for the server and agent containers (Kubernetes default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// The agents: stateless, caching, resizing front ends. They forward storage to the server.
    #[serde(default)]
    pub agent: AgentSpec,

    /// The server: stores images on its PersistentVolumeClaim.
    #[serde(default)]
    pub server: ServerSpec,

    /// Secret key whose value is passed to every pod as `SIS_API_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token_secret: Option<SecretKeyRef>,

    /// Which resize variants the pods render (`sis --variants`, `--preset`, `--sign-key`),
    /// applied to agents and servers alike.
    #[serde(default)]
    pub variants: VariantsSpec,

    /// Metadata stripped from uploads before they are hashed and stored
    /// (`sis --strip-metadata`): `off`, `gps` (location) or `all`. Both tiers get it, since
    /// agents hash uploads too. Quote `"off"` in YAML (unquoted it reads as `false`).
    #[serde(default)]
    pub strip_metadata: StripMetadata,
}

/// The variant guard of every pod (`--variants`, `--preset`, `--sign-key`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VariantsSpec {
    /// `open`: any parameters; `presets`: only `?preset=NAME` (plus `format`); `signed`: only
    /// signed URLs or presets marked `public` (needs `signingKeySecret`).
    #[serde(default)]
    pub policy: VariantPolicy,

    /// Named parameter sets, served as `?preset=NAME`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub presets: Vec<PresetSpec>,

    /// Secret key holding the URL signing key(s), passed as `SIS_SIGN_KEYS` (several
    /// comma-separated keys during a rotation: `new,old`). A new value rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<SecretKeyRef>,
}

/// `--variants` policies.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VariantPolicy {
    #[default]
    Open,
    Presets,
    Signed,
}

impl VariantPolicy {
    /// The value as `sis --variants` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            VariantPolicy::Open => "open",
            VariantPolicy::Presets => "presets",
            VariantPolicy::Signed => "signed",
        }
    }
}

/// One preset: `--preset NAME=key:value,...[,public]`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PresetSpec {
    /// Name used in `?preset=NAME`: 1-64 of `A-Za-z0-9_-`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub name: String,

    /// The `/v1` variant parameters, e.g. `{w: 300, h: 200, fit: cover}` (values are numbers
    /// or strings; write `"true"`, `"1.5"` quoted).
    #[schemars(schema_with = "preset_params_schema")]
    pub params: BTreeMap<String, ParamValue>,

    /// Served unsigned under the `signed` policy.
    #[serde(default)]
    pub public: bool,
}

/// A preset parameter's value: a whole number or a string.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum ParamValue {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Int(n) => write!(f, "{n}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

fn preset_params_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
        },
    })
}

/// `--strip-metadata` values.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StripMetadata {
    #[default]
    Off,
    Gps,
    All,
}

impl StripMetadata {
    /// The value as `sis --strip-metadata` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            StripMetadata::Off => "off",
            StripMetadata::Gps => "gps",
            StripMetadata::All => "all",
        }
    }
}

/// `imagePullPolicy` values accepted by Kubernetes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The value as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The agent pool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Number of agent pods (the scale subresource: `kubectl scale sis/NAME --replicas=N`).
    /// Ignored while `autoscaling` is enabled: the HorizontalPodAutoscaler sets the count.
    #[serde(default = "default_agent_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Size of each agent's in-memory cache, a Kubernetes quantity (`256Mi`, `1Gi`, `0`).
    #[serde(default = "default_agent_cache_size")]
    #[schemars(schema_with = "quantity_schema")]
    pub cache_size: Quantity,

    /// Compute resources of the agent container (requests and limits). Autoscaling on CPU
    /// needs `requests.cpu`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// The Service in front of the agents.
    #[serde(default)]
    pub service: AgentServiceSpec,

    /// A HorizontalPodAutoscaler on CPU for the agent Deployment, owned by the SisCluster.
    /// Unset or `enabled: false`: no HPA (an existing one is removed) and `replicas` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// The agents' PodDisruptionBudget (default: `maxUnavailable: 1`).
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,

    /// Rolling update of the agents (default `maxSurge: 25%`, `maxUnavailable: 0`).
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// Seconds a terminating agent sleeps in its `preStop` hook before sis gets SIGTERM, so
    /// that it leaves the Service endpoints while still serving. The pod's grace period is this
    /// plus 35 s (sis's 30 s `--shutdown-timeout` plus a margin).
    #[serde(default = "default_pre_stop_seconds")]
    #[schemars(range(min = 0, max = 120))]
    pub pre_stop_seconds: i32,

    /// Node labels the agent pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the agent pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the agent pods. When neither this nor `topologySpreadConstraints` is set,
    /// agents get a soft pod anti-affinity per node and a soft spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of the agent pods (see `affinity` for the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the agent pods (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        AgentSpec {
            replicas: default_agent_replicas(),
            cache_size: default_agent_cache_size(),
            resources: None,
            service: AgentServiceSpec::default(),
            autoscaling: None,
            disruption_budget: DisruptionBudgetSpec::default(),
            rollout: RolloutSpec::default(),
            pre_stop_seconds: default_pre_stop_seconds(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            priority_class_name: None,
        }
    }
}

fn default_pre_stop_seconds() -> i32 {
    5
}

/// HorizontalPodAutoscaler settings (`autoscaling/v2`, or `v2beta2` where `v2` is not served).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// `false` removes the HPA and gives `replicas` back to the spec.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Lower bound of the agent count.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound of the agent count (at least `minReplicas`).
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of `resources.requests.cpu`) the HPA aims for.
    #[serde(
        rename = "targetCPUUtilizationPercentage",
        default = "default_target_cpu"
    )]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_utilization_percentage: i32,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        AutoscalingSpec {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_target_cpu(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_min_replicas() -> i32 {
    2
}

fn default_max_replicas() -> i32 {
    10
}

fn default_target_cpu() -> i32 {
    75
}

/// A PodDisruptionBudget (`policy/v1`, or `policy/v1beta1` where `v1` is not served).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// `false`: no PodDisruptionBudget (an existing one is removed).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pods that a voluntary disruption (a node drain) may take at once: a count or a
    /// percentage (`1`, `25%`).
    #[serde(default = "default_max_unavailable_budget")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_unavailable: IntOrPercent,
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        DisruptionBudgetSpec {
            enabled: true,
            max_unavailable: default_max_unavailable_budget(),
        }
    }
}

fn default_max_unavailable_budget() -> IntOrPercent {
    IntOrPercent::Int(1)
}

/// Rolling-update parameters of the agent Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Extra pods above the desired count during a rollout (count or percentage).
    #[serde(default = "default_max_surge")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_surge: IntOrPercent,
    /// Pods below the desired count during a rollout (count or percentage); not both 0.
    #[serde(default = "default_rollout_max_unavailable")]
    #[schemars(schema_with = "int_or_percent_schema")]
    pub max_unavailable: IntOrPercent,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            max_surge: default_max_surge(),
            max_unavailable: default_rollout_max_unavailable(),
        }
    }
}

fn default_max_surge() -> IntOrPercent {
    IntOrPercent::Percent("25%".to_owned())
}

fn default_rollout_max_unavailable() -> IntOrPercent {
    IntOrPercent::Int(0)
}

/// A pod count or a percentage (`3`, `25%`), as Kubernetes' int-or-string fields take.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(i32),
    Percent(String),
}

impl IntOrPercent {
    /// As Kubernetes' `IntOrString`.
    pub fn to_int_or_string(&self) -> k8s_openapi::apimachinery::pkg::util::intstr::IntOrString {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        match self {
            IntOrPercent::Int(n) => IntOrString::Int(*n),
            IntOrPercent::Percent(p) => IntOrString::String(p.clone()),
        }
    }

    /// Whether this is zero (`0` or `0%`).
    pub fn is_zero(&self) -> bool {
        match self {
            IntOrPercent::Int(n) => *n == 0,
            IntOrPercent::Percent(p) => p.trim_end_matches('%').parse::<u32>() == Ok(0),
        }
    }
}

/// Regular expression of the string form of [`IntOrPercent`].
pub const PERCENT_PATTERN: &str = r"^(100|[1-9]?[0-9])%$";

fn int_or_percent_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "minimum": 0,
        "pattern": PERCENT_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

fn default_agent_replicas() -> i32 {
    2
}

fn default_agent_cache_size() -> Quantity {
    Quantity("256Mi".to_owned())
}

/// The agents' Service.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentServiceSpec {
    /// Service type.
    #[serde(rename = "type", default)]
    pub type_: ServiceType,

    /// Port the Service listens on (the pods listen on 3333).
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for AgentServiceSpec {
    fn default() -> Self {
        AgentServiceSpec {
            type_: ServiceType::default(),
            port: default_service_port(),
        }
    }
}

fn default_service_port() -> i32 {
    80
}

/// Service types the operator supports for the agent Service.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The value as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The storage server tier.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSpec {
    /// Size of the server's in-memory cache; `0` because the agents cache.
    #[serde(default = "default_server_cache_size")]
    #[schemars(schema_with = "quantity_schema")]
    pub cache_size: Quantity,

    /// Where the server keeps images: a PersistentVolumeClaim (`size`, the default, one
    /// server in a StatefulSet) or an S3 bucket (`s3`, `replicas` stateless servers in a
    /// Deployment). Not both; switching an existing cluster between them is refused.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Server pods. With `storage.s3` the default is 2; with a volume it must be 1 (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub replicas: Option<i32>,

    /// Compute resources of the server container (requests and limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// The servers' PodDisruptionBudget, made only when there is more than one server
    /// (S3 storage). Default `maxUnavailable: 1`.
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,

    /// Node labels the server pods must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the server pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the server pods (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Topology spread constraints of the server pods (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// PriorityClass of the server pods (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            cache_size: default_server_cache_size(),
            storage: StorageSpec::default(),
            replicas: None,
            resources: None,
            disruption_budget: DisruptionBudgetSpec::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            affinity: None,
            topology_spread_constraints: Vec::new(),
            priority_class_name: None,
        }
    }
}

fn default_server_cache_size() -> Quantity {
    Quantity("0".to_owned())
}

/// The server's storage: a volume claim (`size`, `storageClassName`; 10Gi when nothing is
/// set) or an S3 bucket (`s3`). The claim is only honoured when it is created: a StatefulSet's
/// `volumeClaimTemplates` cannot be changed afterwards.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Requested size of the volume (default 10Gi when `s3` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_quantity_schema")]
    pub size: Option<Quantity>,

    /// StorageClass of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub storage_class_name: Option<String>,

    /// An S3-compatible bucket instead of a volume (`sis server --storage s3://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Spec>,
}

/// Default volume size when neither `size` nor `s3` is set.
pub const DEFAULT_STORAGE_SIZE: &str = "10Gi";

/// An S3-compatible object store (AWS S3, Ceph RGW, MinIO, R2, ...).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Spec {
    /// Bucket name (must exist).
    #[schemars(
        length(min = 3, max = 63),
        regex(pattern = r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    )]
    pub bucket: String,

    /// Key prefix inside the bucket (no leading or trailing `/`); none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[^/].*[^/]$|^[^/]$"))]
    pub prefix: Option<String>,

    /// Endpoint URL for a non-AWS store, e.g. `http://rgw.ceph.svc:8080`; AWS by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub endpoint: Option<String>,

    /// Region (sis's default when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub region: Option<String>,

    /// Path-style requests (`endpoint/bucket/key`), as Ceph RGW and MinIO usually need.
    #[serde(default)]
    pub path_style: bool,

    /// Secret with the access key pair, passed as `AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY`. Unset: the pods get no keys (e.g. a node or workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<S3CredentialsSecret>,
}

/// Where the S3 keys are: a Secret in the SisCluster's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsSecret {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key holding the access key id.
    #[serde(default = "default_access_key_id_key")]
    #[schemars(length(min = 1))]
    pub access_key_id_key: String,
    /// Key holding the secret access key.
    #[serde(default = "default_secret_access_key_key")]
    #[schemars(length(min = 1))]
    pub secret_access_key_key: String,
}

fn default_access_key_id_key() -> String {
    "AWS_ACCESS_KEY_ID".to_owned()
}

fn default_secret_access_key_key() -> String {
    "AWS_SECRET_ACCESS_KEY".to_owned()
}

/// Compute resources: the `limits` and `requests` of a core/v1 `ResourceRequirements`
/// (the fields Kubernetes 1.20 knows).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Maximum amount of compute resources allowed, e.g. `{cpu: 500m, memory: 512Mi}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub limits: BTreeMap<String, Quantity>,

    /// Minimum amount of compute resources required.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map_schema")]
    pub requests: BTreeMap<String, Quantity>,
}

/// A key in a Secret in the SisCluster's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Observed state, written by the operator only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SisClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Running`, `Progressing` or `Degraded` (a summary of the conditions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,

    /// URL of the agent Service inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,

    /// Agent replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<ReplicaStatus>,

    /// Server replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ReplicaStatus>,

    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Replica counts of one component.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Desired replicas.
    pub replicas: i32,
    /// Ready replicas.
    pub ready_replicas: i32,
    /// Label selector of the pods, as a string (the scale subresource's `labelSelectorPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// Regular expression for a non-negative Kubernetes quantity in string form
/// (the upstream quantity grammar without the sign).
pub const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Schema of a quantity: an integer or a string, as `x-kubernetes-int-or-string` requires on
/// 1.20 (`anyOf` integer/string, no `type`). `minimum` applies to the integer form only and
/// `pattern` to the string form only.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "minimum": 0,
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

fn optional_quantity_schema(generator: &mut SchemaGenerator) -> Schema {
    quantity_schema(generator)
}

fn quantity_map_schema(generator: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": quantity_schema(generator),
    })
}

/// The CRD, with the generated schema adjusted for Kubernetes 1.20 (see [`fix_schema`]).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = SisCluster::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            fix_schema(spec);
            for path in EXPLAINED_OBJECTS {
                if let Some(node) = node_at(spec, path) {
                    node.nullable = None;
                }
            }
        }
    }
    crd
}

/// Optional objects whose fields `kubectl explain` must list. A 1.20 apiserver publishes a
/// `nullable` property to OpenAPI v2 as an empty schema (`<>`, no fields), so these are not
/// `nullable`: to turn one off, remove the key (or set `enabled: false`), do not send `null`.
const EXPLAINED_OBJECTS: &[&[&str]] = &[
    &["agent", "autoscaling"],
    &["agent", "affinity"],
    &["server", "affinity"],
    &["server", "storage", "s3"],
    &["server", "storage", "s3", "credentialsSecret"],
    &["variants", "signingKeySecret"],
];

fn node_at<'a>(schema: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    let mut node = schema;
    for key in path {
        node = node.properties.as_mut()?.get_mut(*key)?;
    }
    Some(node)
}

/// Adjust a generated schema (the `spec` subtree) to what a 1.20 apiserver validates as meant:
/// - int-or-string nodes get exactly `anyOf: [{type: integer}, {type: string}]` (the derive
///   strips the branch types, which would let any JSON type through and then break decoding)
///   and are not `nullable` (they always have a value, from the user or the default);
/// - optional fields stay `nullable`: server-side apply on 1.20 turns an emptied object into
///   `null`, which must be accepted (it means "unset");
/// - no `null` in `enum`s (kubectl's client-side validation rejects such a CRD), and so enum
///   fields are not `nullable` either (1.20 would check `null` against the enum and fail).
pub fn fix_schema(schema: &mut JSONSchemaProps) {
    if let Some(values) = schema.enum_.as_mut() {
        values.retain(|v| !v.0.is_null());
        schema.nullable = None;
    }
    if schema.x_kubernetes_int_or_string == Some(true) {
        schema.nullable = None;
        let branch = |t: &str| JSONSchemaProps {
            type_: Some(t.to_owned()),
            ..JSONSchemaProps::default()
        };
        schema.any_of = Some(vec![branch("integer"), branch("string")]);
    }
    for child in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        fix_schema(child);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(child)) = schema.additional_properties.as_mut() {
        fix_schema(child);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(child)) = schema.items.as_mut() {
        fix_schema(child);
    }
}

/// The CRD as YAML, exactly what `sis-operator crd` prints and `deploy/crd.yaml` holds.
///
/// # Errors
/// Only if serialization fails, which would be a bug.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = quote_yaml11_booleans(&serde_yaml::to_string(&crd())?);
    Ok(format!(
        "# Generated by `sis-operator crd`; do not edit (regenerate instead).\n{body}"
    ))
}

/// serde_yaml writes YAML 1.2, where `off` is a string; kubectl and Helm read YAML 1.1, where
/// an unquoted `off` is `false`. Quote such scalars where the CRD has them (the `off` default
/// and enum value of `stripMetadata`).
fn quote_yaml11_booleans(yaml: &str) -> String {
    const WORDS: &[&str] = &["off", "on", "yes", "no", "y", "n"];
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.lines() {
        let quoted = ["default: ", "- "].iter().find_map(|prefix| {
            let rest = line.trim_start().strip_prefix(prefix)?;
            WORDS
                .contains(&rest.to_ascii_lowercase().as_str())
                .then(|| {
                    let head = &line[..line.len() - rest.len()];
                    format!("{head}'{rest}'")
                })
        });
        out.push_str(quoted.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn crd_json() -> Value {
        serde_json::to_value(crd()).unwrap()
    }

    fn spec_schema() -> Value {
        crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    #[test]
    fn names_scope_and_subresources() {
        let crd = crd_json();
        assert_eq!(crd["metadata"]["name"], "sisclusters.sis.dev");
        assert_eq!(
            crd["spec"]["names"],
            json!({"kind": "SisCluster", "plural": "sisclusters", "singular": "siscluster", "shortNames": ["sis"]})
        );
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert_eq!(
            version["subresources"],
            json!({"status": {}, "scale": {
                "specReplicasPath": ".spec.agent.replicas",
                "statusReplicasPath": ".status.agent.replicas",
                "labelSelectorPath": ".status.agent.selector"
            }})
        );
        let columns: Vec<_> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Agents ready", ".status.agent.readyReplicas"),
                ("Server ready", ".status.server.readyReplicas"),
                ("Phase", ".status.phase"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    /// A quantity must validate as int-or-string on 1.20 exactly as upstream types do.
    #[test]
    fn quantities_are_int_or_string_with_typed_branches() {
        let cache = &spec_schema()["properties"]["agent"]["properties"]["cacheSize"];
        assert_eq!(cache["x-kubernetes-int-or-string"], true);
        assert_eq!(
            cache["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert_eq!(cache["default"], "256Mi");
        assert!(cache.get("type").is_none());
        assert!(cache.get("nullable").is_none());
    }

    #[test]
    fn validation_and_defaults() {
        let spec = spec_schema();
        let agent = &spec["properties"]["agent"];
        assert_eq!(agent["properties"]["replicas"]["minimum"], 0.0);
        assert_eq!(agent["properties"]["replicas"]["default"], 2);
        assert_eq!(
            agent["properties"]["service"]["properties"]["port"]["maximum"],
            65535.0
        );
        assert_eq!(
            agent["properties"]["service"]["properties"]["type"]["enum"],
            json!(["ClusterIP", "NodePort", "LoadBalancer"])
        );
        assert_eq!(
            spec["properties"]["imagePullPolicy"]["enum"],
            json!(["Always", "IfNotPresent", "Never"])
        );
        // No schema default for the volume size: it would collide with `s3` (validate.rs
        // applies 10Gi when neither is set).
        assert!(
            spec["properties"]["server"]["properties"]["storage"]["properties"]["size"]
                .get("default")
                .is_none()
        );
        let agent_props = &spec["properties"]["agent"]["properties"];
        assert_eq!(
            agent_props["disruptionBudget"]["default"],
            json!({"enabled": true, "maxUnavailable": 1})
        );
        assert_eq!(
            agent_props["rollout"]["default"],
            json!({"maxSurge": "25%", "maxUnavailable": 0})
        );
        assert_eq!(
            agent_props["rollout"]["properties"]["maxSurge"]["x-kubernetes-int-or-string"],
            true
        );
        assert_eq!(agent_props["preStopSeconds"]["default"], 5);
        let autoscaling = &agent_props["autoscaling"]["properties"];
        assert_eq!(autoscaling["minReplicas"]["minimum"], 1.0);
        assert_eq!(autoscaling["targetCPUUtilizationPercentage"]["default"], 75);
        let s3 = &spec["properties"]["server"]["properties"]["storage"]["properties"]["s3"];
        assert_eq!(s3["required"], json!(["bucket"]));
        assert_eq!(s3["properties"]["pathStyle"]["default"], false);
        assert_eq!(
            s3["properties"]["credentialsSecret"]["properties"]["accessKeyIdKey"]["default"],
            "AWS_ACCESS_KEY_ID"
        );
        assert_eq!(
            agent_props["tolerations"]["items"]["properties"]["effect"]["type"],
            "string"
        );
        assert!(agent_props["affinity"]["properties"]["podAntiAffinity"].is_object());
        for explained in [&agent_props["autoscaling"], &agent_props["affinity"], s3] {
            assert!(
                explained.get("nullable").is_none(),
                "kubectl explain on 1.20"
            );
        }
        assert_eq!(
            agent_props["topologySpreadConstraints"]["items"]["required"],
            json!(["maxSkew", "topologyKey", "whenUnsatisfiable"])
        );
        assert_eq!(
            agent_props["resources"]["nullable"], true,
            "SSA on 1.20 may send null"
        );
        assert!(agent_props["replicas"].get("nullable").is_none());
        assert!(
            spec["properties"]["imagePullPolicy"]
                .get("nullable")
                .is_none()
        );
    }

    #[test]
    fn variants_and_strip_metadata_schema() {
        let spec = spec_schema();
        let variants = &spec["properties"]["variants"];
        assert_eq!(variants["default"], json!({"policy": "open"}));
        assert!(
            variants.get("nullable").is_none(),
            "kubectl explain on 1.20"
        );
        let props = &variants["properties"];
        assert_eq!(
            props["policy"]["enum"],
            json!(["open", "presets", "signed"])
        );
        assert_eq!(props["presets"]["x-kubernetes-list-type"], "map");
        assert_eq!(
            props["presets"]["x-kubernetes-list-map-keys"],
            json!(["name"])
        );
        let preset = &props["presets"]["items"];
        assert_eq!(preset["required"], json!(["name", "params"]));
        assert_eq!(preset["properties"]["params"]["minProperties"], 1);
        assert_eq!(
            preset["properties"]["params"]["additionalProperties"]["anyOf"],
            json!([{"type": "integer"}, {"type": "string"}])
        );
        assert!(props["signingKeySecret"].get("nullable").is_none());
        assert_eq!(
            props["signingKeySecret"]["required"],
            json!(["key", "name"])
        );
        let strip = &spec["properties"]["stripMetadata"];
        assert_eq!(strip["enum"], json!(["off", "gps", "all"]));
        assert_eq!(strip["default"], "off");
        // kubectl reads YAML 1.1: an unquoted `off` would be `false` in the CRD.
        let yaml = crd_yaml().unwrap();
        assert!(yaml.contains("default: 'off'") && yaml.contains("- 'off'"));
        assert!(!yaml.contains("- off\n"));
    }

    #[test]
    fn the_issue_sample_round_trips() {
        let sample = crate::fixtures::sample();
        assert_eq!(sample.spec.agent.replicas, 3);
        assert_eq!(sample.spec.server.cache_size.0, "0");
        assert_eq!(
            sample.spec.image_pull_policy,
            Some(PullPolicy::IfNotPresent)
        );
        let back: SisCluster =
            serde_json::from_value(serde_json::to_value(&sample).unwrap()).unwrap();
        assert_eq!(back, sample);
    }

    /// `deploy/crd.yaml` (owned by the packaging) must be exactly `sis-operator crd`.
    /// Regenerate with `cargo run -p sis-operator -- crd > deploy/crd.yaml`.
    #[test]
    fn deploy_crd_yaml_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crd.yaml");
        let generated = crd_yaml().unwrap();
        match std::fs::read_to_string(&path) {
            Ok(committed) => assert!(
                committed == generated,
                "deploy/crd.yaml differs from `sis-operator crd`; regenerate it with \
                 `cargo run -p sis-operator -- crd > deploy/crd.yaml`"
            ),
            Err(_) => eprintln!("deploy/crd.yaml not present yet; nothing to compare"),
        }
    }
}
