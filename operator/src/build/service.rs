//! The two Services: `<cluster>-server` (the agents' `--upstream`: headless for the one
//! volume-backed server, which gives its pod a stable DNS name; a ClusterIP spreading
//! connections over the S3-backed servers) and `<cluster>-agent` (the user-facing endpoint, type
//! and port from the spec).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{self, Component};
use super::{PORT_NAME, SIS_PORT, object_meta};
use crate::validate::ValidatedCluster;

fn port(port: i32) -> ServicePort {
    ServicePort {
        name: Some(PORT_NAME.to_owned()),
        port,
        target_port: Some(IntOrString::String(PORT_NAME.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// Build the server Service: headless with a volume (also the StatefulSet's `serviceName`),
/// a plain ClusterIP over S3 servers. `clusterIP` is immutable, which is one reason switching
/// storage on a live cluster is refused.
pub fn build_server_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(cluster, Component::Server),
        spec: Some(ServiceSpec {
            cluster_ip: cluster
                .server
                .storage
                .is_volume()
                .then(|| "None".to_owned()),
            selector: Some(labels::selector_labels(cluster, Component::Server)),
            ports: Some(vec![port(SIS_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Build the agent Service.
pub fn build_agent_service(cluster: &ValidatedCluster) -> Service {
    Service {
        metadata: object_meta(cluster, Component::Agent),
        spec: Some(ServiceSpec {
            type_: Some(cluster.agent.service_type.as_str().to_owned()),
            selector: Some(labels::selector_labels(cluster, Component::Agent)),
            ports: Some(vec![port(cluster.agent.service_port)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::validate::{Defaults, validate};
    use serde_json::json;

    fn owner_and_labels(component: &str) -> serde_json::Value {
        json!({
            "labels": {
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/instance": "photos",
                "app.kubernetes.io/managed-by": "sis-operator",
                "app.kubernetes.io/name": "sis",
                "app.kubernetes.io/version": "0.1.0"
            },
            "name": format!("photos-{component}"),
            "namespace": "media",
            "ownerReferences": [{
                "apiVersion": "sis.dev/v1alpha1",
                "controller": true,
                "kind": "SisCluster",
                "name": "photos",
                "uid": "6c8f0f5e-0000-4000-8000-000000000001"
            }]
        })
    }

    fn selector(component: &str) -> serde_json::Value {
        json!({
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/instance": "photos",
            "app.kubernetes.io/name": "sis"
        })
    }

    /// Whole objects: `protocol` must be present (server-side apply on 1.20 needs the list-map
    /// key) and the server Service must stay headless (`clusterIP` is immutable).
    #[test]
    fn services_of_the_sample() {
        let v = validate(&fixtures::sample(), &Defaults::default()).unwrap();
        assert_eq!(
            serde_json::to_value(build_server_service(&v)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": owner_and_labels("server"),
                "spec": {
                    "clusterIP": "None",
                    "ports": [{"name": "http", "port": 3333, "protocol": "TCP", "targetPort": "http"}],
                    "selector": selector("server")
                }
            })
        );
        assert_eq!(
            serde_json::to_value(build_agent_service(&v)).unwrap(),
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": owner_and_labels("agent"),
                "spec": {
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}],
                    "selector": selector("agent"),
                    "type": "ClusterIP"
                }
            })
        );
    }

    #[test]
    fn s3_servers_get_a_load_balancing_service() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        let spec = serde_json::to_value(build_server_service(&v).spec.unwrap()).unwrap();
        assert_eq!(
            spec,
            json!({
                "ports": [{"name": "http", "port": 3333, "protocol": "TCP", "targetPort": "http"}],
                "selector": selector("server")
            })
        );
    }

    #[test]
    fn agent_service_type_and_port_follow_the_spec() {
        let mut cluster = fixtures::sample();
        cluster.spec.agent.service.type_ = crate::crd::ServiceType::NodePort;
        cluster.spec.agent.service.port = 8080;
        let v = validate(&cluster, &Defaults::default()).unwrap();
        let spec = build_agent_service(&v).spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.unwrap()[0].port, 8080);
    }
}
