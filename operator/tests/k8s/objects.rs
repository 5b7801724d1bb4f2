//! What the real-cluster tests apply, read and assert: the sample SisCluster, its children,
//! their pod templates, conditions and events.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodTemplateSpec, Probe, Secret, Service,
};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sis_operator::SisCluster;
use sis_operator::build::stamped_config_hash;

use super::harness::{TestNamespace, wait};

/// The sample SisCluster in `namespace`.
pub fn sample(namespace: &str) -> Value {
    json!({
        "apiVersion": "sis.dev/v1alpha1",
        "kind": "SisCluster",
        "metadata": {"name": "photos", "namespace": namespace},
        "spec": {
            "image": "registry.example/sis:0.1.0",
            "imagePullPolicy": "IfNotPresent",
            "agent": {
                "replicas": 3,
                "cacheSize": "256Mi",
                "resources": {},
                "service": {"type": "ClusterIP", "port": 80}
            },
            "server": {
                "cacheSize": 0,
                "storage": {"size": "10Gi", "storageClassName": "fast"},
                "resources": {}
            },
            "apiTokenSecret": {"name": "sis-token", "key": "token"}
        }
    })
}

/// The four children of one SisCluster, as the apiserver returns them.
pub struct Children {
    pub statefulset: StatefulSet,
    pub deployment: Deployment,
    pub server_service: Service,
    pub agent_service: Service,
}

/// Every field of `expected` is present with the same value in `actual` (which also carries
/// what the apiserver defaulted). Returns the first difference.
fn subset_diff(expected: &Value, actual: &Value, path: &str) -> Option<String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(k, v)| match a.get(k) {
            Some(av) => subset_diff(v, av, &format!("{path}.{k}")),
            None => Some(format!("{path}.{k} missing")),
        }),
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Some(format!(
                    "{path}: {} items expected, {} found",
                    e.len(),
                    a.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .find_map(|(i, (ev, av))| subset_diff(ev, av, &format!("{path}[{i}]")))
        }
        _ if expected == actual => None,
        _ => Some(format!("{path}: expected {expected}, found {actual}")),
    }
}

pub fn assert_subset<T: serde::Serialize>(expected: &T, actual: &T) {
    let (e, a) = (
        serde_json::to_value(expected).unwrap(),
        serde_json::to_value(actual).unwrap(),
    );
    if let Some(diff) = subset_diff(&e, &a, "") {
        panic!("{diff}\nexpected ⊆ actual failed;\nexpected: {e:#}\nactual: {a:#}");
    }
}

/// A workload whose pods run the one `sis` container.
pub trait SisWorkload {
    fn pod_template(&self) -> &PodTemplateSpec;

    /// The `sis` container of the pod template.
    fn sis_container(&self) -> Container {
        self.pod_template().spec.as_ref().unwrap().containers[0].clone()
    }

    /// The pod template's config-hash annotation.
    fn config_hash(&self) -> String {
        stamped_config_hash(self.pod_template())
            .expect("the pod template carries the config hash")
            .to_owned()
    }
}

impl SisWorkload for StatefulSet {
    fn pod_template(&self) -> &PodTemplateSpec {
        &self.spec.as_ref().unwrap().template
    }
}

impl SisWorkload for Deployment {
    fn pod_template(&self) -> &PodTemplateSpec {
        &self.spec.as_ref().unwrap().template
    }
}

/// The path a probe requests.
pub fn probe_path(probe: Option<&Probe>) -> Option<&str> {
    probe?.http_get.as_ref()?.path.as_deref()
}

/// The server's `data` claim template and the storage it requests.
pub fn data_claim(statefulset: &StatefulSet) -> (&PersistentVolumeClaim, String) {
    let claim = &statefulset
        .spec
        .as_ref()
        .unwrap()
        .volume_claim_templates
        .as_ref()
        .unwrap()[0];
    let size = claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"]
        .0
        .clone();
    (claim, size)
}

/// (status, reason) of a condition.
pub fn condition(cluster: &SisCluster, type_: &str) -> Option<(String, String)> {
    let c = cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Whether a condition has `status` (and `reason`, if given).
pub fn has_condition(
    cluster: &SisCluster,
    type_: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    condition(cluster, type_)
        .is_some_and(|(s, r)| s == status && reason.is_none_or(|reason| r == reason))
}

/// The message of a condition (panics if it is missing).
pub fn condition_message(cluster: &SisCluster, type_: &str) -> String {
    cluster
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap()
        .message
        .clone()
}

/// Whether an event is a Warning with `reason`.
pub fn is_warning(event: &Event, reason: &str) -> bool {
    event.reason.as_deref() == Some(reason) && event.type_.as_deref() == Some("Warning")
}

impl TestNamespace {
    /// Apply a SisCluster as a user would (`kubectl apply --server-side`).
    pub async fn apply(&self, object: &Value) -> SisCluster {
        let name = object["metadata"]["name"].as_str().unwrap();
        self.api::<SisCluster>()
            .patch(
                name,
                &PatchParams::apply("test-user").force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("applying SisCluster {name}: {e}"))
    }

    /// The usual start of a test: an operator `<namespace>-a`, the sample applied, and its
    /// children created.
    pub async fn start_operator_and_sample(&self) -> (super::harness::Operator, Children) {
        let operator = self.start_operator(&format!("{}-a", self.name));
        self.apply(&sample(self.name)).await;
        let children = self.children("photos").await;
        (operator, children)
    }

    pub async fn create_token_secret(&self, token: &str) {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "sis-token", "namespace": self.name},
            "stringData": {"token": token}
        }))
        .unwrap();
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// Wait until all four children of the SisCluster `name` exist.
    pub async fn children(&self, name: &str) -> Children {
        let sts = self.api::<StatefulSet>();
        let deploy = self.api::<Deployment>();
        let svc = self.api::<Service>();
        wait("children created", Duration::from_secs(60), || async {
            Some(Children {
                statefulset: sts.get_opt(&format!("{name}-server")).await.ok()??,
                deployment: deploy.get_opt(&format!("{name}-agent")).await.ok()??,
                server_service: svc.get_opt(&format!("{name}-server")).await.ok()??,
                agent_service: svc.get_opt(&format!("{name}-agent")).await.ok()??,
            })
        })
        .await
    }

    /// Wait until the StatefulSet controller has made the sample's data PVC.
    pub async fn wait_data_pvc(&self) -> PersistentVolumeClaim {
        let pvcs = self.api::<PersistentVolumeClaim>();
        wait(
            "PVC data-photos-server-0",
            Duration::from_secs(30),
            || async { pvcs.get_opt("data-photos-server-0").await.ok()? },
        )
        .await
    }

    /// Act as the kubelet: mark every pod Running and Ready, once `expected` pods exist.
    pub async fn make_pods_ready(&self, expected: usize) {
        let pods = self.api::<Pod>();
        let list = wait("pods created", Duration::from_secs(60), || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            (list.items.len() >= expected).then_some(list)
        })
        .await;
        for pod in list.items {
            let status = json!({"status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"}
                ]
            }});
            pods.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .unwrap();
        }
    }

    /// The events the operator reported in this namespace.
    pub async fn operator_events(&self) -> Vec<Event> {
        self.api::<Event>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("sis-operator"))
            .collect()
    }

    /// Poll the operator's events until `done` holds for them; returns them.
    pub async fn wait_events(&self, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait(what, Duration::from_secs(20), || async {
            let events = self.operator_events().await;
            done(&events).then_some(events)
        })
        .await
    }

    /// Wait until the operator reported an event for which `matches` holds.
    pub async fn wait_event(&self, what: &str, matches: impl Fn(&Event) -> bool) {
        self.wait_events(what, |events| events.iter().any(&matches))
            .await;
    }
}
