//! Compilation: every error as file:line: path: message, all at once; merging; routes.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::wire::host::parse_host;

#[test]
fn every_kind_of_value_error_names_file_line_and_path() {
    let rule = |field: &str| format!("rules:\n  - name: r\n    hosts: [a.com]\n    {field}\n");
    let cases = [
        (rule("ports: [80, 70000]"), "p/a.yaml:4: rules[0].ports[1]: 70000 is not a port (1-65535)"),
        (rule("ports: []"), "p/a.yaml:4: rules[0].ports: empty ports list (omit ports to match any)"),
        (rule("request_timeout: 3 parsecs"), "p/a.yaml:4: rules[0].request_timeout: \"3 parsecs\" is not a duration (e.g. 500ms, 3s, 1m30s, 1h)"),
        (rule("connect_timeout: 0s"), "p/a.yaml:4: rules[0].connect_timeout: \"0s\" is not a valid connect_timeout (more than 0)"),
        (rule("sources: [10.0.0.0/33]"), "p/a.yaml:4: rules[0].sources[0]: \"10.0.0.0/33\" is not a CIDR, an IP address or a spiffe:// identity"),
        (rule("sources: [\"spiffe://td/ns/*/sa\"]"), "p/a.yaml:4: rules[0].sources[0]: \"spiffe://td/ns/*/sa\" is not a spiffe:// identity (exact, or ending in \"/*\")"),
        (rule("listeners: [nope]"), "p/a.yaml:4: rules[0].listeners[0]: \"nope\" is not a declared listener (none are declared)"),
        (rule("endpoints: [\"203.0.113.7:0\"]"), "p/a.yaml:4: rules[0].endpoints[0]: \"203.0.113.7:0\" is not an endpoint (ip:port or ip)"),
        (rule("foo: 1"), "p/a.yaml:4: rules[0].foo: unknown field `foo`, expected one of `name`, `hosts`, `ports`, `action`, `sources`, `listeners`, `request_timeout`, `connect_timeout`, `idle_timeout`, `endpoints`, `tls_origination`, `allow_private`, `upstream_protocol`, `ca_file`, `rate_limit`, `max_concurrent`"),
        ("rules:\n  - name: r\n    hosts: []\n".into(), "p/a.yaml:3: rules[0].hosts: empty hosts list"),
        ("rules:\n  - name: my rule\n    hosts: [a.com]\n".into(), "p/a.yaml:2: rules[0].name: \"my rule\" is not a valid name (1-253 of a-z A-Z 0-9 - _ .)"),
        ("defaults:\n  mode: deny\n  idle_timeout: 1x\n".into(), "p/a.yaml:3: defaults.idle_timeout: \"1x\" is not a duration (e.g. 500ms, 3s, 1m30s, 1h)"),
        ("defaults:\n  mode: strict\n".into(), "p/a.yaml:2: defaults.mode: unknown variant `strict`, expected one of `deny`, `allow`, `audit`"),
        ("version: 2\n".into(), "p/a.yaml:1: version: unknown field `version`, expected one of `defaults`, `listeners`, `rules`"),
        ("listeners:\n  - name: l\n    port: 0\n    protocol: http\n".into(), "p/a.yaml:3: listeners[0].port: 0 is not a port (1-65535)"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    target_port: -1\n".into(), "p/a.yaml:5: listeners[0].target_port: -1 is not a port (1-65535)"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    address: localhost\n".into(), "p/a.yaml:5: listeners[0].address: \"localhost\" is not an IP address"),
        ("listeners:\n  - name: db\n    port: 80\n    protocol: tcp\n".into(), "p/a.yaml:2: listeners[0]: tcp listener \"db\" needs forward_to (host:port)"),
        ("listeners:\n  - name: db\n    port: 80\n    protocol: tcp\n    forward_to: db.example.com\n".into(), "p/a.yaml:5: listeners[0].forward_to: \"db.example.com\" is not a destination (host:port)"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    forward_to: a.com:80\n".into(), "p/a.yaml:5: listeners[0].forward_to: forward_to is only for tcp listeners"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: quic\n".into(), "p/a.yaml:4: listeners[0].protocol: unknown variant `quic`, expected one of `http`, `tls`, `tcp`, `connect`, `dns`"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    tsl: {}\n".into(), "p/a.yaml:5: listeners[0].tsl: unknown field `tsl`, expected one of `name`, `port`, `protocol`, `address`, `target_port`, `forward_to`, `tls`, `proxy_protocol`, `check_sni`, `answer_with`, `ttl`, `on_deny`, `search_suffixes`, `auto_allocate`, `route_by`"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: tls\n    tls: {cert: c.pem, key: k.pem}\n".into(), "p/a.yaml:5: listeners[0].tls: a tls listener passes TLS through by SNI; it cannot also terminate it"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    tls: {cert: c.pem, key: k.pem, require_client_cert: true}\n".into(), "p/a.yaml:5: listeners[0].tls.require_client_cert: require_client_cert needs client_ca"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    check_sni: true\n".into(), "p/a.yaml:5: listeners[0].check_sni: check_sni is only for connect listeners"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    ttl: 1.5s\n".into(), "p/a.yaml:5: listeners[0].ttl: \"1.5s\" is not a TTL (whole seconds, at most 68 years)"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    answer_with: [gateway]\n".into(), "p/a.yaml:5: listeners[0].answer_with[0]: \"gateway\" is not an address to answer with"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    on_deny: drop\n".into(), "p/a.yaml:5: listeners[0].on_deny: unknown variant `drop`, expected `refused` or `nxdomain`"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    search_suffixes: [\"*.local\"]\n".into(), "p/a.yaml:5: listeners[0].search_suffixes[0]: \"*.local\" is not a search domain (a DNS name)"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    auto_allocate: 240.240.0.1/16\n".into(), "p/a.yaml:5: listeners[0].auto_allocate: \"240.240.0.1/16\" has host bits set; the network is 240.240.0.0/16"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    tls: {cert: c.pem, key: k.pem}\n".into(), "p/a.yaml:5: listeners[0].tls: tls is not for dns listeners"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    ttl: 30s\n".into(), "p/a.yaml:5: listeners[0].ttl: ttl is only for dns listeners"),
        ("listeners:\n  - name: l\n    port: 80\n    protocol: http\n    route_by: destination_address\n".into(), "p/a.yaml:5: listeners[0].route_by: route_by is only for tcp listeners"),
        ("listeners:\n  - name: db\n    port: 3306\n    protocol: tcp\n    route_by: destination_address\n    forward_to: db.example.com:3306\n".into(), "p/a.yaml:6: listeners[0].forward_to: a listener routed by destination_address has no forward_to"),
        ("listeners:\n  - name: d\n    port: 53\n    protocol: dns\n    auto_allocate: 10.0.0.0/30\n  - name: db\n    port: 3306\n    protocol: tcp\n    route_by: destination_address\nrules:\n  - name: r\n    hosts: [a.example, b.example, c.example]\n    ports: [3306]\n".into(), "p/a.yaml:5: listeners[0].auto_allocate: 10.0.0.0/30 has 2 addresses to allocate, and 3 TCP services need one"),
        (rule("rate_limit: {requests_per_second: 0}"), "p/a.yaml:4: rules[0].rate_limit.requests_per_second: 0 is not a rate (1 or more requests a second)"),
        (rule("rate_limit: {requests_per_second: 5, burst: -1}"), "p/a.yaml:4: rules[0].rate_limit.burst: -1 is not a burst (1 or more requests)"),
        (rule("rate_limit: {requests_per_second: 5, per: client}"), "p/a.yaml:4: rules[0].rate_limit.per: unknown variant `client`, expected `rule` or `source`"),
        (rule("max_concurrent: 0"), "p/a.yaml:4: rules[0].max_concurrent: 0 is not a limit (1 or more at once)"),
        ("rules:\n  - name: r\n    hosts: [a.com]\n    ports: [http]\n".into(), "p/a.yaml:4: rules[0].ports[0]: invalid type: string \"http\", expected a number"),
        ("rules:\n  - name: r\n".into(), "p/a.yaml:2: rules[0]: missing field `hosts`"),
    ];
    for (text, want) in cases {
        assert_eq!(one_error(&text), want, "for:\n{text}");
    }
}

#[test]
fn host_patterns_are_checked_and_canonicalised() {
    let bad = [
        (
            "foo.*.com",
            "\"foo.*.com\" has a misplaced wildcard (only a leading \"*.\" or a lone \"*\")",
        ),
        (
            "*foo.com",
            "\"*foo.com\" has a misplaced wildcard (only a leading \"*.\" or a lone \"*\")",
        ),
        (
            "*.*.com",
            "\"*.*.com\" has a misplaced wildcard (only a leading \"*.\" or a lone \"*\")",
        ),
        (
            "example.com:443",
            "\"example.com:443\" contains a port (list destination ports in ports)",
        ),
        (
            "[::1]:443",
            "\"[::1]:443\" contains a port (list destination ports in ports)",
        ),
        ("exa mple.com", "\"exa mple.com\" is not a valid host name"),
        ("a..com", "\"a..com\" is not a valid host name"),
        (
            "127.1",
            "\"127.1\" is neither a host name nor an IP address in standard form",
        ),
        (
            "0x7f.1",
            "\"0x7f.1\" is neither a host name nor an IP address in standard form",
        ),
        ("", "empty host"),
    ];
    for (host, want) in bad {
        let text = format!("rules:\n  - name: r\n    hosts:\n      - ok.com\n      - {host:?}\n");
        assert_eq!(
            one_error(&text),
            format!("p/a.yaml:5: rules[0].hosts[1]: {want}")
        );
    }
    let p = policy("rules:\n  - name: r\n    hosts: [API.Example.COM., \"*.Bücher.example\", \"*\", \"[2001:DB8::1]\", 10.0.0.1, api.example.com]\n");
    let shown: Vec<String> = p.rules()[0].hosts.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "api.example.com",
            "*.xn--bcher-kva.example",
            "*",
            "2001:db8::1",
            "10.0.0.1"
        ]
    );
}

#[test]
fn all_errors_of_all_files_are_reported_at_once_in_order() {
    let all = errors(&[
        ("p/a.yaml", "rules:\n  - name: a\n    hosts: [a.com]\n    ports: [0]\n  - name: b\n    hosts: [\"b.*\"]\n    connect_timeout: soon\n"),
        ("p/b.yaml", "rules: [\n"),
        ("p/c.yaml", "rules:\n  - name: a\n    hosts: [c.com]\n    listeners: [x]\n"),
    ]);
    assert_eq!(all, [
        "p/a.yaml:4: rules[0].ports[0]: 0 is not a port (1-65535)",
        "p/a.yaml:6: rules[1].hosts[0]: \"b.*\" has a misplaced wildcard (only a leading \"*.\" or a lone \"*\")",
        "p/a.yaml:7: rules[1].connect_timeout: \"soon\" is not a duration (e.g. 500ms, 3s, 1m30s, 1h)",
        "p/b.yaml:2: did not find expected node content",
        "p/c.yaml:2: rules[0].name: rule name \"a\" already used in p/a.yaml:2",
        "p/c.yaml:4: rules[0].listeners[0]: \"x\" is not a declared listener (none are declared)",
    ]);
}

#[test]
fn files_merge_with_unique_names_and_one_defaults() {
    let all = errors(&[
        ("a.yaml", "defaults:\n  mode: allow\nlisteners:\n  - name: http\n    port: 8080\n    protocol: http\n"),
        ("b.yaml", "\ndefaults:\n  mode: deny\nlisteners:\n  - name: http\n    port: 9090\n    protocol: http\n  - name: other\n    port: 8080\n    protocol: connect\n    address: 127.0.0.1\n"),
    ]);
    assert_eq!(all, [
        "b.yaml:2: defaults: defaults already given in a.yaml:1; a set has one",
        "b.yaml:5: listeners[0].name: listener name \"http\" already used in a.yaml:4",
        "b.yaml:9: listeners[1].port: 127.0.0.1 port 8080 overlaps listener \"http\" on 0.0.0.0 port 8080 (a.yaml:4)",
    ]);

    let all = errors(&[
        ("a.yaml", LISTENERS),
        (
            "b.yaml",
            "rules:\n  - name: r\n    hosts: [a.com]\n    listeners: [tls, web]\n",
        ),
    ]);
    assert_eq!(
        all,
        ["b.yaml:4: rules[0].listeners[1]: \"web\" is not a declared listener (declared: http, tls)"]
    );

    let set = files(&[
        ("a.yaml", LISTENERS),
        ("b.yaml", "defaults:\n  mode: audit\n  connect_timeout: 2s\nrules:\n  - name: a\n    hosts: [a.com]\n    listeners: [tls]\n"),
        ("c.yaml", "rules:\n  - name: c\n    hosts: [c.com]\n"),
        ("d.yaml", "# nothing yet\n"),
    ]);
    let p = compile(&set).unwrap();
    assert_eq!(p.defaults().mode, Mode::Audit);
    assert_eq!(p.defaults().connect_timeout, Duration::from_secs(2));
    let names: Vec<&str> = p.listeners().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["http", "tls"]);
    assert_eq!(p.listener("tls").map(|l| l.target_port), Some(443));
    let names: Vec<&str> = p.rules().iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(p.sources(), set.as_slice());
}

#[test]
fn an_empty_set_is_the_empty_deny_policy() {
    for set in [
        vec![],
        files(&[("a.yaml", "")]),
        files(&[("a.yaml", "---\n")]),
    ] {
        let p = compile(&set).unwrap();
        assert_eq!(p.defaults().mode, Mode::Deny);
        assert!(p.rules().is_empty() && p.listeners().is_empty());
    }
}

#[test]
fn listeners_get_their_defaults() {
    let p = policy("listeners:\n  - name: proxy\n    port: 3128\n    protocol: connect\n  - name: db\n    port: 13306\n    protocol: tcp\n    address: \"::1\"\n    forward_to: DB.example.com:3306\n");
    let proxy = p.listener("proxy").unwrap();
    assert_eq!(
        (proxy.address, proxy.target_port),
        (IpAddr::from([0, 0, 0, 0]), 80)
    );
    let db = p.listener("db").unwrap();
    assert_eq!(db.address, "::1".parse::<IpAddr>().unwrap());
    assert_eq!(
        db.forward_to,
        Some((parse_host("db.example.com").unwrap(), 3306))
    );
}

#[test]
fn routes_are_the_rules_values_over_the_defaults() {
    let p = policy("defaults:\n  connect_timeout: 2s\n  request_timeout: 10s\n  allow_private: true\nrules:\n  - name: a\n    hosts: [a.com]\n    request_timeout: 1m30s\n    idle_timeout: 500ms\n    endpoints: [\"203.0.113.7:8080\", 203.0.113.8, \"[2001:db8::1]\"]\n    tls_origination: true\n    allow_private: false\n  - name: b\n    hosts: [b.com]\n    request_timeout: 0s\n");
    let a = &p.rules()[0].route;
    assert_eq!(a.connect_timeout, Duration::from_secs(2));
    assert_eq!(a.request_timeout, Some(Duration::from_secs(90)));
    assert_eq!(a.idle_timeout, Duration::from_millis(500));
    assert!(a.tls_origination && !a.allow_private);
    let addrs: Vec<SocketAddr> = a.endpoint_addrs(443).collect();
    let want: Vec<SocketAddr> = ["203.0.113.7:8080", "203.0.113.8:443", "[2001:db8::1]:443"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(addrs, want);
    let b = &p.rules()[1].route;
    assert_eq!((b.request_timeout, b.allow_private), (None, true));
    assert_eq!(b.idle_timeout, Duration::from_secs(3600));
    assert_eq!(
        p.default_route().request_timeout,
        Some(Duration::from_secs(10))
    );
}

#[test]
fn load_dir_reads_top_level_yaml_sorted_and_skips_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("b.yml"), "rules:\n  - name: b\n    hosts: [b.com]\n").unwrap();
    std::fs::write(
        d.join("a.yaml"),
        "rules:\n  - name: a\n    hosts: [a.com]\n",
    )
    .unwrap();
    std::fs::write(d.join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::write(d.join("notes.txt"), "garbage: [").unwrap();
    std::fs::create_dir_all(d.join(".history/3")).unwrap();
    std::fs::write(d.join(".history/3/a.yaml"), "garbage: [").unwrap();
    std::fs::create_dir(d.join("sub.yaml")).unwrap();
    let p = load_dir(d).unwrap();
    let names: Vec<&str> = p.rules().iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(p.sources()[0].name, d.join("a.yaml").display().to_string());

    std::fs::write(
        d.join("c.yaml"),
        "rules:\n  - name: a\n    hosts: [c.com]\n",
    )
    .unwrap();
    let e = load_dir(d).unwrap_err().to_string();
    let a = d.join("a.yaml").display().to_string();
    assert!(
        e.ends_with(&format!(
            "c.yaml:2: rules[0].name: rule name \"a\" already used in {a}:2"
        )),
        "{e}"
    );

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(load_dir(empty.path()).unwrap().defaults().mode, Mode::Deny);
}
