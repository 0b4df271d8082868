//! The admin API's bodies, as serde types shared by the server and `egressctl`.

use serde::{Deserialize, Serialize};

/// How a policy is written in a request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// YAML, as policy files are written (`application/yaml`).
    Yaml,
    /// JSON (`application/json`).
    Json,
}

impl Format {
    /// The media type sent in `Content-Type`.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Yaml => "application/yaml",
            Format::Json => "application/json",
        }
    }
}

/// A policy set or a rule as text, in the format it was sent in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyText {
    /// The text (UTF-8).
    pub text: String,
    /// YAML or JSON.
    pub format: Format,
}

/// The policy in force, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyView {
    /// Its version (also the `ETag`).
    pub version: u64,
    /// The whole set as one document.
    pub text: String,
}

/// A change asked of the policy store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `PUT /policy`: the whole set.
    Replace(PolicyText),
    /// `PUT /rules/{name}`: add or replace one rule.
    SetRule {
        /// The rule's name, from the path.
        name: String,
        /// The rule (a mapping; its `name` may be omitted).
        rule: PolicyText,
    },
    /// `DELETE /rules/{name}`.
    DeleteRule(String),
    /// `POST /policy/rollback/{version}`: the set of an earlier version.
    Rollback(u64),
}

/// Who asks for a change and under which conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// The token's name, recorded in the history.
    pub author: String,
    /// `If-Match`: the version the change was prepared against.
    pub if_match: Option<u64>,
    /// Validate and describe the change without applying it.
    pub dry_run: bool,
}

/// The answer to a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The version in force afterwards (unchanged for a dry run or a no-op).
    pub version: u64,
    /// Whether the policy changed (or, for a dry run, would change).
    pub changed: bool,
    /// Nothing was applied: the change was only validated and described.
    #[serde(default)]
    pub dry_run: bool,
    /// What changed, one line per rule, listener or default.
    pub summary: Vec<String>,
}

/// `GET /policy/history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The version in force.
    pub current: u64,
    /// Kept versions, newest first.
    pub versions: Vec<HistoryEntry>,
}

/// `GET /dns/allocations`: the address each TCP service was given by a `dns`
/// listener's `auto_allocate`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAllocations {
    /// The policy version they come from.
    pub version: u64,
    /// By range, then host name.
    pub allocations: Vec<DnsAllocation>,
}

/// One host's address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsAllocation {
    /// The host, as rules list it.
    pub host: String,
    /// Its address: what the dns listener answers, what clients connect to.
    pub address: String,
    /// The `auto_allocate` range it came from.
    pub range: String,
}

/// `GET /fleet`: every live replica sharing this policy store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fleet {
    /// The store, e.g. `etcd http://10.0.0.1:2379 prefix /egress/`.
    pub store: String,
    /// The latest policy revision the answering replica has seen.
    pub latest: u64,
    /// The replica that answered.
    pub answered_by: String,
    /// Live replicas, by id.
    pub members: Vec<FleetMember>,
}

/// One replica of a [`Fleet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetMember {
    /// Its id (bootstrap `id`, default the host name).
    pub id: String,
    /// Its admin API.
    pub admin: String,
    /// Listener name → bound address.
    pub listeners: std::collections::BTreeMap<String, String>,
    /// The policy version it serves.
    pub version: u64,
    /// Whether that is the latest revision.
    pub converged: bool,
    /// Its build.
    pub build: String,
    /// When it started.
    pub started: String,
    /// Whether it is draining.
    pub draining: bool,
}

/// One version of the policy set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The version.
    pub version: u64,
    /// When it was applied (RFC 3339, UTC).
    pub time: String,
    /// Who applied it: a token's name, `policy directory` for a file edit, `start-up`.
    pub author: String,
    /// What it changed from the version before.
    pub summary: Vec<String>,
}

/// `POST /policy/check`: would this destination be allowed?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    /// The destination host, as a client would send it.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// The source: an IP address, or an identity (`spiffe://...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The listener; the first declared one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// Resolve the name and apply the address guard, as a real request would (the
    /// default); `false` answers from the policy alone.
    #[serde(default = "resolve_by_default")]
    pub resolve: bool,
}

fn resolve_by_default() -> bool {
    true
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// `allow`, `deny`, or `would_deny` (audit mode: forwarded, but marked).
    pub decision: String,
    /// The rule that decided; absent when the mode did.
    pub rule: Option<String>,
    /// One sentence saying why.
    pub why: String,
    /// The destination as the gateway reads it (canonical host and port).
    pub destination: String,
    /// The listener the check was made for.
    pub listener: String,
    /// The policy version that answered.
    pub version: u64,
    /// What a real request's audit line would say in RESPONSE_CODE_DETAILS when it
    /// would not reach the upstream: `rbac_access_denied_matched_policy[...]`,
    /// `destination_address_refused{class}`, `dns_resolution_failure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
    /// The addresses a real request would connect to (after resolving and the address
    /// guard); empty when it was not resolved or none is left.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// `GET /connections`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connections {
    /// Open connections, oldest first.
    pub connections: Vec<ConnectionInfo>,
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Unique while the gateway runs.
    pub id: u64,
    /// The listener that accepted it.
    pub listener: String,
    /// `http` (requests decided one by one) or `tunnel`.
    pub kind: String,
    /// The client's address.
    pub source: String,
    /// The client certificate's identity, when mTLS gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Where the tunnel goes, once decided (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// The rule that allowed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When it was accepted (RFC 3339, UTC).
    pub started: String,
    /// Seconds open.
    pub age_seconds: f64,
    /// Bytes from the client.
    pub bytes_received: u64,
    /// Bytes to the client.
    pub bytes_sent: u64,
}

/// `POST /drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Everything in flight finished within the drain timeout.
    pub drained: bool,
    /// Connections still open when the answer was sent.
    pub in_flight: usize,
    /// Milliseconds waited.
    pub waited_ms: u64,
}

/// The one shape of every error the admin API answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and, where it helps, what to do.
    pub error: String,
    /// One entry per problem (every error of an invalid policy).
    #[serde(default)]
    pub details: Vec<Detail>,
}

/// One problem in a request, e.g. one error of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detail {
    /// The field, e.g. `rules[2].hosts[0]`; empty for the whole document.
    pub path: String,
    /// The line in the body, when the body is what the error points into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// `POST /policy/import/istio`: Istio resources translated into a policy document, and
/// what could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportAnswer {
    /// The policy document (YAML), ready for `PUT /policy`.
    pub policy: String,
    /// Rules in it.
    pub rules: usize,
    /// Listeners in it.
    pub listeners: usize,
    /// How many notes say something of the input is not in the policy.
    pub dropped: usize,
    /// Every remark and every field not translated, in input order.
    pub notes: Vec<ImportNote>,
}

/// One remark of an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportNote {
    /// The resource, e.g. `ServiceEntry default/cnn`.
    pub resource: String,
    /// The field in it, e.g. `spec.addresses[2]`; empty for the whole resource.
    pub field: String,
    /// What happened to it, and why.
    pub message: String,
    /// True when something the input says is not in the policy.
    pub dropped: bool,
}
