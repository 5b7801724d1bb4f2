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

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Container, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use sis_operator::SisCluster;
use sis_operator::build::{self, CONFIG_HASH_ANNOTATION};
use sis_operator::validate::{Defaults, validate};

// ---------------------------------------------------------------------------------------------
// Harness

fn kubeconfig_path() -> Option<PathBuf> {
    match std::env::var("SIS_TEST_KUBECONFIG") {
        Ok(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "SIS_TEST_KUBECONFIG is not set (CI=true: real-cluster tests must run; use tests/k8s/operator.sh)"
                );
            }
            eprintln!("SKIP: SIS_TEST_KUBECONFIG not set (run tests/k8s/operator.sh)");
            None
        }
    }
}

async fn client(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Install (server-side apply) the CRD and wait until it is Established.
async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = sis_operator::crd::crd();
    crds.patch(
        "sisclusters.sis.dev",
        &PatchParams::apply("sis-operator-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the 1.20 apiserver accepts the CRD");
    wait("CRD established", Duration::from_secs(30), || async {
        let crd = crds.get("sisclusters.sis.dev").await.ok()?;
        let established = crd
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
    // Discovery of a new CRD can lag a moment behind Established.
    let probe: Api<SisCluster> = Api::namespaced(client.clone(), "default");
    wait("SisCluster API served", Duration::from_secs(30), || async {
        probe.list(&ListParams::default()).await.ok().map(|_| ())
    })
    .await;
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Poll `check` every 200 ms until it returns `Some` or `timeout` passes (then panic).
async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A running `sis-operator` process; SIGKILLed on drop if still running.
struct Operator {
    child: Child,
    identity: String,
    metrics_addr: Arc<Mutex<Option<String>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    fn start(kubeconfig: &Path, namespace: &str, identity: &str) -> Operator {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sis-operator"))
            .args([
                "run",
                "--metrics-addr",
                "127.0.0.1:0",
                "--watch-namespace",
                namespace,
            ])
            .args([
                "--lease-namespace",
                namespace,
                "--lease-name",
                "sis-operator",
            ])
            .args([
                "--lease-duration",
                "6",
                "--renew-deadline",
                "4",
                "--retry-period",
                "1",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env("RUST_LOG", "info,sis_operator=debug,kube=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sis-operator starts");
        let stdout = child.stdout.take().unwrap();
        let metrics_addr = Arc::new(Mutex::new(None));
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let (metrics_addr, log) = (metrics_addr.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line.split("metrics server listening on ").nth(1) {
                        *metrics_addr.lock().unwrap() = Some(addr.trim().to_owned());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        Operator {
            child,
            identity: identity.to_owned(),
            metrics_addr,
            log,
        }
    }

    async fn metrics_addr(&self) -> String {
        wait(
            "operator metrics address",
            Duration::from_secs(20),
            || async { self.metrics_addr.lock().unwrap().clone() },
        )
        .await
    }

    /// Value of an unlabelled metric from `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let addr = self.metrics_addr().await;
        let (status, body) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{body}"))
    }

    fn dump_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "operator ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- operator {} log ---\n{}",
                self.identity,
                self.dump_log()
            );
        }
    }
}

/// Minimal HTTP/1.1 client for loopback (status, body).
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response head");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..line_end]).trim(), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    http_request(addr, "GET", path, &[], b"")
}

/// The issue's sample SisCluster in `namespace`.
fn sample(namespace: &str) -> Value {
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

/// Apply a SisCluster as a user would (`kubectl apply --server-side`).
async fn apply_cluster(client: &Client, namespace: &str, object: &Value) -> SisCluster {
    let api: Api<SisCluster> = Api::namespaced(client.clone(), namespace);
    let name = object["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply("test-user").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("applying SisCluster {name}: {e}"))
}

async fn create_token_secret(client: &Client, namespace: &str, token: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "sis-token", "namespace": namespace},
        "stringData": {"token": token}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

struct Children {
    statefulset: StatefulSet,
    deployment: Deployment,
    server_service: Service,
    agent_service: Service,
}

async fn wait_children(client: &Client, namespace: &str, name: &str) -> Children {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let svc: Api<Service> = Api::namespaced(client.clone(), namespace);
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

fn assert_subset<T: serde::Serialize>(expected: &T, actual: &T) {
    let (e, a) = (
        serde_json::to_value(expected).unwrap(),
        serde_json::to_value(actual).unwrap(),
    );
    if let Some(diff) = subset_diff(&e, &a, "") {
        panic!("{diff}\nexpected ⊆ actual failed;\nexpected: {e:#}\nactual: {a:#}");
    }
}

fn template_hash(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
    template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

fn container_of_sts(s: &StatefulSet) -> Container {
    s.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone()
}

fn container_of_deploy(d: &Deployment) -> Container {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .clone()
}

async fn get_cluster(client: &Client, namespace: &str, name: &str) -> SisCluster {
    Api::<SisCluster>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
}

fn condition(cluster: &SisCluster, type_: &str) -> Option<(String, String)> {
    let c = cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Act as the kubelet: mark every pod in `namespace` Running and Ready.
async fn make_pods_ready(client: &Client, namespace: &str, expected: usize) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
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

async fn events_for(client: &Client, namespace: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("sis-operator"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Install the CRD, apply the sample, assert every child and its fields.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_1_sample_creates_every_child() {
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-create";
    create_namespace(&client, ns).await;
    let _operator = Operator::start(&kc, ns, "op-create-a");
    apply_cluster(&client, ns, &sample(ns)).await;
    let live = wait_children(&client, ns, "photos").await;

    // The children equal what the pure builders make from the live SisCluster (with the
    // apiserver's defaults on top).
    let cluster = get_cluster(&client, ns, "photos").await;
    let validated = validate(&cluster, &Defaults::default()).unwrap();
    let expected = build::build_children(&validated);
    assert_subset(&expected.server_statefulset, &live.statefulset);
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
    let server = container_of_sts(&live.statefulset);
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
    let agent = container_of_deploy(&live.deployment);
    assert_eq!(
        agent.args.clone().unwrap(),
        [
            "agent",
            "--listen",
            "0.0.0.0:3333",
            "--upstream",
            &format!("http://photos-server.{ns}.svc:3333"),
            "--cache-size",
            "256MiB"
        ]
    );
    for c in [&server, &agent] {
        assert_eq!(c.image.as_deref(), Some("registry.example/sis:0.1.0"));
        assert_eq!(
            c.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
        assert_eq!(
            c.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/readyz")
        );
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
    let claim = &sts_spec.volume_claim_templates.as_ref().unwrap()[0];
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "10Gi"
    );
    assert_eq!(
        server.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/data"
    );
    let pod_sc = sts_spec
        .template
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
    let annotations = sts_spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "3333");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(template_hash(&sts_spec.template).len(), 16);
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
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    wait(
        "PVC data-photos-server-0",
        Duration::from_secs(30),
        || async { pvcs.get_opt("data-photos-server-0").await.ok()? },
    )
    .await;

    // Status and events.
    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    let cluster = wait("status written", Duration::from_secs(30), || async {
        let c = api.get("photos").await.ok()?;
        (c.status.as_ref()?.observed_generation == c.metadata.generation).then_some(c)
    })
    .await;
    let status = cluster.status.clone().unwrap();
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://photos-agent.{ns}.svc:80").as_str())
    );
    assert_eq!(status.agent.as_ref().unwrap().replicas, 3);
    assert_eq!(status.phase.as_deref(), Some("Progressing"));
    assert_eq!(condition(&cluster, "Ready").unwrap().0, "False");
    assert_eq!(condition(&cluster, "Progressing").unwrap().0, "True");
    assert_eq!(
        condition(&cluster, "Degraded").unwrap(),
        ("False".to_owned(), "AsExpected".to_owned())
    );
    let events = wait("Created events", Duration::from_secs(20), || async {
        let events = events_for(&client, ns).await;
        (events
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Created"))
            .count()
            >= 4)
            .then_some(events)
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
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-update";
    create_namespace(&client, ns).await;
    let _operator = Operator::start(&kc, ns, "op-update-a");
    let mut object = sample(ns);
    object["spec"]["agent"]["resources"] = json!({"limits": {"memory": "512Mi"}});
    apply_cluster(&client, ns, &object).await;
    let before = wait_children(&client, ns, "photos").await;
    let agent_hash = template_hash(&before.deployment.spec.as_ref().unwrap().template);
    let server_hash = template_hash(&before.statefulset.spec.as_ref().unwrap().template);
    assert!(
        container_of_deploy(&before.deployment)
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
    apply_cluster(&client, ns, &object).await;

    let deploy: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let d = wait(
        "agent Deployment converged",
        Duration::from_secs(60),
        || async {
            let d = deploy.get("photos-agent").await.ok()?;
            (d.spec.as_ref()?.replicas == Some(5)).then_some(d)
        },
    )
    .await;
    let agent = container_of_deploy(&d);
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
    assert_ne!(
        template_hash(&d.spec.as_ref().unwrap().template),
        agent_hash,
        "new agent pod-template hash"
    );
    assert_eq!(d.labels()["app.kubernetes.io/version"], "0.2.0");

    let s = wait(
        "server StatefulSet converged",
        Duration::from_secs(60),
        || async {
            let s = sts.get("photos-server").await.ok()?;
            (container_of_sts(&s).image.as_deref() == Some("registry.example/sis:0.2.0"))
                .then_some(s)
        },
    )
    .await;
    assert_ne!(
        template_hash(&s.spec.as_ref().unwrap().template),
        server_hash,
        "new server pod-template hash"
    );

    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    wait(
        "agent Service port 8080",
        Duration::from_secs(30),
        || async {
            let s = svc.get("photos-agent").await.ok()?;
            (s.spec?.ports?[0].port == 8080).then_some(())
        },
    )
    .await;

    // The Deployment controller starts rolling out: a new ReplicaSet with the new template.
    // (Without a kubelet the old pods never become available, so the rollout itself stalls
    // under maxUnavailable; that it started is what the operator controls.)
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
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
    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    let cluster = wait(
        "status for generation 2",
        Duration::from_secs(30),
        || async {
            let c = api.get("photos").await.ok()?;
            (c.status.as_ref()?.observed_generation == Some(2)).then_some(c)
        },
    )
    .await;
    let status = cluster.status.unwrap();
    assert_eq!(status.agent.unwrap().replicas, 5);
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "StorageImmutable")
    );
    assert!(
        degraded.message.contains("keeping size 10Gi"),
        "{}",
        degraded.message
    );
    let s = sts.get("photos-server").await.unwrap();
    let claim = &s.spec.unwrap().volume_claim_templates.unwrap()[0];
    let size = &claim
        .spec
        .as_ref()
        .unwrap()
        .resources
        .as_ref()
        .unwrap()
        .requests
        .as_ref()
        .unwrap()["storage"];
    assert_eq!(size.0, "10Gi");
    assert_eq!(
        status.endpoint.as_deref(),
        Some(format!("http://photos-agent.{ns}.svc:8080").as_str())
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Pods become ready (status patched, as a kubelet would) → Ready=True, printer columns.

#[tokio::test]
#[ignore = "needs a real cluster: tests/k8s/operator.sh"]
async fn k8s_3_ready_pods_make_the_cluster_ready() {
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-ready";
    create_namespace(&client, ns).await;
    let operator = Operator::start(&kc, ns, "op-ready-a");
    apply_cluster(&client, ns, &sample(ns)).await;
    wait_children(&client, ns, "photos").await;
    make_pods_ready(&client, ns, 4).await;

    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    let cluster = wait("Ready=True", Duration::from_secs(60), || async {
        let c = api.get("photos").await.ok()?;
        (condition(&c, "Ready")?.0 == "True").then_some(c)
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
        .args(["--kubeconfig", kc.to_str().unwrap(), "-n", ns, "get", "sis"])
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
    wait("Ready event", Duration::from_secs(20), || async {
        let events = events_for(&client, ns).await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("Ready"))
            .then_some(())
    })
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
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-invalid";
    create_namespace(&client, ns).await;
    let operator = Operator::start(&kc, ns, "op-invalid-a");
    apply_cluster(&client, ns, &sample(ns)).await;
    wait_children(&client, ns, "photos").await;
    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);

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
        match api
            .patch("photos", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 422, "{what}: {e:?}"),
            other => panic!("{what}: the schema accepted {patch}: {other:?}"),
        }
    }
    let unchanged = api.get("photos").await.unwrap();
    assert_eq!(unchanged.metadata.generation, Some(1));

    // Defaults come from the schema: an almost empty spec is filled in by the apiserver.
    let minimal = json!({"apiVersion": "sis.dev/v1alpha1", "kind": "SisCluster",
        "metadata": {"name": "minimal", "namespace": ns}, "spec": {}});
    let created = apply_cluster(&client, ns, &minimal).await;
    assert_eq!(created.spec.agent.replicas, 2);
    assert_eq!(created.spec.agent.cache_size.0, "256Mi");
    assert_eq!(created.spec.agent.service.port, 80);
    assert_eq!(created.spec.server.storage.size.0, "10Gi");

    // Schema-valid but unusable: 1.5 bytes of cache. Degraded with a message, no crash loop.
    let patch = json!({"spec": {"agent": {"cacheSize": "1.5"}}});
    api.patch("photos", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let degraded = wait(
        "Degraded=True InvalidSpec",
        Duration::from_secs(30),
        || async {
            let c = api.get("photos").await.ok()?;
            (condition(&c, "Degraded")? == ("True".to_owned(), "InvalidSpec".to_owned()))
                .then_some(c)
        },
    )
    .await;
    let status = degraded.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(message.contains("spec.agent.cacheSize"), "{message}");
    wait("InvalidSpec event", Duration::from_secs(20), || async {
        let events = events_for(&client, ns).await;
        events
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("InvalidSpec") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    // The children keep running the last valid spec.
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let args = container_of_deploy(&deploy.get("photos-agent").await.unwrap())
        .args
        .unwrap();
    assert_eq!(args.last().map(String::as_str), Some("256MiB"));
    // The operator is still alive and reconciling: the other cluster gets its children.
    wait_children(&client, ns, "minimal").await;
    // Fixing the spec recovers.
    let patch = json!({"spec": {"agent": {"cacheSize": "128Mi"}}});
    api.patch("photos", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait(
        "Degraded=False after the fix",
        Duration::from_secs(30),
        || async {
            let c = api.get("photos").await.ok()?;
            (condition(&c, "Degraded")?.0 == "False").then_some(())
        },
    )
    .await;
    assert!(operator.metric("sis_operator_reconciliations_total").await >= 3.0);
    let addr = operator.metrics_addr().await;
    let body = String::from_utf8(http_get(&addr, "/metrics").1).unwrap();
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
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-delete";
    create_namespace(&client, ns).await;
    let _operator = Operator::start(&kc, ns, "op-delete-a");
    apply_cluster(&client, ns, &sample(ns)).await;
    wait_children(&client, ns, "photos").await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    wait("PVC created", Duration::from_secs(30), || async {
        pvcs.get_opt("data-photos-server-0").await.ok()?
    })
    .await;

    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    api.delete("photos", &DeleteParams::default())
        .await
        .unwrap();
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let svc: Api<Service> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
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
    let pvc = pvcs.get_opt("data-photos-server-0").await.unwrap();
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
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-leader";
    create_namespace(&client, ns).await;
    let mut a = Operator::start(&kc, ns, "op-leader-a");
    assert_eq!(wait_metric(&a, "sis_operator_leader", 1.0).await, 1.0);
    let b = Operator::start(&kc, ns, "op-leader-b");
    let b_addr = b.metrics_addr().await;
    wait("standby B ready", Duration::from_secs(20), || async {
        let (status, body) = http_get(&b_addr, "/readyz");
        (status == 200 && body == b"ok: standby\n").then_some(())
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
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

    apply_cluster(&client, ns, &sample(ns)).await;
    wait_children(&client, ns, "photos").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(a.metric("sis_operator_reconciliations_total").await >= 1.0);
    assert_eq!(
        b.metric("sis_operator_reconciliations_total").await,
        0.0,
        "the standby never reconciles"
    );
    assert_eq!(b.metric("sis_operator_leader").await, 0.0);
    let events = events_for(&client, ns).await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.reporting_instance.as_deref() == Some("op-leader-a")),
        "only A wrote events"
    );
    let deploy: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deploy.get("photos-agent").await.unwrap();
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
    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    api.patch(
        "photos",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"agent": {"replicas": 4}}})),
    )
    .await
    .unwrap();
    wait(
        "B converges the change",
        Duration::from_secs(30),
        || async {
            let d = deploy.get("photos-agent").await.ok()?;
            (d.spec?.replicas == Some(4)).then_some(())
        },
    )
    .await;
    assert!(b.metric("sis_operator_reconciliations_total").await >= 1.0);
    assert_eq!(b.metric("sis_operator_leader").await, 1.0);
    // B publishes its event right after the apply we just saw; give it a moment.
    wait("an event from B", Duration::from_secs(20), || async {
        let events = events_for(&client, ns).await;
        events
            .iter()
            .any(|e| e.reporting_instance.as_deref() == Some("op-leader-b"))
            .then_some(())
    })
    .await;
}

async fn wait_metric(operator: &Operator, name: &str, value: f64) -> f64 {
    let start = Instant::now();
    loop {
        let v = operator.metric(name).await;
        if v == value || start.elapsed() > Duration::from_secs(30) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Contract: the pod templates' command, args and env start the real `sis` binaries.

const PNG_2X2: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0,
    0, 0, 253, 212, 154, 115, 0, 0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 248, 207, 192, 0, 68, 12,
    16, 10, 0, 31, 238, 3, 253, 139, 95, 20, 212, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn sis_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("SIS_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/sis")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process started from a container spec, killed on drop.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- {} log ---\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// Start `container` on loopback: `sis` → the built binary, `0.0.0.0:3333` → `listen`,
/// `/data` → `data_dir`, in-cluster URLs → `upstream`, secret env → its value.
#[allow(clippy::too_many_arguments)]
async fn start_container(
    client: &Client,
    namespace: &str,
    name: &'static str,
    container: &Container,
    listen: &str,
    data_dir: &Path,
    upstream: &str,
    dir: &Path,
) -> Proc {
    let command = container.command.clone().unwrap();
    assert_eq!(command, ["sis"], "the image's binary is called by name");
    let args: Vec<String> = container
        .args
        .clone()
        .unwrap()
        .into_iter()
        .map(|a| {
            if a == "0.0.0.0:3333" {
                listen.to_owned()
            } else if a == "/data" {
                data_dir.display().to_string()
            } else if a.starts_with("http://") && a.contains(".svc") {
                upstream.to_owned()
            } else {
                a
            }
        })
        .collect();
    let mut env = BTreeMap::new();
    for var in container.env.clone().unwrap_or_default() {
        let value = match (var.value, var.value_from) {
            (Some(v), _) => v,
            (None, Some(from)) => {
                let key = from
                    .secret_key_ref
                    .expect("only secret references are used");
                let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                    .get(&key.name)
                    .await
                    .unwrap();
                let bytes = secret.data.unwrap()[&key.key].0.clone();
                String::from_utf8(bytes).unwrap()
            }
            (None, None) => String::new(),
        };
        env.insert(var.name, value);
    }
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(sis_binary());
    cmd.args(&args)
        .envs(&env)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap());
    for (key, _) in std::env::vars() {
        if key.starts_with("SIS_") && !env.contains_key(&key) {
            cmd.env_remove(&key);
        }
    }
    eprintln!("contract: starting {name}: sis {}", args.join(" "));
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", sis_binary().display()));
    Proc {
        child,
        name,
        log: dir.join(format!("{name}.err")),
    }
}

/// Wait for /healthz and /readyz to answer 200; `Err(stderr)` if the process exits first.
fn wait_probes(proc: &mut Proc, addr: &str) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(status) = proc.child.try_wait().unwrap() {
            return Err(format!(
                "{} exited with {status}: {}",
                proc.name,
                std::fs::read_to_string(&proc.log).unwrap_or_default()
            ));
        }
        if TcpStream::connect(addr).is_ok()
            && http_get(addr, "/healthz").0 == 200
            && http_get(addr, "/readyz").0 == 200
        {
            return Ok(());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} probes not 200 within 30 s",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
#[ignore = "needs a real cluster and target/debug/sis: tests/k8s/operator.sh"]
async fn k8s_7_contract_pod_templates_start_the_real_binaries() {
    let Some(kc) = kubeconfig_path() else { return };
    assert!(
        sis_binary().exists(),
        "{} missing: cargo build -p sis",
        sis_binary().display()
    );
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-contract";
    create_namespace(&client, ns).await;
    let token = "contract-token-123";
    create_token_secret(&client, ns, token).await;
    let _operator = Operator::start(&kc, ns, "op-contract-a");
    apply_cluster(&client, ns, &sample(ns)).await;
    let live = wait_children(&client, ns, "photos").await;

    let dir = std::env::temp_dir().join(format!("sis-contract-{}", std::process::id()));
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server_addr = format!("127.0.0.1:{}", free_port());
    let agent_addr = format!("127.0.0.1:{}", free_port());

    let server_container = container_of_sts(&live.statefulset);
    let mut server = start_container(
        &client,
        ns,
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

    let agent_container = container_of_deploy(&live.deployment);
    let upstream = format!("http://{server_addr}");
    let mut agent = start_container(
        &client,
        ns,
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
    let Some(kc) = kubeconfig_path() else { return };
    let client = client(&kc).await;
    ensure_crd(&client).await;
    let ns = "op-conflict";
    create_namespace(&client, ns).await;
    // Someone else's StatefulSet already has the name; its selector is immutable, so applying
    // ours over it fails with 422.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let foreign: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "photos-server", "namespace": ns},
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
    let operator = Operator::start(&kc, ns, "op-conflict-a");
    apply_cluster(&client, ns, &sample(ns)).await;

    let api: Api<SisCluster> = Api::namespaced(client.clone(), ns);
    let cluster = wait(
        "Degraded=True ApplyFailed",
        Duration::from_secs(30),
        || async {
            let c = api.get("photos").await.ok()?;
            (condition(&c, "Degraded")? == ("True".to_owned(), "ApplyFailed".to_owned()))
                .then_some(c)
        },
    )
    .await;
    let status = cluster.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Degraded"));
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap()
        .message;
    assert!(
        message.contains("applying StatefulSet photos-server"),
        "{message}"
    );
    wait(
        "ApplyFailed warning event",
        Duration::from_secs(20),
        || async {
            let events = events_for(&client, ns).await;
            events
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("ApplyFailed")
                        && e.type_.as_deref() == Some("Warning")
                })
                .then_some(())
        },
    )
    .await;
    let addr = operator.metrics_addr().await;
    // error_policy counts the failure after the reconcile returns.
    wait(
        "apply_statefulset error metric",
        Duration::from_secs(20),
        || async {
            let body = String::from_utf8(http_get(&addr, "/metrics").1).ok()?;
            body.contains(r#"sis_operator_reconcile_errors_total{reason="apply_statefulset"}"#)
                .then_some(())
        },
    )
    .await;

    // Remove the obstacle: a retry (backoff, no new event needed) creates ours and recovers.
    sts.delete("photos-server", &DeleteParams::default())
        .await
        .unwrap();
    wait(
        "our StatefulSet after a retry",
        Duration::from_secs(90),
        || async {
            let s = sts.get_opt("photos-server").await.ok()??;
            (s.labels()
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("sis-operator"))
            .then_some(())
        },
    )
    .await;
    wait(
        "Degraded=False after recovery",
        Duration::from_secs(30),
        || async {
            let c = api.get("photos").await.ok()?;
            (condition(&c, "Degraded")?.0 == "False").then_some(())
        },
    )
    .await;
    wait_children(&client, ns, "photos").await;
}
