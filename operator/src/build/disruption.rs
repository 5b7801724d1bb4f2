//! PodDisruptionBudgets `<cluster>-agent` and `<cluster>-server`: how many pods of a tier a
//! voluntary disruption (a node drain) may take at once.
//!
//! Built in the `policy/v1` shape; `policy/v1beta1` spells `maxUnavailable` and `selector` the
//! same, so [`crate::apply`] sends it under whichever version the apiserver serves. The server
//! tier only gets one when it has more than one pod (S3 storage): a budget over a single pod
//! would either block every drain or protect nothing.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};

use super::labels::Component;
use super::{component_selector, object_meta};
use crate::validate::ValidatedCluster;

/// The budget of `component`, or `None` when it has none.
pub fn build_disruption_budget(
    cluster: &ValidatedCluster,
    component: Component,
) -> Option<PodDisruptionBudget> {
    let max_unavailable = match component {
        Component::Agent => cluster.agent.disruption_budget.as_ref()?,
        Component::Server => cluster.server.disruption_budget.as_ref()?,
    };
    Some(PodDisruptionBudget {
        metadata: object_meta(cluster, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(max_unavailable.to_int_or_string()),
            selector: Some(component_selector(cluster, component)),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::validate::{Defaults, validate};
    use serde_json::json;

    fn budgets(
        cluster: &crate::crd::SisCluster,
    ) -> (Option<serde_json::Value>, Option<serde_json::Value>) {
        let v = validate(cluster, &Defaults::default()).unwrap();
        let json = |c| build_disruption_budget(&v, c).map(|p| serde_json::to_value(p).unwrap());
        (json(Component::Agent), json(Component::Server))
    }

    /// Whole object of the agents' default budget.
    #[test]
    fn agents_get_max_unavailable_one_by_default() {
        let (agent, server) = budgets(&fixtures::sample());
        assert_eq!(
            agent.unwrap(),
            json!({
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": "photos-agent",
                    "namespace": "media",
                    "labels": {
                        "app.kubernetes.io/component": "agent",
                        "app.kubernetes.io/instance": "photos",
                        "app.kubernetes.io/managed-by": "sis-operator",
                        "app.kubernetes.io/name": "sis",
                        "app.kubernetes.io/version": "0.1.0"
                    },
                    "ownerReferences": [{
                        "apiVersion": "sis.dev/v1alpha1", "controller": true, "kind": "SisCluster",
                        "name": "photos", "uid": "6c8f0f5e-0000-4000-8000-000000000001"
                    }]
                },
                "spec": {
                    "maxUnavailable": 1,
                    "selector": {"matchLabels": {
                        "app.kubernetes.io/component": "agent",
                        "app.kubernetes.io/instance": "photos",
                        "app.kubernetes.io/name": "sis"
                    }}
                }
            })
        );
        assert_eq!(server, None, "a single volume-backed server gets no budget");
    }

    #[test]
    fn replicated_servers_get_one_and_budgets_can_be_tuned_or_off() {
        let mut cluster = fixtures::s3_sample();
        cluster.spec.agent.disruption_budget.max_unavailable =
            crate::crd::IntOrPercent::Percent("25%".into());
        let (agent, server) = budgets(&cluster);
        assert_eq!(agent.unwrap()["spec"]["maxUnavailable"], "25%");
        let server = server.unwrap();
        assert_eq!(server["metadata"]["name"], "photos-server");
        assert_eq!(server["spec"]["maxUnavailable"], 1);
        assert_eq!(
            server["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
            "server"
        );
        cluster.spec.agent.disruption_budget.enabled = false;
        cluster.spec.server.replicas = Some(1);
        assert_eq!(budgets(&cluster), (None, None));
    }
}
