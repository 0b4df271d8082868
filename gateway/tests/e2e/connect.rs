//! The `connect` listener as forward-proxy clients use it: curl `-x`, Python requests
//! with `HTTPS_PROXY`, and a raw CONNECT with rustls inside; refusals (host, port, IP
//! literal, SNI mismatch), absolute-form HTTP and origin-form requests. Every case
//! checks its audit line.

mod sni;
mod support;

use tokio::io::AsyncReadExt;

use crate::common::IstioLine;
use support::{command, connect, run, tls_get, Proxy, POLICY};

#[tokio::test]
async fn curl_x_reaches_a_tls_upstream_through_connect() {
    let proxy = Proxy::start(POLICY).await;
    let url = format!("https://api.example.com:{}/get", proxy.tls.port());
    let out = run(command("curl")
        .args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--cacert")
        .arg(&proxy.ca_file)
        .arg("-x")
        .arg(format!("http://{}", proxy.addr("proxy")))
        .arg(&url))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.ends_with("\n200"), "{stdout}");
    assert!(stdout.contains("\"path\":\"/get\""), "{stdout}");
    assert_eq!(
        proxy.tls.server_names(),
        vec![Some("api.example.com".to_owned())]
    );

    let line = proxy.audit(1).await;
    assert_eq!((line.method.as_str(), line.path.as_str()), ("CONNECT", "-"));
    assert_eq!(line.protocol, "HTTP/1.1");
    assert_eq!(line.code, "200");
    assert_eq!(line.flags, "-");
    assert_eq!(line.details, "via_upstream");
    assert_eq!(line.termination, "-");
    assert_eq!(
        line.authority,
        format!("api.example.com:{}", proxy.tls.port())
    );
    assert_eq!(line.upstream_host, proxy.tls.addr().to_string());
    assert_eq!(
        line.cluster,
        format!("outbound|{}||api.example.com", proxy.tls.port())
    );
    assert_eq!(line.sni, "api.example.com");
    assert_eq!(line.route, "api");
    assert!(line.user_agent.starts_with("curl/"), "{line:?}");
    assert!(
        line.bytes_received.parse::<u64>().unwrap() > 200,
        "{line:?}"
    );
    assert!(line.bytes_sent.parse::<u64>().unwrap() > 500, "{line:?}");
    assert_eq!(line.downstream_local, proxy.addr("proxy").to_string());
}

#[tokio::test]
async fn python_requests_with_https_proxy_reaches_a_tls_upstream() {
    let proxy = Proxy::start(POLICY).await;
    let script = r#"
import sys
try:
    import requests
    r = requests.get(sys.argv[1], verify=sys.argv[2], timeout=10)
    print(r.status_code)
    print(r.text)
except ImportError:
    import ssl, urllib.request
    ctx = ssl.create_default_context(cafile=sys.argv[2])
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(), urllib.request.HTTPSHandler(context=ctx))
    with opener.open(sys.argv[1], timeout=10) as r:
        print(r.status)
        print(r.read().decode())
"#;
    let url = format!("https://api.example.com:{}/python", proxy.tls.port());
    let mut command = command("python3");
    command.arg("-c").arg(script).arg(&url).arg(&proxy.ca_file);
    let proxy_url = format!("http://{}", proxy.addr("proxy"));
    let out = run(&mut command).await;
    assert!(
        !out.status.success(),
        "without HTTPS_PROXY the name does not resolve"
    );
    let out = run(command.env("HTTPS_PROXY", &proxy_url)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("200\n"), "{stdout}");
    assert!(stdout.contains("/python"), "{stdout}");
    let line = proxy.audit(1).await;
    assert_eq!(
        (line.method.as_str(), line.code.as_str()),
        ("CONNECT", "200")
    );
    assert_eq!(
        line.authority,
        format!("api.example.com:{}", proxy.tls.port())
    );
    assert_eq!(line.sni, "api.example.com");
}

#[tokio::test]
async fn rustls_inside_a_raw_connect_and_the_tunnel_line_counts_its_bytes() {
    let proxy = Proxy::start(POLICY).await;
    let target = format!("api.example.com:{}", proxy.tls.port());
    let (stream, head) = connect(proxy.addr("proxy"), &target, "User-Agent: raw\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let response = tls_get(&proxy, stream, "api.example.com").await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let line = proxy.audit(1).await;
    assert_eq!(line.code, "200");
    assert_eq!(line.user_agent, "raw");
    assert_eq!(line.sni, "api.example.com");
    let received: u64 = line.bytes_received.parse().unwrap();
    let sent: u64 = line.bytes_sent.parse().unwrap();
    assert!(received > 100 && sent > response.len() as u64, "{line:?}");
}

#[tokio::test]
async fn connects_the_policy_does_not_allow_get_403_with_the_reason() {
    let proxy = Proxy::start(POLICY).await;
    let gw = proxy.addr("proxy");
    let cases = [
        "evil.example.com:443".to_owned(),
        "api.example.com:443".to_owned(),
        format!("127.0.0.1:{}", proxy.tls.port()),
    ];
    for (i, target) in cases.iter().enumerate() {
        let (mut stream, head) = connect(gw, target, "Connection: close\r\n").await;
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body).await;
        assert!(
            body.contains(&format!("egress to {target} denied")),
            "{body}"
        );
        let line = proxy.audit(i + 1).await;
        assert_eq!(
            (line.method.as_str(), line.code.as_str()),
            ("CONNECT", "403")
        );
        assert_eq!(line.details, "rbac_access_denied_matched_policy[none]");
        assert_eq!(line.authority, *target);
        assert_eq!(line.upstream_host, "-");
    }
    assert_eq!(proxy.tls.connection_count(), 0);
}

#[tokio::test]
async fn ip_literals_need_a_rule_that_lists_them_even_in_allow_mode() {
    let policy = r#"
defaults: {mode: allow, allow_private: true}
listeners: [{name: proxy, port: 3128, protocol: connect}]
rules:
  - {name: by-address, hosts: [127.0.0.1], ports: [{TLS}]}
"#;
    let proxy = Proxy::start(policy).await;
    let gw = proxy.addr("proxy");
    let (_tunnel, head) = connect(gw, &format!("127.0.0.1:{}", proxy.tls.port()), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let target = format!("127.0.0.1:{}", proxy.plain.port());
    let (_refused, head) = connect(gw, &target, "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (_by_name, head) =
        connect(gw, &format!("api.example.com:{}", proxy.plain.port()), "").await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "mode allow lets names out: {head}"
    );
    let refused = proxy
        .gateway
        .wait_audit_lines(1)
        .await
        .iter()
        .map(|l| IstioLine::parse(l))
        .find(|l| l.code == "403")
        .expect("the refusal's line");
    assert_eq!(refused.authority, target);
    assert_eq!(refused.details, "rbac_access_denied_matched_policy[none]");
}

#[tokio::test]
async fn absolute_form_requests_are_forwarded_like_the_http_listener() {
    let proxy = Proxy::start(POLICY).await;
    let url = format!("http://api.example.com:{}/get?a=1", proxy.plain.port());
    let out = run(command("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg("-x")
        .arg(format!("http://{}", proxy.addr("proxy")))
        .arg(&url))
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let seen = proxy.plain.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/get?a=1");
    assert_eq!(
        seen[0].header("host"),
        Some(format!("api.example.com:{}", proxy.plain.port()).as_str())
    );
    assert!(seen[0].header("proxy-connection").is_none());
    let line = proxy.audit(1).await;
    assert_eq!(
        (line.method.as_str(), line.path.as_str()),
        ("GET", "/get?a=1")
    );
    assert_eq!(
        (line.code.as_str(), line.details.as_str()),
        ("200", "via_upstream")
    );
    assert_eq!(
        line.authority,
        format!("api.example.com:{}", proxy.plain.port())
    );
    assert_eq!(line.route, "api");
}

#[tokio::test]
async fn origin_form_and_bad_connect_targets_are_400() {
    let proxy = Proxy::start(POLICY).await;
    let gw = proxy.addr("proxy");
    let response = egress_testkit::http_get(gw, "api.example.com", "/get")
        .await
        .unwrap();
    assert_eq!(response.status, Some(400), "{}", response.text);
    let line = proxy.audit(1).await;
    assert_eq!((line.code.as_str(), line.flags.as_str()), ("400", "DPE"));
    assert_eq!(line.details, "origin_form_on_proxy");

    let (_stream, head) = connect(gw, "api.example.com", "").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let line = proxy.audit(2).await;
    assert_eq!(
        (line.method.as_str(), line.code.as_str()),
        ("CONNECT", "400")
    );
    assert_eq!(line.details, "invalid_connect_target");
    assert_eq!(proxy.plain.request_count() + proxy.tls.request_count(), 0);
}

#[tokio::test]
async fn an_upstream_that_refuses_is_503_uf() {
    let proxy = Proxy::start(POLICY).await;
    let target = format!("api.example.com:{}", proxy.closed.port());
    let (_stream, head) = connect(proxy.addr("proxy"), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let line = proxy.audit(1).await;
    assert_eq!((line.code.as_str(), line.flags.as_str()), ("503", "UF"));
    assert_eq!(
        line.details,
        "upstream_reset_before_response_started{connection_failure}"
    );
    assert_eq!(line.transport_failure, "connection_refused");
    assert_eq!(line.upstream_host, proxy.closed.addr().to_string());
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_the_idle_timeout() {
    let policy = r#"
defaults: {mode: deny, allow_private: true}
listeners: [{name: proxy, port: 3128, protocol: connect, check_sni: true}]
rules:
  - {name: api, hosts: [api.example.com], idle_timeout: 300ms}
"#;
    let proxy = Proxy::start(policy).await;
    let target = format!("api.example.com:{}", proxy.tls.port());
    let (mut stream, head) = connect(proxy.addr("proxy"), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut rest),
    )
    .await;
    assert!(closed.is_ok(), "the gateway closes the idle tunnel");
    let line = proxy.audit(1).await;
    assert_eq!(
        (line.code.as_str(), line.termination.as_str()),
        ("200", "idle_timeout")
    );
    assert!(line.duration_ms() >= 300, "{line:?}");
}

#[tokio::test]
async fn a_long_connect_tunnel_writes_interim_lines() {
    let proxy = support::Proxy::start_with(support::POLICY, |c| {
        c.audit.flush_interval = std::time::Duration::from_millis(150);
    })
    .await;
    let target = format!("api.example.com:{}", proxy.plain.port());
    let (mut stream, head) = support::connect(proxy.addr("open"), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let request = format!("GET /delay/0.6 HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with(b"HTTP/1.1 200"));
    // The upstream closed its side; the tunnel ends when the client closes its own.
    drop(stream);
    let lines = proxy.gateway.wait_audit_lines(2).await;
    let parsed: Vec<IstioLine> = lines.iter().map(|l| IstioLine::parse(l)).collect();
    let interim = parsed
        .iter()
        .find(|l| l.details == "tunnel_interim")
        .unwrap_or_else(|| panic!("an interim line while the tunnel lasted: {lines:#?}"));
    assert_eq!(interim.method, "CONNECT");
    assert_eq!(interim.authority, target);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let last = loop {
        let lines = proxy.gateway.audit_lines();
        if let Some(last) = lines
            .iter()
            .map(|l| IstioLine::parse(l))
            .find(|l| l.details == "via_upstream")
        {
            break last;
        }
        assert!(std::time::Instant::now() < end, "a final line: {lines:#?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(last.bytes_sent.parse::<u64>().unwrap() >= interim.bytes_sent.parse::<u64>().unwrap());
}
