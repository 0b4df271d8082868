//! The lines as the log pipelines operators already run see them: Fluent Bit's `envoy`
//! and `istio-envoy-proxy` regexes (fluent-bit conf/parsers.conf at a1c8dd52) and the
//! Loki `pattern` for the Istio format.

use regex::Regex;

use super::format::cases;
use super::*;

/// Fluent Bit's `envoy` parser, verbatim.
const FLUENT_BIT_ENVOY: &str = r#"^\[(?<start_time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)? (?<protocol>\S+)" (?<code>[^ ]*) (?<response_flags>[^ ]*) (?<bytes_received>[^ ]*) (?<bytes_sent>[^ ]*) (?<duration>[^ ]*) (?<x_envoy_upstream_service_time>[^ ]*) "(?<x_forwarded_for>[^ ]*)" "(?<user_agent>[^\"]*)" "(?<request_id>[^\"]*)" "(?<authority>[^ ]*)" "(?<upstream_host>[^ ]*)""#;

/// Fluent Bit's `istio-envoy-proxy` parser, verbatim (its captures are lenient: the
/// authority keeps a leading quote, the failure reason its quotes).
const FLUENT_BIT_ISTIO: &str = r#"^\[(?<start_time>[^\]]*)\] "(?<method>\S+)(?: +(?<path>[^\"]*?)(?: +\S*)?)? (?<protocol>\S+)" (?<response_code>[^ ]*) (?<response_flags>[^ ]*) (?<response_code_details>[^ ]*) (?<connection_termination_details>[^ ]*) (?<upstream_transport_failure_reason>[^ ]*) (?<bytes_received>[^ ]*) (?<bytes_sent>[^ ]*) (?<duration>[^ ]*) (?<x_envoy_upstream_service_time>[^ ]*) "(?<x_forwarded_for>[^ ]*)" "(?<user_agent>[^\"]*)" "(?<x_request_id>[^\"]*)" (?<authority>[^ ]*)" "(?<upstream_host>[^ ]*)" (?<upstream_cluster>[^ ]*) (?<upstream_local_address>[^ ]*) (?<downstream_local_address>[^ ]*) (?<downstream_remote_address>[^ ]*) (?<requested_server_name>[^ ]*) (?<route_name>[^  ]*)"#;

/// The Loki LogQL `pattern` for the Istio format.
const LOKI_ISTIO: &str = r#"[<START_TIME>] "<METHOD> <PATH> <PROTOCOL>" <RESPONSE_CODE> <RESPONSE_FLAGS> <RESPONSE_CODE_DETAILS> <CONNECTION_TERMINATION_DETAILS> "<UPSTREAM_TRANSPORT_FAILURE_REASON>" <BYTES_RECEIVED> <BYTES_SENT> <DURATION> <UPSTREAM_SERVICE_TIME> "<X_FORWARDED_FOR>" "<USER_AGENT>" "<X_REQUEST_ID>" "<AUTHORITY>" "<UPSTREAM_HOST>" <UPSTREAM_CLUSTER> <UPSTREAM_LOCAL_ADDRESS> <DOWNSTREAM_LOCAL_ADDRESS> <DOWNSTREAM_REMOTE_ADDRESS> <REQUESTED_SERVER_NAME> <ROUTE_NAME>"#;

fn captures<'l>(regex: &Regex, line: &'l str) -> impl Fn(&str) -> &'l str {
    let caps = regex
        .captures(line)
        .unwrap_or_else(|| panic!("no match: {line}"));
    let names: Vec<(String, &'l str)> = regex
        .capture_names()
        .flatten()
        .map(|n| (n.to_string(), caps.name(n).map_or("", |m| m.as_str())))
        .collect();
    move |name| {
        names
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap()
    }
}

/// Loki's `pattern` parser: each `<NAME>` captures up to the next literal.
fn loki(pattern: &str, line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest_pattern = pattern;
    let mut rest_line = line;
    while !rest_pattern.is_empty() {
        let open = rest_pattern.find('<').unwrap_or(rest_pattern.len());
        let literal = &rest_pattern[..open];
        assert!(
            rest_line.starts_with(literal),
            "expected {literal:?} at {rest_line:?}"
        );
        rest_line = &rest_line[literal.len()..];
        rest_pattern = &rest_pattern[open..];
        if rest_pattern.is_empty() {
            break;
        }
        let close = rest_pattern.find('>').unwrap();
        let name = &rest_pattern[1..close];
        rest_pattern = &rest_pattern[close + 1..];
        let next = rest_pattern.find('<').unwrap_or(rest_pattern.len());
        let next_literal = &rest_pattern[..next];
        let end = if next_literal.is_empty() {
            rest_line.len()
        } else {
            rest_line
                .find(next_literal)
                .unwrap_or_else(|| panic!("no {next_literal:?} after {name}"))
        };
        fields.push((name.to_string(), rest_line[..end].to_string()));
        rest_line = &rest_line[end..];
    }
    assert!(rest_line.is_empty(), "left over: {rest_line:?}");
    fields
}

#[test]
fn fluent_bit_envoy_parser() {
    let regex = Regex::new(FLUENT_BIT_ENVOY).unwrap();
    for (case, record, _, _) in cases() {
        let line = render("envoy", &record);
        let field = captures(&regex, &line);
        match case {
            "tcp" => {
                assert_eq!((field("method"), field("protocol")), ("-", "-"));
                assert_eq!(field("code"), "0");
                assert_eq!(field("bytes_sent"), "2504306");
            }
            _ => {
                assert_eq!(field("protocol"), "HTTP/1.1");
                assert_eq!(
                    field("user_agent"),
                    record.request_headers.get("user-agent").unwrap()
                );
            }
        }
        assert_eq!(field("start_time").len(), "2024-01-09T15:35:47.283Z".len());
        assert_eq!(field("response_flags"), "-");
        let authority = record.authority.as_deref().unwrap_or("-");
        assert_eq!(field("authority"), authority);
    }
    let line = render("envoy", &egress_http());
    let field = captures(&regex, &line);
    assert_eq!(field("path"), "/politics");
    assert_eq!(field("upstream_host"), "151.101.195.5:80");
    assert_eq!(field("x_envoy_upstream_service_time"), "2");
}

#[test]
fn fluent_bit_istio_parser() {
    let regex = Regex::new(FLUENT_BIT_ISTIO).unwrap();
    for (case, record, _, _) in cases() {
        let line = render("istio", &record);
        let field = captures(&regex, &line);
        assert_eq!(
            field("upstream_transport_failure_reason"),
            "\"-\"",
            "{case}"
        );
        let expected_route = record.route_name.as_deref().unwrap_or("-");
        assert_eq!(field("route_name"), expected_route, "{case}");
        let sni = record.requested_server_name.as_deref().unwrap_or("-");
        assert_eq!(field("requested_server_name"), sni, "{case}");
        let remote = record.downstream_remote_address.unwrap().to_string();
        assert_eq!(field("downstream_remote_address"), remote, "{case}");
    }
    let line = render("istio", &rbac_denial());
    let field = captures(&regex, &line);
    assert_eq!(field("response_code"), "403");
    assert_eq!(
        field("response_code_details"),
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(field("authority"), "\"blocked.example.com");
}

#[test]
fn loki_pattern_field_order() {
    let tcp = loki(LOKI_ISTIO, &render("istio", &tls_passthrough()));
    let names: Vec<&str> = tcp.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 24);
    let get = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get(&tcp, "METHOD"), "-");
    assert_eq!(get(&tcp, "RESPONSE_CODE"), "0");
    assert_eq!(get(&tcp, "BYTES_RECEIVED"), "839");
    assert_eq!(
        get(&tcp, "UPSTREAM_CLUSTER"),
        "outbound|443||edition.cnn.com"
    );
    assert_eq!(get(&tcp, "REQUESTED_SERVER_NAME"), "edition.cnn.com");
    assert_eq!(get(&tcp, "ROUTE_NAME"), "-");

    let http = loki(LOKI_ISTIO, &render("istio", &egress_http()));
    assert_eq!(get(&http, "START_TIME"), "2024-01-09T15:35:47.283Z");
    assert_eq!(get(&http, "PATH"), "/politics");
    assert_eq!(get(&http, "RESPONSE_CODE_DETAILS"), "via_upstream");
    assert_eq!(get(&http, "UPSTREAM_SERVICE_TIME"), "2");
    assert_eq!(
        get(&http, "X_REQUEST_ID"),
        "6c01d65f-a157-97cd-8782-320a40026901"
    );
    assert_eq!(get(&http, "AUTHORITY"), "edition.cnn.com");
    assert_eq!(get(&http, "UPSTREAM_LOCAL_ADDRESS"), "172.30.239.16:55636");
    assert_eq!(
        get(&http, "ROUTE_NAME"),
        "default.forward-cnn-from-egress-gateway.0"
    );

    let denial = loki(LOKI_ISTIO, &render("istio", &rbac_denial()));
    assert_eq!(get(&denial, "RESPONSE_CODE"), "403");
    assert_eq!(
        get(&denial, "RESPONSE_CODE_DETAILS"),
        "rbac_access_denied_matched_policy[none]"
    );
    assert_eq!(get(&denial, "USER_AGENT"), "curl/8.5.0");
}

#[test]
fn parsers_still_split_hostile_lines_correctly() {
    let mut r = rbac_denial();
    r.request_headers.insert(
        http::header::USER_AGENT,
        "x\" \"evil.com\" \"1.2.3.4:443".parse().unwrap(),
    );
    r.authority = Some("evil.com other".into());
    let line = render("istio", &r);
    let regex = Regex::new(FLUENT_BIT_ISTIO).unwrap();
    let field = captures(&regex, &line);
    assert_eq!(
        field("user_agent"),
        r#"x\x22 \x22evil.com\x22 \x221.2.3.4:443"#
    );
    assert_eq!(field("authority"), r#""evil.com\x20other"#);
    assert_eq!(field("upstream_host"), "-");
    let fields = loki(LOKI_ISTIO, &line);
    assert_eq!(fields.len(), 24);
}
