//! The `tls` listener: TLS passed through by SNI to a TLS stub upstream, real rustls
//! clients, ClientHellos cut into bytes and records, and every refusal with its line.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::common::IstioLine;
use crate::tls_scenario::{TlsScenario, TWO_RULES};

/// A TLS session driven by hand (blocking, in a thread), so the ClientHello can be sent
/// re-framed into records of `record_len` bytes and written `write_len` bytes at a time;
/// then one `GET /hello` over it. Returns the response head's status line.
fn blocking_split_hello_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    record_len: usize,
    write_len: usize,
) -> String {
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    // Re-frame the handshake message into records of `record_len` bytes.
    let message = &hello[5..];
    let mut framed = Vec::new();
    for fragment in message.chunks(record_len) {
        framed.extend_from_slice(&[22, 3, 1]);
        framed.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(fragment);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tcp = rt
        .block_on(egress_testkit::client::connect(addr))
        .unwrap()
        .into_std()
        .unwrap();
    tcp.set_nonblocking(false).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tcp = tcp;
    for piece in framed.chunks(write_len) {
        tcp.write_all(piece).unwrap();
        // Segments the gateway must read one by one, not all at once.
        std::thread::sleep(Duration::from_micros(300));
    }
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

async fn split_hello_get(s: &TlsScenario, record_len: usize, write_len: usize) -> String {
    let (addr, config) = (s.tls(), s.client_config());
    tokio::task::spawn_blocking(move || {
        blocking_split_hello_get(addr, config, record_len, write_len)
    })
    .await
    .unwrap()
}

/// Sends `bytes`, optionally ends the write side, and reads until the gateway closes;
/// true when it closed within the deadline.
async fn send_and_wait_close(addr: SocketAddr, bytes: &[u8], end_write: bool) -> bool {
    let mut tcp = egress_testkit::client::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    if end_write {
        tcp.shutdown().await.unwrap();
    }
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink))
        .await
        .is_ok()
}

fn assert_tunnel_line(line: &IstioLine) {
    assert_eq!(
        (
            line.method.as_str(),
            line.path.as_str(),
            line.protocol.as_str()
        ),
        ("-", "-", "-")
    );
    assert_eq!(line.code, "0");
    assert_eq!(line.authority, "-");
}

#[tokio::test]
async fn a_request_passes_through_by_sni_end_to_end() {
    let s = TlsScenario::start(TWO_RULES).await;
    let mut client = s.client("api.example.com").await.unwrap();
    let (status, body) = client.get("/get").await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"path\":\"/get\""));
    drop(client);
    assert_eq!(
        s.upstream.server_names(),
        vec![Some("api.example.com".to_owned())]
    );

    let line = s.wait_line(|l| l.sni == "api.example.com").await;
    assert_tunnel_line(&line);
    assert_eq!(line.flags, "-");
    assert_eq!(line.details, "-");
    assert_eq!(line.termination, "-");
    assert_eq!(line.route, "api");
    let port = s.upstream.port();
    assert_eq!(line.cluster, format!("outbound|{port}||api.example.com"));
    assert_eq!(line.upstream_host, format!("127.0.0.1:{port}"));
    assert_eq!(line.downstream_local, s.tls().to_string());
    assert!(
        line.bytes_received.parse::<u64>().unwrap() > 300,
        "{line:?}"
    );
    assert!(line.bytes_sent.parse::<u64>().unwrap() > 300, "{line:?}");
    assert_ne!(line.upstream_local, "-");
}

#[tokio::test]
async fn an_sni_no_rule_allows_is_refused_not_passed_through() {
    // The seeds' case: a rule for one name; a ClientHello naming another is refused.
    let s = TlsScenario::start(TWO_RULES).await;
    assert!(s.client("www.163.com").await.is_err());
    let line = s.wait_line(|l| l.sni == "www.163.com").await;
    assert_tunnel_line(&line);
    assert_eq!(line.termination, "rbac_access_denied_matched_policy[none]");
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.route, "-");
    assert_eq!(s.upstream.connection_count(), 0);
}

#[tokio::test]
async fn wildcard_rules_match_sni_as_they_match_host() {
    let s = TlsScenario::start(
        r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: tls, port: 8443, protocol: tls, target_port: {PORT}}]
rules:
  - {name: test-zone, hosts: ["*.test.example"]}
"#,
    )
    .await;
    let mut client = s.client("a.test.example").await.unwrap();
    assert_eq!(client.get("/").await.unwrap().0, 200);
    drop(client);
    let line = s.wait_line(|l| l.sni == "a.test.example").await;
    assert_eq!(line.route, "test-zone");
    assert!(s.client("api.example.com").await.is_err());
    let line = s.wait_line(|l| l.sni == "api.example.com").await;
    assert_eq!(line.termination, "rbac_access_denied_matched_policy[none]");
}

#[tokio::test]
async fn a_hello_split_byte_by_byte_and_across_records_still_passes() {
    let s = TlsScenario::start(TWO_RULES).await;
    // One record, every byte its own segment.
    assert_eq!(split_hello_get(&s, 16 * 1024, 1).await, "HTTP/1.1 200 OK");
    // Records of 7 bytes, written 3 bytes at a time: headers and SNI cut everywhere.
    assert_eq!(split_hello_get(&s, 7, 3).await, "HTTP/1.1 200 OK");
    assert_eq!(s.upstream.server_names().len(), 2);
    let lines = s.gateway.wait_audit_lines(2).await;
    for line in lines.iter().map(|l| IstioLine::parse(l)) {
        assert_eq!(
            (line.sni.as_str(), line.route.as_str()),
            ("api.example.com", "api")
        );
    }
}

#[tokio::test]
async fn garbage_and_truncated_hellos_are_closed_with_a_reason() {
    let s = TlsScenario::start(TWO_RULES).await;
    assert!(send_and_wait_close(s.tls(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false).await);
    let line = s.wait_line(|l| l.termination == "tls_not_tls").await;
    assert_tunnel_line(&line);
    assert_eq!(line.flags, "DPE");
    assert_eq!(line.bytes_received, "27");

    let garbage: Vec<u8> = [22, 3, 1, 0, 8, 1, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef].to_vec();
    assert!(send_and_wait_close(s.tls(), &garbage, false).await);
    let line = s
        .wait_line(|l| l.termination == "tls_malformed_client_hello")
        .await;
    assert_eq!(line.flags, "DPE");

    // A real hello cut short, then the client ends its side.
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut conn = rustls::ClientConnection::new(s.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    assert!(send_and_wait_close(s.tls(), &hello[..hello.len() / 2], true).await);
    let line = s
        .wait_line(|l| l.termination == "tls_client_hello_incomplete")
        .await;
    assert_eq!(line.flags, "DC");
    assert_eq!(line.bytes_received, (hello.len() / 2).to_string());
    assert_eq!(s.upstream.connection_count(), 0);
}

#[tokio::test]
async fn a_hello_without_sni_is_refused() {
    let s = TlsScenario::start(TWO_RULES).await;
    // rustls sends no SNI to an IP address, as RFC 6066 requires.
    let tcp = egress_testkit::client::connect(s.tls()).await.unwrap();
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    let connected = tokio_rustls::TlsConnector::from(s.client_config())
        .connect(ip, tcp)
        .await;
    assert!(connected.is_err());
    let line = s.wait_line(|l| l.termination == "tls_missing_sni").await;
    assert_tunnel_line(&line);
    assert_eq!(line.sni, "-");
    assert_eq!(line.flags, "-");
}

#[tokio::test]
async fn a_silent_client_is_cut_at_the_header_timeout() {
    let s = TlsScenario::start_with(TWO_RULES, |c| {
        c.limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    let started = std::time::Instant::now();
    // Two bytes of a record header, then nothing.
    assert!(send_and_wait_close(s.tls(), &[22, 3], false).await);
    assert!(started.elapsed() >= Duration::from_millis(290));
    let line = s
        .wait_line(|l| l.termination == "tls_client_hello_timeout")
        .await;
    assert_eq!(line.flags, "DPE");
    assert!(line.duration_ms() >= 290);
}
