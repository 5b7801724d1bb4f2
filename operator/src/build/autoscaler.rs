//! The agents' HorizontalPodAutoscaler `<cluster>-agent`: CPU utilization between
//! `minReplicas` and `maxReplicas`, targeting the agent Deployment.
//!
//! Built in the `autoscaling/v2` shape; the fields used (`scaleTargetRef`, bounds, one
//! `Resource` metric with a `Utilization` target) are spelled the same in `v2beta2`, so
//! [`crate::apply`] sends it under whichever version the apiserver serves.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::labels::Component;
use super::object_meta;
use crate::validate::ValidatedCluster;

/// The HPA, or `None` when autoscaling is off.
pub fn build_agent_autoscaler(cluster: &ValidatedCluster) -> Option<HorizontalPodAutoscaler> {
    let autoscaling = cluster.agent.autoscaling.as_ref()?;
    let component = Component::Agent;
    Some(HorizontalPodAutoscaler {
        metadata: object_meta(cluster, component),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: component.resource_name(&cluster.name),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(autoscaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
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

    fn hpa(spec: &str) -> Option<serde_json::Value> {
        let cluster = fixtures::cluster_from_yaml(&format!(
            "metadata: {{name: photos, namespace: media, uid: '1'}}\nspec: {spec}"
        ));
        let v = validate(&cluster, &Defaults::default()).unwrap();
        build_agent_autoscaler(&v).map(|h| serde_json::to_value(h).unwrap())
    }

    /// Whole object: this is what reaches the apiserver (as v2 or v2beta2).
    #[test]
    fn hpa_of_enabled_autoscaling() {
        let actual = hpa(
            "{image: 'sis:1', agent: {autoscaling: {minReplicas: 3, maxReplicas: 12, targetCPUUtilizationPercentage: 60}}}",
        )
        .unwrap();
        assert_eq!(
            actual,
            json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {
                    "name": "photos-agent",
                    "namespace": "media",
                    "labels": {
                        "app.kubernetes.io/component": "agent",
                        "app.kubernetes.io/instance": "photos",
                        "app.kubernetes.io/managed-by": "sis-operator",
                        "app.kubernetes.io/name": "sis",
                        "app.kubernetes.io/version": "1"
                    },
                    "ownerReferences": [{
                        "apiVersion": "sis.dev/v1alpha1", "controller": true,
                        "kind": "SisCluster", "name": "photos", "uid": "1"
                    }]
                },
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "photos-agent"},
                    "minReplicas": 3,
                    "maxReplicas": 12,
                    "metrics": [{
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}
                    }]
                }
            })
        );
    }

    #[test]
    fn defaults_and_off() {
        let on = hpa("{agent: {autoscaling: {}}}").unwrap();
        assert_eq!(on["spec"]["minReplicas"], 2);
        assert_eq!(on["spec"]["maxReplicas"], 10);
        assert_eq!(
            on["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            75
        );
        assert_eq!(hpa("{}"), None);
        assert_eq!(hpa("{agent: {autoscaling: {enabled: false}}}"), None);
    }
}
