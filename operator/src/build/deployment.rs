//! The agents' Deployment: `<cluster>-agent`, `sis agent` pods forwarding to the server.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};

use super::labels::Component;
use super::{SIS_PORT, component_selector, object_meta, sis_container, sis_pod_template};
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
    let template = sis_pod_template(cluster, component, container);
    Deployment {
        metadata: object_meta(cluster, component),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.agent.replicas),
            selector: component_selector(cluster, component),
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
