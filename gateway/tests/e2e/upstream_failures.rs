//! What the client and the audit line see when the upstream fails: 504 UT, 503 UF,
//! 503 UC, DF, and DC when the client itself leaves.

use std::time::{Duration, Instant};

use egress_testkit::ClosedPort;
use tokio::io::AsyncWriteExt;

use crate::common::{allow_policy, Scenario};

#[tokio::test]
async fn slow_upstream_turns_into_504_ut_at_the_route_timeout() {
    // The seeds' scenario: httpbin's /delay/5 behind a 3 s route timeout.
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: httpbin-ext, hosts: [api.example.com], request_timeout: 3s}
"#;
    let s = Scenario::start(policy).await;
    let started = Instant::now();
    let response = s.get(&s.authority("api.example.com"), "/delay/5").await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, Some(504), "{}", response.text);
    assert!(
        elapsed >= Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(4500),
        "answered after {elapsed:?}"
    );
    let line = s.audit(1).await;
    assert_eq!(line.code, "504");
    assert_eq!(line.flags, "UT");
    assert_eq!(line.details, "response_timeout");
    assert_eq!(line.route, "httpbin-ext");
    assert_eq!(line.upstream_host, s.upstream.addr().to_string());
    assert!(line.duration_ms() >= 3000, "{line:?}");
}

#[tokio::test]
async fn refused_connect_is_503_uf() {
    let closed = ClosedPort::new();
    let policy = format!(
        r#"
defaults: {{mode: deny, allow_private: true}}
listeners: [{{name: http, port: 8080, protocol: http}}]
rules:
  - {{name: static, hosts: [api.example.com], endpoints: ["{}"], connect_timeout: 1s}}
"#,
        closed.addr()
    );
    let s = Scenario::start(&policy).await;
    let response = s.get("api.example.com", "/").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    assert!(
        response.body().contains(&closed.addr().to_string()),
        "{}",
        response.body()
    );
    let line = s.audit(1).await;
    assert_eq!(line.code, "503");
    assert_eq!(line.flags, "UF");
    assert_eq!(
        line.details,
        "upstream_reset_before_response_started{connection_failure}"
    );
    assert_eq!(line.transport_failure, "connection_refused");
    assert_eq!(line.upstream_host, closed.addr().to_string());
}

#[tokio::test]
async fn upstream_reset_is_503_uc() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let response = s.get(&s.authority("api.example.com"), "/reset").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    let line = s.audit(1).await;
    assert_eq!(line.flags, "UC");
    assert_eq!(
        line.details,
        "upstream_reset_before_response_started{connection_termination}"
    );
}

#[tokio::test]
async fn unresolvable_name_is_503_df() {
    let s = Scenario::start(&allow_policy(r#"["*.example.com"]"#)).await;
    let response = s.get("missing.example.com", "/").await;
    assert_eq!(response.status, Some(503), "{}", response.text);
    assert!(
        response
            .body()
            .contains("cannot resolve missing.example.com"),
        "{}",
        response.body()
    );
    let line = s.audit(1).await;
    assert_eq!(line.flags, "DF");
    assert_eq!(line.details, "dns_resolution_failure");
}

#[tokio::test]
async fn a_name_server_that_drops_queries_costs_the_rule_connect_timeout_not_more() {
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: quick, hosts: [silent.example.com], connect_timeout: 800ms}
"#;
    let s = Scenario::start(policy).await;
    s.dns.set_silent("silent.example.com");
    let started = Instant::now();
    let response = s.get(&s.authority("silent.example.com"), "/").await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, Some(503), "{}", response.text);
    assert!(
        elapsed < Duration::from_millis(2000),
        "answered after {elapsed:?}"
    );
    let line = s.audit(1).await;
    assert_eq!(line.flags, "DF");
    assert_eq!(line.details, "dns_resolution_timeout");
}

#[tokio::test]
async fn client_that_leaves_before_the_response_is_logged_dc() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let mut stream = egress_testkit::client::connect(s.http()).await.unwrap();
    let request = format!(
        "GET /delay/2 HTTP/1.1\r\nHost: {}\r\n\r\n",
        s.authority("api.example.com")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    assert!(
        egress_testkit::wait_until(Duration::from_secs(5), || s.upstream.request_count() == 1)
            .await,
        "the request reached the upstream"
    );
    drop(stream);
    let line = s.audit(1).await;
    assert_eq!(line.code, "0");
    assert_eq!(line.flags, "DC");
    assert_eq!(line.details, "downstream_remote_disconnect");
    assert_eq!(line.path, "/delay/2");
}
