//! Cluster access for the real-cluster tests: the kubeconfig, the CRD, polling, and the
//! `sis-operator` processes under test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;
use sis_operator::SisCluster;

use super::http::http_get;

pub fn kubeconfig_path() -> Option<PathBuf> {
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

pub async fn client(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Install (server-side apply) the CRD and wait until it is Established.
pub async fn ensure_crd(client: &Client) {
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

pub async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating namespace {name}: {e}"),
    }
}

/// Poll `check` every 200 ms until it returns `Some` or `timeout` passes (then panic).
pub async fn wait<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
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
pub struct Operator {
    child: Child,
    identity: String,
    metrics_addr: Arc<Mutex<Option<String>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Operator {
    pub fn start(kubeconfig: &Path, namespace: &str, identity: &str) -> Operator {
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

    pub async fn metrics_addr(&self) -> String {
        wait(
            "operator metrics address",
            Duration::from_secs(20),
            || async { self.metrics_addr.lock().unwrap().clone() },
        )
        .await
    }

    /// Value of an unlabelled metric from `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        let addr = self.metrics_addr().await;
        let (status, body) = http_get(&addr, "/metrics");
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing:\n{body}"))
    }

    pub fn dump_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
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

/// Poll a metric until it has `value` (or 30 s pass); returns the last value read.
pub async fn wait_metric(operator: &Operator, name: &str, value: f64) -> f64 {
    let start = Instant::now();
    loop {
        let v = operator.metric(name).await;
        if v == value || start.elapsed() > Duration::from_secs(30) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One test's namespace on the shared control plane (created, with the CRD installed), and the
/// calls the tests make in it. Each test owns its namespace, so tests run in parallel.
pub struct TestNamespace {
    pub kubeconfig: PathBuf,
    pub client: Client,
    pub name: &'static str,
}

impl TestNamespace {
    /// Connect, install the CRD and create `name`; `None` means skip (no cluster, not CI).
    pub async fn create(name: &'static str) -> Option<TestNamespace> {
        let kubeconfig = kubeconfig_path()?;
        let client = client(&kubeconfig).await;
        ensure_crd(&client).await;
        create_namespace(&client, name).await;
        Some(TestNamespace {
            kubeconfig,
            client,
            name,
        })
    }

    /// The API of a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), self.name)
    }

    /// Start a `sis-operator` watching this namespace, with `identity` as its pod name.
    pub fn start_operator(&self, identity: &str) -> Operator {
        Operator::start(&self.kubeconfig, self.name, identity)
    }

    /// Poll the object `name` of kind `K` until `done` holds for it; returns it.
    pub async fn wait_for<K>(
        &self,
        what: &str,
        timeout: Duration,
        name: &str,
        done: impl Fn(&K) -> bool,
    ) -> K
    where
        K: kube::Resource<Scope = NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api = self.api::<K>();
        wait(what, timeout, || async {
            let object = api.get(name).await.ok()?;
            done(&object).then_some(object)
        })
        .await
    }

    /// Poll the SisCluster `photos` until `done` holds for it.
    pub async fn wait_for_photos(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&SisCluster) -> bool,
    ) -> SisCluster {
        self.wait_for(what, timeout, "photos", done).await
    }

    /// Merge-patch the SisCluster `photos`, as `kubectl patch --type merge` would.
    pub async fn patch_photos(&self, patch: &serde_json::Value) -> kube::Result<SisCluster> {
        self.api::<SisCluster>()
            .patch("photos", &PatchParams::default(), &Patch::Merge(patch))
            .await
    }
}
