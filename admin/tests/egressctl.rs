//! `egressctl` end to end: the built binary against a live gateway, its output and its
//! exit status for every command, successes and failures alike.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use egress_gateway::testing::TestGateway;
use tokio::io::{AsyncBufReadExt, BufReader};

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

/// Runs egressctl against `gateway` (admin address and token file from the
/// environment, as an operator would set them) in a directory without a token file.
struct Ctl {
    admin: String,
    token_file: Option<PathBuf>,
    cwd: tempfile::TempDir,
}

impl Ctl {
    fn new(gateway: &TestGateway) -> Ctl {
        Ctl {
            admin: gateway.admin_addr().to_string(),
            token_file: Some(gateway.admin_token_file().to_owned()),
            cwd: tempfile::tempdir().unwrap(),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.cwd.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args)
            .current_dir(self.cwd.path())
            .env("EGRESS_ADMIN", &self.admin)
            .env_remove("EGRESS_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(file) = &self.token_file {
            cmd.env("EGRESS_TOKEN_FILE", file);
        }
        cmd
    }

    async fn run(&self, args: &[&str]) -> Run {
        let output = tokio::time::timeout(Duration::from_secs(30), self.command(args).output())
            .await
            .expect("egressctl finishes")
            .unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert_eq!(
            run.code, 0,
            "egressctl {args:?}: {}{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    async fn fails(&self, args: &[&str], code: i32, says: &str) -> Run {
        let run = self.run(args).await;
        assert_eq!(
            run.code, code,
            "egressctl {args:?}: {}{}",
            run.stdout, run.stderr
        );
        assert!(
            run.stderr.contains(says),
            "egressctl {args:?} says {says:?}: {}",
            run.stderr
        );
        run
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_commands_read_change_and_go_back() {
    let gateway = TestGateway::start(POLICY).await;
    let ctl = Ctl::new(&gateway);
    let status = ctl.ok(&["status"]).await;
    assert!(status.contains("ready:        yes"), "{status}");
    assert!(status.contains("version 1, applied"), "{status}");
    assert_eq!(ctl.ok(&["policy", "get"]).await, POLICY);
    let json: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["policy", "get", "-o", "json"]).await).unwrap();
    assert_eq!(json["rules"][0]["name"], "api");

    let new = ctl.file(
        "new.yaml",
        &format!("{POLICY}  - {{name: extra, hosts: [extra.example]}}\n"),
    );
    let diff = ctl.ok(&["policy", "diff", "-f", path(&new)]).await;
    assert!(
        diff.contains("would change") && diff.contains("rule extra added"),
        "{diff}"
    );
    assert_eq!(gateway.policy_version(), 1, "diff changes nothing");
    let applied = ctl.ok(&["policy", "apply", "-f", path(&new)]).await;
    assert!(applied.contains("applied: version 2"), "{applied}");
    ctl.fails(
        &["policy", "apply", "-f", path(&new), "--if-match", "1"],
        1,
        "412:",
    )
    .await;

    let invalid = ctl.file(
        "bad.yaml",
        "rules:\n  - name: x\n    hosts: [\"a b\"]\n    ports: [0]\n",
    );
    let run = ctl
        .fails(
            &["policy", "apply", "-f", path(&invalid)],
            1,
            "400: invalid policy: 2 errors",
        )
        .await;
    assert!(
        run.stderr.contains("line 3: rules[0].hosts[0]:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 4: rules[0].ports[0]:"),
        "{}",
        run.stderr
    );
    ctl.fails(
        &["policy", "apply", "-f", "missing.yaml"],
        1,
        "cannot read missing.yaml",
    )
    .await;

    let rule = ctl.file(
        "rule.json",
        r#"{"name": "json", "hosts": ["json.example"]}"#,
    );
    assert!(ctl
        .ok(&["rule", "set", "-f", path(&rule)])
        .await
        .contains("rule json added"));
    assert!(ctl
        .ok(&["rule", "delete", "json"])
        .await
        .contains("rule json removed"));
    ctl.fails(
        &["rule", "delete", "json"],
        1,
        "404: no rule named \"json\"",
    )
    .await;
    let nameless = ctl.file("nameless.yaml", "hosts: [a.example]\n");
    ctl.fails(
        &["rule", "set", "-f", path(&nameless)],
        1,
        "the rule has no name",
    )
    .await;

    let history = ctl.ok(&["policy", "history"]).await;
    assert!(history.starts_with("VERSION"), "{history}");
    assert!(
        history.contains("4 *"),
        "the current version is marked: {history}"
    );
    let history: serde_json::Value =
        serde_json::from_str(&ctl.ok(&["policy", "history", "-o", "json"]).await).unwrap();
    assert_eq!(history["current"], 4);
    assert!(ctl
        .ok(&["policy", "rollback", "1"])
        .await
        .contains("version 5"));
    assert_eq!(gateway.policy_version(), 5);
    ctl.fails(
        &["policy", "rollback", "77"],
        1,
        "404: version 77 is not kept",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connections_logs_and_drain() {
    let gateway = TestGateway::start(POLICY).await;
    let ctl = Ctl::new(&gateway);
    let allowed = ctl
        .ok(&["check", "api.example.com:80", "--no-resolve"])
        .await;
    assert!(
        allowed.starts_with("ALLOW api.example.com:80 on listener http"),
        "{allowed}"
    );
    let run = ctl
        .run(&[
            "check",
            "other.example:443",
            "--source",
            "10.0.0.1",
            "--no-resolve",
        ])
        .await;
    assert_eq!(run.code, 3, "denied: {}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with("DENY other.example:443"),
        "{}",
        run.stdout
    );
    ctl.fails(&["check", "api.example.com"], 1, "is not HOST:PORT")
        .await;
    ctl.fails(
        &[
            "check",
            "api.example.com:80",
            "--listener",
            "nope",
            "--no-resolve",
        ],
        1,
        "no listener named",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(
        &ctl.ok(&["check", "api.example.com:80", "--no-resolve", "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(json["rule"], "api");
    assert!(ctl.ok(&["connections"]).await.starts_with("ID"));

    let mut logs = ctl
        .command(&["logs", "-f", "--filter", "followed.example"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(logs.stdout.take().unwrap()).lines();
    let http = gateway.addr("http");
    let end = Instant::now() + Duration::from_secs(20);
    let line = loop {
        // Lines written before the tail connected are not shown: keep writing until one is.
        egress_testkit::http_get(http, "ignored.example", "/")
            .await
            .unwrap();
        egress_testkit::http_get(http, "followed.example", "/")
            .await
            .unwrap();
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await
        {
            break line.unwrap().expect("a line");
        }
        assert!(Instant::now() < end, "egressctl logs -f showed nothing");
    };
    assert!(line.contains("\"followed.example\""), "{line}");
    assert!(!line.contains("ignored.example"));
    logs.kill().await.unwrap();

    let drained = ctl.ok(&["drain"]).await;
    assert!(drained.starts_with("drained in"), "{drained}");
    ctl.fails(&["status"], 1, "not ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_say_what_to_do_and_exit_non_zero() {
    let gateway = TestGateway::start(POLICY).await;
    let mut ctl = Ctl::new(&gateway);
    let wrong = ctl.file("wrong.token", "someone:not-the-right-token-0123\n");
    ctl.token_file = Some(wrong);
    ctl.fails(
        &["policy", "get"],
        1,
        "401: the token was refused; pass --token-file",
    )
    .await;
    // A stream refused before it starts is judged like any other answer.
    ctl.fails(
        &["logs", "-f"],
        1,
        "401: the token was refused; pass --token-file",
    )
    .await;
    ctl.token_file = None;
    ctl.fails(
        &["connections"],
        1,
        "401: no token was sent; pass --token-file",
    )
    .await;
    let status = ctl.ok(&["status"]).await;
    assert!(status.contains("pass --token-file"), "{status}");
    ctl.fails(
        &["--token-file", "nowhere", "status"],
        1,
        "cannot read the token file nowhere",
    )
    .await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    ctl.fails(
        &["--admin", &addr, "status"],
        1,
        "cannot reach the admin API",
    )
    .await;
    ctl.fails(
        &["--admin", "https://gw:1", "status"],
        1,
        "is not an admin address",
    )
    .await;
    let run = ctl.run(&["policy"]).await;
    assert_eq!(run.code, 2, "usage errors exit 2: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_rules_yaml_json_errors_and_completions() {
    let gateway = TestGateway::start(POLICY).await;
    let ctl = Ctl::new(&gateway);

    let version = ctl.run(&["version"]).await;
    assert_eq!(version.code, 0, "{}", version.stderr);
    let ours = env!("CARGO_PKG_VERSION");
    assert!(
        version
            .stdout
            .contains(&format!("client: egressctl {ours}")),
        "{}",
        version.stdout
    );
    assert!(
        version
            .stdout
            .contains(&format!("server: egress-gateway {ours}")),
        "{} {}",
        version.stdout,
        version.stderr
    );

    let list = ctl.run(&["rule", "list"]).await;
    assert_eq!(list.code, 0, "{}", list.stderr);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with("api"))
        .unwrap_or_default();
    assert!(
        row.contains("allow") && row.contains("api.example.com") && row.contains("80"),
        "{}",
        list.stdout
    );

    let get = ctl.run(&["rule", "get", "api"]).await;
    assert_eq!(get.code, 0, "{}", get.stderr);
    let rule: serde_yaml::Value = serde_yaml::from_str(&get.stdout).unwrap();
    assert_eq!(rule["hosts"][0].as_str(), Some("api.example.com"));
    let missing = ctl.run(&["rule", "get", "nope"]).await;
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("rule list"), "{}", missing.stderr);

    let history = ctl.run(&["-o", "yaml", "policy", "history"]).await;
    assert_eq!(history.code, 0, "{}", history.stderr);
    let history: serde_yaml::Value = serde_yaml::from_str(&history.stdout).unwrap();
    assert!(history["current"].as_u64().is_some(), "{history:?}");

    let failed = ctl.run(&["-o", "json", "rule", "get", "nope"]).await;
    assert_eq!(failed.code, 1);
    let error: serde_json::Value = serde_json::from_str(failed.stderr.trim()).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("no rule named"),
        "{error}"
    );

    let completions = ctl.run(&["completions", "bash"]).await;
    assert_eq!(completions.code, 0, "{}", completions.stderr);
    assert!(
        completions.stdout.contains("_egressctl") && completions.stdout.contains("fleet"),
        "bash completion"
    );
}
