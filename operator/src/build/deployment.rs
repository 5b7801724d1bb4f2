//! The agents' Deployment: `<cluster>-agent`, `sis agent` pods forwarding to the server.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::labels::{self, Component};
use super::{SIS_PORT, object_meta, pod_annotations, pod_security_context, sis_container};
use crate::validate::ValidatedCluster;

/// Command-line arguments of the agent container (after `sis`).
pub fn agent_args(cluster: &ValidatedCluster) -> Vec<String> {
    vec![
        "agent".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{SIS_PORT}"),
        "--upstream".to_owned(),
        super::upstream_url(cluster),
        "--cache-size".to_owned(),
        cluster.agent.cache_size.to_cli(),
    ]
}

/// Build the agent Deployment.
pub fn build_agent_deployment(cluster: &ValidatedCluster) -> Deployment {
    let component = Component::Agent;
    let container = sis_container(
        cluster,
        agent_args(cluster),
        cluster.agent.resources.as_ref(),
        Vec::new(),
    );
    let mut template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::labels(cluster, component)),
            annotations: Some(pod_annotations()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            volumes: Some(vec![super::tmp_volume()]),
            security_context: Some(pod_security_context()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(40),
            ..PodSpec::default()
        }),
    };
    super::stamp_config_hash(&mut template);
    Deployment {
        metadata: object_meta(cluster, component),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.agent.replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(cluster, component)),
                match_expressions: None,
            },
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::validate::{Defaults, validate};

    /// The whole object is compared, not a few fields: everything in it reaches the apiserver,
    /// and an unintended change (a field 1.20 does not know, a lost `protocol`, a different
    /// hash meaning every pod restarts on upgrade) must show up in review as a diff of
    /// `testdata/agent-deployment.json`.
    #[test]
    fn agent_deployment_of_the_sample() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        let actual = serde_json::to_value(build_agent_deployment(&v)).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("testdata/agent-deployment.json")).unwrap();
        assert_eq!(
            actual,
            expected,
            "{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }
}
