//! Each metric an operator watches, scraped from the stats listener of a running
//! gateway: it is there, and it moves when the traffic it describes flows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use egress_admin::client::Client;
use egress_testkit::{raw_request, ClosedPort, KeepAliveClient};
use hyper::{Method, StatusCode};

use crate::common::{allow_policy, Exposition, Scenario};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test]
async fn build_info_and_the_process_collectors_are_exported() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let e = Exposition::scrape(&s.gateway).await;
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert_eq!(e.value("egress_build_info", &[&version]), 1.0);
    let started = e.value("process_start_time_seconds", &[]);
    assert!(started > 0.0 && started <= now(), "{started}");
    assert!(e.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(e.value("process_cpu_seconds_total", &[]) >= 0.0);
    // Connections held open are descriptors (the client's and the gateway's: the test
    // gateway runs in this process).
    let fds = e.value("process_open_fds", &[]);
    assert!(fds > 0.0);
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(KeepAliveClient::connect(s.http()).await.unwrap());
    }
    let e = Exposition::wait(&s.gateway, |e| {
        e.value("process_open_fds", &[]) >= fds + 20.0
    })
    .await;
    assert!(e.value("process_open_fds", &[]) >= fds + 20.0, "from {fds}");
    drop(clients);
}

#[tokio::test]
async fn bad_requests_are_counted_by_reason() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let a = s.authority("api.example.com");
    for (request, status) in [
        (
            format!("GET / HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n"),
            400,
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            400,
        ),
        ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400),
    ] {
        let response = raw_request(s.http(), request.as_bytes()).await.unwrap();
        assert_eq!(response.status, Some(status), "{request:?}");
    }
    let e = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_bad_requests_total", &[]) >= 3.0
    })
    .await;
    for reason in [
        "duplicate_host_header",
        "missing_host_header",
        "http1.codec_error",
    ] {
        let labels = format!(r#"reason="{reason}""#);
        assert_eq!(
            e.value("egress_bad_requests_total", &[&labels]),
            1.0,
            "{reason}"
        );
    }
    let others: Vec<_> = e
        .series("egress_bad_requests_total")
        .into_iter()
        .filter(|(_, n)| *n != 0.0)
        .collect();
    assert_eq!(others.len(), 3, "the other reasons stay at 0: {others:?}");
    assert_eq!(
        e.value("egress_bad_requests_total", &[r#"reason="other""#]),
        0.0
    );
}

#[tokio::test]
async fn upstream_connects_are_timed_and_their_failures_counted_by_reason() {
    let closed = ClosedPort::new();
    let policy = format!(
        r#"
defaults: {{mode: deny, allow_private: true}}
listeners: [{{name: http, port: 8080, protocol: http}}]
rules:
  - {{name: plain, hosts: [api.example.com]}}
  - {{name: closed, hosts: [a.test.example], endpoints: ["{}"], connect_timeout: 1s}}
  - {{name: tls-to-plain, hosts: [other.example.com], tls_origination: true}}
"#,
        closed.addr()
    );
    let s = Scenario::start(&policy).await;
    let before = Exposition::scrape(&s.gateway).await;
    assert_eq!(
        before.value("egress_upstream_connect_duration_seconds_count", &[]),
        0.0
    );
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(s.get("a.test.example", "/").await.status, Some(503));
    // The stub speaks plain HTTP: the TLS handshake to it fails.
    assert_eq!(
        s.get(&s.authority("other.example.com"), "/").await.status,
        Some(503)
    );
    let failures = |e: &Exposition, reason: &str| {
        let labels = format!(r#"reason="{reason}""#);
        e.value("egress_upstream_connect_failures_total", &[&labels])
    };
    let e = Exposition::wait(&s.gateway, |e| failures(e, "tls") >= 1.0).await;
    assert_eq!(failures(&e, "refused"), 1.0);
    assert_eq!(failures(&e, "tls"), 1.0);
    assert_eq!(failures(&e, "timeout"), 0.0);
    let tls = |reason: &str| {
        let reason = format!(r#"reason="{reason}""#);
        e.value(
            "egress_tls_handshake_failures_total",
            &[r#"side="origination""#, &reason],
        )
    };
    assert_eq!(tls("handshake_failed"), 1.0);
    assert_eq!(tls("certificate_verify_failed"), 0.0);
    // The plain request's connect and the TCP connect under the failed TLS succeeded.
    assert_eq!(
        e.value("egress_upstream_connect_duration_seconds_count", &[]),
        2.0
    );
    assert!(e.value("egress_upstream_connect_duration_seconds_sum", &[]) > 0.0);
}

#[tokio::test]
async fn dns_lookups_are_counted_by_result_with_their_duration() {
    let s = Scenario::start(&allow_policy(r#"["*.example.com"]"#)).await;
    let lookups = |e: &Exposition, result: &str| {
        let labels = format!(r#"result="{result}""#);
        e.value("egress_dns_lookups_total", &[&labels])
    };
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    assert_eq!(s.get("missing.example.com", "/").await.status, Some(503));
    let e = Exposition::wait(&s.gateway, |e| lookups(e, "nxdomain") >= 1.0).await;
    // The second lookup of the name is answered from the cache, and still counted.
    assert_eq!(lookups(&e, "ok"), 2.0);
    assert_eq!(lookups(&e, "nxdomain"), 1.0);
    assert_eq!(lookups(&e, "error"), 0.0);
    assert_eq!(
        e.value(
            "egress_dns_lookup_duration_seconds_count",
            &[r#"result="ok""#]
        ),
        2.0
    );
    assert_eq!(
        e.value(
            "egress_dns_lookup_duration_seconds_count",
            &[r#"result="nxdomain""#]
        ),
        1.0
    );
}

#[tokio::test]
async fn tunnels_are_counted_opened_then_closed_with_their_duration() {
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: http, port: 8080, protocol: http}
  - {name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:{PORT}"}
rules:
  - {name: api-tcp, hosts: [api.example.com], listeners: [db]}
"#;
    let s = Scenario::start(policy).await;
    let labels = [r#"listener="db""#, r#"rule="api-tcp""#];
    let mut client = KeepAliveClient::connect(s.gateway.addr("db"))
        .await
        .unwrap();
    assert_eq!(client.get("/one").await.unwrap().status, 200);
    let open = Exposition::scrape(&s.gateway).await;
    assert_eq!(open.value("egress_tunnels_opened_total", &labels), 1.0);
    assert_eq!(
        open.value_or_zero("egress_tunnels_closed_total", &labels),
        0.0
    );

    drop(client);
    let e = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_tunnels_closed_total", &labels) >= 1.0
    })
    .await;
    assert_eq!(e.value("egress_tunnels_opened_total", &labels), 1.0);
    assert_eq!(e.value("egress_tunnels_closed_total", &labels), 1.0);
    assert_eq!(
        e.value("egress_tunnel_duration_seconds_count", &labels),
        1.0
    );
}

#[tokio::test]
async fn admin_requests_and_token_refusals_are_counted() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let addr = s.gateway.admin_addr().to_string();
    let timeout = Duration::from_secs(10);
    let send = |token: Option<String>, path: &'static str| {
        let client = Client::new(&addr, token).unwrap();
        async move {
            client
                .send(Method::GET, path, &[], None, timeout)
                .await
                .unwrap()
                .status
        }
    };
    assert_eq!(send(None, "/policy").await, StatusCode::UNAUTHORIZED);
    let wrong = Some("not-the-token-at-all".to_owned());
    assert_eq!(send(wrong, "/policy").await, StatusCode::UNAUTHORIZED);
    let token = Some(s.gateway.admin_token());
    assert_eq!(send(token.clone(), "/policy").await, StatusCode::OK);
    assert_eq!(send(token, "/no/such/route").await, StatusCode::NOT_FOUND);

    let e = Exposition::scrape(&s.gateway).await;
    let auth = |reason: &str| {
        let labels = format!(r#"reason="{reason}""#);
        e.value("egress_admin_auth_failures_total", &[&labels])
    };
    assert_eq!(auth("missing"), 1.0);
    assert_eq!(auth("refused"), 1.0);
    assert_eq!(auth("not_bearer"), 0.0);
    let requests = |route: &str, code: &str| {
        let route = format!(r#"route="{route}""#);
        let code = format!(r#"code="{code}""#);
        e.value(
            "egress_admin_requests_total",
            &[&route, r#"method="GET""#, &code],
        )
    };
    assert_eq!(requests("/policy", "401"), 2.0);
    assert_eq!(requests("/policy", "200"), 1.0);
    assert_eq!(requests("unmatched", "404"), 1.0);
    assert!(
        !e.text.contains("/no/such/route"),
        "a path no route has never becomes a label"
    );
}

#[tokio::test]
async fn policy_gauges_follow_a_reload() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let first = Exposition::scrape(&s.gateway).await;
    assert_eq!(first.value("egress_policy_rules", &[]), 1.0);
    assert_eq!(first.value("egress_policy_listeners", &[]), 1.0);
    let loaded = first.value("egress_policy_last_reload_timestamp_seconds", &[]);
    assert!(
        loaded > now() - 60.0 && loaded <= now(),
        "loaded at {loaded}"
    );

    let two_rules = r#"
defaults: {mode: deny, allow_private: true}
listeners:
  - {name: http, port: 8080, protocol: http}
  - {name: db, port: 13306, protocol: tcp, forward_to: "api.example.com:5432"}
rules:
  - {name: one, hosts: [api.example.com]}
  - {name: two, hosts: [other.example.com]}
"#;
    s.gateway.write_policy("policy.yaml", two_rules);
    let e = Exposition::wait(&s.gateway, |e| e.value("egress_policy_rules", &[]) == 2.0).await;
    assert_eq!(e.value("egress_policy_rules", &[]), 2.0);
    assert_eq!(e.value("egress_policy_listeners", &[]), 2.0);
    assert_eq!(e.value("egress_policy_version", &[]), 2.0);
    assert_eq!(
        e.value("egress_policy_reloads_total", &[r#"result="applied""#]),
        1.0
    );
    assert!(e.value("egress_policy_last_reload_timestamp_seconds", &[]) > loaded);
}

#[tokio::test]
async fn the_audit_queue_is_exported_with_its_capacity() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    for _ in 0..20 {
        s.get(&s.authority("api.example.com"), "/").await;
    }
    let e = Exposition::wait(&s.gateway, |e| {
        e.value("egress_audit_lines_written_total", &[]) >= 20.0
    })
    .await;
    let capacity = e.value("egress_audit_queue_capacity_lines", &[]);
    assert_eq!(capacity, 65_536.0, "the default audit.buffer_lines");
    let queued = e.value("egress_audit_queue_lines", &[]);
    assert!((0.0..=capacity).contains(&queued), "{queued}");
    assert_eq!(e.value("egress_audit_lines_written_total", &[]), 20.0);
    assert_eq!(e.value("egress_audit_write_errors_total", &[]), 0.0);
}

#[tokio::test]
async fn bytes_are_counted_by_rule_and_bodies_by_size() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    let host = s.authority("api.example.com");
    let mut client = KeepAliveClient::connect(s.http()).await.unwrap();
    let response = client
        .request(
            Method::POST,
            "/bytes/5000",
            &[("host", host.as_str())],
            vec![b'x'; 1000],
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 5000);
    let sizes = [r#"listener="http""#];
    let e = Exposition::wait(&s.gateway, |e| {
        e.value_or_zero("egress_response_size_bytes_count", &sizes) >= 1.0
    })
    .await;
    let bytes = |direction: &str| {
        let direction = format!(r#"direction="{direction}""#);
        e.value(
            "egress_bytes_total",
            &[r#"listener="http""#, r#"rule="allowed""#, &direction],
        )
    };
    assert_eq!(bytes("received"), 1000.0);
    assert_eq!(bytes("sent"), 5000.0);
    assert_eq!(e.value("egress_request_size_bytes_count", &sizes), 1.0);
    assert_eq!(e.value("egress_request_size_bytes_sum", &sizes), 1000.0);
    assert_eq!(e.value("egress_response_size_bytes_sum", &sizes), 5000.0);
    // 5000 bytes fall in the 16 KiB bucket, not in the 4 KiB one.
    assert_eq!(
        e.value(
            "egress_response_size_bytes_bucket",
            &[r#"listener="http""#, r#"le="4096""#]
        ),
        0.0
    );
    assert_eq!(
        e.value(
            "egress_response_size_bytes_bucket",
            &[r#"listener="http""#, r#"le="16384""#]
        ),
        1.0
    );
}
