//! Listener changes apply live from the policy directory: a new listener binds, a
//! removed one stops accepting, a changed one binds anew, and one that cannot bind is
//! reported (log, `/readyz` details, metric) while the rest of the change applies.

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

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_egress-gateway");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port`: the whole answer, or `None` when nothing listens.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn wait_for(what: &str, log: &Path, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what}; the gateway's log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn listener(name: &str, port: u16, protocol: &str) -> String {
    format!("  - {{name: {name}, port: {port}, address: 127.0.0.1, protocol: {protocol}}}\n")
}

struct Gateway(Child);

impl Gateway {
    /// The gateway on `policies`, its admin API on 127.0.0.1:`admin`, its own log in `log`.
    fn start(dir: &Path, policies: &Path, admin: u16, log: &Path) -> Gateway {
        Gateway(
            Command::new(BIN)
                .arg("--policies")
                .arg(policies)
                .arg("--admin-address")
                .arg(format!("127.0.0.1:{admin}"))
                .arg("--admin-token-file")
                .arg(dir.join("admin.token"))
                .arg("--audit-path")
                .arg(dir.join("audit.log"))
                .arg("--dns-server")
                .arg("127.0.0.1:9")
                .arg("--no-stats")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn listeners_follow_the_policy_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let write = |listeners: &str| {
        std::fs::write(
            policies.join("p.yaml"),
            format!("listeners:\n{listeners}rules: []\n"),
        )
        .unwrap();
    };
    let (a, b, c) = (free_port(), free_port(), free_port());
    let admin = free_port();
    write(&listener("a", a, "http"));
    let log = dir.path().join("stderr.log");
    let _gateway = Gateway::start(dir.path(), &policies, admin, &log);
    wait_for("listener a answers", &log, || {
        get(a, "/").is_some_and(|r| r.starts_with("HTTP/1.1 403"))
    });
    // The accept queue is the system's somaxconn, not the old 128.
    let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    let ss = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{a}")])
        .output()
        .expect("ss (iproute2)");
    let listing = String::from_utf8_lossy(&ss.stdout).into_owned();
    let send_q = listing
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_owned();
    assert_eq!(send_q, somaxconn.trim(), "{listing}");

    // b is new; c's port is taken by a socket that does not share it.
    let taken = TcpListener::bind(("127.0.0.1", c)).unwrap();
    write(&(listener("a", a, "http") + &listener("b", b, "http") + &listener("c", c, "http")));
    wait_for("listener b answers", &log, || {
        get(b, "/").is_some_and(|r| r.starts_with("HTTP/1.1 403"))
    });
    assert!(get(a, "/").is_some_and(|r| r.starts_with("HTTP/1.1 403")));
    let ready = get(admin, "/readyz").unwrap();
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains(&format!("listener c: cannot bind 127.0.0.1:{c}")),
        "the unbound listener is in /readyz details: {ready}"
    );
    let metrics = get(admin, "/metrics").unwrap();
    assert!(
        metrics.contains("egress_listener_bind_errors_total{listener=\"c\"} 1"),
        "{metrics}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("listener not bound"), "{text}");
    assert!(!text.contains("next restart"), "{text}");

    // a goes, b changes protocol (bound anew), c goes.
    drop(taken);
    write(&listener("b", b, "connect"));
    wait_for("listener a stops accepting", &log, || get(a, "/").is_none());
    wait_for("listener b speaks CONNECT now", &log, || {
        get(b, "/").is_some_and(|r| r.starts_with("HTTP/1.1 400") && r.contains("origin_form"))
    });
    let ready = get(admin, "/readyz").unwrap();
    assert!(!ready.contains("listener c"), "{ready}");
}

#[test]
fn a_flood_of_bad_admin_tokens_is_logged_once_a_second_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(policies.join("p.yaml"), "rules: []\n").unwrap();
    let admin = free_port();
    let log = dir.path().join("stderr.log");
    let gateway = Gateway::start(dir.path(), &policies, admin, &log);
    wait_for("the admin API answers", &log, || {
        get(admin, "/healthz").is_some()
    });
    let refused = |_: usize| {
        let mut stream = TcpStream::connect(("127.0.0.1", admin)).unwrap();
        write!(
            stream,
            "GET /policy HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer wrong-token-0123456789\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    };
    (0..50).for_each(refused);
    std::thread::sleep(Duration::from_millis(1100));
    refused(50);
    std::thread::sleep(Duration::from_millis(200));
    drop(gateway);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("admin request refused"))
        .collect();
    assert_eq!(lines.len(), 2, "one a second: {text}");
    assert!(lines[1].contains("suppressed=49"), "{}", lines[1]);
}
