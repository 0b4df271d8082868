//! `egressctl import istio` and `egressctl policy suggest` end to end: the built binary
//! against a live gateway, on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use egress_gateway::testing::TestGateway;
use tokio::io::AsyncWriteExt;

const BIN: &str = env!("CARGO_BIN_EXE_egressctl");

const POLICY: &str = "defaults: {mode: deny}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - name: api
    hosts: [api.example.com]
    ports: [80]
";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// egressctl pointed at one gateway, run in a directory of its own.
struct Ctl {
    admin: String,
    token_file: PathBuf,
    cwd: tempfile::TempDir,
}

impl Ctl {
    fn new(gateway: &TestGateway) -> Ctl {
        Ctl {
            admin: gateway.admin_addr().to_string(),
            token_file: gateway.admin_token_file().to_owned(),
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.cwd.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn run_with(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(self.cwd.path())
            .env("EGRESS_ADMIN", &self.admin)
            .env("EGRESS_TOKEN_FILE", &self.token_file)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .expect("egressctl finishes")
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None).await
    }

    async fn expect(&self, args: &[&str], code: i32) -> Run {
        let run = self.run(args).await;
        assert_eq!(
            run.code, code,
            "egressctl {args:?}: {}{}",
            run.stdout, run.stderr
        );
        run
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gateway/tests/fixtures/istio")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_istio_prints_a_policy_that_applies_and_decides_as_istio() {
    let gateway = TestGateway::start(POLICY).await;
    let ctl = Ctl::new(&gateway);
    let github = fixture("ref-01-serviceentry-https-and-tcp-cidrs.yaml");
    let first = ctl.expect(&["import", "istio", path(&github)], 0).await;
    assert!(
        first.stdout.contains("# from ServiceEntry github-https"),
        "{}",
        first.stdout
    );
    assert!(
        first.stderr.contains("0 fields not translated"),
        "the CIDRs are rules' hosts now: {}",
        first.stderr
    );
    let again = ctl.expect(&["import", "istio", path(&github)], 0).await;
    assert_eq!(
        first.stdout, again.stdout,
        "the same input, the same output"
    );
    assert_eq!(gateway.policy_version(), 1, "import applies nothing");

    ctl.expect(&["import", "istio", "--check", path(&github)], 0)
        .await;
    let broken = ctl.file(
        "broken.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: odd}\nspec:\n  hosts: [odd.example.com]\n  addresses: [not-an-address]\n  ports: [{number: 5432, name: tcp, protocol: TCP}]\n",
    );
    let checked = ctl
        .expect(&["import", "istio", "--check", path(&broken)], 4)
        .await;
    assert!(
        checked.stderr.contains("were not translated"),
        "{}",
        checked.stderr
    );
    let json = ctl
        .expect(&["import", "istio", "-o", "json", path(&broken)], 0)
        .await;
    let answer: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(answer["dropped"], 1, "the address that is none: {answer}");

    let imported = ctl.file("imported.yaml", &first.stdout);
    ctl.expect(&["policy", "apply", "-f", path(&imported)], 0)
        .await;
    ctl.expect(&["check", "github.com:443"], 0).await;
    ctl.expect(&["check", "13.229.188.59:22"], 0).await;
    ctl.expect(&["check", "github.com:80"], 3).await;
    ctl.expect(&["check", "140.82.112.5:22"], 0).await;
    ctl.expect(&["check", "140.82.128.1:22"], 3).await;
    ctl.expect(&["check", "api.example.com:80"], 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_istio_reads_several_files_and_stdin() {
    let gateway = TestGateway::start(POLICY).await;
    let ctl = Ctl::new(&gateway);
    let seed = std::fs::read_to_string(fixture("seed-001-baidu-egress-gateway.yaml")).unwrap();
    let run = ctl
        .run_with(&["import", "istio", "--check", "-"], Some(&seed))
        .await;
    assert_eq!(run.code, 0, "nothing dropped: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("- www.baidu.com"), "{}", run.stdout);
    assert!(
        run.stderr.contains("keep this half in the mesh"),
        "{}",
        run.stderr
    );

    let cnn = fixture("ref-04-egress-gateway-https-passthrough.yaml");
    let both = ctl
        .run_with(&["import", "istio", path(&cnn), "-"], Some(&seed))
        .await;
    assert_eq!(both.code, 0, "{}", both.stderr);
    assert!(
        both.stdout.contains("- edition.cnn.com") && both.stdout.contains("- www.baidu.com"),
        "{}",
        both.stdout
    );
    let kubectl = "apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1beta1
  kind: ServiceEntry
  metadata:
    name: httpbin
    namespace: default
    resourceVersion: \"123\"
    managedFields:
    - manager: kubectl
      operation: Update
  spec:
    hosts: [httpbin.org]
    ports: [{number: 80, name: http, protocol: HTTP}]
    resolution: DNS
  status: {}
";
    let run = ctl
        .run_with(&["import", "istio", "--check", "-"], Some(kubectl))
        .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("# from ServiceEntry default/httpbin"),
        "{}",
        run.stdout
    );
    let broken = ctl
        .run_with(
            &["import", "istio", "--check", "-"],
            Some(&format!("{kubectl}---\nkind: [unclosed\n")),
        )
        .await;
    assert_eq!(broken.code, 4, "{}", broken.stderr);
    assert!(broken.stderr.contains("document 2"), "{}", broken.stderr);
}

/// One HTTP/1.1 request for `host` through the gateway's http listener; the status.
async fn get(gateway: &TestGateway, host: &str) -> u16 {
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let response = egress_testkit::client::raw_request(gateway.addr("http"), request.as_bytes())
        .await
        .unwrap();
    response
        .status
        .unwrap_or_else(|| panic!("no status: {}", response.text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggest_from_audit_mode_then_enforce_lets_the_same_traffic_pass() {
    let upstream = egress_testkit::StubUpstream::start().await;
    let dns = egress_testkit::TestDns::start().await;
    for name in ["a.shop.test", "b.shop.test", "c.other.test"] {
        dns.set(name, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }
    let audit = "defaults: {mode: audit, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: api, hosts: [api.example.com], ports: [80]}
";
    let gateway = TestGateway::builder(audit)
        .dns(vec![dns.addr()])
        .start()
        .await;
    let ctl = Ctl::new(&gateway);
    let port = upstream.port();
    let traffic = [
        format!("a.shop.test:{port}"),
        format!("a.shop.test:{port}"),
        format!("b.shop.test:{port}"),
    ];
    for host in &traffic {
        assert_eq!(get(&gateway, host).await, 200, "audit mode forwards {host}");
    }
    gateway.wait_audit_lines(traffic.len()).await;
    let log = gateway.audit_path().to_str().unwrap().to_owned();

    let grouped = ctl
        .expect(
            &[
                "policy",
                "suggest",
                "--from",
                &log,
                "--group-wildcards",
                "-o",
                "json",
            ],
            0,
        )
        .await;
    let grouped: serde_json::Value = serde_json::from_str(&grouped.stdout).unwrap();
    assert_eq!(
        grouped["suggested"][0]["seen"]["host"], "*.shop.test",
        "{grouped}"
    );
    assert_eq!(
        grouped["suggested"][0]["seen"]["folded"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let noisy = ctl
        .expect(
            &[
                "policy",
                "suggest",
                "--from",
                &log,
                "--min-count",
                "2",
                "-o",
                "json",
            ],
            0,
        )
        .await;
    let noisy: serde_json::Value = serde_json::from_str(&noisy.stdout).unwrap();
    assert_eq!(noisy["suggested"].as_array().unwrap().len(), 1, "{noisy}");

    // --since: the log's lines are all from the last minutes; a time after them leaves
    // nothing to suggest, through the file and through the gateway alike.
    let later = "2999-01-01T00:00:00Z";
    for args in [
        vec![
            "policy",
            "suggest",
            "--from",
            log.as_str(),
            "--since",
            later,
            "-o",
            "json",
        ],
        vec!["policy", "suggest", "--since", later, "-o", "json"],
    ] {
        let none = ctl.expect(&args, 0).await;
        let none: serde_json::Value = serde_json::from_str(&none.stdout).unwrap();
        assert_eq!(
            none["suggested"].as_array().unwrap().len(),
            0,
            "{args:?}: {none}"
        );
    }
    let recent = ctl
        .expect(
            &[
                "policy", "suggest", "--from", &log, "--since", "1h", "-o", "json",
            ],
            0,
        )
        .await;
    let recent: serde_json::Value = serde_json::from_str(&recent.stdout).unwrap();
    assert!(
        !recent["suggested"].as_array().unwrap().is_empty(),
        "{recent}"
    );

    let run = ctl
        .expect(&["policy", "suggest", "--from", &log, "-o", "yaml"], 0)
        .await;
    let own = ctl.expect(&["policy", "suggest", "-o", "yaml"], 0).await;
    assert_eq!(
        own.stdout, run.stdout,
        "GET /policy/suggest reads the same log"
    );
    assert!(
        run.stdout.contains("name: seen-a.shop.test"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("name: api"),
        "the rules in force stay: {}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("REVIEW: it resolved to private or special addresses (127.0.0.1)"),
        "loopback upstreams are flagged: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("+ rule seen-b.shop.test"),
        "{}",
        run.stderr
    );
    let suggested = ctl.file("suggested.yaml", &run.stdout);
    ctl.expect(&["policy", "apply", "-f", path(&suggested)], 0)
        .await;
    let enforced = ctl.file(
        "enforced.yaml",
        &run.stdout.replace("mode: audit", "mode: deny"),
    );
    ctl.expect(&["policy", "apply", "-f", path(&enforced)], 0)
        .await;

    for host in &traffic {
        assert_eq!(get(&gateway, host).await, 200, "enforcing lets {host} pass");
    }
    assert_eq!(get(&gateway, &format!("c.other.test:{port}")).await, 403);
    // The log now holds the replay and the denial too: only the denied host is new.
    gateway.wait_audit_lines(2 * traffic.len() + 1).await;
    // A rotated, compressed log reads the same.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(&log).unwrap()).unwrap();
    let rotated = ctl.cwd.path().join("audit.log.1.gz");
    std::fs::write(&rotated, gz.finish().unwrap()).unwrap();
    let from_gz = ctl
        .expect(
            &["policy", "suggest", "--from", path(&rotated), "-o", "json"],
            0,
        )
        .await;
    let from_gz: serde_json::Value = serde_json::from_str(&from_gz.stdout).unwrap();
    assert_eq!(
        from_gz["suggested"][0]["seen"]["host"], "c.other.test",
        "{from_gz}"
    );
    let again = ctl.expect(&["policy", "suggest", "--from", &log], 0).await;
    assert!(
        again.stdout.contains("name: seen-c.other.test"),
        "{}",
        again.stdout
    );
    assert!(
        !again.stdout.contains("name: seen-a.shop.test-2"),
        "{}",
        again.stdout
    );
    assert!(
        again.stderr.contains("1 rules suggested")
            && again.stderr.contains(&format!(
                "= allowed by the policy in force now: a.shop.test:{port}, b.shop.test:{port}"
            )),
        "{}",
        again.stderr
    );
}
