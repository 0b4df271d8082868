//! The `egress-gateway` binary as an operator runs it: start-up errors that name the
//! port or the file and line, the shipped policies, and a clean SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "tests dial the gateways, stubs and servers they started on loopback"
)]

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_egress-gateway");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_to_end(mut child: Child, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the gateway did not exit within {limit:?}");
}

fn gateway(dir: &Path, policies: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--policies")
        .arg(policies)
        .arg("--admin-address")
        .arg("127.0.0.1:0")
        .arg("--stats-address")
        .arg("127.0.0.1:0")
        .arg("--admin-token-file")
        .arg(dir.join("admin.token"))
        .arg("--audit-path")
        .arg(dir.join("audit.log"))
        .arg("--dns-server")
        .arg("127.0.0.1:9")
        .arg("--drain-delay")
        .arg("0s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    cmd
}

/// A gateway process serving an empty deny-all policy on one http listener.
struct Running {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        Self::start_with(|cmd| cmd)
    }

    /// Started through `wrap`, which may put a command in front of the gateway's own.
    fn start_with(wrap: impl FnOnce(Command) -> Command) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        let port = free_port();
        std::fs::write(
            policies.join("p.yaml"),
            format!(
                "listeners: [{{name: http, port: {port}, address: 127.0.0.1, protocol: http}}]\n"
            ),
        )
        .unwrap();
        let child = wrap(gateway(dir.path(), &policies)).spawn().unwrap();
        Running { child, port, dir }
    }

    /// `GET /` with `Host: host`, retried until the gateway listens; the whole response.
    fn request(&self, host: &str) -> String {
        use std::io::Write;
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                stream.write_all(head.as_bytes()).unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            assert!(Instant::now() < end, "the gateway listens");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

/// A failed assertion must not leave the process behind.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn shipped_policies_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let check = |dir: &Path| {
        let out = Command::new(BIN)
            .arg("--check")
            .arg("--policies")
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    check(&root);
    // Each example is a policy set of its own: check them one by one.
    let mut examples = 0;
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        check(dir.path());
        examples += 1;
    }
    assert!(examples >= 3, "the examples are there");
}

#[test]
fn a_taken_port_fails_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("p.yaml"),
        format!("listeners: [{{name: http, port: {port}, address: 127.0.0.1, protocol: http}}]\n"),
    )
    .unwrap();
    let out = run_to_end(
        gateway(dir.path(), &policies).spawn().unwrap(),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("listener http"), "{stderr}");
}

#[test]
fn an_invalid_policy_fails_the_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("bad.yaml"),
        "rules:\n  - name: a\n    hosts: [a.example]\n    ports: [70000]\n",
    )
    .unwrap();
    let out = run_to_end(
        gateway(dir.path(), &policies).spawn().unwrap(),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:4"), "{stderr}");
    assert!(stderr.contains("70000"), "{stderr}");
}

#[test]
fn sigterm_drains_flushes_the_audit_log_and_exits_zero() {
    let mut gw = Running::start();
    let response = gw.request("denied.example");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    let _ = terminate_and_check(&mut gw);
}

/// Pinned to one core (`taskset`, as a node dedicates a core), the gateway serves from
/// its main thread: no runtime worker threads beside it, same answers and shutdown.
#[test]
fn on_one_core_the_gateway_runs_without_worker_threads() {
    // The first core this test may use itself (a CI runner may not own core 0).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .unwrap();
    let core: String = allowed
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let mut gw = Running::start_with(|cmd| {
        let mut pinned = Command::new("taskset");
        pinned.arg("-c").arg(&core).arg(cmd.get_program());
        pinned.args(cmd.get_args());
        pinned
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        pinned
    });
    let response = gw.request("denied.example");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", gw.child.id()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(
        !threads.iter().any(|name| name.starts_with("tokio-r")),
        "threads: {threads:?}"
    );
    let _ = terminate_and_check(&mut gw);
}

/// SIGTERM: exits 0 after saying where it listened and logged, with the one audit line
/// of the denied request flushed.
#[test]
fn logs_are_plain_text_off_a_terminal_and_all_json_with_log_format_json() {
    for json in [false, true] {
        let mut gw = Running::start_with(|mut cmd| {
            if json {
                cmd.arg("--log-format").arg("json");
            }
            cmd
        });
        let response = gw.request("denied.example");
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
        let stderr = terminate_and_check(&mut gw);
        assert!(!stderr.contains('\u{1b}'), "no ANSI colours: {stderr:?}");
        if json {
            for line in stderr.lines() {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(value["level"].is_string(), "{line}");
            }
            assert!(stderr.contains("\"started\""), "{stderr}");
        }
    }
}

fn terminate_and_check(gw: &mut Running) -> String {
    gw.signal("TERM");
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "the gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    gw.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("http on 127.0.0.1:{}", gw.port)),
        "says where it listens: {stderr}"
    );
    assert!(
        stderr.contains("audit log:"),
        "says where it logs: {stderr}"
    );
    let audit = std::fs::read_to_string(gw.dir.path().join("audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 1, "{audit}");
    assert!(
        audit.contains("rbac_access_denied_matched_policy[none]"),
        "{audit}"
    );
    stderr
}

#[test]
fn sighup_reopens_the_audit_log_for_logrotate() {
    let mut gw = Running::start();
    let audit = gw.dir.path().join("audit.log");
    let rotated = gw.dir.path().join("audit.log.1");
    let wait_for = |path: &Path, needle: &str, within: Duration| {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains(needle)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    assert!(gw.request("before.example").starts_with("HTTP/1.1 403"));
    assert!(wait_for(&audit, "before.example", Duration::from_secs(10)));
    std::fs::rename(&audit, &rotated).unwrap();
    gw.signal("HUP");
    // The signal arrives asynchronously: retry until a line lands in the new file.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(gw.request("after.example").starts_with("HTTP/1.1 403"));
        if wait_for(&audit, "after.example", Duration::from_millis(500)) {
            break;
        }
        assert!(Instant::now() < end, "no line reached the reopened file");
    }
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("before.example"));
    gw.signal("TERM");
    let _ = gw.child.wait();
}
