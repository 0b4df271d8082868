//! Configurations of the proxies a comparison starts: the peers' templates from
//! `loadtest/peers/` (compiled in, so the binary works from any directory) rendered with
//! the addresses of one run, and the gateway's policy for the same allowlist.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::scenario::ALLOWED_HOST;

/// `loadtest/peers/nginx.conf.tmpl`.
pub const NGINX: &str = include_str!("../peers/nginx.conf.tmpl");
/// `loadtest/peers/haproxy.cfg.tmpl`.
pub const HAPROXY: &str = include_str!("../peers/haproxy.cfg.tmpl");
/// `loadtest/peers/squid.conf.tmpl`.
pub const SQUID: &str = include_str!("../peers/squid.conf.tmpl");

/// A template that does not render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{name}}` with no value.
    #[error("template placeholder {{{{{0}}}}} has no value")]
    Unknown(String),
    /// `{{` with no `}}`.
    #[error("template has an unclosed {{{{ at byte {0}")]
    Unclosed(usize),
}

/// Replaces every `{{name}}` in `template` with its value.
///
/// Fails on a placeholder without a value or an unclosed `{{`.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or(TemplateError::Unclosed(offset + start))?;
        let name = after[..end].trim();
        let value = values
            .get(name)
            .ok_or_else(|| TemplateError::Unknown(name.to_owned()))?;
        out.push_str(value);
        let consumed = start + 2 + end + 2;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The addresses a proxy configuration is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The proxy's HTTP listener.
    pub http: SocketAddr,
    /// The proxy's h2c listener (the gateway serves h2c on `http`).
    pub h2c: SocketAddr,
    /// The proxy's TLS passthrough listener.
    pub tls: SocketAddr,
    /// The proxy's CONNECT listener.
    pub connect: SocketAddr,
    /// The stub's HTTP/1.1 and h2c upstream.
    pub upstream_http: SocketAddr,
    /// The stub's TLS upstream.
    pub upstream_tls: SocketAddr,
}

/// The values of every placeholder the peers' templates use.
pub fn values(a: &Addresses, dir: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("dir", dir.to_owned()),
        ("allowed_host", ALLOWED_HOST.to_owned()),
        ("http", a.http.to_string()),
        ("h2c", a.h2c.to_string()),
        ("tls", a.tls.to_string()),
        ("connect", a.connect.to_string()),
        ("upstream_http", a.upstream_http.to_string()),
        ("upstream_http_ip", a.upstream_http.ip().to_string()),
        ("upstream_http_port", a.upstream_http.port().to_string()),
        ("upstream_tls", a.upstream_tls.to_string()),
    ])
}

/// Which gateway listeners a policy declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayListeners {
    /// An http listener (HTTP/1.1 and h2c).
    pub http: bool,
    /// A tls listener.
    pub tls: bool,
    /// A connect listener.
    pub connect: bool,
}

impl GatewayListeners {
    /// The names of the listeners declared, as [`gateway_policy`] names them.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.http, "http"),
            (self.tls, "tls"),
            (self.connect, "connect"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// The gateway's policy: the same allowlist as the peers (only [`ALLOWED_HOST`], to the
/// stub upstreams on loopback, so `allow_private`), deny by default, for the listeners
/// asked for.
pub fn gateway_policy(a: &Addresses, listeners: GatewayListeners) -> String {
    let mut out = String::from("defaults:\n  mode: deny\n\nlisteners:\n");
    let listener = |name: &str, addr: SocketAddr, protocol: &str| {
        format!(
            "  - {{name: {name}, address: \"{}\", port: {}, protocol: {protocol}}}\n",
            addr.ip(),
            addr.port()
        )
    };
    let rule = |name: &str, listener: &str, endpoint: String| {
        format!(
            "  - name: {name}\n    hosts: [{ALLOWED_HOST}]\n    listeners: [{listener}]\n    endpoints: [\"{endpoint}\"]\n    allow_private: true\n"
        )
    };
    let mut rules = String::from("\nrules:\n");
    if listeners.http {
        out.push_str(&listener("http", a.http, "http"));
        rules.push_str(&rule("stub-http", "http", a.upstream_http.to_string()));
    }
    if listeners.tls {
        out.push_str(&listener("tls", a.tls, "tls"));
        rules.push_str(&rule("stub-tls", "tls", a.upstream_tls.to_string()));
    }
    if listeners.connect {
        out.push_str(&listener("connect", a.connect, "connect"));
        // The CONNECT target names the stub's port; the endpoint fixes only the address.
        rules.push_str(&rule(
            "stub-connect",
            "connect",
            a.upstream_http.ip().to_string(),
        ));
    }
    out.push_str(&rules);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses() -> Addresses {
        let a = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        Addresses {
            http: a(1001),
            h2c: a(1002),
            tls: a(1003),
            connect: a(1004),
            upstream_http: a(2001),
            upstream_tls: a(2002),
        }
    }

    #[test]
    fn render_fills_placeholders_and_refuses_unknown_ones() {
        let values = BTreeMap::from([("a", "1".to_owned()), ("b", "two".to_owned())]);
        assert_eq!(
            render("x {{a}} y {{ b }}{{a}}", &values).unwrap(),
            "x 1 y two1"
        );
        assert_eq!(
            render("{{c}}", &values),
            Err(TemplateError::Unknown("c".into()))
        );
        assert_eq!(render("ab {{a", &values), Err(TemplateError::Unclosed(3)));
        assert_eq!(
            TemplateError::Unknown("c".into()).to_string(),
            "template placeholder {{c}} has no value"
        );
    }

    #[test]
    fn every_peer_template_renders_completely() {
        let values = values(&addresses(), "/tmp/run");
        for (name, template) in [("nginx", NGINX), ("haproxy", HAPROXY), ("squid", SQUID)] {
            let text = render(template, &values).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(!text.contains("{{"), "{name}");
            assert!(text.contains("allowed.test"), "{name}");
            assert!(text.contains("/tmp/run/access.log"), "{name}: access log");
        }
        let nginx = render(NGINX, &values).unwrap();
        assert!(nginx.contains("listen 127.0.0.1:1002 http2;"));
        assert!(nginx.contains("server 127.0.0.1:2001;"));
        assert!(nginx.contains("worker_processes 1;"));
        let haproxy = render(HAPROXY, &values).unwrap();
        assert!(haproxy.contains("nbthread 1"));
        assert!(haproxy.contains("server stub 127.0.0.1:2002"));
        let squid = render(SQUID, &values).unwrap();
        assert!(squid.contains("cache_peer 127.0.0.1 parent 2001 0"));
        assert!(squid.contains("http_port 127.0.0.1:1004 name=forward"));
    }

    #[test]
    fn gateway_policy_declares_only_the_listeners_asked_for() {
        let http_only = GatewayListeners {
            http: true,
            tls: false,
            connect: false,
        };
        let p = gateway_policy(&addresses(), http_only);
        assert!(p.contains("{name: http, address: \"127.0.0.1\", port: 1001, protocol: http}"));
        assert!(p.contains("endpoints: [\"127.0.0.1:2001\"]"));
        assert!(!p.contains("protocol: tls") && !p.contains("protocol: connect"));
        let all = GatewayListeners {
            http: true,
            tls: true,
            connect: true,
        };
        let p = gateway_policy(&addresses(), all);
        assert!(p.contains("port: 1003, protocol: tls"));
        assert!(p.contains("endpoints: [\"127.0.0.1:2002\"]"));
        assert!(p.contains("name: stub-connect"));
        assert!(p.contains("endpoints: [\"127.0.0.1\"]"));
        // The gateway's own loader accepts it: three rules, three listeners.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.yaml"), &p).unwrap();
        let policy = egress_gateway::policy::load_dir(dir.path()).unwrap();
        assert_eq!(policy.rules().len(), 3);
    }
}
