//! The TLS stub upstream: the same routes over TLS, ALPN, and the SNI it saw.

use egress_testkit::{StubUpstream, TestCa};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn serves_http1_over_tls_and_records_the_sni() {
    let ca = TestCa::new();
    let stub = StubUpstream::start_tls(&ca.issue_server(&["api.example.com"])).await;
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"], None));
    let tcp = egress_testkit::client::connect(stub.addr()).await.unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    tls.write_all(
        b"GET /status/201 HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = String::new();
    let _ = tls.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert_eq!(
        stub.server_names(),
        vec![Some("api.example.com".to_owned())]
    );
    assert_eq!(stub.request_count(), 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_by_the_client() {
    let stub = StubUpstream::start_tls(&TestCa::new().issue_server(&["api.example.com"])).await;
    let other = TestCa::new();
    let connector = tokio_rustls::TlsConnector::from(other.client_config(&[], None));
    let tcp = egress_testkit::client::connect(stub.addr()).await.unwrap();
    let name = ServerName::try_from("api.example.com").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
    assert_eq!(stub.request_count(), 0);
}
