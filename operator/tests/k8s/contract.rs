//! For test 7: run the pod templates' containers as local processes of the real `sis` binary.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Secret};
use kube::{Api, Client};

use super::http::http_get;

pub const PNG_2X2: [u8; 73] = [
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 2, 0, 0, 0, 2, 8, 2, 0,
    0, 0, 253, 212, 154, 115, 0, 0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 248, 207, 192, 0, 68, 12,
    16, 10, 0, 31, 238, 3, 253, 139, 95, 20, 212, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

pub fn sis_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("SIS_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/sis")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process started from a container spec, killed on drop.
pub struct Proc {
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
pub async fn start_container(
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
pub fn wait_probes(proc: &mut Proc, addr: &str) -> Result<(), String> {
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
