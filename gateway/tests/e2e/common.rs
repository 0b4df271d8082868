//! What every end-to-end test needs: a gateway in front of a stub upstream, names that
//! resolve through a test DNS server, and audit lines parsed field by field.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use egress_gateway::testing::TestGateway;
use egress_testkit::{StubUpstream, TestDns};

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A gateway, a stub upstream and a DNS server where `api.example.com` and
/// `*.test.example` names point at the stub's loopback address.
pub struct Scenario {
    pub gateway: TestGateway,
    pub upstream: StubUpstream,
    pub dns: TestDns,
}

impl Scenario {
    /// Starts the parts; `policy` may use `{PORT}` for the stub upstream's port.
    pub async fn start(policy: &str) -> Scenario {
        Self::start_with(policy, "istio").await
    }

    /// As [`Scenario::start`], with an audit format.
    pub async fn start_with(policy: &str, audit_format: &str) -> Scenario {
        let upstream = StubUpstream::start().await;
        let dns = TestDns::start().await;
        for name in [
            "api.example.com",
            "other.example.com",
            "a.test.example",
            "b.a.test.example",
        ] {
            dns.set(name, [LOOPBACK]);
        }
        let policy = policy.replace("{PORT}", &upstream.port().to_string());
        let gateway = TestGateway::builder(&policy)
            .dns(vec![dns.addr()])
            .audit_format(audit_format)
            .start()
            .await;
        Scenario {
            gateway,
            upstream,
            dns,
        }
    }

    /// The `http` listener's address.
    pub fn http(&self) -> SocketAddr {
        self.gateway.addr("http")
    }

    /// `host:port` of the stub under a name.
    pub fn authority(&self, name: &str) -> String {
        format!("{name}:{}", self.upstream.port())
    }

    /// Sends one `GET path` with `Host: host` and `Connection: close`, returns the raw
    /// response.
    pub async fn get(&self, host: &str, path: &str) -> egress_testkit::RawResponse {
        egress_testkit::http_get(self.http(), host, path)
            .await
            .expect("connect to the gateway")
    }

    /// Waits for the `n`th audit line and parses it as the istio format.
    pub async fn audit(&self, n: usize) -> IstioLine {
        let lines = self.gateway.wait_audit_lines(n).await;
        assert!(lines.len() >= n, "expected {n} audit lines, got {lines:#?}");
        IstioLine::parse(&lines[n - 1])
    }
}

/// A policy whose `http` listener allows `hosts` on any port, with private addresses
/// allowed (the stub upstream lives on loopback).
pub fn allow_policy(hosts: &str) -> String {
    format!(
        r#"
defaults: {{mode: deny, allow_private: true}}
listeners: [{{name: http, port: 8080, protocol: http}}]
rules:
  - name: allowed
    hosts: {hosts}
"#
    )
}

/// Splits an access-log line into its fields: `[...]`, `"..."` and bare words.
pub fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let (field, tail) = if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').expect("unterminated [");
            (&rest[..end + 2], &inner[end + 1..])
        } else if let Some(inner) = rest.strip_prefix('"') {
            let end = inner.find('"').expect("unterminated quote");
            (&rest[..end + 2], &inner[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        out.push(field.to_owned());
        rest = tail.strip_prefix(' ').unwrap_or(tail);
    }
    out
}

fn unquote(field: &str) -> String {
    field
        .strip_prefix('"')
        .and_then(|f| f.strip_suffix('"'))
        .unwrap_or_else(|| panic!("{field:?} should be quoted"))
        .to_owned()
}

/// Checks START_TIME as Envoy prints it: `[2026-11-24T11:46:23.596Z]`.
pub fn assert_start_time(field: &str) {
    let inner = field.trim_start_matches('[').trim_end_matches(']');
    let b = inner.as_bytes();
    let shape_ok = inner.len() == 24
        && field.starts_with('[')
        && field.ends_with(']')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z'
        && inner
            .char_indices()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 23) || c.is_ascii_digit());
    assert!(
        shape_ok,
        "START_TIME {field:?} is not like [2026-11-24T11:46:23.596Z]"
    );
}

/// One line of Istio's TEXT access-log format, field by field.
#[derive(Debug, Clone)]
pub struct IstioLine {
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub code: String,
    pub flags: String,
    pub details: String,
    pub termination: String,
    pub transport_failure: String,
    pub bytes_received: String,
    pub bytes_sent: String,
    pub duration: String,
    pub upstream_service_time: String,
    pub xff: String,
    pub user_agent: String,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: String,
    pub cluster: String,
    pub upstream_local: String,
    pub downstream_local: String,
    pub downstream_remote: String,
    pub sni: String,
    pub route: String,
}

impl IstioLine {
    /// Parses a line, failing the test unless it has exactly the istio format's fields.
    pub fn parse(line: &str) -> IstioLine {
        let f = fields(line);
        assert_eq!(f.len(), 22, "an istio line has 22 fields: {line}");
        assert_start_time(&f[0]);
        let request = unquote(&f[1]);
        let parts: Vec<&str> = request.split(' ').collect();
        assert_eq!(parts.len(), 3, "request part {request:?}");
        IstioLine {
            method: parts[0].to_owned(),
            path: parts[1].to_owned(),
            protocol: parts[2].to_owned(),
            code: f[2].clone(),
            flags: f[3].clone(),
            details: f[4].clone(),
            termination: f[5].clone(),
            transport_failure: unquote(&f[6]),
            bytes_received: f[7].clone(),
            bytes_sent: f[8].clone(),
            duration: f[9].clone(),
            upstream_service_time: f[10].clone(),
            xff: unquote(&f[11]),
            user_agent: unquote(&f[12]),
            request_id: unquote(&f[13]),
            authority: unquote(&f[14]),
            upstream_host: unquote(&f[15]),
            cluster: f[16].clone(),
            upstream_local: f[17].clone(),
            downstream_local: f[18].clone(),
            downstream_remote: f[19].clone(),
            sni: f[20].clone(),
            route: f[21].clone(),
        }
    }

    /// DURATION as a number of milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.duration.parse().expect("DURATION is a number")
    }
}

/// One scrape of the stats listener's `/metrics`, read series by series.
pub struct Exposition {
    pub text: String,
}

impl Exposition {
    /// Scrapes `gateway`'s stats listener.
    pub async fn scrape(gateway: &TestGateway) -> Exposition {
        let response = egress_testkit::http_get(gateway.stats_addr(), "stats", "/metrics")
            .await
            .expect("scrape the stats listener");
        assert_eq!(response.status, Some(200), "{}", response.text);
        Exposition {
            text: response.body().to_owned(),
        }
    }

    /// Scrapes until `until` holds, for at most 10 s (a request is counted when its
    /// record is written, which may be just after the client has its response).
    pub async fn wait(gateway: &TestGateway, until: impl Fn(&Exposition) -> bool) -> Exposition {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let scraped = Self::scrape(gateway).await;
            if until(&scraped) || std::time::Instant::now() > deadline {
                return scraped;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Every series of `name` (a counter, gauge, or a histogram's `_count`): its labels
    /// (`{...}`, empty for none) and value.
    pub fn series(&self, name: &str) -> Vec<(&str, f64)> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let (labels, value) = rest.rsplit_once(' ')?;
                let labels = labels.trim();
                (labels.is_empty() || labels.starts_with('{'))
                    .then(|| (labels, value.parse().expect("a sample value")))
            })
            .collect()
    }

    /// The value of the one series of `name` whose labels include every pair of
    /// `labels` (each `key="value"`); fails the test when there is none or several.
    pub fn value(&self, name: &str, labels: &[&str]) -> f64 {
        let found: Vec<(&str, f64)> = self
            .series(name)
            .into_iter()
            .filter(|(l, _)| labels.iter().all(|label| l.contains(label)))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one series {name}{labels:?} expected, found {found:?} in:\n{}",
            self.text
        );
        found[0].1
    }

    /// The value of `name` with `labels`, or 0 when no such series exists yet.
    pub fn value_or_zero(&self, name: &str, labels: &[&str]) -> f64 {
        self.series(name)
            .into_iter()
            .filter(|(l, _)| labels.iter().all(|label| l.contains(label)))
            .map(|(_, v)| v)
            .sum()
    }
}
