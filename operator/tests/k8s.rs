//! Real-cluster tests: the `sis-operator` binary against a real kube-apiserver and
//! kube-controller-manager (1.20, from `tests/k8s/cluster.sh`), no mocks.
//!
//! Every test is `#[ignore]`d so a plain `cargo test` does not need a cluster;
//! `tests/k8s/operator.sh` starts one and runs them with `--ignored`, setting
//! `SIS_TEST_KUBECONFIG`. Run by hand without it they skip, except with `CI=true`, where a missing
//! cluster fails them.
//!
//! Each test owns a namespace and starts its own operator process(es) watching only that
//! namespace, with their own Lease, so the tests can run in parallel against one control plane.
//! There is no kubelet: pods stay Pending unless a test patches their status, as a kubelet would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The helpers live in `tests/k8s/` (a directory without `main.rs`, so not a test target).
#[path = "k8s/contract.rs"]
mod contract;
#[path = "k8s/harness.rs"]
mod harness;
#[path = "k8s/http.rs"]
mod http;
#[path = "k8s/objects.rs"]
mod objects;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sis_operator::SisCluster;
use sis_operator::apply::ApiVersions;
use sis_operator::build;
use sis_operator::validate::{Defaults, validate};

use contract::{PNG_2X2, free_port, sis_binary, start_container, wait_probes};
use harness::{TestNamespace, wait, wait_metric};
use http::{http_get, http_request, metrics_text};
use objects::{
    SisWorkload, assert_subset, condition, condition_message, data_claim, has_condition,
    is_warning, probe_path, sample,
};

// ---------------------------------------------------------------------------------------------
// 1. Install the CRD, apply the sample, assert every child and its fields.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_1_sample_creates_every_child() {
    let Some(ns) = TestNamespace::create("op-create").await else {
        return;
    };
    let (_operator, live) = ns.start_operator_and_sample().await;

    // The children equal what the pure builders make from the live SisCluster (with the
    // apiserver's defaults on top).
    let cluster = ns.api::<SisCluster>().get("photos").await.unwrap();
    let mut validated = validate(&cluster, &Defaults::default()).unwrap();
    validated.secret_hashes =
        sis_operator::dereference::secret_hashes(&ns.client, ns.name, &validated)
            .await
            .unwrap();
    let expected = build::build_children(&validated);
    let build::ServerWorkload::StatefulSet(expected_statefulset) = &expected.server else {
        panic!("a volume-backed server is a StatefulSet");
    };
    assert_subset(expected_statefulset, &live.statefulset);
    assert_subset(&expected.agent_deployment, &live.deployment);
    assert_subset(&expected.server_service, &live.server_service);
    assert_subset(&expected.agent_service, &live.agent_service);

    // And, spelled out, the fields the issue asks for.
    let owner = &live.deployment.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("SisCluster", "photos", Some(true))
    );
    assert_eq!(owner.uid, cluster.uid().unwrap());
    for labels in [
        live.statefulset.labels(),
        live.deployment.labels(),
        live.agent_service.labels(),
    ] {
        for key in ["name", "instance", "component", "managed-by", "version"] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "label {key} in {labels:?}"
            );
        }
        assert_eq!(labels["app.kubernetes.io/version"], "0.1.0");
    }
    let server = live.statefulset.sis_container();
    assert_eq!(server.command, Some(vec!["sis".to_owned()]));
    assert_eq!(
        server.args.clone().unwrap(),
        [
            "server",
            "--listen",
            "0.0.0.0:3333",
            "--data-dir",
            "/data",
            "--cache-size",
            "0"
        ]
    );
    let agent = live.deployment.sis_container();
    assert_eq!(
        agent.args.clone().unwrap(),
        [
            "agent",
            "--listen",
            "0.0.0.0:3333",
            "--upstream",
            &format!("http://photos-server.{}.svc:3333", ns.name),
            "--cache-size",
            "256MiB"
        ]
    );
    for c in [&server, &agent] {
        assert_eq!(c.image.as_deref(), Some("registry.example/sis:0.1.0"));
        assert_eq!(probe_path(c.liveness_probe.as_ref()), Some("/healthz"));
        assert_eq!(probe_path(c.readiness_probe.as_ref()), Some("/readyz"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.read_only_root_filesystem, sc.run_as_non_root),
            (Some(true), Some(true))
        );
        let env = c.env.as_ref().unwrap();
        let secret = env[0]
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!(
            (
                env[0].name.as_str(),
                secret.name.as_str(),
                secret.key.as_str()
            ),
            ("SIS_API_TOKEN", "sis-token", "token")
        );
    }
    let sts_spec = live.statefulset.spec.as_ref().unwrap();
    assert_eq!(sts_spec.replicas, Some(1));
    assert_eq!(sts_spec.service_name.as_deref(), Some("photos-server"));
    let (claim, claim_size) = data_claim(&live.statefulset);
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(
        claim.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("fast")
    );
    assert_eq!(claim_size, "10Gi");
    assert_eq!(
        server.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/data"
    );
    let server_template = live.statefulset.pod_template();
    let pod_sc = server_template
        .spec
        .as_ref()
        .unwrap()
        .security_context
        .as_ref()
        .unwrap();
    assert_eq!(
        (pod_sc.run_as_user, pod_sc.fs_group),
        (Some(10001), Some(10001))
    );
    let annotations = server_template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "3333");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(live.statefulset.config_hash().len(), 16);
    assert_eq!(live.deployment.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(
        live.server_service
            .spec
            .as_ref()
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );
    let agent_svc = live.agent_service.spec.as_ref().unwrap();
    assert_eq!(agent_svc.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(agent_svc.ports.as_ref().unwrap()[0].port, 80);

    // The StatefulSet controller made the claim.
    ns.wait_data_pvc().await;

    // Status and events.
    let cluster = ns
        .wait_for_photos("status written", Duration::from_secs(30), |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == c.metadata.generation)
        })
        .await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://photos-agent.{}.svc:80", ns.name).as_str())
    );
    assert_eq!(status.agent.as_ref().unwrap().replicas, 3);
    assert_eq!(status.phase.as_deref(), Some("Progressing"));
    assert_eq!(condition(&cluster, "Ready").unwrap().0, "False");
    assert_eq!(condition(&cluster, "Progressing").unwrap().0, "True");
    assert_eq!(
        condition(&cluster, "Degraded").unwrap(),
        ("False".to_owned(), "AsExpected".to_owned())
    );
    let events = ns
        .wait_events("Created events", |events| {
            events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("Created"))
                .count()
                >= 4
        })
        .await;
    let notes: Vec<_> = events.iter().filter_map(|e| e.note.clone()).collect();
    for child in [
        "StatefulSet photos-server created",
        "Deployment photos-agent created",
        "Service photos-agent created",
    ] {
        assert!(notes.iter().any(|n| n == child), "{child} in {notes:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Spec changes converge and roll the pods (new pod-template hash); removed fields go away.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_2_spec_changes_converge() {
    let Some(ns) = TestNamespace::create("op-update").await else {
        return;
    };
    let _operator = ns.start_operator("op-update-a");
    let mut object = sample(ns.name);
    object["spec"]["agent"]["resources"] = json!({"limits": {"memory": "512Mi"}});
    ns.apply(&object).await;
    let before = ns.children("photos").await;
    let agent_hash = before.deployment.config_hash();
    let server_hash = before.statefulset.config_hash();
    assert!(
        before
            .deployment
            .sis_container()
            .resources
            .unwrap()
            .limits
            .is_some()
    );

    object["spec"]["agent"]["replicas"] = json!(5);
    object["spec"]["agent"]["cacheSize"] = json!("1Gi");
    object["spec"]["agent"]["service"]["port"] = json!(8080);
    object["spec"]["agent"]["resources"] = json!({});
    object["spec"]["image"] = json!("registry.example/sis:0.2.0");
    // Storage cannot change after creation: kept, reported, and it must not block the rest.
    object["spec"]["server"]["storage"]["size"] = json!("20Gi");
    ns.apply(&object).await;

    let d = ns
        .wait_for(
            "agent Deployment converged",
            Duration::from_secs(60),
            "photos-agent",
            |d: &Deployment| d.spec.as_ref().is_some_and(|s| s.replicas == Some(5)),
        )
        .await;
    let agent = d.sis_container();
    assert_eq!(agent.image.as_deref(), Some("registry.example/sis:0.2.0"));
    assert_eq!(
        agent.args.as_ref().unwrap().last().map(String::as_str),
        Some("1GiB")
    );
    let resources = agent.resources.clone().unwrap_or_default();
    assert!(
        resources.limits.is_none() && resources.requests.is_none(),
        "removed from the spec, removed from the pods: {resources:?}"
    );
    assert_ne!(d.config_hash(), agent_hash, "new agent pod-template hash");
    assert_eq!(d.labels()["app.kubernetes.io/version"], "0.2.0");

    let s = ns
        .wait_for(
            "server StatefulSet converged",
            Duration::from_secs(60),
            "photos-server",
            |s: &StatefulSet| {
                s.sis_container().image.as_deref() == Some("registry.example/sis:0.2.0")
            },
        )
        .await;
    assert_ne!(s.config_hash(), server_hash, "new server pod-template hash");

    ns.wait_for(
        "agent Service port 8080",
        Duration::from_secs(30),
        "photos-agent",
        |s: &Service| {
            s.spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .is_some_and(|ports| ports[0].port == 8080)
        },
    )
    .await;

    // The Deployment controller starts rolling out: a new ReplicaSet with the new template.
    // (Without a kubelet the old pods never become available, so the rollout itself stalls
    // under maxUnavailable; that it started is what the operator controls.)
    let replicasets = ns.api::<ReplicaSet>();
    wait(
        "new agent ReplicaSet with the new image",
        Duration::from_secs(60),
        || async {
            let list = replicasets
                .list(&ListParams::default().labels("app.kubernetes.io/component=agent"))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|rs| {
                    let spec = rs.spec.as_ref();
                    let image = spec
                        .and_then(|s| s.template.as_ref())
                        .and_then(|t| t.spec.as_ref())
                        .and_then(|p| p.containers[0].image.clone());
                    image.as_deref() == Some("registry.example/sis:0.2.0")
                        && spec.and_then(|s| s.replicas).unwrap_or(0) > 0
                })
                .then_some(())
        },
    )
    .await;
    let cluster = ns
        .wait_for_photos("status for generation 2", Duration::from_secs(30), |c| {
            c.status
                .as_ref()
                .is_some_and(|s| s.observed_generation == Some(2))
        })
        .await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.agent.unwrap().replicas, 5);
    assert_eq!(
        condition(&cluster, "Degraded").unwrap(),
        ("True".to_owned(), "StorageImmutable".to_owned())
    );
    let message = condition_message(&cluster, "Degraded");
    assert!(message.contains("keeping size 10Gi"), "{message}");
    let s = ns.api::<StatefulSet>().get("photos-server").await.unwrap();
    assert_eq!(data_claim(&s).1, "10Gi");
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://photos-agent.{}.svc:8080", ns.name).as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Pods become ready (status patched, as a kubelet would) → Ready=True, printer columns.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_3_ready_pods_make_the_cluster_ready() {
    let Some(ns) = TestNamespace::create("op-ready").await else {
        return;
    };
    let (operator, _) = ns.start_operator_and_sample().await;
    ns.make_pods_ready(4).await;

    let cluster = ns
        .wait_for_photos("Ready=True", Duration::from_secs(60), |c| {
            has_condition(c, "Ready", "True", None)
        })
        .await;
    assert_eq!(condition(&cluster, "Ready").unwrap().1, "AllReplicasReady");
    assert_eq!(
        condition(&cluster, "Progressing").unwrap(),
        ("False".to_owned(), "RolloutComplete".to_owned())
    );
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.agent.unwrap().ready_replicas, 3);
    assert_eq!(status.server.unwrap().ready_replicas, 1);

    // Printer columns, as a user sees them.
    let output = Command::new("kubectl")
        .args([
            "--kubeconfig",
            ns.kubeconfig.to_str().unwrap(),
            "-n",
            ns.name,
            "get",
            "sis",
        ])
        .output()
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header: Vec<_> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "AGENTS", "READY", "SERVER", "READY", "PHASE", "AGE"],
        "{text}"
    );
    let row: Vec<_> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["photos", "3", "1", "Running"], "{text}");

    // The Ready event follows the status write.
    ns.wait_event("Ready event", |e| e.reason.as_deref() == Some("Ready"))
        .await;
    // Metrics of the reconciles.
    assert!(operator.metric("sis_operator_reconciliations_total").await >= 2.0);
    assert!(
        operator
            .metric("sis_operator_reconcile_duration_seconds_count")
            .await
            >= 2.0
    );
    assert_eq!(operator.metric("sis_operator_leader").await, 1.0);
}

// ---------------------------------------------------------------------------------------------
// 4. Invalid specs: the schema rejects what it can; the rest becomes Degraded, not a crash.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_4_invalid_specs() {
    let Some(ns) = TestNamespace::create("op-invalid").await else {
        return;
    };
    let (operator, _) = ns.start_operator_and_sample().await;

    for (what, patch) in [
        (
            "negative replicas",
            json!({"spec": {"agent": {"replicas": -1}}}),
        ),
        (
            "port 0",
            json!({"spec": {"agent": {"service": {"port": 0}}}}),
        ),
        (
            "unknown service type",
            json!({"spec": {"agent": {"service": {"type": "ExternalName"}}}}),
        ),
        (
            "unknown pull policy",
            json!({"spec": {"imagePullPolicy": "Sometimes"}}),
        ),
        (
            "not a quantity",
            json!({"spec": {"agent": {"cacheSize": "lots"}}}),
        ),
        (
            "boolean quantity",
            json!({"spec": {"server": {"cacheSize": true}}}),
        ),
        (
            "negative integer quantity",
            json!({"spec": {"server": {"cacheSize": -5}}}),
        ),
        (
            "empty secret name",
            json!({"spec": {"apiTokenSecret": {"name": "", "key": "k"}}}),
        ),
    ] {
        match ns.patch_photos(&patch).await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{what}: {e:?}"),
            other => panic!("{what}: the schema accepted {patch}: {other:?}"),
        }
    }
    let unchanged = ns.api::<SisCluster>().get("photos").await.unwrap();
    assert_eq!(unchanged.metadata.generation, Some(1));

    // Defaults come from the schema: an almost empty spec is filled in by the apiserver.
    let minimal = json!({"apiVersion": "sis.dev/v1alpha1", "kind": "SisCluster",
        "metadata": {"name": "minimal", "namespace": ns.name}, "spec": {}});
    let created = ns.apply(&minimal).await;
    assert_eq!(created.spec.agent.replicas, 2);
    assert_eq!(created.spec.agent.cache_size.0, "256Mi");
    assert_eq!(created.spec.agent.service.port, 80);
    // No schema default for the volume size (it would collide with `s3`): the operator applies
    // 10Gi, checked on the claim below.
    assert_eq!(created.spec.server.storage.size, None);

    // Schema-valid but unusable: 1.5 bytes of cache. Degraded with a message, no crash loop.
    ns.patch_photos(&json!({"spec": {"agent": {"cacheSize": "1.5"}}}))
        .await
        .unwrap();
    let degraded = ns
        .wait_for_photos("Degraded=True InvalidSpec", Duration::from_secs(30), |c| {
            has_condition(c, "Degraded", "True", Some("InvalidSpec"))
        })
        .await;
    let status = degraded.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    let message = condition_message(&degraded, "Degraded");
    assert!(message.contains("spec.agent.cacheSize"), "{message}");
    ns.wait_event("InvalidSpec event", |e| is_warning(e, "InvalidSpec"))
        .await;
    // The children keep running the last valid spec.
    let args = ns
        .api::<Deployment>()
        .get("photos-agent")
        .await
        .unwrap()
        .sis_container()
        .args
        .unwrap();
    assert_eq!(args.last().map(String::as_str), Some("256MiB"));
    // The operator is still alive and reconciling: the other cluster gets its children.
    let minimal = ns.children("minimal").await;
    assert_eq!(
        data_claim(&minimal.statefulset).1,
        "10Gi",
        "the default size"
    );
    // Fixing the spec recovers.
    ns.patch_photos(&json!({"spec": {"agent": {"cacheSize": "128Mi"}}}))
        .await
        .unwrap();
    ns.wait_for_photos(
        "Degraded=False after the fix",
        Duration::from_secs(30),
        |c| has_condition(c, "Degraded", "False", None),
    )
    .await;
    assert!(operator.metric("sis_operator_reconciliations_total").await >= 3.0);
    let addr = operator.metrics_addr().await;
    let body = metrics_text(&addr).unwrap();
    assert!(
        body.contains(r#"sis_operator_reconcile_errors_total{reason="invalid_spec"}"#),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Deleting the SisCluster: the garbage collector removes the children, the PVC stays.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_5_delete_collects_children_but_keeps_the_pvc() {
    let Some(ns) = TestNamespace::create("op-delete").await else {
        return;
    };
    let (_operator, _) = ns.start_operator_and_sample().await;
    ns.wait_data_pvc().await;

    ns.api::<SisCluster>()
        .delete("photos", &DeleteParams::default())
        .await
        .unwrap();
    let sts = ns.api::<StatefulSet>();
    let deploy = ns.api::<Deployment>();
    let svc = ns.api::<Service>();
    let pods = ns.api::<Pod>();
    wait(
        "children garbage-collected",
        Duration::from_secs(90),
        || async {
            let gone = sts.get_opt("photos-server").await.ok()?.is_none()
                && deploy.get_opt("photos-agent").await.ok()?.is_none()
                && svc.get_opt("photos-server").await.ok()?.is_none()
                && svc.get_opt("photos-agent").await.ok()?.is_none()
                && pods
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
            gone.then_some(())
        },
    )
    .await;
    let pvc = ns
        .api::<PersistentVolumeClaim>()
        .get_opt("data-photos-server-0")
        .await
        .unwrap();
    assert!(
        pvc.is_some_and(|p| p.metadata.deletion_timestamp.is_none()),
        "the data PVC is kept"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Two operators: only the Lease holder reconciles; on SIGTERM it hands over.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_6_only_the_leader_writes() {
    let Some(ns) = TestNamespace::create("op-leader").await else {
        return;
    };
    let mut a = ns.start_operator("op-leader-a");
    assert_eq!(wait_metric(&a, "sis_operator_leader", 1.0).await, 1.0);
    let b = ns.start_operator("op-leader-b");
    let b_addr = b.metrics_addr().await;
    wait("standby B ready", Duration::from_secs(20), || async {
        let (status, body) = http_get(&b_addr, "/readyz");
        (status == 200 && body == b"ok: standby\n").then_some(())
    })
    .await;
    let leases = ns.api::<Lease>();
    let holder = || async {
        leases
            .get("sis-operator")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
    };
    assert_eq!(holder().await.as_deref(), Some("op-leader-a"));

    ns.apply(&sample(ns.name)).await;
    ns.children("photos").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.metric("sis_operator_reconciliations_total").await >= 1.0);
    assert_eq!(
        b.metric("sis_operator_reconciliations_total").await,
        0.0,
        "the standby never reconciles"
    );
    assert_eq!(b.metric("sis_operator_leader").await, 0.0);
    let events = ns.operator_events().await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some("op-leader-a")),
        "only A wrote events"
    );
    let d = ns.api::<Deployment>().get("photos-agent").await.unwrap();
    let managers: Vec<_> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"sis-operator".to_owned()),
        "{managers:?}"
    );

    // A stops gracefully and releases the Lease; B takes over and reconciles.
    let status = a.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
    // The log reader thread may still be draining A's last lines.
    wait("A logged the release", Duration::from_secs(5), || async {
        a.dump_log().contains("released the Lease").then_some(())
    })
    .await;
    wait("B holds the Lease", Duration::from_secs(15), || async {
        (holder().await.as_deref() == Some("op-leader-b")).then_some(())
    })
    .await;
    ns.patch_photos(&json!({"spec": {"agent": {"replicas": 4}}}))
        .await
        .unwrap();
    ns.wait_for(
        "B converges the change",
        Duration::from_secs(30),
        "photos-agent",
        |d: &Deployment| d.spec.as_ref().is_some_and(|s| s.replicas == Some(4)),
    )
    .await;
    assert!(b.metric("sis_operator_reconciliations_total").await >= 1.0);
    assert_eq!(b.metric("sis_operator_leader").await, 1.0);
    // B publishes its event right after the apply we just saw; give it a moment.
    ns.wait_event("an event from B", |e| {
        e.reporting_instance.as_deref() == Some("op-leader-b")
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 7. Contract: the pod templates' command, args and env start the real `sis` binaries.

#[tokio::test]
#[ignore = "needs a real cluster and target/debug/sis: tests/k8s/operator.sh"]
async fn k8s_7_contract_pod_templates_start_the_real_binaries() {
    let Some(ns) = TestNamespace::create("op-contract").await else {
        return;
    };
    assert!(
        sis_binary().exists(),
        "{} missing: cargo build -p sis",
        sis_binary().display()
    );
    let token = "contract-token-123";
    ns.create_token_secret(token).await;
    let (_operator, live) = ns.start_operator_and_sample().await;

    let dir: PathBuf = std::env::temp_dir().join(format!("sis-contract-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server_addr = format!("127.0.0.1:{}", free_port());
    let agent_addr = format!("127.0.0.1:{}", free_port());

    let server_container = live.statefulset.sis_container();
    let mut server = start_container(
        &ns.client,
        ns.name,
        "server",
        &server_container,
        &server_addr,
        &data,
        "",
        &dir,
    )
    .await;
    wait_probes(&mut server, &server_addr).unwrap();
    // The token from the Secret reached the server: uploads need it.
    let upload = |addr: &str, auth: Option<&str>, name: &str| {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "image/png")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        http_request(
            addr,
            "POST",
            &format!("/v1/images?name={name}"),
            &headers,
            &PNG_2X2,
        )
    };
    let (status, _) = upload(&server_addr, None, "denied.png");
    assert!(
        status == 401 || status == 403,
        "upload without the token must be refused, got {status}"
    );
    let (status, body) = upload(&server_addr, Some(token), "direct.png");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));

    let agent_container = live.deployment.sis_container();
    let upstream = format!("http://{server_addr}");
    let mut agent = start_container(
        &ns.client,
        ns.name,
        "agent",
        &agent_container,
        &agent_addr,
        &data,
        &upstream,
        &dir,
    )
    .await;
    if let Err(message) = wait_probes(&mut agent, &agent_addr) {
        panic!("{message}");
    }
    let (status, body) = upload(&agent_addr, Some(token), "via-agent.png");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let reply: Value = serde_json::from_slice(&body).unwrap();
    let md5 = reply["images"][0]["md5"].as_str().unwrap().to_owned();
    let (status, bytes) = http_get(&server_addr, &format!("/v1/images/{md5}/via-agent.png"));
    assert_eq!(
        status, 200,
        "the upload through the agent landed on the server"
    );
    assert_eq!(bytes, PNG_2X2);
    println!(
        "contract: server and agent probes 200; upload through the agent ({md5}) served by the server"
    );
    drop(agent);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// 8. An apply that the apiserver refuses: Degraded/ApplyFailed, a Warning event, an error
//    metric by step, retries with backoff, and recovery once the obstacle is gone.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_8_apply_failures_are_reported_and_retried() {
    let Some(ns) = TestNamespace::create("op-conflict").await else {
        return;
    };
    // Someone else's StatefulSet already has the name; its selector is immutable, so applying
    // ours over it fails with 422.
    let sts = ns.api::<StatefulSet>();
    let foreign: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "photos-server", "namespace": ns.name},
        "spec": {
            "replicas": 0,
            "serviceName": "other",
            "selector": {"matchLabels": {"app": "other"}},
            "template": {
                "metadata": {"labels": {"app": "other"}},
                "spec": {"containers": [{"name": "other", "image": "other:1"}]}
            }
        }
    }))
    .unwrap();
    sts.create(&PostParams::default(), &foreign).await.unwrap();
    let operator = ns.start_operator("op-conflict-a");
    ns.apply(&sample(ns.name)).await;

    let cluster = ns
        .wait_for_photos("Degraded=True ApplyFailed", Duration::from_secs(30), |c| {
            has_condition(c, "Degraded", "True", Some("ApplyFailed"))
        })
        .await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    let message = condition_message(&cluster, "Degraded");
    assert!(
        message.contains("applying StatefulSet photos-server"),
        "{message}"
    );
    ns.wait_event("ApplyFailed warning event", |e| {
        is_warning(e, "ApplyFailed")
    })
    .await;
    let addr = operator.metrics_addr().await;
    // error_policy counts the failure after the reconcile returns.
    wait(
        "apply_statefulset error metric",
        Duration::from_secs(20),
        || async {
            metrics_text(&addr)?
                .contains(r#"sis_operator_reconcile_errors_total{reason="apply_statefulset"}"#)
                .then_some(())
        },
    )
    .await;

    // Remove the obstacle: a retry (backoff, no new event needed) creates ours and recovers.
    sts.delete("photos-server", &DeleteParams::default())
        .await
        .unwrap();
    ns.wait_for(
        "our StatefulSet after a retry",
        Duration::from_secs(90),
        "photos-server",
        |s: &StatefulSet| {
            s.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("sis-operator")
        },
    )
    .await;
    ns.wait_for_photos(
        "Degraded=False after recovery",
        Duration::from_secs(30),
        |c| has_condition(c, "Degraded", "False", None),
    )
    .await;
    ns.children("photos").await;
}

// ---------------------------------------------------------------------------------------------
// 9. Day 2: `kubectl scale` through the scale subresource, the HPA created and removed as
//    autoscaling is toggled (the served autoscaling version), PodDisruptionBudgets.

/// Run kubectl against the test cluster; panics with its output when it fails.
fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    let output = Command::new("kubectl")
        .args([
            "--kubeconfig",
            ns.kubeconfig.to_str().unwrap(),
            "-n",
            ns.name,
        ])
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn deployment_replicas(d: &Deployment) -> Option<i32> {
    d.spec.as_ref().and_then(|s| s.replicas)
}

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_9_scale_autoscale_and_disruption_budgets() {
    let Some(ns) = TestNamespace::create("op-scale").await else {
        return;
    };
    let (_operator, _) = ns.start_operator_and_sample().await;
    let versions = ApiVersions::discover(&ns.client).await.unwrap();
    println!(
        "served: {} and {}",
        versions.autoscaler.api_version, versions.disruption_budget.api_version
    );
    let hpas: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), ns.name, &versions.autoscaler);
    let pdbs: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), ns.name, &versions.disruption_budget);

    // The agents' budget: maxUnavailable 1 over exactly the agent pods; one server, no budget.
    let pdb = wait("agent PDB", Duration::from_secs(30), || async {
        pdbs.get_opt("photos-agent").await.ok()?
    })
    .await;
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb.data["spec"]["selector"],
        json!({"matchLabels": {
            "app.kubernetes.io/component": "agent",
            "app.kubernetes.io/instance": "photos",
            "app.kubernetes.io/name": "sis"
        }})
    );
    assert_eq!(pdb.owner_references()[0].kind, "SisCluster");
    assert!(pdbs.get_opt("photos-server").await.unwrap().is_none());
    // Owned: deleted by hand, it is back at once (not at the 5-minute resync).
    let uid = pdb.uid().unwrap();
    pdbs.delete("photos-agent", &DeleteParams::default())
        .await
        .unwrap();
    wait("agent PDB re-created", Duration::from_secs(20), || async {
        let again = pdbs.get_opt("photos-agent").await.ok()??;
        (again.uid() != Some(uid.clone())).then_some(())
    })
    .await;

    // The new fields are documented where users look: `kubectl explain`.
    let explain = kubectl(&ns, &["explain", "sis.spec.agent.autoscaling"]);
    for field in [
        "enabled",
        "minReplicas",
        "maxReplicas",
        "targetCPUUtilizationPercentage",
    ] {
        assert!(explain.contains(field), "{field} in {explain}");
    }
    let explain = kubectl(&ns, &["explain", "sis.spec.server.storage.s3"]);
    for field in ["bucket", "pathStyle", "credentialsSecret", "endpoint"] {
        assert!(explain.contains(field), "{field} in {explain}");
    }

    // `kubectl scale` through the SisCluster's scale subresource.
    ns.wait_for_photos("status.agent.selector", Duration::from_secs(30), |c| {
        c.status
            .as_ref()
            .and_then(|s| s.agent.as_ref())
            .is_some_and(|a| a.selector.is_some())
    })
    .await;
    kubectl(&ns, &["scale", "sis/photos", "--replicas=5"]);
    ns.wait_for(
        "Deployment scaled to 5",
        Duration::from_secs(30),
        "photos-agent",
        |d: &Deployment| deployment_replicas(d) == Some(5),
    )
    .await;
    ns.wait_for_photos("status.agent.replicas 5", Duration::from_secs(30), |c| {
        c.status
            .as_ref()
            .and_then(|s| s.agent.as_ref())
            .is_some_and(|a| a.replicas == 5)
    })
    .await;
    let scale = ns.api::<SisCluster>().get_scale("photos").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(5));
    let scale_status = scale.status.unwrap();
    assert_eq!(scale_status.replicas, 5);
    let selector = scale_status.selector.unwrap();
    let agent_pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    assert!(
        agent_pods
            .items
            .iter()
            .all(|p| p.labels()["app.kubernetes.io/component"] == "agent")
            && !agent_pods.items.is_empty(),
        "the scale selector {selector} selects the agent pods"
    );

    // Autoscaling on: an HPA owned by the SisCluster; the operator hands replicas over.
    ns.patch_photos(&json!({"spec": {"agent": {"autoscaling": {
        "minReplicas": 6, "maxReplicas": 8, "targetCPUUtilizationPercentage": 60}}}}))
        .await
        .unwrap();
    let hpa = wait("HPA created", Duration::from_secs(30), || async {
        hpas.get_opt("photos-agent").await.ok()?
    })
    .await;
    assert_eq!(
        hpa.types.as_ref().unwrap().api_version,
        versions.autoscaler.api_version
    );
    assert_eq!(
        hpa.data["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "photos-agent"})
    );
    assert_eq!(
        (
            &hpa.data["spec"]["minReplicas"],
            &hpa.data["spec"]["maxReplicas"]
        ),
        (&json!(6), &json!(8))
    );
    assert_eq!(
        hpa.data["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        60
    );
    assert_eq!(hpa.owner_references()[0].name, "photos");
    // The count was not dropped to the default of 1 on the way: the operator no longer
    // applies it, and the HPA controller raises it to minReplicas.
    let d = ns.api::<Deployment>().get("photos-agent").await.unwrap();
    assert!(deployment_replicas(&d).unwrap_or(0) >= 5, "{:?}", d.spec);
    assert!(
        !sis_operator::apply::applies_replicas(&d, "sis-operator"),
        "the operator stopped applying spec.replicas"
    );
    ns.wait_for(
        "HPA raises the agents to minReplicas",
        Duration::from_secs(60),
        "photos-agent",
        |d: &Deployment| deployment_replicas(d) == Some(6),
    )
    .await;
    // Scaling the SisCluster now changes nothing: the HPA owns the count.
    kubectl(&ns, &["scale", "sis/photos", "--replicas=2"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = ns.api::<Deployment>().get("photos-agent").await.unwrap();
    assert_eq!(deployment_replicas(&d), Some(6));

    // Autoscaling off: the HPA is removed and spec.agent.replicas applies again.
    ns.patch_photos(&json!({"spec": {"agent": {"autoscaling": {"enabled": false}}}}))
        .await
        .unwrap();
    wait("HPA removed", Duration::from_secs(30), || async {
        hpas.get_opt("photos-agent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    ns.wait_for(
        "replicas back to the spec's 2",
        Duration::from_secs(30),
        "photos-agent",
        |d: &Deployment| deployment_replicas(d) == Some(2),
    )
    .await;
    ns.wait_event("Deleted event", |e| {
        e.note.as_deref() == Some("HorizontalPodAutoscaler photos-agent deleted")
    })
    .await;

    // The budget follows the spec: a percentage, then off.
    ns.patch_photos(&json!({"spec": {"agent": {"disruptionBudget": {"maxUnavailable": "50%"}}}}))
        .await
        .unwrap();
    wait("PDB 50%", Duration::from_secs(30), || async {
        let pdb = pdbs.get_opt("photos-agent").await.ok()??;
        (pdb.data["spec"]["maxUnavailable"] == "50%").then_some(())
    })
    .await;
    ns.patch_photos(&json!({"spec": {"agent": {"disruptionBudget": {"enabled": false}}}}))
        .await
        .unwrap();
    wait("PDB removed", Duration::from_secs(30), || async {
        pdbs.get_opt("photos-agent")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// 10. Placement in both tiers, rollout settings, a rollout's status conditions, and a new
//     Secret value rolling the pods.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_10_placement_rollouts_and_secret_rotation() {
    let Some(ns) = TestNamespace::create("op-placement").await else {
        return;
    };
    // Pods naming a PriorityClass that does not exist are refused by admission.
    let priority_classes: Api<PriorityClass> = Api::all(ns.client.clone());
    let class: PriorityClass =
        serde_json::from_value(json!({"metadata": {"name": "sis-test-high"}, "value": 1000}))
            .unwrap();
    match priority_classes
        .create(&PostParams::default(), &class)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the PriorityClass: {e}"),
    }
    ns.create_token_secret("first-token").await;
    let _operator = ns.start_operator("op-placement-a");
    let mut object = sample(ns.name);
    object["spec"]["agent"]["nodeSelector"] = json!({"sis.dev/pool": "edge"});
    object["spec"]["agent"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "sis", "effect": "NoSchedule"}]);
    object["spec"]["agent"]["priorityClassName"] = json!("sis-test-high");
    object["spec"]["agent"]["rollout"] = json!({"maxSurge": 1, "maxUnavailable": "10%"});
    object["spec"]["agent"]["preStopSeconds"] = json!(7);
    object["spec"]["server"]["nodeSelector"] = json!({"sis.dev/disk": "ssd"});
    object["spec"]["server"]["tolerations"] = json!([{"key": "storage", "operator": "Exists"}]);
    object["spec"]["server"]["priorityClassName"] = json!("sis-test-high");
    object["spec"]["server"]["affinity"] = json!({"nodeAffinity": {
    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
    ]}}});
    object["spec"]["server"]["topologySpreadConstraints"] = json!([{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "server"}}
    }]);
    ns.apply(&object).await;
    let live = ns.children("photos").await;

    let agent_pod = serde_json::to_value(live.deployment.pod_template().spec.as_ref()).unwrap();
    assert_eq!(agent_pod["nodeSelector"], json!({"sis.dev/pool": "edge"}));
    assert_eq!(agent_pod["tolerations"][0]["key"], "dedicated");
    assert_eq!(agent_pod["priorityClassName"], "sis-test-high");
    // No affinity or spread in the spec: the default soft spread of the agents.
    let preferred = &agent_pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        preferred[0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        agent_pod["topologySpreadConstraints"][0]["topologyKey"],
        "topology.kubernetes.io/zone"
    );
    assert_eq!(
        agent_pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "ScheduleAnyway"
    );
    assert_eq!(agent_pod["terminationGracePeriodSeconds"], 42);
    assert_eq!(
        agent_pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"],
        json!(["sleep", "7"])
    );
    let strategy = serde_json::to_value(&live.deployment.spec.as_ref().unwrap().strategy).unwrap();
    assert_eq!(
        strategy,
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "10%"}})
    );
    let server_pod = serde_json::to_value(live.statefulset.pod_template().spec.as_ref()).unwrap();
    assert_eq!(server_pod["nodeSelector"], json!({"sis.dev/disk": "ssd"}));
    assert_eq!(server_pod["tolerations"][0]["operator"], "Exists");
    assert_eq!(server_pod["priorityClassName"], "sis-test-high");
    assert_eq!(
        server_pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["values"],
        json!(["amd64"])
    );
    assert_eq!(
        server_pod["topologySpreadConstraints"][0]["whenUnsatisfiable"],
        "DoNotSchedule"
    );
    // The pods the controllers made carry it too (admission accepted the PriorityClass).
    let pods = ns.api::<Pod>();
    let server_pod = wait("server pod", Duration::from_secs(60), || async {
        pods.get_opt("photos-server-0").await.ok()?
    })
    .await;
    let spec = server_pod.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("sis-test-high"));
    assert_eq!(spec.priority, Some(1000));

    // Pods ready: the rollout is complete.
    ns.make_pods_ready(4).await;
    ns.wait_for_photos("Progressing=False", Duration::from_secs(60), |c| {
        has_condition(c, "Progressing", "False", Some("RolloutComplete"))
            && has_condition(c, "Ready", "True", None)
    })
    .await;

    // A new token value (same Secret, same key) rolls both tiers.
    let before = ns.children("photos").await;
    let secrets = ns.api::<Secret>();
    secrets
        .patch(
            "sis-token",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"token": "second-token"}})),
        )
        .await
        .unwrap();
    let d = ns
        .wait_for(
            "agent template rolled by the new Secret value",
            Duration::from_secs(30),
            "photos-agent",
            |d: &Deployment| d.config_hash() != before.deployment.config_hash(),
        )
        .await;
    let secret_hash = |t: &k8s_openapi::api::core::v1::PodTemplateSpec| {
        t.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[build::SECRET_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(
        secret_hash(d.pod_template()),
        secret_hash(before.deployment.pod_template())
    );
    ns.wait_for(
        "server template rolled too",
        Duration::from_secs(30),
        "photos-server",
        |s: &StatefulSet| s.config_hash() != before.statefulset.config_hash(),
    )
    .await;
    // And the status says a rollout is under way (the new pods are not ready: no kubelet).
    let cluster = ns
        .wait_for_photos(
            "Progressing=True RollingOut",
            Duration::from_secs(60),
            |c| has_condition(c, "Progressing", "True", Some("RollingOut")),
        )
        .await;
    assert_eq!(
        cluster.status.unwrap().phase.as_deref(),
        Some("Progressing")
    );
    assert_eq!(
        condition(&cluster_now(&ns).await, "Ready").unwrap().0,
        "False"
    );
}

async fn cluster_now(ns: &TestNamespace) -> SisCluster {
    ns.api::<SisCluster>().get("photos").await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// 11. S3 storage (issue 12): replicated stateless servers in a Deployment, no PVC, keys from a
//     Secret, a server budget; both storages at once and a switch are refused, nothing deleted.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_11_s3_servers_and_refused_storage_switches() {
    let Some(ns) = TestNamespace::create("op-s3").await else {
        return;
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "photos-s3", "namespace": ns.name},
        "stringData": {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let _operator = ns.start_operator("op-s3-a");
    let mut object = sample(ns.name);
    object["spec"]["server"]["storage"] = json!({"s3": {
        "bucket": "photos", "prefix": "prod", "endpoint": "http://rgw.ceph.svc:8080",
        "region": "default", "pathStyle": true, "credentialsSecret": {"name": "photos-s3"}
    }});
    ns.apply(&object).await;

    let deployments = ns.api::<Deployment>();
    let server = wait("server Deployment", Duration::from_secs(60), || async {
        deployments.get_opt("photos-server").await.ok()?
    })
    .await;
    assert_eq!(deployment_replicas(&server), Some(2), "default 2 servers");
    let container = server.sis_container();
    assert_eq!(
        container.args.clone().unwrap(),
        [
            "server",
            "--listen",
            "0.0.0.0:3333",
            "--storage",
            "s3://photos/prod",
            "--s3-endpoint",
            "http://rgw.ceph.svc:8080",
            "--s3-region",
            "default",
            "--s3-path-style",
            "--cache-size",
            "0"
        ]
    );
    let env: Vec<(String, String, String)> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| {
            let r = e.value_from.unwrap().secret_key_ref.unwrap();
            (e.name, r.name, r.key)
        })
        .collect();
    assert!(env.contains(&(
        "AWS_ACCESS_KEY_ID".into(),
        "photos-s3".into(),
        "AWS_ACCESS_KEY_ID".into()
    )));
    assert!(env.contains(&(
        "AWS_SECRET_ACCESS_KEY".into(),
        "photos-s3".into(),
        "AWS_SECRET_ACCESS_KEY".into()
    )));
    let template = server.pod_template().spec.as_ref().unwrap();
    assert!(
        template
            .volumes
            .iter()
            .flatten()
            .all(|v| v.persistent_volume_claim.is_none() && v.name == "tmp"),
        "no data volume"
    );
    assert!(
        ns.api::<StatefulSet>()
            .get_opt("photos-server")
            .await
            .unwrap()
            .is_none()
    );
    // Contract: the real `sis` takes the S3 flags as rendered (clap refuses an unknown flag
    // or value at once; an unreachable store is sis's business, not the contract's).
    if sis_binary().exists() {
        let listen = format!("127.0.0.1:{}", free_port());
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap()
            .into_iter()
            .map(|a| {
                if a == "0.0.0.0:3333" {
                    listen.clone()
                } else {
                    a
                }
            })
            .collect();
        let mut child = std::process::Command::new(sis_binary())
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", "AKIA1")
            .env("AWS_SECRET_ACCESS_KEY", "s3cr3t")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        for refusal in ["unexpected argument", "invalid value", "Usage:"] {
            assert!(
                !stderr.contains(refusal),
                "sis refused the operator's S3 args {args:?}: {stderr}"
            );
        }
    }
    // The Service spreads over every server pod (not headless) and the agents point at it.
    let svc = ns.api::<Service>();
    let service = wait("server Service", Duration::from_secs(30), || async {
        svc.get_opt("photos-server").await.ok()?
    })
    .await;
    let spec = service.spec.unwrap();
    assert_ne!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.selector.unwrap()["app.kubernetes.io/component"],
        "server"
    );
    let agents = wait("agent Deployment", Duration::from_secs(30), || async {
        deployments.get_opt("photos-agent").await.ok()?
    })
    .await;
    assert!(
        agents
            .sis_container()
            .args
            .unwrap()
            .contains(&format!("http://photos-server.{}.svc:3333", ns.name))
    );
    let versions = ApiVersions::discover(&ns.client).await.unwrap();
    let pdbs: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), ns.name, &versions.disruption_budget);
    let pdb = wait("server PDB", Duration::from_secs(30), || async {
        pdbs.get_opt("photos-server").await.ok()?
    })
    .await;
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "server"
    );
    let cluster = ns
        .wait_for_photos("status of 2 servers", Duration::from_secs(30), |c| {
            c.status
                .as_ref()
                .and_then(|s| s.server.as_ref())
                .is_some_and(|s| s.replicas == 2)
        })
        .await;
    assert!(has_condition(&cluster, "Degraded", "False", None));
    // Rotating the S3 keys rolls the servers.
    let hash = server.config_hash();
    ns.api::<Secret>()
        .patch(
            "photos-s3",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"AWS_SECRET_ACCESS_KEY": "rotated"}})),
        )
        .await
        .unwrap();
    ns.wait_for(
        "servers rolled by new keys",
        Duration::from_secs(30),
        "photos-server",
        |d: &Deployment| d.config_hash() != hash,
    )
    .await;

    // A volume and a bucket at once: Degraded with a clear message; nothing changes.
    ns.patch_photos(&json!({"spec": {"server": {"storage": {"size": "5Gi"}}}}))
        .await
        .unwrap();
    let degraded = ns
        .wait_for_photos("Degraded InvalidSpec", Duration::from_secs(30), |c| {
            has_condition(c, "Degraded", "True", Some("InvalidSpec"))
        })
        .await;
    let message = condition_message(&degraded, "Degraded");
    assert!(message.contains("not both"), "{message}");

    // Switching to a volume: refused, the S3 servers stay, no StatefulSet appears.
    ns.patch_photos(&json!({"spec": {"server": {"storage": {"s3": null}}}}))
        .await
        .unwrap();
    let refused = ns
        .wait_for_photos(
            "Degraded StorageSwitchRefused",
            Duration::from_secs(30),
            |c| has_condition(c, "Degraded", "True", Some("StorageSwitchRefused")),
        )
        .await;
    let message = condition_message(&refused, "Degraded");
    assert!(
        message.contains("refused") && message.contains("Deployment photos-server"),
        "{message}"
    );
    ns.wait_event("StorageSwitchRefused event", |e| {
        is_warning(e, "StorageSwitchRefused")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        ns.api::<StatefulSet>()
            .get_opt("photos-server")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        deployments
            .get_opt("photos-server")
            .await
            .unwrap()
            .is_some(),
        "nothing deleted"
    );
    assert!(
        ns.api::<PersistentVolumeClaim>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// 12. The variant guard and metadata stripping reach both tiers (env, the signing keys from a
//     Secret), the real `sis` server enforces them, a new key value rolls both tiers, and a
//     signed policy without a key is Degraded.

#[tokio::test]
#[ignore = "needs a real cluster and target/debug/sis: tests/k8s/operator.sh"]
async fn k8s_12_variant_guard_and_strip_metadata_in_both_tiers() {
    let Some(ns) = TestNamespace::create("op-variants").await else {
        return;
    };
    let token = "variants-token";
    ns.create_token_secret(token).await;
    let secrets = ns.api::<Secret>();
    let sign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sis-sign", "namespace": ns.name},
        "stringData": {"keys": "key-one"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &sign).await.unwrap();
    let _operator = ns.start_operator("op-variants-a");
    let mut object = sample(ns.name);
    object["spec"]["variants"] = json!({
        "policy": "signed",
        "presets": [
            {"name": "thumb", "params": {"w": 300, "h": 200, "fit": "cover"}},
            {"name": "avatar", "params": {"w": 64, "h": 64, "fit": "cover"}, "public": true}
        ],
        "signingKeySecret": {"name": "sis-sign", "key": "keys"}
    });
    object["spec"]["stripMetadata"] = json!("gps");
    ns.apply(&object).await;
    let live = ns.children("photos").await;

    // `kubectl explain` on 1.20 lists the fields (no nullable objects).
    for (path, fields) in [
        (
            "sis.spec.variants",
            &["policy", "presets", "signingKeySecret"][..],
        ),
        ("sis.spec.variants.presets", &["name", "params", "public"]),
        ("sis.spec.variants.signingKeySecret", &["name", "key"]),
        ("sis.spec", &["stripMetadata"]),
    ] {
        // Discovery and the published OpenAPI of a (re-)applied CRD lag a little: retry.
        let explain = wait(path, Duration::from_secs(60), || async {
            let output = Command::new("kubectl")
                .args([
                    "--kubeconfig",
                    ns.kubeconfig.to_str().unwrap(),
                    "explain",
                    path,
                ])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            (output.status.success() && fields.iter().all(|f| text.contains(f))).then_some(text)
        })
        .await;
        for field in fields {
            assert!(explain.contains(field), "{field} in {explain}");
        }
    }

    let presets = "thumb=fit:cover,h:200,w:300;avatar=fit:cover,h:64,w:64,public";
    for (tier, container) in [
        ("agent", live.deployment.sis_container()),
        ("server", live.statefulset.sis_container()),
    ] {
        let env = serde_json::to_value(container.env.as_ref().unwrap()).unwrap();
        for expected in [
            json!({"name": "SIS_VARIANTS", "value": "signed"}),
            json!({"name": "SIS_PRESETS", "value": presets}),
            json!({"name": "SIS_SIGN_KEYS", "valueFrom": {"secretKeyRef": {"name": "sis-sign", "key": "keys"}}}),
            json!({"name": "SIS_STRIP_METADATA", "value": "gps"}),
        ] {
            assert!(
                env.as_array().unwrap().contains(&expected),
                "{tier}: {expected} not in {env}"
            );
        }
    }

    // The real server accepts what was rendered and enforces it.
    let dir: PathBuf = std::env::temp_dir().join(format!("sis-variants-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = start_container(
        &ns.client,
        ns.name,
        "server",
        &live.statefulset.sis_container(),
        &addr,
        &data,
        "",
        &dir,
    )
    .await;
    wait_probes(&mut server, &addr).unwrap();
    let bearer = format!("Bearer {token}");
    let (status, body) = http_request(
        &addr,
        "POST",
        "/v1/images?name=a.png",
        &[("Content-Type", "image/png"), ("Authorization", &bearer)],
        &PNG_2X2,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let reply: Value = serde_json::from_slice(&body).unwrap();
    let md5 = reply["images"][0]["md5"].as_str().unwrap().to_owned();
    let (status, _) = http_get(&addr, &format!("/v1/images/{md5}?w=10"));
    assert_eq!(status, 403, "unsigned parameters under the signed policy");
    let (status, _) = http_get(&addr, &format!("/v1/images/{md5}?preset=thumb"));
    assert_eq!(status, 403, "a preset that is not public needs a signature");
    let (status, _) = http_get(&addr, &format!("/v1/images/{md5}?preset=avatar"));
    assert_ne!(status, 403, "a public preset is served unsigned");
    let (status, _) = http_get(&addr, &format!("/v1/images/{md5}"));
    assert_eq!(status, 200, "originals are never refused");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    // A new signing key value (rotation: `new,old`) rolls both tiers.
    let before = ns.children("photos").await;
    secrets
        .patch(
            "sis-sign",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"keys": "key-two,key-one"}})),
        )
        .await
        .unwrap();
    ns.wait_for(
        "agent template rolled by the new signing key",
        Duration::from_secs(30),
        "photos-agent",
        |d: &Deployment| d.config_hash() != before.deployment.config_hash(),
    )
    .await;
    ns.wait_for(
        "server template rolled by the new signing key",
        Duration::from_secs(30),
        "photos-server",
        |s: &StatefulSet| s.config_hash() != before.statefulset.config_hash(),
    )
    .await;

    // Signed without a key: Degraded with a message that says what is missing.
    object["spec"]["variants"]
        .as_object_mut()
        .unwrap()
        .remove("signingKeySecret");
    ns.apply(&object).await;
    let degraded = ns
        .wait_for_photos("Degraded=True InvalidSpec", Duration::from_secs(30), |c| {
            has_condition(c, "Degraded", "True", Some("InvalidSpec"))
        })
        .await;
    let message = condition_message(&degraded, "Degraded");
    assert!(message.contains("signingKeySecret"), "{message}");
}
