//! How much memory an idle tunnel costs the gateway: opens many tunnels through a `tcp`
//! listener, moves a few bytes each way through each (`FIRST_BYTES`, 1 unless set; a
//! full 16 KiB touches every page of a copy buffer), leaves them open and idle, and
//! reports the process's resident memory growth per tunnel with the test's own share
//! (the client and upstream sockets) measured apart and taken out.
//!
//! Ignored by default; run it in release with a raised descriptor limit (four per
//! tunnel, two per measured socket pair):
//! `ulimit -n 20000; IDLE_TUNNELS=4000 cargo test --release -p egress-gateway --test
//! idle_tunnel_memory -- --ignored --nocapture`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::net::{IpAddr, Ipv4Addr};

use egress_gateway::testing::TestGateway;
use egress_testkit::TestDns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Socket pairs opened without the gateway to measure the test's own share.
const CONTROL_PAIRS: usize = 1000;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A connected client socket and the upstream side the listener accepted.
async fn pair(listener: &TcpListener, to: std::net::SocketAddr) -> (TcpStream, TcpStream) {
    let (client, accepted) = tokio::join!(egress_testkit::client::connect(to), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release with a raised descriptor limit"]
async fn idle_tunnels_cost_little_gateway_memory() {
    let tunnels: usize = std::env::var("IDLE_TUNNELS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let upstream = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let dns = TestDns::start().await;
    dns.set("idle.example.com", [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let policy = format!(
        r#"
defaults: {{mode: deny, allow_private: true}}
listeners:
  - {{name: db, port: 13306, protocol: tcp, forward_to: "idle.example.com:{port}"}}
rules:
  - {{name: idle, hosts: [idle.example.com], listeners: [db]}}
"#
    );
    let gateway = TestGateway::builder(&policy)
        .dns(vec![dns.addr()])
        .start()
        .await;
    let listen = gateway.addr("db");
    let first_bytes: usize = std::env::var("FIRST_BYTES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);

    // Warm up: the first tunnels allocate what every later one shares (resolver cache,
    // runtime slabs, audit writer).
    let mut warm = Vec::new();
    for _ in 0..50 {
        warm.push(open_tunnel(&upstream, listen, first_bytes).await);
    }

    // The test's own share: the same sockets, client and accepted, without a gateway.
    let before_control = resident_kib();
    let mut control = Vec::with_capacity(CONTROL_PAIRS);
    for _ in 0..CONTROL_PAIRS {
        control.push(pair(&upstream, upstream.local_addr().unwrap()).await);
    }
    let control_kib = resident_kib().saturating_sub(before_control);
    let own_per_pair = control_kib as f64 * 1024.0 / CONTROL_PAIRS as f64;

    let before = resident_kib();
    let mut open = Vec::with_capacity(tunnels);
    for _ in 0..tunnels {
        open.push(open_tunnel(&upstream, listen, first_bytes).await);
    }
    let grown_kib = resident_kib().saturating_sub(before);
    let per_tunnel = grown_kib as f64 * 1024.0 / tunnels as f64;
    let gateway_per_tunnel = per_tunnel - own_per_pair;
    eprintln!(
        "{tunnels} idle tunnels ({first_bytes} B each way first): resident memory grew {grown_kib} KiB = {per_tunnel:.0} B per \
         tunnel; the test's own sockets {own_per_pair:.0} B per pair ({CONTROL_PAIRS} pairs, \
         {control_kib} KiB); gateway {gateway_per_tunnel:.0} B = {:.2} KiB per idle tunnel",
        gateway_per_tunnel / 1024.0
    );
    // Every tunnel is still open and relays after the measurement.
    for (client, server) in &mut open {
        exchange(client, server, 1).await;
    }
    drop((open, warm, control));
    gateway.shutdown().await;
}

/// Opens one tunnel and moves `bytes` each way through it, so both directions have read
/// and written before it goes idle.
async fn open_tunnel(
    upstream: &TcpListener,
    listen: std::net::SocketAddr,
    bytes: usize,
) -> (TcpStream, TcpStream) {
    let (mut client, mut server) = pair(upstream, listen).await;
    exchange(&mut client, &mut server, bytes).await;
    (client, server)
}

/// Sends `bytes` from the client to the upstream side, then as many back.
async fn exchange(client: &mut TcpStream, server: &mut TcpStream, bytes: usize) {
    let sent = vec![b'x'; bytes];
    let mut got = vec![0u8; bytes];
    client.write_all(&sent).await.unwrap();
    server.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
    server.write_all(&sent).await.unwrap();
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(got, sent);
}
