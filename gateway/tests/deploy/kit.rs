//! What the deploy-kit tests share: the tools they drive, the kustomize builds of the
//! kit, and a gateway process started from the kit's own configuration and policy.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_yaml::Value;

pub const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
pub const BIN: &str = env!("CARGO_BIN_EXE_egress-gateway");

/// What installs a tool the tests need.
fn install_hint(name: &str) -> &'static str {
    match name {
        "promtool" | "prometheus" => "the Debian package prometheus (scripts/test.sh installs it)",
        "kubectl" => "kubectl from the Kubernetes release binaries (no Debian package has it)",
        "python3" => "python3 (scripts/test.sh installs it)",
        _ => "it",
    }
}

/// A command for `name`, failing the test with what installs it when it is missing.
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: these tests need {}",
        install_hint(name)
    );
    if name == "python3" {
        let import = Command::new("python3")
            .args(["-c", "import kubernetes_validate"])
            .output()
            .unwrap();
        assert!(
            import.status.success(),
            "the Python package kubernetes-validate is not installed: python3 -m pip install kubernetes-validate (scripts/test.sh does)"
        );
    }
    Command::new(name)
}

/// Runs `cmd` to its end.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A YAML string, or "" when it is something else or missing.
pub fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

/// A YAML sequence, empty when it is something else or missing.
pub fn seq(value: &Value) -> &[Value] {
    value.as_sequence().map_or(&[], Vec::as_slice)
}

/// A YAML mapping of strings.
pub fn map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| (str_of(k).to_owned(), str_of(v).to_owned()))
        .collect()
}

/// `kubectl kustomize dir`, as YAML documents.
pub fn kustomize(dir: &Path) -> Vec<Value> {
    let out = run(tool("kubectl").arg("kustomize").arg(dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        text(&out.stderr)
    );
    documents(&text(&out.stdout))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|doc: &Value| !doc.is_null())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// One kustomization of deploy/kubernetes, built.
pub struct Built {
    /// `base`, or the overlay's directory name.
    pub name: String,
    /// The copy of deploy/kubernetes it was built from, with an admin token written as
    /// the README says to.
    pub dir: tempfile::TempDir,
    pub yaml: String,
    pub docs: Vec<Value>,
}

impl Built {
    /// The base and every overlay.
    pub fn all() -> Vec<Built> {
        let source = Path::new(ROOT).join("deploy/kubernetes");
        let mut dirs = vec![("base".to_owned(), PathBuf::from("base"))];
        let mut overlays: Vec<_> = std::fs::read_dir(source.join("overlays"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        overlays.sort();
        assert!(!overlays.is_empty(), "deploy/kubernetes/overlays is empty");
        dirs.extend(
            overlays
                .into_iter()
                .map(|o| (o.clone(), Path::new("overlays").join(o))),
        );
        dirs.into_iter()
            .map(|(name, rel)| {
                let dir = tempfile::tempdir().unwrap();
                copy_dir(&source, dir.path());
                std::fs::write(
                    dir.path().join("base/admin.token"),
                    "ops:0123456789abcdef0123456789abcdef\n",
                )
                .unwrap();
                let out = run(tool("kubectl").arg("kustomize").arg(dir.path().join(&rel)));
                assert!(
                    out.status.success(),
                    "kubectl kustomize {name}: {}",
                    text(&out.stderr)
                );
                let yaml = text(&out.stdout);
                let docs = documents(&yaml);
                Built {
                    name,
                    dir,
                    yaml,
                    docs,
                }
            })
            .collect()
    }

    /// The object of `kind` named `name`, or named `name-HASH` by a generator.
    pub fn one(&self, kind: &str, name: &str) -> &Value {
        let named = |d: &&Value, exact: bool| {
            let n = str_of(&d["metadata"]["name"]);
            str_of(&d["kind"]) == kind
                && (n == name || (!exact && n.starts_with(&format!("{name}-"))))
        };
        self.docs
            .iter()
            .find(|d| named(d, true))
            .or_else(|| self.docs.iter().find(|d| named(d, false)))
            .unwrap_or_else(|| panic!("{}: no {kind} {name}", self.name))
    }

    pub fn deployment(&self) -> &Value {
        self.one("Deployment", "egress-gateway")
    }

    pub fn container(&self) -> &Value {
        let containers = seq(&self.deployment()["spec"]["template"]["spec"]["containers"]);
        containers
            .iter()
            .find(|c| str_of(&c["name"]) == "egress-gateway")
            .expect("a container egress-gateway")
    }

    /// Container port names → numbers.
    pub fn container_ports(&self) -> BTreeMap<String, u64> {
        seq(&self.container()["ports"])
            .iter()
            .map(|p| {
                (
                    str_of(&p["name"]).to_owned(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Each mount path of the container, with the (kind, name) of its ConfigMap or Secret.
    pub fn mounts(&self) -> Vec<(PathBuf, (&'static str, String))> {
        let volumes = seq(&self.deployment()["spec"]["template"]["spec"]["volumes"]);
        seq(&self.container()["volumeMounts"])
            .iter()
            .filter_map(|m| {
                let volume = volumes
                    .iter()
                    .find(|v| v["name"] == m["name"])
                    .expect("a mount of a declared volume");
                let source = if volume["configMap"].is_mapping() {
                    ("ConfigMap", str_of(&volume["configMap"]["name"]).to_owned())
                } else if volume["secret"].is_mapping() {
                    ("Secret", str_of(&volume["secret"]["secretName"]).to_owned())
                } else {
                    return None;
                };
                Some((PathBuf::from(str_of(&m["mountPath"])), source))
            })
            .collect()
    }

    /// The bootstrap configuration the pods run (the ConfigMap's gateway.yaml).
    pub fn bootstrap_config(&self) -> Value {
        self.config_text().parse_yaml()
    }

    fn config_text(&self) -> String {
        str_of(&self.one("ConfigMap", "egress-gateway-config")["data"]["gateway.yaml"]).to_owned()
    }

    /// The policy files of the policies ConfigMap.
    pub fn policy_files(&self) -> BTreeMap<String, String> {
        map(&self.one("ConfigMap", "egress-gateway-policies")["data"])
    }

    /// Every listener the shipped policy declares.
    pub fn listeners(&self) -> Vec<Value> {
        self.policy_files()
            .values()
            .flat_map(|text| seq(&text.parse_yaml()["listeners"]).to_vec())
            .collect()
    }
}

trait ParseYaml {
    fn parse_yaml(&self) -> Value;
}

impl ParseYaml for String {
    fn parse_yaml(&self) -> Value {
        serde_yaml::from_str(self).unwrap()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gateway process running the kit's bootstrap configuration and policy, with every
/// address moved to a free loopback port.
pub struct KitGateway {
    child: Child,
    _dir: tempfile::TempDir,
    pub stats: SocketAddr,
    pub admin: SocketAddr,
    token: String,
}

impl KitGateway {
    pub fn start(built: &Built) -> KitGateway {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        for (name, text) in built.policy_files() {
            let mut policy = text.parse_yaml();
            for listener in policy["listeners"].as_sequence_mut().into_iter().flatten() {
                listener["port"] = Value::from(free_port());
                listener["address"] = Value::from("127.0.0.1");
            }
            std::fs::write(policies.join(name), serde_yaml::to_string(&policy).unwrap()).unwrap();
        }
        let check = run(Command::new(BIN)
            .arg("--check")
            .arg("--policies")
            .arg(&policies));
        assert!(
            check.status.success(),
            "{}: the shipped policy: {}",
            built.name,
            text(&check.stderr)
        );
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, built.config_text()).unwrap();
        let token = "kit-test-0123456789abcdef".to_owned();
        std::fs::write(dir.path().join("admin.token"), format!("test:{token}\n")).unwrap();
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--policies")
            .arg(&policies)
            .args([
                "--admin-address",
                "127.0.0.1:0",
                "--stats-address",
                "127.0.0.1:0",
            ])
            .arg("--admin-token-file")
            .arg(dir.path().join("admin.token"))
            .args(["--dns-server", "127.0.0.1:9"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening:") {
                    let _ = tx.send(line);
                }
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!(
                "{}: the gateway did not start with the kit's configuration",
                built.name
            );
        };
        let addr = |after: &str| -> SocketAddr {
            let rest = &line[line
                .find(after)
                .unwrap_or_else(|| panic!("{after} in {line}"))
                + after.len()..];
            rest.split([' ', ';']).next().unwrap().parse().unwrap()
        };
        KitGateway {
            stats: addr("stats on "),
            admin: addr("admin on "),
            child,
            _dir: dir,
            token,
        }
    }

    /// `POST /policy/check` on the admin API: what the policy decides for a destination
    /// (the policy alone: the names are real hosts, and tests stay on loopback).
    pub fn check(&self, host: &str, port: u64, listener: &str) -> serde_json::Value {
        let body =
            serde_json::json!({"host": host, "port": port, "listener": listener, "resolve": false})
                .to_string();
        let request = format!(
            "POST /policy/check HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        let reply = exchange(self.admin, &request);
        let (_, json) = reply.split_once("\r\n\r\n").unwrap();
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {reply}"))
    }
}

impl Drop for KitGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn exchange(addr: SocketAddr, request: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match std::net::TcpStream::connect(addr) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > end => panic!("connect to {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// `GET path` with `Connection: close`: the whole response.
pub fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: stats\r\nConnection: close\r\n\r\n"),
    )
}

/// Every query of the dashboard's panels (rows' panels included).
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<String>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push(expr.to_owned());
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}
