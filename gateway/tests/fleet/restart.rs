//! Leaving and restarting without a failed request: a second process on the same port
//! (SO_REUSEPORT) takes over before the first drains; a replica drained under load
//! finishes what it accepted and leaves the fleet.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egress_testkit::KeepAliveClient;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::replica::{Fleet, Replica};

/// Requests back to back from `clients` tasks until `stop`, half of them on a new
/// connection each, half on keep-alive connections (a new one only when the gateway
/// closes it); returns (ok, failed, errors).
fn load(
    addr: std::net::SocketAddr,
    authority: String,
    clients: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, Vec<String>)> {
    tokio::spawn(async move {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for client in 0..clients {
            let keep_alive = client % 2 == 1;
            let (ok, failed, errors, stop, authority) = (
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&errors),
                Arc::clone(&stop),
                authority.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut kept: Option<KeepAliveClient> = None;
                while !stop.load(Ordering::Relaxed) {
                    let answer = async {
                        let mut client = match kept.take() {
                            Some(client) if !client.is_closed() => client,
                            _ => KeepAliveClient::connect(addr).await?,
                        };
                        let answer = client
                            .request(Method::GET, "/", &[("host", authority.as_str())], "")
                            .await;
                        let closing = answer
                            .as_ref()
                            .is_ok_and(|r| r.header("connection") == Some("close"));
                        if keep_alive && !closing {
                            kept = Some(client);
                        }
                        answer
                    }
                    .await;
                    match answer {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(r) => {
                            errors.lock().unwrap().push(format!("status {}", r.status));
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                        Err(e) => {
                            errors.lock().unwrap().push(e.to_string());
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
        let errors = errors.lock().unwrap().clone();
        (
            ok.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
            errors,
        )
    })
}

fn audit_requests(r: &Replica) -> u64 {
    r.audit_lines()
        .iter()
        .filter(|l| l.contains("\"GET / HTTP/1.1\" 200"))
        .count() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_processes_on_the_same_port_take_over_twice_with_no_failed_request() {
    let fleet = Fleet::start().await;
    let first = fleet
        .replica(1)
        .seed_from(fleet.seed(&["api.example.com"]))
        .drain_delay("1s")
        .start()
        .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = load(
        first.http,
        fleet.authority("api.example.com"),
        4,
        Arc::clone(&stop),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Each new process binds the same address and port while the old one serves, then
    // the old one is sent SIGTERM: twice over.
    let mut done = Vec::new();
    let mut old = first;
    for generation in ["second", "third"] {
        let new = fleet
            .replica(1)
            .dir_name(generation)
            .drain_delay("1s")
            .start()
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        old.terminate();
        let (exit, old_done) = tokio::task::spawn_blocking(move || {
            let exit = old.wait_exit(Duration::from_secs(20));
            (exit, old)
        })
        .await
        .unwrap();
        assert!(exit.success(), "the old process exits 0: {exit}");
        done.push(old_done);
        old = new;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = running.await.unwrap();
    assert_eq!(failed, 0, "no request failed ({ok} succeeded): {errors:?}");
    assert!(ok > 100, "the load ran: {ok}");
    let lines = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n: u64 = done.iter().map(audit_requests).sum::<u64>() + audit_requests(&old);
            if n >= ok || Instant::now() > deadline {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(
        lines, ok,
        "the processes' audit lines add up to the client's count"
    );
    assert!(
        audit_requests(&old) > 0,
        "the last process served part of it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drained_under_load_fails_nothing_exits_0_and_leaves_the_fleet() {
    let fleet = Fleet::start().await;
    let a = fleet
        .replica(1)
        .seed_from(fleet.seed(&["api.example.com"]))
        .start()
        .await;
    let mut b = fleet.replica(2).drain_delay("1s").start().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let authority = fleet.authority("api.example.com");
    let on_a = load(a.http, authority.clone(), 2, Arc::clone(&stop));
    // Requests already on b when it drains, and a tunnel-like slow one: a delayed response.
    let slow = {
        let addr = b.http;
        let authority = authority.clone();
        tokio::spawn(async move {
            let mut client = KeepAliveClient::connect(addr).await.unwrap();
            client
                .request(
                    Method::GET,
                    "/delay/1.5",
                    &[("host", authority.as_str())],
                    "",
                )
                .await
                .map(|r| r.status.as_u16())
        })
    };
    // A CONNECT tunnel open through b when it drains: it goes on carrying bytes.
    let mut tunnel = egress_testkit::client::connect(b.connect).await.unwrap();
    tunnel
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tunnel.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    let (status, out) = a.egressctl(&["fleet", "--wait", "5s"], fleet.dir.path());
    assert!(status.success() && out.contains("replica-2"), "{out}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    b.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tunnel
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tunnel.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the tunnel carried a request during the drain: {answer}"
    );
    drop(tunnel);
    // Readiness turns 503 at once, and the member entry says draining.
    let draining = egress_testkit::wait::wait_until_async(Duration::from_secs(2), || async {
        b.readyz().await.is_some_and(|(s, _)| s == 503)
    })
    .await;
    assert!(draining, "readyz answers 503 while draining");
    let said = egress_testkit::wait::wait_until_async(Duration::from_secs(2), || async {
        let fleet = a.admin(Method::GET, "/fleet", &[], "").await.body;
        let fleet: serde_json::Value = serde_json::from_str(&fleet).unwrap();
        fleet["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "replica-2" && m["draining"] == true)
    })
    .await;
    assert!(said, "the member entry says draining");
    let exit = tokio::task::spawn_blocking(move || (b.wait_exit(Duration::from_secs(15)), b))
        .await
        .unwrap();
    assert!(exit.0.success(), "exit 0: {}", exit.0);
    assert_eq!(
        slow.await.unwrap().ok(),
        Some(200),
        "the request in flight finished"
    );

    let (status, out) = a.egressctl(&["fleet", "--wait", "0s"], fleet.dir.path());
    assert!(status.success(), "{out}");
    assert!(
        !out.contains("replica-2"),
        "b left the fleet at once:\n{out}"
    );
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, errors) = on_a.await.unwrap();
    assert_eq!(failed, 0, "{errors:?}");
    assert!(ok > 0);
}
