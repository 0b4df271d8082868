//! Audit lines of the `istio`, `envoy` and `json` formats read back: what was asked for
//! and what was decided.

use std::net::IpAddr;

use super::{Outcome, Seen};

/// Reads one line of the `istio`, `envoy` or `json` format.
pub fn parse_line(line: &str) -> Option<Seen> {
    if line.starts_with('{') {
        return parse_json(line);
    }
    let t = tokens(line);
    match t.len() {
        22 => Some(seen_from(Fields {
            time: t[0],
            request: t[1],
            details: [t[4], t[5]],
            authority: t[14],
            upstream: t[15],
            cluster: t[16],
            source: t[19],
            sni: t[20],
        })?),
        13 => Some(seen_from(Fields {
            time: t[0],
            request: t[1],
            details: ["", ""],
            authority: t[11],
            upstream: t[12],
            cluster: "-",
            source: "-",
            sni: "-",
        })?),
        _ => None,
    }
}

/// The fields a line is judged by, `-` where unset.
struct Fields<'a> {
    time: &'a str,
    request: &'a str,
    details: [&'a str; 2],
    authority: &'a str,
    upstream: &'a str,
    cluster: &'a str,
    source: &'a str,
    sni: &'a str,
}

fn seen_from(f: Fields<'_>) -> Option<Seen> {
    let set = |s: &str| (!s.is_empty() && s != "-").then(|| s.to_owned());
    let (cluster_port, cluster_host) = match f.cluster.strip_prefix("outbound|") {
        Some(rest) => {
            let (port, host) = rest.split_once("||")?;
            (port.parse::<u16>().ok(), set(host))
        }
        None => (None, None),
    };
    let (auth_host, auth_port) = match set(f.authority) {
        Some(a) => split_authority(&a),
        None => (None, None),
    };
    let sni = set(f.sni);
    let host = auth_host.or(sni.clone()).or(cluster_host)?;
    let tunnel = f.request == "- - -";
    let port = auth_port.or(cluster_port).or(if sni.is_some() {
        Some(443)
    } else if tunnel {
        None
    } else {
        Some(80)
    })?;
    let outcome = if f.details == ["", ""] {
        Outcome::Unknown
    } else if f.details.iter().any(|d| d.starts_with("audit_would_deny")) {
        Outcome::WouldDeny
    } else if f
        .details
        .iter()
        .any(|d| d.starts_with("rbac_access_denied"))
    {
        Outcome::Denied
    } else if f
        .details
        .iter()
        .any(|d| d.starts_with("destination_address_refused"))
    {
        Outcome::Refused
    } else {
        Outcome::Allowed
    };
    Some(Seen {
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        port,
        source: set(f.source).and_then(|s| addr_ip(&s)),
        outcome,
        upstream: set(f.upstream).and_then(|s| addr_ip(&s)),
        time: f.time.to_owned(),
    })
}

fn parse_json(line: &str) -> Option<Seen> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or("-");
    let request = if s("method") == "-" { "- - -" } else { "" };
    let details = [
        s("response_code_details"),
        s("connection_termination_details"),
    ];
    seen_from(Fields {
        time: s("start_time"),
        request,
        details,
        authority: s("authority"),
        upstream: s("upstream_host"),
        cluster: s("upstream_cluster"),
        source: s("downstream_remote_address"),
        sni: s("requested_server_name"),
    })
}

/// `host`, `host:port`, `[v6]:port`.
fn split_authority(a: &str) -> (Option<String>, Option<u16>) {
    if let Some(rest) = a.strip_prefix('[') {
        let (ip, port) = rest.split_once(']').unwrap_or((rest, ""));
        return (
            Some(ip.to_owned()),
            port.strip_prefix(':').and_then(|p| p.parse().ok()),
        );
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (Some(h.to_owned()), p.parse().ok()),
        _ => (Some(a.to_owned()), None),
    }
}

fn addr_ip(s: &str) -> Option<IpAddr> {
    s.parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

/// Splits a text line into fields: `[...]` and `"..."` are one field each (values never
/// hold a `"`: the gateway escapes it).
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return out;
        }
        let (close, skip) = match rest.as_bytes()[0] {
            b'[' => (']', 1),
            b'"' => ('"', 1),
            _ => (' ', 0),
        };
        let body = &rest[skip..];
        let end = body.find(close).unwrap_or(body.len());
        out.push(&body[..end]);
        rest = body.get(end + 1..).unwrap_or("");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const DENIED_HTTP: &str = r#"[2026-11-24T11:46:23.596Z] "GET / HTTP/1.1" 403 - rbac_access_denied_matched_policy[none] - "-" 0 19 0 - "-" "curl/8" "-" "api.example.com" "-" - - 127.0.0.1:8080 127.0.0.1:50000 - -"#;
    pub(crate) const WOULD_TLS: &str = r#"[2026-11-24T11:46:24.000Z] "- - -" 0 - audit_would_deny[none] - "-" 10 20 5 - "-" "-" "-" "-" "10.1.2.3:443" outbound|443||secure.example.com 10.0.0.1:4000 10.0.0.1:8443 10.0.0.9:50001 secure.example.com -"#;
    const ENVOY: &str = r#"[2026-11-24T11:46:25.000Z] "GET /x HTTP/1.1" 200 - 0 2 1 1 "-" "curl" "-" "b.example.com:8080" "203.0.113.9:8080""#;

    #[test]
    fn reads_the_three_formats() {
        let d = parse_line(DENIED_HTTP).unwrap();
        assert_eq!(
            (d.host.as_str(), d.port, d.outcome),
            ("api.example.com", 80, Outcome::Denied)
        );
        assert_eq!(d.source, Some("127.0.0.1".parse().unwrap()));
        let w = parse_line(WOULD_TLS).unwrap();
        assert_eq!(
            (w.host.as_str(), w.port, w.outcome),
            ("secure.example.com", 443, Outcome::WouldDeny)
        );
        let e = parse_line(ENVOY).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.outcome),
            ("b.example.com", 8080, Outcome::Unknown)
        );
        let json = r#"{"start_time":"2026-11-24T11:46:26.000Z","method":"GET","response_code_details":"audit_would_deny[none]","connection_termination_details":null,"authority":"c.example.com","upstream_host":"127.0.0.1:80","upstream_cluster":"outbound|80||c.example.com","downstream_remote_address":"10.0.0.5:1234","requested_server_name":null}"#;
        let j = parse_line(json).unwrap();
        assert_eq!(
            (j.host.as_str(), j.port, j.outcome),
            ("c.example.com", 80, Outcome::WouldDeny)
        );
        assert_eq!(parse_line("not an audit line"), None);
    }
}
