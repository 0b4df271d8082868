//! `check_sni` on a connect listener: a ClientHello whose SNI is not the CONNECT host
//! closes the tunnel before it reaches the upstream, however the hello arrives.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{self, connect, tls_get, Proxy, POLICY};

#[tokio::test]
async fn an_sni_that_differs_from_the_connect_host_is_refused_where_checked() {
    let proxy = Proxy::start(POLICY).await;
    let target = format!("api.example.com:{}", proxy.tls.port());
    let (stream, head) = connect(proxy.addr("proxy"), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let fronted = tls_get(&proxy, stream, "other.example.com").await;
    assert!(fronted.is_err(), "the handshake must fail: {fronted:?}");
    let line = proxy.audit(1).await;
    assert_eq!(line.code, "200");
    assert_eq!(line.termination, "tls_sni_mismatch");
    assert_eq!(line.sni, "other.example.com");
    assert_eq!(line.bytes_sent, "0");
    assert!(
        line.bytes_received.parse::<u64>().unwrap() > 100,
        "{line:?}"
    );
    assert!(
        proxy.tls.server_names().is_empty(),
        "the hello never reached the upstream"
    );

    // The same fronting on a listener without check_sni passes: the check is what stops it.
    let (stream, _) = connect(proxy.addr("open"), &target, "").await;
    let response = tls_get(&proxy, stream, "other.example.com").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let line = proxy.audit(2).await;
    assert_eq!(
        (line.code.as_str(), line.termination.as_str()),
        ("200", "-")
    );
    assert_eq!(line.sni, "-");
}

/// The first flight of a rustls client for `server_name`: a ClientHello.
fn client_hello(proxy: &Proxy, server_name: &str) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let config = proxy.ca.client_config(&[b"http/1.1"], None);
    let name = ServerName::try_from(server_name.to_owned()).unwrap();
    let mut conn = tokio_rustls::rustls::ClientConnection::new(config, name).unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[tokio::test]
async fn the_sni_check_reads_a_hello_split_into_pieces_and_passes_what_is_not_tls() {
    let proxy = Proxy::start(POLICY).await;
    let target = format!("api.example.com:{}", proxy.tls.port());
    let gw = proxy.addr("proxy");

    // A fronting hello, one byte at a time: refused once whole.
    let (mut stream, _) = connect(gw, &target, "").await;
    for byte in client_hello(&proxy, "other.example.com") {
        if stream.write_all(&[byte]).await.is_err() {
            break;
        }
    }
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    let line = proxy.audit(1).await;
    assert_eq!(
        (line.termination.as_str(), line.sni.as_str()),
        ("tls_sni_mismatch", "other.example.com")
    );

    // The right name in three pieces reaches the upstream as one hello.
    let hello = client_hello(&proxy, "api.example.com");
    let (mut stream, _) = connect(gw, &target, "").await;
    for piece in hello.chunks(hello.len() / 3 + 1) {
        stream.write_all(piece).await.unwrap();
        tokio::task::yield_now().await;
    }
    // The upstream answers it: a ServerHello comes back through the tunnel.
    let mut first = [0u8; 1];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_exact(&mut first),
    )
    .await
    .expect("the upstream answers within 10s")
    .unwrap();
    assert_eq!(first[0], 0x16, "a TLS handshake record");
    drop(stream);
    let line = proxy.audit(2).await;
    assert_eq!(
        (line.termination.as_str(), line.sni.as_str()),
        ("-", "api.example.com")
    );

    // A hello sent with the CONNECT head, before the 200, is checked as well.
    let mut stream = egress_testkit::client::connect(gw).await.unwrap();
    let mut bytes = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes();
    bytes.extend_from_slice(&client_hello(&proxy, "other.example.com"));
    stream.write_all(&bytes).await.unwrap();
    assert!(support::read_head(&mut stream)
        .await
        .starts_with("HTTP/1.1 200"));
    let _ = stream.read_to_end(&mut rest).await;
    let line = proxy.audit(3).await;
    assert_eq!(
        (line.termination.as_str(), line.sni.as_str()),
        ("tls_sni_mismatch", "other.example.com")
    );

    // A broken hello is refused; plain HTTP in the tunnel is not TLS and passes.
    let (mut stream, _) = connect(gw, &target, "").await;
    stream
        .write_all(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
        .await
        .unwrap();
    let _ = stream.read_to_end(&mut rest).await;
    assert_eq!(proxy.audit(4).await.termination, "tls_client_hello_invalid");
    let plain = format!("api.example.com:{}", proxy.plain.port());
    let (mut stream, _) = connect(gw, &plain, "").await;
    stream
        .write_all(b"GET /in-tunnel HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(stream);
    let line = proxy.audit(5).await;
    assert_eq!((line.termination.as_str(), line.sni.as_str()), ("-", "-"));
}
