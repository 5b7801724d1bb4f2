//! The Deployments: `<cluster>-agent` (`sis agent` pods forwarding to the server tier) and, with
//! S3 storage, `<cluster>-server` (stateless `sis server` replicas over one bucket).

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, LifecycleHandler};

use super::labels::Component;
use super::{
    SIS_PORT, component_selector, object_meta, secret_env, sis_container, sis_pod_template,
};
use crate::crd::S3Spec;
use crate::validate::{ServerStorage, ValidatedCluster};

/// Seconds sis may take to drain after SIGTERM (its `--shutdown-timeout` default, 30 s) plus a
/// margin; a pod's grace period is this plus its `preStop` sleep.
pub const SHUTDOWN_GRACE_SECONDS: i64 = 35;
/// Grace period of the server pods (no `preStop` sleep: agents retry another server).
pub const SERVER_GRACE_SECONDS: i64 = 40;

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

/// Build the agent Deployment. `replicas` is left out while an HPA owns the count.
pub fn build_agent_deployment(cluster: &ValidatedCluster) -> Deployment {
    let component = Component::Agent;
    let mut container = sis_container(
        cluster,
        agent_args(cluster),
        cluster.agent.resources.as_ref(),
        Vec::new(),
        Vec::new(),
    );
    let pre_stop = cluster.agent.pre_stop_seconds;
    if pre_stop > 0 {
        // Endpoints controllers and kube-proxy/ingresses take a moment to drop a terminating
        // pod; sleeping first keeps it serving until they have, then sis drains on SIGTERM.
        container.lifecycle = Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".to_owned(), pre_stop.to_string()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        });
    }
    let template = sis_pod_template(
        cluster,
        component,
        container,
        i64::from(pre_stop) + SHUTDOWN_GRACE_SECONDS,
    );
    Deployment {
        metadata: object_meta(cluster, component),
        spec: Some(DeploymentSpec {
            replicas: cluster.agent.replicas,
            selector: component_selector(cluster, component),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(cluster.agent.max_surge.to_int_or_string()),
                    max_unavailable: Some(cluster.agent.max_unavailable.to_int_or_string()),
                }),
            }),
            template,
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// `s3://BUCKET[/PREFIX]`, the value of `sis server --storage`.
pub fn s3_url(s3: &S3Spec) -> String {
    match s3.prefix.as_deref().map(|p| p.trim_matches('/')) {
        Some(prefix) if !prefix.is_empty() => format!("s3://{}/{prefix}", s3.bucket),
        _ => format!("s3://{}", s3.bucket),
    }
}

/// Command-line arguments of an S3-backed server container (after `sis`).
pub fn s3_server_args(cluster: &ValidatedCluster, s3: &S3Spec) -> Vec<String> {
    let mut args = vec![
        "server".to_owned(),
        "--listen".to_owned(),
        format!("0.0.0.0:{SIS_PORT}"),
        "--storage".to_owned(),
        s3_url(s3),
    ];
    if let Some(endpoint) = &s3.endpoint {
        args.extend(["--s3-endpoint".to_owned(), endpoint.clone()]);
    }
    if let Some(region) = &s3.region {
        args.extend(["--s3-region".to_owned(), region.clone()]);
    }
    if s3.path_style {
        args.push("--s3-path-style".to_owned());
    }
    args.extend([
        "--cache-size".to_owned(),
        cluster.server.cache_size.to_cli(),
    ]);
    args
}

/// Build the server Deployment of S3 storage; a volume-backed cluster has none (its server is
/// a StatefulSet), so this builds from an empty S3 spec then, which the caller never applies.
pub fn build_server_deployment(cluster: &ValidatedCluster) -> Deployment {
    let component = Component::Server;
    let (args, env) = match &cluster.server.storage {
        ServerStorage::S3(s3) => {
            let env = s3
                .credentials_secret
                .iter()
                .flat_map(|c| {
                    [
                        secret_env("AWS_ACCESS_KEY_ID", &c.name, &c.access_key_id_key),
                        secret_env("AWS_SECRET_ACCESS_KEY", &c.name, &c.secret_access_key_key),
                    ]
                })
                .collect();
            (s3_server_args(cluster, s3), env)
        }
        ServerStorage::Volume { .. } => (super::statefulset::server_args(cluster), Vec::new()),
    };
    let container = sis_container(
        cluster,
        args,
        cluster.server.resources.as_ref(),
        Vec::new(),
        env,
    );
    let template = sis_pod_template(cluster, component, container, SERVER_GRACE_SECONDS);
    Deployment {
        metadata: object_meta(cluster, component),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.server.replicas),
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

    /// The S3 shape of the issue: stateless servers (default 2) with the S3 flags and the
    /// keys from the Secret, no volume; same whole-object reasoning as the agents'.
    #[test]
    fn server_deployment_over_s3() {
        let v = validate(&fixtures::s3_sample(), &Defaults::default()).unwrap();
        let actual = serde_json::to_value(build_server_deployment(&v)).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(include_str!("testdata/server-deployment-s3.json")).unwrap();
        assert_eq!(
            actual,
            expected,
            "{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }

    #[test]
    fn s3_arguments_follow_the_spec() {
        let mut cluster = fixtures::s3_sample();
        let s3 = cluster.spec.server.storage.s3.as_mut().unwrap();
        s3.prefix = None;
        s3.endpoint = None;
        s3.region = None;
        s3.path_style = false;
        let v = validate(&cluster, &Defaults::default()).unwrap();
        let ServerStorage::S3(s3) = &v.server.storage else {
            panic!("S3 storage expected");
        };
        assert_eq!(
            s3_server_args(&v, s3),
            [
                "server",
                "--listen",
                "0.0.0.0:3333",
                "--storage",
                "s3://photos",
                "--cache-size",
                "0"
            ]
        );
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa_and_rollout_follows_the_spec() {
        let cluster = fixtures::cluster_from_yaml(
            r#"
            metadata: {name: p, namespace: m, uid: "1"}
            spec:
              agent:
                replicas: 4
                autoscaling: {minReplicas: 3, maxReplicas: 9}
                rollout: {maxSurge: 2, maxUnavailable: "10%"}
                preStopSeconds: 12
            "#,
        );
        let v = validate(&cluster, &Defaults::default()).unwrap();
        let d = serde_json::to_value(build_agent_deployment(&v)).unwrap();
        assert!(d["spec"].get("replicas").is_none(), "{d}");
        assert_eq!(
            d["spec"]["strategy"],
            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2, "maxUnavailable": "10%"}})
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["terminationGracePeriodSeconds"], 47);
        assert_eq!(
            pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"],
            serde_json::json!(["sleep", "12"])
        );
        let mut off = cluster.clone();
        off.spec.agent.autoscaling.as_mut().unwrap().enabled = false;
        let v = validate(&off, &Defaults::default()).unwrap();
        assert_eq!(build_agent_deployment(&v).spec.unwrap().replicas, Some(4));
    }
}
