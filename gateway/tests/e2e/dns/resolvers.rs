//! Resolvers that are not `dig`: Python's dnspython, and the C library's own, which
//! walks its search list as every workload in a cluster does (`ndots:5`, three search
//! domains), in a network namespace whose resolv.conf points at a gateway on port 53.

use std::path::Path;

use egress_gateway::testing::TestGateway;
use tokio::process::Command;

use super::policy;

const DNSPYTHON: &str = r#"
import sys
import dns.message, dns.query, dns.rcode
server, port = sys.argv[1], int(sys.argv[2])
def ask(name, tcp=False, edns=-1):
    q = dns.message.make_query(name, "A", use_edns=edns, payload=1232)
    ask = dns.query.tcp if tcp else dns.query.udp
    r = ask(q, server, port=port, timeout=3)
    addrs = [rr.to_text() for rrset in r.answer for rr in rrset]
    print(name, "tcp" if tcp else "udp", dns.rcode.to_text(r.rcode()), ",".join(addrs) or "-", r.edns, sep=" ")
ask("api.example.com")
ask("api.example.com", tcp=True)
ask("api.example.com", edns=0)
ask("blocked.example.org")
"#;

#[tokio::test]
async fn dnspython_gets_the_same_answers_over_udp_tcp_and_edns() {
    let gw = TestGateway::start(&policy("deny", "")).await;
    let dns = gw.addr("dns");
    let out = Command::new("python3")
        .args([
            "-c",
            DNSPYTHON,
            &dns.ip().to_string(),
            &dns.port().to_string(),
        ])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "api.example.com udp NOERROR 127.0.0.1 -1",
            "api.example.com tcp NOERROR 127.0.0.1 -1",
            // EDNS is answered with EDNS (version 0).
            "api.example.com udp NOERROR 127.0.0.1 0",
            "blocked.example.org udp REFUSED - -1",
        ]
    );
}

/// Starts a gateway on 127.0.0.1:53 in a network namespace of its own, resolves
/// `api.example.com` there with `getent ahosts` (glibc), and returns what getent printed
/// and the names the gateway was asked, in order.
async fn glibc_lookup(dir: &Path, listener: &str) -> (String, Vec<String>) {
    std::fs::create_dir_all(dir.join("p")).unwrap();
    let policy = format!(
        "listeners:\n  - {{name: dns, port: 53, address: 127.0.0.1, protocol: dns{listener}}}\nrules:\n  - {{name: api, hosts: [api.example.com]}}\n"
    );
    std::fs::write(dir.join("p/policy.yaml"), policy).unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:2 attempts:1\n",
    )
    .unwrap();
    let script = r#"
set -e
ip link set lo up
mount --bind resolv.conf /etc/resolv.conf
"$GATEWAY" --policies p --admin-address 127.0.0.1:9901 --no-stats --audit-path audit.log --drain-delay 0s >gateway.log 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q listening gateway.log && break; sleep 0.05; done
getent ahosts api.example.com >getent.out || true
sleep 0.2
kill $pid
wait $pid || true
"#;
    let status = Command::new("unshare")
        .args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .env("GATEWAY", env!("CARGO_BIN_EXE_egress-gateway"))
        .status()
        .await
        .expect("unshare runs (util-linux; the test needs root)");
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default()
    );
    let getent = std::fs::read_to_string(dir.join("getent.out")).unwrap_or_default();
    let asked = std::fs::read_to_string(dir.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(crate::common::IstioLine::parse)
        .map(|l| format!("{} {}", l.path, l.protocol))
        .collect();
    (getent, asked)
}

#[tokio::test]
async fn a_glibc_search_list_costs_two_queries_with_autopath() {
    let dir = tempfile::tempdir().unwrap();
    let suffixes = ", search_suffixes: [ns1.svc.cluster.local, svc.cluster.local, cluster.local]";
    let (getent, with) = glibc_lookup(&dir.path().join("autopath"), suffixes).await;
    assert!(getent.contains("127.0.0.1"), "{getent}\n{with:#?}");
    let (getent, without) = glibc_lookup(&dir.path().join("plain"), ", on_deny: nxdomain").await;
    assert!(getent.contains("127.0.0.1"), "{getent}\n{without:#?}");
    println!(
        "queries before connecting: {} with autopath, {} without",
        with.len(),
        without.len()
    );
    // A and AAAA of the first expansion, answered with a CNAME to the name.
    assert_eq!(with.len(), 2, "{with:#?}");
    assert!(with
        .iter()
        .all(|q| q.ends_with("api.example.com.ns1.svc.cluster.local")));
    // Without it: A and AAAA for each search domain, then for the name itself.
    assert_eq!(without.len(), 8, "{without:#?}");
    assert!(
        without.last().unwrap().ends_with(" api.example.com"),
        "{without:#?}"
    );
}
