//! Traffic redirected to a capture port (iptables `REDIRECT`, as a sidecar's capture
//! does) keeps its original destination: the auto-allocated address a client dialled
//! names the host, in a network namespace of the test's own.

use tokio::process::Command;

#[tokio::test]
async fn a_redirected_connection_reaches_the_host_its_original_address_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("p")).unwrap();
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    std::fs::write(
        dir.path().join("www/index.html"),
        "from the database host\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("p/policy.yaml"),
        r#"
listeners:
  - {name: dns, port: 5353, address: 127.0.0.1, protocol: dns, auto_allocate: 240.240.0.0/16}
  - {name: capture, port: 15001, protocol: tcp, route_by: destination_address}
rules:
  - {name: db, hosts: [db.example.com], ports: [3306], listeners: [capture],
     endpoints: ["127.0.0.1:18080"], allow_private: true}
"#,
    )
    .unwrap();
    // The allocated range is routed (not local: nothing listens on its addresses), and
    // connections to it on any port are redirected to the capture listener.
    let script = r#"
set -e
ip link set lo up
ip route add 240.240.0.0/16 dev lo src 127.0.0.1
iptables -t nat -A OUTPUT -p tcp -d 240.240.0.0/16 -j REDIRECT --to-ports 15001
python3 -m http.server 18080 --bind 127.0.0.1 --directory www >www.log 2>&1 &
web=$!
"$GATEWAY" --policies p --admin-address 127.0.0.1:9901 --no-stats --audit-path audit.log --drain-delay 0s >gateway.log 2>&1 &
gw=$!
for _ in $(seq 100); do grep -q listening gateway.log && break; sleep 0.05; done
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18080/ && break; sleep 0.05; done
addr=$(dig +short -p 5353 @127.0.0.1 db.example.com)
echo "$addr" >address
curl -s --max-time 5 "http://$addr:3306/index.html" >answer || true
sleep 0.2
kill $gw $web
wait $gw || true
"#;
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .current_dir(dir.path())
        .env("GATEWAY", env!("CARGO_BIN_EXE_egress-gateway"))
        .status()
        .await
        .expect("unshare runs (util-linux; the test needs root)");
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(status.success(), "{}", read("gateway.log"));
    let address = read("address");
    assert!(address.starts_with("240.240."), "{address}");
    assert_eq!(
        read("answer"),
        "from the database host\n",
        "{}",
        read("gateway.log")
    );
    let line = read("audit.log")
        .lines()
        .map(crate::common::IstioLine::parse)
        .find(|l| l.method == "-")
        .unwrap_or_else(|| panic!("no tunnel line in {}", read("audit.log")));
    assert_eq!(line.route, "db");
    assert_eq!(line.cluster, "outbound|3306||db.example.com");
    assert_eq!(line.upstream_host, "127.0.0.1:18080");
}
