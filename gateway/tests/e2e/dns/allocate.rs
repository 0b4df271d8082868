//! Auto-allocated addresses: two TCP services on one port, each reached by the address
//! the `dns` listener answers for its name, each with its own audit line.

use egress_admin::api::DnsAllocations;
use egress_testkit::{KeepAliveClient, StubUpstream};

use super::{dns_lines, resolve};
use crate::admin_api::Admin;
use crate::common::IstioLine;

/// A port free on every address now (the routed listener binds the wildcard address).
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    socket.local_addr().unwrap().port()
}

#[tokio::test]
async fn two_services_on_one_port_each_reach_their_own_host() {
    let one = StubUpstream::start().await;
    let two = StubUpstream::start().await;
    let port = free_port();
    let policy = format!(
        r#"
defaults: {{mode: deny}}
listeners:
  - {{name: dns, port: 5353, protocol: dns, auto_allocate: 127.248.0.0/16}}
  - {{name: mysql, port: {port}, protocol: tcp, route_by: destination_address}}
rules:
  - {{name: db1, hosts: [mysql-instance1.example.com], ports: [{port}], endpoints: ["{}"], allow_private: true}}
  - {{name: db2, hosts: [mysql-instance2.example.com], ports: [{port}], endpoints: ["{}"], allow_private: true}}
  - {{name: web, hosts: [web.example.com], ports: [443]}}
"#,
        one.addr(),
        two.addr()
    );
    let gw = egress_gateway::testing::TestGateway::start(&policy).await;
    let dns = gw.addr("dns");
    let first = resolve(dns, "mysql-instance1.example.com").await;
    let second = resolve(dns, "mysql-instance2.example.com").await;
    assert_ne!(first, second);
    assert!(first.to_string().starts_with("127.248."), "{first}");
    // A host no tcp listener serves gets the gateway's address, not an allocated one.
    assert_eq!(
        resolve(dns, "web.example.com").await.to_string(),
        "127.0.0.1"
    );

    for (ip, stub) in [(first, &one), (second, &two)] {
        let mut client = KeepAliveClient::connect((ip, port).into()).await.unwrap();
        assert_eq!(client.get("/through").await.unwrap().status, 200);
        drop(client);
        assert_eq!(stub.request_count(), 1);
    }
    // An address in the range that no host has is refused with its line.
    let stray = std::net::SocketAddr::from(([127, 248, 255, 254], port));
    if stray.ip() != first && stray.ip() != second {
        let mut tcp = egress_testkit::client::connect(stray).await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink).await;
    }
    let lines = gw.wait_audit_lines(6).await;
    let tunnels: Vec<IstioLine> = lines
        .iter()
        .map(|l| IstioLine::parse(l))
        .filter(|l| l.method == "-")
        .collect();
    let db1 = tunnels.iter().find(|l| l.route == "db1").unwrap();
    assert_eq!(db1.upstream_host, one.addr().to_string());
    assert_eq!(db1.downstream_local, format!("{first}:{port}"));
    assert_eq!(
        db1.cluster,
        format!("outbound|{port}||mysql-instance1.example.com")
    );
    let db2 = tunnels.iter().find(|l| l.route == "db2").unwrap();
    assert_eq!(db2.upstream_host, two.addr().to_string());
    let stray_line = tunnels.iter().find(|l| l.flags == "NR").unwrap();
    assert_eq!(stray_line.termination, "unallocated_destination_address");
    assert!(dns_lines(&gw, 3).await.iter().any(|l| l.route == "db1"));

    // The same list over the admin API and egressctl.
    let listed: DnsAllocations = Admin::of(&gw).json("/dns/allocations").await;
    let hosts: Vec<(&str, &str)> = listed
        .allocations
        .iter()
        .map(|a| (a.host.as_str(), a.range.as_str()))
        .collect();
    assert_eq!(
        hosts,
        [
            ("mysql-instance1.example.com", "127.248.0.0/16"),
            ("mysql-instance2.example.com", "127.248.0.0/16")
        ]
    );
    assert_eq!(listed.allocations[0].address, first.to_string());
    let ctl =
        std::path::Path::new(env!("CARGO_BIN_EXE_egress-gateway")).with_file_name("egressctl");
    // Asynchronously: the gateway answering it runs on this test's thread.
    let out = tokio::process::Command::new(ctl)
        .args(["--admin", &gw.admin_addr().to_string(), "--token-file"])
        .arg(gw.admin_token_file())
        .arg("dns")
        .output()
        .await
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}{errors}");
    assert!(
        table.contains("HOST") && table.contains(&first.to_string()),
        "{table}"
    );
    assert!(table.contains("mysql-instance2.example.com"), "{table}");
}
