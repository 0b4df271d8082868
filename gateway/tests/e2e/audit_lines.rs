//! The audit formats as operators' pipelines parse them: Istio's TEXT format and Envoy's
//! default format, field by field, for an allowed request, a denial and a failure.

use crate::common::{allow_policy, assert_start_time, fields, IstioLine, Scenario};

#[tokio::test]
async fn istio_and_envoy_formats_carry_the_same_request() {
    let istio = Scenario::start_with(&allow_policy("[api.example.com]"), "istio").await;
    let envoy = Scenario::start_with(&allow_policy("[api.example.com]"), "envoy").await;
    for s in [&istio, &envoy] {
        let request = format!(
            "POST /submit?q=1 HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8.5.0\r\nX-Request-Id: rid-1\r\n\
             X-Forwarded-For: 10.0.0.9\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
            s.authority("api.example.com")
        );
        let response = egress_testkit::raw_request(s.http(), request.as_bytes())
            .await
            .unwrap();
        assert_eq!(response.status, Some(200));
        let denied = s.get(&s.authority("other.example.com"), "/x").await;
        assert_eq!(denied.status, Some(403));
    }

    let lines = istio.gateway.wait_audit_lines(2).await;
    let ok = IstioLine::parse(&lines[0]);
    assert_eq!(
        (ok.method.as_str(), ok.path.as_str(), ok.protocol.as_str()),
        ("POST", "/submit?q=1", "HTTP/1.1")
    );
    assert_eq!(ok.code, "200");
    assert_eq!(ok.details, "via_upstream");
    assert_eq!(ok.termination, "-");
    assert_eq!(ok.transport_failure, "-");
    assert_eq!(ok.bytes_received, "4");
    assert_eq!(ok.user_agent, "curl/8.5.0");
    assert_eq!(ok.request_id, "rid-1");
    assert_eq!(ok.xff, "10.0.0.9");
    assert_eq!(ok.sni, "-");
    assert_eq!(ok.route, "allowed");
    let denied = IstioLine::parse(&lines[1]);
    assert_eq!(denied.code, "403");
    assert_eq!(denied.details, "rbac_access_denied_matched_policy[none]");
    assert_eq!(
        denied.bytes_sent,
        (format!(
            "egress to {} denied: no rule allows it\n",
            istio.authority("other.example.com")
        )
        .len())
        .to_string()
    );

    let lines = envoy.gateway.wait_audit_lines(2).await;
    let f = fields(&lines[0]);
    assert_eq!(
        f.len(),
        13,
        "Envoy's default format has 13 fields: {}",
        lines[0]
    );
    assert_start_time(&f[0]);
    assert_eq!(f[1], "\"POST /submit?q=1 HTTP/1.1\"");
    assert_eq!(f[2], "200");
    assert_eq!(f[3], "-");
    assert_eq!(f[4], "4");
    assert!(f[5].parse::<u64>().unwrap() > 0, "bytes sent");
    assert!(f[6].parse::<u64>().is_ok(), "duration");
    assert!(f[7].parse::<u64>().is_ok(), "upstream service time");
    assert_eq!(f[8], "\"10.0.0.9\"");
    assert_eq!(f[9], "\"curl/8.5.0\"");
    assert_eq!(f[10], "\"rid-1\"");
    assert_eq!(f[11], format!("\"{}\"", envoy.authority("api.example.com")));
    assert_eq!(f[12], format!("\"{}\"", envoy.upstream.addr()));
    let d = fields(&lines[1]);
    assert_eq!(d.len(), 13);
    assert_eq!(d[2], "403");
    assert_eq!(d[12], "\"-\"");
}

#[tokio::test]
async fn json_format_is_one_object_per_line() {
    let s = Scenario::start_with(&allow_policy("[api.example.com]"), "json").await;
    assert_eq!(
        s.get(&s.authority("other.example.com"), "/j").await.status,
        Some(403)
    );
    let lines = s.gateway.wait_audit_lines(1).await;
    let value: serde_json::Value = serde_json::from_str(&lines[0]).expect("valid JSON");
    assert_eq!(value["response_code"], 403);
    assert_eq!(value["path"], "/j");
    assert_eq!(
        value["response_code_details"],
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(value["authority"], s.authority("other.example.com"));
}

#[tokio::test]
async fn custom_format_strings_use_envoy_operators() {
    let s = Scenario::start_with(
        &allow_policy("[api.example.com]"),
        "%RESPONSE_CODE% %ROUTE_NAME% %UPSTREAM_CLUSTER_RAW% %REQ(:AUTHORITY)% %REQ(X-MISSING)%",
    )
    .await;
    assert_eq!(
        s.get(&s.authority("api.example.com"), "/").await.status,
        Some(200)
    );
    let lines = s.gateway.wait_audit_lines(1).await;
    assert_eq!(
        lines[0],
        format!(
            "200 allowed outbound|{}||api.example.com {} -",
            s.upstream.port(),
            s.authority("api.example.com")
        )
    );
}

#[tokio::test]
async fn hostile_header_values_cannot_forge_audit_lines() {
    let s = Scenario::start(&allow_policy("[api.example.com]")).await;
    // obs-text is what a header value can smuggle past the parser.
    let mut request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: a\"b ",
        s.authority("api.example.com")
    )
    .into_bytes();
    request.extend_from_slice(b"\x7f\xff\x1b[31m\r\n\r\n");
    let _ = egress_testkit::raw_request(s.http(), &request)
        .await
        .unwrap();
    let lines = s.gateway.wait_audit_lines(1).await;
    assert_eq!(lines.len(), 1, "one request, one line: {lines:?}");
}

/// Every kind of outcome, in Envoy's default format: 13 fields, code and flags in place.
#[tokio::test]
async fn every_outcome_has_a_complete_envoy_line() {
    let closed = egress_testkit::ClosedPort::new();
    let policy = format!(
        r#"
defaults: {{mode: deny}}
listeners: [{{name: http, port: 8080, protocol: http}}]
rules:
  - {{name: ok, hosts: [api.example.com], allow_private: true, request_timeout: 1s}}
  - {{name: guarded, hosts: [other.example.com]}}
  - {{name: dead, hosts: [a.test.example], endpoints: ["{}"], allow_private: true}}
"#,
        closed.addr()
    );
    let s = Scenario::start_with(&policy, "envoy").await;
    let api = s.authority("api.example.com");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            format!("GET / HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"),
            "200",
            "-",
        ),
        (
            format!("GET /delay/3 HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"),
            "504",
            "UT",
        ),
        (
            format!("GET /reset HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"),
            "503",
            "UC",
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.test.example\r\nConnection: close\r\n\r\n".to_owned(),
            "503",
            "UF",
        ),
        (
            "GET / HTTP/1.1\r\nHost: nowhere.example\r\nConnection: close\r\n\r\n".to_owned(),
            "403",
            "-",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                s.authority("other.example.com")
            ),
            "403",
            "-",
        ),
        (
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
            "400",
            "DPE",
        ),
        ("BAD\r\n\r\n".to_owned(), "400", "DPE"),
    ];
    for (i, (request, code, flags)) in cases.iter().enumerate() {
        let response = egress_testkit::raw_request(s.http(), request.as_bytes())
            .await
            .unwrap();
        assert_eq!(
            response.status.map(|c| c.to_string()).as_deref(),
            Some(*code),
            "{request:?}"
        );
        let lines = s.gateway.wait_audit_lines(i + 1).await;
        let f = fields(&lines[i]);
        assert_eq!(f.len(), 13, "{request:?}: {}", lines[i]);
        assert_start_time(&f[0]);
        assert!(f[1].starts_with('"') && f[1].ends_with('"'), "{}", lines[i]);
        assert_eq!(
            (f[2].as_str(), f[3].as_str()),
            (*code, *flags),
            "{request:?}: {}",
            lines[i]
        );
        for n in [4, 5, 6] {
            assert!(
                f[n].parse::<u64>().is_ok(),
                "field {n} is a number: {}",
                lines[i]
            );
        }
        for (n, field) in f.iter().enumerate().skip(8) {
            assert!(
                field.starts_with('"') && field.ends_with('"'),
                "field {n} is quoted: {}",
                lines[i]
            );
        }
    }
}
