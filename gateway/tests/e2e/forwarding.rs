//! Allowed and denied destinations on the http listener, and what reaches the upstream.

use egress_testkit::KeepAliveClient;
use http::Method;

use crate::common::{allow_policy, Scenario};

#[tokio::test]
async fn allowed_host_is_forwarded_with_an_audit_line() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let response = s
        .get(&s.authority("api.example.com"), "/anything?x=1")
        .await;
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert_eq!(response.header("x-stub"), Some("echo"));
    let received = s.upstream.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/anything?x=1");
    assert_eq!(
        received[0].header("host"),
        Some(s.authority("api.example.com").as_str())
    );

    let line = s.audit(1).await;
    assert_eq!(line.method, "GET");
    assert_eq!(line.path, "/anything?x=1");
    assert_eq!(line.protocol, "HTTP/1.1");
    assert_eq!(line.code, "200");
    assert_eq!(line.flags, "-");
    assert_eq!(line.details, "via_upstream");
    assert_eq!(line.authority, s.authority("api.example.com"));
    assert_eq!(line.upstream_host, s.upstream.addr().to_string());
    assert_eq!(
        line.cluster,
        format!("outbound|{}||api.example.com", s.upstream.port())
    );
    assert_eq!(line.route, "allowed");
    assert_eq!(line.downstream_local, s.http().to_string());
    assert!(line.downstream_remote.starts_with("127.0.0.1:"));
    assert!(line.upstream_local.starts_with("127.0.0.1:"));
    assert_eq!(line.bytes_sent, response.body().len().to_string());
    assert_ne!(line.upstream_service_time, "-");
    assert_eq!(
        response.header("x-envoy-upstream-service-time"),
        Some(line.upstream_service_time.as_str())
    );
}

#[tokio::test]
async fn unlisted_host_is_denied_by_default_with_a_reason() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let response = s.get(&s.authority("other.example.com"), "/").await;
    assert_eq!(response.status, Some(403));
    let expected = format!(
        "egress to {} denied: no rule allows it\n",
        s.authority("other.example.com")
    );
    assert_eq!(response.body(), expected);
    assert_eq!(
        s.upstream.request_count(),
        0,
        "a denied request must not reach the upstream"
    );

    let line = s.audit(1).await;
    assert_eq!(line.code, "403");
    assert_eq!(line.flags, "-");
    assert_eq!(line.details, "rbac_access_denied_matched_policy[none]");
    assert_eq!(line.authority, s.authority("other.example.com"));
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.route, "-");
}

#[tokio::test]
async fn wildcard_matches_any_depth_below_but_not_the_apex() {
    let s = Scenario::start(&allow_policy(r#"["*.test.example"]"#)).await;
    assert_eq!(
        s.get(&s.authority("a.test.example"), "/").await.status,
        Some(200)
    );
    assert_eq!(
        s.get(&s.authority("b.a.test.example"), "/").await.status,
        Some(200)
    );
    s.dns.set("test.example", [crate::common::LOOPBACK]);
    assert_eq!(
        s.get(&s.authority("test.example"), "/").await.status,
        Some(403)
    );
}

#[tokio::test]
async fn deny_rule_beats_an_allow_of_equal_specificity_and_names_itself() {
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: allow-api, hosts: [api.example.com]}
  - {name: block-api, hosts: [api.example.com], action: deny}
  - {name: allow-all-test, hosts: ["*.test.example"]}
  - {name: block-b, hosts: [b.a.test.example], action: deny}
"#;
    let s = Scenario::start(policy).await;
    let denied = s.get(&s.authority("api.example.com"), "/").await;
    assert_eq!(denied.status, Some(403));
    assert!(
        denied.body().contains("rule block-api denies it"),
        "{}",
        denied.body()
    );
    let line = s.audit(1).await;
    assert_eq!(line.details, "rbac_access_denied_matched_policy[block-api]");
    assert_eq!(line.route, "block-api");
    // The exact deny is more specific than the allowing wildcard.
    assert_eq!(
        s.get(&s.authority("b.a.test.example"), "/").await.status,
        Some(403)
    );
    assert_eq!(
        s.get(&s.authority("a.test.example"), "/").await.status,
        Some(200)
    );
}

#[tokio::test]
async fn sources_restrict_who_may_use_a_rule() {
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: http, port: 8080, protocol: http}]
rules:
  - {name: from-loopback, hosts: [api.example.com], sources: [127.0.0.0/8]}
  - {name: from-elsewhere, hosts: [other.example.com], sources: [10.0.0.0/8]}
"#;
    let s = Scenario::start(policy).await;
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(
        s.get(&s.authority("other.example.com"), "/").await.status,
        Some(403)
    );
}

#[tokio::test]
async fn host_spellings_do_not_slip_past_a_rule() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let port = s.upstream.port();
    for host in [
        format!("API.Example.COM:{port}"),
        format!("api.example.com.:{port}"),
    ] {
        let response = s.get(&host, "/").await;
        assert_eq!(response.status, Some(200), "{host}: {}", response.text);
    }
    let unicode = Scenario::start(&allow_policy("[bücher.example]")).await;
    unicode
        .dns
        .set("xn--bcher-kva.example", [crate::common::LOOPBACK]);
    let response = unicode
        .get(&unicode.authority("xn--bcher-kva.example"), "/")
        .await;
    assert_eq!(response.status, Some(200), "{}", response.text);
}

#[tokio::test]
async fn hop_by_hop_and_internal_headers_stay_inside_and_a_request_id_is_added() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close, x-secret\r\nx-secret: 1\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n\
         x-envoy-peer-metadata: internal\r\nForwarded: for=10.1.2.3\r\nUser-Agent: e2e\r\n\r\n",
        s.authority("api.example.com")
    );
    let response = egress_testkit::raw_request(s.http(), request.as_bytes())
        .await
        .unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    let received = &s.upstream.requests()[0];
    for name in [
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "x-forwarded-for",
        "x-real-ip",
        "x-envoy-peer-metadata",
        "forwarded",
    ] {
        assert_eq!(
            received.header(name),
            None,
            "{name} must not reach the upstream"
        );
    }
    assert_eq!(received.header("user-agent"), Some("e2e"));
    let request_id = received
        .header("x-request-id")
        .expect("x-request-id added")
        .to_owned();
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    let line = s.audit(1).await;
    assert_eq!(line.request_id, request_id);
    assert_eq!(line.user_agent, "e2e");
    assert_eq!(
        line.xff, "10.1.2.3",
        "the audit line keeps what the client sent"
    );
}

#[tokio::test]
async fn keep_alive_clients_reuse_one_downstream_and_one_upstream_connection() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let mut client = KeepAliveClient::connect(s.http()).await.unwrap();
    let host = s.authority("api.example.com");
    for i in 0..5 {
        let path = format!("/n/{i}");
        let response = client
            .request(Method::GET, &path, &[("host", host.as_str())], "")
            .await
            .unwrap();
        assert_eq!(response.status, 200);
    }
    let body = client
        .request(
            Method::POST,
            "/post",
            &[("host", host.as_str())],
            "hello world",
        )
        .await
        .unwrap();
    assert_eq!(body.status, 200);
    assert!(body.text().contains("\"body_len\":11"), "{}", body.text());
    assert_eq!(
        s.upstream.connection_count(),
        1,
        "the upstream connection is pooled"
    );
    let lines = s.gateway.wait_audit_lines(6).await;
    let post = crate::common::IstioLine::parse(&lines[5]);
    assert_eq!(post.method, "POST");
    assert_eq!(post.bytes_received, "11");
}

#[tokio::test]
async fn absolute_form_requests_are_forwarded_and_must_agree_with_host() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let authority = s.authority("api.example.com");
    let request = format!(
        "GET http://{authority}/abs HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    );
    let response = egress_testkit::raw_request(s.http(), request.as_bytes())
        .await
        .unwrap();
    assert_eq!(response.status, Some(200), "{}", response.text);
    assert_eq!(s.upstream.requests()[0].path, "/abs");

    let other = s.authority("other.example.com");
    let ambiguous = format!(
        "GET http://{authority}/abs HTTP/1.1\r\nHost: {other}\r\nConnection: close\r\n\r\n"
    );
    let response = egress_testkit::raw_request(s.http(), ambiguous.as_bytes())
        .await
        .unwrap();
    assert_eq!(response.status, Some(400), "{}", response.text);
    let port_differs = format!(
        "GET http://{authority}/abs HTTP/1.1\r\nHost: api.example.com:1\r\nConnection: close\r\n\r\n"
    );
    let response = egress_testkit::raw_request(s.http(), port_differs.as_bytes())
        .await
        .unwrap();
    assert_eq!(response.status, Some(400), "{}", response.text);
    assert_eq!(s.upstream.request_count(), 1);
    let line = s.audit(3).await;
    assert_eq!(line.details, "ambiguous_host");
    assert_eq!(line.flags, "DPE");
}
