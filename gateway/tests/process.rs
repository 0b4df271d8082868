//! The `egress-gateway` binary as an operator runs it: start-up errors that name the
//! port or the file and line, the shipped policies, and a clean SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
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
        .arg("--audit-path")
        .arg(dir.join("audit.log"))
        .arg("--dns-server")
        .arg("127.0.0.1:9")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    cmd
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
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let port = free_port();
    std::fs::write(
        policies.join("p.yaml"),
        format!("listeners: [{{name: http, port: {port}, address: 127.0.0.1, protocol: http}}]\n"),
    )
    .unwrap();
    let mut child = gateway(dir.path(), &policies).spawn().unwrap();
    let mut stream = None;
    let end = Instant::now() + Duration::from_secs(20);
    while stream.is_none() && Instant::now() < end {
        stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut stream = stream.expect("the gateway listens");
    use std::io::Write;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: denied.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let end = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < end,
            "the gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {stderr}");
    assert!(
        stderr.contains(&format!("http on 127.0.0.1:{port}")),
        "says where it listens: {stderr}"
    );
    assert!(
        stderr.contains("audit log:"),
        "says where it logs: {stderr}"
    );
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert_eq!(audit.lines().count(), 1, "{audit}");
    assert!(
        audit.contains("rbac_access_denied_matched_policy[none]"),
        "{audit}"
    );
}

#[test]
fn sighup_reopens_the_audit_log_for_logrotate() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let port = free_port();
    std::fs::write(
        policies.join("p.yaml"),
        format!("listeners: [{{name: http, port: {port}, address: 127.0.0.1, protocol: http}}]\n"),
    )
    .unwrap();
    let mut child = gateway(dir.path(), &policies).spawn().unwrap();
    let request = |host: &str| {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                use std::io::Write;
                let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                stream.write_all(head.as_bytes()).unwrap();
                let mut response = String::new();
                stream.read_to_string(&mut response).unwrap();
                return response;
            }
            assert!(Instant::now() < end, "the gateway listens");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let audit = dir.path().join("audit.log");
    let rotated = dir.path().join("audit.log.1");
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
    assert!(request("before.example").starts_with("HTTP/1.1 403"));
    assert!(wait_for(&audit, "before.example", Duration::from_secs(10)));
    std::fs::rename(&audit, &rotated).unwrap();
    assert!(Command::new("kill")
        .arg("-HUP")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    // The signal arrives asynchronously: retry until a line lands in the new file.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(request("after.example").starts_with("HTTP/1.1 403"));
        if wait_for(&audit, "after.example", Duration::from_millis(500)) {
            break;
        }
        assert!(Instant::now() < end, "no line reached the reopened file");
    }
    assert!(std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("before.example"));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
