//! The predefined formats byte for byte, custom format strings, `:N`, escaping, JSON.

use super::*;
use crate::audit::{AuditFormat, ResponseFlags};

const ISTIO_HTTP: &str = r#"[2024-01-09T15:35:47.283Z] "GET /politics HTTP/1.1" 301 - via_upstream - "-" 0 0 2 2 "172.30.239.55" "curl/7.87.0-DEV" "6c01d65f-a157-97cd-8782-320a40026901" "edition.cnn.com" "151.101.195.5:80" outbound|80||edition.cnn.com 172.30.239.16:55636 172.30.239.16:80 172.30.239.55:59224 - default.forward-cnn-from-egress-gateway.0"#;
const ISTIO_DENIAL: &str = r#"[2026-11-24T11:46:23.596Z] "GET /admin HTTP/1.1" 403 - rbac_access_denied_matched_policy[none] - "-" 0 19 0 - "-" "curl/8.5.0" "0c4f7d2e-5b9a-4e61-9d3c-2a8b7f1e6d40" "blocked.example.com" "-" - - 10.0.0.5:8080 10.0.0.9:41234 - -"#;
const ISTIO_TCP: &str = r#"[2024-01-11T21:09:42.835Z] "- - -" 0 - - - "-" 839 2504306 231 - "-" "-" "-" "-" "151.101.195.5:443" outbound|443||edition.cnn.com 172.30.239.8:34470 172.30.239.8:443 172.30.239.15:43956 edition.cnn.com -"#;

const ENVOY_HTTP: &str = r#"[2024-01-09T15:35:47.283Z] "GET /politics HTTP/1.1" 301 - 0 0 2 2 "172.30.239.55" "curl/7.87.0-DEV" "6c01d65f-a157-97cd-8782-320a40026901" "edition.cnn.com" "151.101.195.5:80""#;
const ENVOY_DENIAL: &str = r#"[2026-11-24T11:46:23.596Z] "GET /admin HTTP/1.1" 403 - 0 19 0 - "-" "curl/8.5.0" "0c4f7d2e-5b9a-4e61-9d3c-2a8b7f1e6d40" "blocked.example.com" "-""#;
const ENVOY_TCP: &str = r#"[2024-01-11T21:09:42.835Z] "- - -" 0 - 839 2504306 231 - "-" "-" "-" "-" "151.101.195.5:443""#;

pub(super) fn cases() -> [(&'static str, AuditRecord, &'static str, &'static str); 3] {
    [
        ("http", egress_http(), ISTIO_HTTP, ENVOY_HTTP),
        ("denial", rbac_denial(), ISTIO_DENIAL, ENVOY_DENIAL),
        ("tcp", tls_passthrough(), ISTIO_TCP, ENVOY_TCP),
    ]
}

#[test]
fn istio_and_envoy_formats_byte_for_byte() {
    for (case, record, istio, envoy) in cases() {
        assert_eq!(render("istio", &record), istio, "istio {case}");
        assert_eq!(render("envoy", &record), envoy, "envoy {case}");
        assert_eq!(render(crate::audit::format::ISTIO_FORMAT, &record), istio);
    }
}

#[test]
fn envoy_documentation_example() {
    let mut r = AuditRecord::new();
    r.start_time = at("2016-04-15T20:17:00.310Z");
    r.method = Some("POST".into());
    r.path = Some("/api/v1/locations".into());
    r.protocol = Some("HTTP/2".into());
    r.response_code = 204;
    r.bytes_received = 154;
    r.duration = ms(226);
    r.upstream_service_time = ms(100);
    header(&mut r, "x-forwarded-for", "10.0.35.28");
    header(&mut r, "user-agent", "nsq2http");
    header(
        &mut r,
        "x-request-id",
        "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
    );
    r.authority = Some("locations".into());
    r.upstream_host = addr("10.0.2.1:80");
    // The documentation's line, except that old Envoy printed the host as tcp://.
    let expected = r#"[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "10.0.2.1:80""#;
    assert_eq!(render("envoy", &r), expected);
}

#[test]
fn tcp_denial_and_flags() {
    let mut r = tls_passthrough();
    r.connection_termination_details = Some("rbac_access_denied_matched_policy[none]".into());
    r.response_flags
        .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
    r.response_flags
        .insert(ResponseFlags::UPSTREAM_CONNECTION_FAILURE);
    r.upstream_transport_failure_reason = Some("invalid peer certificate: UnknownIssuer".into());
    let line = render("istio", &r);
    assert!(
        line.contains(r#""- - -" 0 UF,URX - rbac_access_denied_matched_policy[none] "invalid_peer_certificate:_UnknownIssuer" 839 "#),
        "{line}"
    );
    assert_eq!(ResponseFlags::NONE.to_string(), "-");
}

#[test]
fn custom_format_strings() {
    let mut r = egress_http();
    r.response_headers.insert(
        http::HeaderName::from_static("content-type"),
        "text/html".parse().unwrap(),
    );
    r.downstream_remote_address = addr("[2001:db8::7]:59224");
    r.downstream_peer_uri_san = Some("spiffe://cluster.local/ns/app/sa/web".into());
    let spec = "%REQ(:METHOD)% %REQUEST_HEADER(X-MISSING?USER-AGENT)% %RESP(content-type)% \
                %RESPONSE_HEADER(X-ENVOY-UPSTREAM-SERVICE-TIME)% %REQ(HOST)% %RESP(:STATUS)% \
                %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DOWNSTREAM_REMOTE_ADDRESS% \
                %UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN% %REQ(:SCHEME)% 100%%\n";
    assert_eq!(
        render(spec, &r),
        "GET curl/7.87.0-DEV text/html 2 edition.cnn.com 301 2001:db8::7 [2001:db8::7]:59224 \
         outbound|80||edition.cnn.com spiffe://cluster.local/ns/app/sa/web - 100%"
    );
    // A header the response carries wins over the record's own value.
    r.response_headers.insert(
        http::HeaderName::from_static("x-envoy-upstream-service-time"),
        "17".parse().unwrap(),
    );
    assert_eq!(render("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", &r), "17");
    assert_eq!(
        render(
            "%START_TIME(%d/%b/%Y:%H:%M:%S %z)% %START_TIME(%s.%3f)%",
            &r
        ),
        "09/Jan/2024:15:35:47 +0000 1704814547.283"
    );
    // An original path header takes precedence over :path.
    header(&mut r, "x-envoy-original-path", "/before-rewrite");
    assert!(render("envoy", &r).contains(r#""GET /before-rewrite HTTP/1.1""#));
    // TCP: RESPONSE_CODE 0, everything HTTP is `-`.
    let tcp = tls_passthrough();
    assert_eq!(
        render(
            "%RESPONSE_CODE% %RESP(:STATUS)% %PROTOCOL% %REQ(:PATH)%",
            &tcp
        ),
        "0 - - -"
    );
}

#[test]
fn max_length() {
    let r = egress_http();
    assert_eq!(
        render("%REQ(USER-AGENT):4%|%START_TIME:10%|%ROUTE_NAME:7%", &r),
        "curl|2024-01-09|default"
    );
    assert_eq!(
        render(
            "%UPSTREAM_HOST:6%|%REQ(X-MISSING):3%|%REQ(X-REQUEST-ID):0%",
            &r
        ),
        "151.10|-|"
    );
    let mut hostile = egress_http();
    header(&mut hostile, "user-agent", "ab\tcd");
    // Cut before escaping: the escape of a kept byte is never cut in half.
    assert_eq!(render("%REQ(USER-AGENT):3%", &hostile), "ab\\x09");
}

#[test]
fn parse_errors_name_the_problem() {
    for (spec, needle) in [
        ("%FOO%", "%FOO%"),
        (
            "[%START_TIME%] %REQ(:METHOD)",
            "unterminated command operator at byte 15",
        ),
        ("%START_TIME(%Y", "unterminated"),
        ("100% sure", "after % at byte 3"),
        ("%DURATION", "`%DURATION`"),
        ("%REQ%", "needs a header name"),
        ("%REQ(A?B?C)%", "more than one `?`"),
        (
            "%REQ(bad header)%",
            "`bad header` is not a valid header name",
        ),
        ("%PROTOCOL(x)%", "takes no argument"),
        ("%BYTES_SENT:x%", "bad length"),
        ("%START_TIME(%Q)%", "%Q"),
        ("a\nb", "one line"),
        // Inside an argument too: START_TIME copies its literal text into every line.
        ("%START_TIME(%Y\n%m)%", "one line"),
        (
            "%START_TIME(%s.%3f\u{1a}\u{1a})%",
            "control character '\\u{1a}'",
        ),
    ] {
        let err = AuditFormat::parse(spec).unwrap_err();
        assert!(err.to_string().contains(needle), "{spec:?}: {err}");
    }
}

/// Sets a header from raw bytes: values may hold `"`, `\`, tab and obs-text (not CR/LF).
fn raw_header(record: &mut AuditRecord, name: &'static str, value: &[u8]) {
    record.request_headers.insert(
        name.parse().unwrap(),
        http::HeaderValue::from_bytes(value).unwrap(),
    );
}

#[test]
fn hostile_values_stay_on_one_line_and_in_their_field() {
    let mut r = egress_http();
    let forged = "x\" \"forged\"\t\u{85}[2024-01-01T00:00:00.000Z] \"GET / HTTP/1.1\" 200\u{2028}";
    raw_header(&mut r, "user-agent", forged.as_bytes());
    raw_header(&mut r, "x-forwarded-for", b"1.2.3.4\\x0a\xff");
    r.authority = Some("evil.com allowed.com".into());
    r.requested_server_name = Some("a.com\n-".into());
    r.path = Some("/a b\r\n".into());
    for format in ["istio", "envoy"] {
        let line = render(format, &r);
        assert!(!line.contains(['\n', '\r', '\u{85}', '\u{2028}']), "{line}");
        assert_eq!(
            line.matches('"').count(),
            if format == "istio" { 14 } else { 12 },
            "{line}"
        );
    }
    let line = render("istio", &r);
    assert!(line.contains(r#""GET /a\x20b\x0d\x0a HTTP/1.1""#), "{line}");
    assert!(
        line.contains(r#""x\x22 \x22forged\x22\x09\xc2\x85[2024-01-01T00:00:00.000Z] \x22GET / HTTP/1.1\x22 200\xe2\x80\xa8""#),
        "{line}"
    );
    assert!(line.contains(r#""1.2.3.4\x5cx0a\xff""#), "{line}");
    assert!(line.contains(r#""evil.com\x20allowed.com""#), "{line}");
    assert!(line.contains(r#" a.com\x0a- "#), "{line}");
}

#[test]
fn json_lines_parse_back() {
    const KEYS: [&str; 24] = [
        "start_time",
        "method",
        "path",
        "protocol",
        "response_code",
        "response_flags",
        "response_code_details",
        "connection_termination_details",
        "upstream_transport_failure_reason",
        "bytes_received",
        "bytes_sent",
        "duration",
        "upstream_service_time",
        "x_forwarded_for",
        "user_agent",
        "request_id",
        "authority",
        "upstream_host",
        "upstream_cluster",
        "upstream_local_address",
        "downstream_local_address",
        "downstream_remote_address",
        "requested_server_name",
        "route_name",
    ];
    for (case, record, _, _) in cases() {
        let line = render("json", &record);
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), KEYS.len(), "{case}");
        let mut last = 0;
        for key in KEYS {
            let pos = line
                .find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{case}: no {key}"));
            assert!(pos >= last, "{case}: {key} out of order");
            last = pos;
        }
    }
    let http: serde_json::Value = serde_json::from_str(&render("json", &egress_http())).unwrap();
    assert_eq!(http["start_time"], "2024-01-09T15:35:47.283Z");
    assert_eq!(http["response_code"], 301);
    assert_eq!(http["response_flags"], "-");
    assert_eq!(http["duration"], 2);
    assert_eq!(http["upstream_service_time"], 2);
    assert_eq!(http["upstream_cluster"], "outbound|80||edition.cnn.com");
    assert_eq!(http["requested_server_name"], serde_json::Value::Null);
    let tcp: serde_json::Value = serde_json::from_str(&render("json", &tls_passthrough())).unwrap();
    assert_eq!(tcp["method"], serde_json::Value::Null);
    assert_eq!(tcp["protocol"], serde_json::Value::Null);
    assert_eq!(tcp["response_code"], 0);
    assert_eq!(tcp["bytes_sent"], 2_504_306);
    assert_eq!(tcp["upstream_service_time"], serde_json::Value::Null);

    let mut hostile = egress_http();
    raw_header(&mut hostile, "user-agent", "a\"b\\c\td\u{2028}é".as_bytes());
    raw_header(&mut hostile, "x-request-id", b"id\xff");
    hostile.route_name = Some("r\n\"\u{1}".into());
    let line = render("json", &hostile);
    assert!(!line.contains(['\n', '\u{2028}']));
    let back: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(back["user_agent"], "a\"b\\c\td\u{2028}é");
    assert_eq!(back["request_id"], "id\u{fffd}");
    assert_eq!(back["route_name"], "r\n\"\u{1}");
}

#[test]
fn rendering_appends_to_the_buffer() {
    let format = AuditFormat::parse("istio").unwrap();
    let mut out = String::from("prefix ");
    format.render(&egress_http(), &mut out);
    assert_eq!(out, format!("prefix {ISTIO_HTTP}"));
}
