//! The policy documents as users write them (serde types; unknown fields are errors),
//! and the index from a field path to its line that error messages use.
//!
//! Values that need checking beyond their YAML type (ports, durations, hosts, addresses)
//! are kept as users wrote them, so that compilation reports every bad value at once
//! instead of serde stopping at the first.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One policy file: any of its sections may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// At most once in a policy set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<DefaultsDoc>,
    /// Ports the gateway listens on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerDoc>,
    /// What may go out, and how.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleDoc>,
}

/// `defaults:`; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsDoc {
    /// What happens when no rule matches (deny when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Upstream connect timeout, e.g. `5s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// HTTP request sent → response complete; `0s` (the default) = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    /// Tunnels close after this long with no bytes either way (`1h` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// May resolved addresses be private, loopback, link-local, ...? (false by default)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_private: Option<bool>,
}

/// One entry of `listeners:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerDoc {
    /// Unique name, what rules' `listeners` refer to.
    pub name: String,
    /// Port to bind, 1-65535 (wider here so that a bad value is reported with the rest).
    pub port: i64,
    /// How the destination is read.
    pub protocol: Protocol,
    /// Address to bind; `0.0.0.0` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Destination port when a request names none (http/connect 80, tls 443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<i64>,
    /// `tcp` listeners (and only they): `host:port` every connection goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_to: Option<String>,
    /// Terminate TLS (or mTLS) from the mesh on this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsDoc>,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<bool>,
    /// `connect` listeners: a TLS tunnel's SNI must equal the CONNECT host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_sni: Option<bool>,
    /// `dns` listeners: the addresses allowed names resolve to (default: the address
    /// the query reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_with: Option<Vec<String>>,
    /// `dns` listeners: the TTL of every answer (`30s` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// `dns` listeners: how a name no rule allows is answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_deny: Option<OnDeny>,
    /// `dns` listeners: the workloads' search domains, answered in one round trip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search_suffixes: Option<Vec<String>>,
    /// `dns` listeners: a CIDR from which each TCP service gets an address of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate: Option<String>,
    /// `tcp` listeners: where connections go (`forward_to` unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_by: Option<RouteBy>,
}

/// A `dns` listener's answer for a name no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnDeny {
    /// RCODE REFUSED: the server will not answer (the default).
    #[default]
    Refused,
    /// RCODE NXDOMAIN: the name does not exist.
    Nxdomain,
}

/// How a `tcp` listener finds a connection's destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RouteBy {
    /// The listener's `forward_to`.
    #[default]
    ForwardTo,
    /// The address the client connected to (or its original destination, when
    /// redirected), which a `dns` listener's `auto_allocate` gave to one host.
    DestinationAddress,
}

/// `listeners[].tls`: inbound TLS; relative paths are relative to the policy directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsDoc {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA bundle that client certificates must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<String>,
    /// Refuse clients without a certificate (needs `client_ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_client_cert: Option<bool>,
}

/// One entry of `rules:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDoc {
    /// Unique name; ROUTE_NAME in the audit line.
    pub name: String,
    /// Exact names, `*.suffix` wildcards (any depth below), a lone `*`, or IP literals.
    pub hosts: Vec<String>,
    /// Destination ports; absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<i64>>,
    /// Allow (the default) or deny.
    #[serde(default)]
    pub action: Action,
    /// CIDRs, addresses or identities (`spiffe://...`, exact or ending in `/*`); absent =
    /// anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<String>>,
    /// Listener names; absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<String>>,
    /// Overrides `defaults.request_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<String>,
    /// Overrides `defaults.connect_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Overrides `defaults.idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Static upstream addresses, `ip:port` or `ip` (then the destination port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<String>>,
    /// Speak TLS to the upstream (http listeners).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_origination: Option<bool>,
    /// Overrides `defaults.allow_private`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_private: Option<bool>,
    /// The HTTP version spoken to the upstream (`http1` default, `h2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_protocol: Option<UpstreamProtocol>,
    /// PEM CA bundle trusted for the upstream, besides the web PKI roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Requests and tunnels a second this rule lets out (a token bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitDoc>,
    /// Requests and tunnels of this rule in flight at once; more get 503 `UO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<i64>,
}

/// A rule's `rate_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    /// Tokens added a second.
    pub requests_per_second: i64,
    /// Tokens saved up at most (`requests_per_second` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<i64>,
    /// One bucket for the rule (default), or one per client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<RatePer>,
}

/// Whose requests share a rate limit's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RatePer {
    /// Everyone the rule allows.
    #[default]
    Rule,
    /// Each client address on its own.
    Source,
}

/// A rule's `upstream_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (or what ALPN picks under TLS origination).
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge in clear text, ALPN `h2` under TLS).
    H2,
}

/// `defaults.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only rules let traffic out (Istio REGISTRY_ONLY).
    #[default]
    Deny,
    /// All out unless a rule denies (ALLOW_ANY).
    Allow,
    /// Like deny, but forwards what would be denied and marks its audit line.
    Audit,
}

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 and h2c; destination from Host / :authority.
    Http,
    /// TLS passthrough by SNI.
    Tls,
    /// Opaque bytes to `forward_to`.
    Tcp,
    /// HTTP forward proxy (CONNECT and absolute URIs).
    Connect,
    /// DNS answers for allowed names.
    Dns,
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it out.
    #[default]
    Allow,
    /// Refuse it.
    Deny,
}

/// Field path (`rules[3].ports[0]`) → 1-based line, for errors found after parsing.
///
/// Built from the YAML events, so it works on any text that parses, whatever its types.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`; a text that does not parse gives the lines seen before the fault.
    pub fn new(text: &str) -> Self {
        let mut builder = IndexBuilder::default();
        // A syntax error is reported by serde with its own location; the index only
        // serves texts that parse, so the error itself is not needed here.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        Self {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// A container being walked: its path, and where in it the next node goes.
#[derive(Debug)]
struct Frame {
    path: String,
    kind: FrameKind,
    /// A container used as a mapping key: its end is not the end of a value.
    is_key: bool,
}

#[derive(Debug)]
enum FrameKind {
    /// The key whose value comes next, with its line; `None` = a key comes next.
    Mapping(Option<(String, usize)>),
    /// The index of the next item.
    Sequence(usize),
}

#[derive(Debug, Default)]
struct IndexBuilder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl IndexBuilder {
    /// Places a node starting at `line`: a key (`None`), or a value whose path is
    /// returned.
    fn place(&mut self, scalar: Option<&str>, line: usize) -> Option<String> {
        let (path, line) = match self.stack.last_mut() {
            None => (String::new(), line),
            Some(Frame {
                kind: FrameKind::Mapping(key @ None),
                ..
            }) => {
                *key = Some((scalar.unwrap_or("?").to_owned(), line));
                return None;
            }
            Some(Frame {
                path,
                kind: FrameKind::Mapping(Some((key, key_line))),
                ..
            }) => {
                // A mapping value's line is its key's: `ports:` rather than the first item.
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                (child, *key_line)
            }
            Some(Frame {
                path,
                kind: FrameKind::Sequence(next),
                ..
            }) => (format!("{path}[{next}]"), line),
        };
        self.lines.entry(path.clone()).or_insert(line);
        Some(path)
    }

    /// A scalar or alias: a key, or a whole value.
    fn leaf(&mut self, scalar: Option<&str>, line: usize) {
        if self.place(scalar, line).is_some() {
            self.advance();
        }
    }

    /// A value of the innermost container is complete.
    fn advance(&mut self) {
        match self.stack.last_mut().map(|frame| &mut frame.kind) {
            Some(FrameKind::Mapping(key)) => *key = None,
            Some(FrameKind::Sequence(next)) => *next += 1,
            None => {}
        }
    }
}

impl MarkedEventReceiver for IndexBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(value, ..) => self.leaf(Some(&value), line),
            Event::Alias(_) => self.leaf(None, line),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let placed = self.place(None, line);
                let is_key = placed.is_none();
                let path = placed.unwrap_or_else(|| "?".to_owned());
                let kind = match event {
                    Event::MappingStart(..) => FrameKind::Mapping(None),
                    _ => FrameKind::Sequence(0),
                };
                self.stack.push(Frame { path, kind, is_key });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(frame) = self.stack.pop() {
                    if !frame.is_key {
                        self.advance();
                    }
                }
            }
            _ => {}
        }
    }
}
