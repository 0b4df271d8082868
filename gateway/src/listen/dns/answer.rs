//! One DNS question → its answer, decided by the policy the data path uses: a name some
//! allow rule lists resolves to the gateway (or to its auto-allocated address), a name
//! none allows is refused, and in `mode: allow` what no rule decides is forwarded to the
//! name servers.
//!
//! Names under a listener's `search_suffixes` are the cluster's own: they are answered
//! only when a rule names them (never by a lone `*` or the mode), and a search expansion
//! of an allowed external name (`api.example.com.ns1.svc.cluster.local`) is answered at
//! once with a CNAME to that name and its addresses (autopath), instead of NXDOMAIN.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::policy::{DnsListener, NameDecision, OnDeny, Policy, Verdict};
use crate::source::Source;
use crate::wire::host::{normalize_name, Host};

/// The UDP payload the gateway offers in its own EDNS record (the DNS flag day's).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Who asks, and what answers with.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The policy in force.
    pub policy: &'a Policy,
    /// The listener's DNS settings.
    pub settings: &'a DnsListener,
    /// The querying client.
    pub source: &'a Source,
    /// The address the query reached: the answer when `answer_with` is empty.
    pub local: IpAddr,
}

/// How a query was decided, for its audit line and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// Answered for a rule.
    Allow,
    /// Refused (or NXDOMAIN) by policy.
    Deny,
    /// Audit mode: answered although enforcement would refuse it.
    WouldDeny,
    /// Forwarded to the name servers.
    Forward,
    /// Not a question the gateway answers (bad format, other opcode, ANY).
    Malformed,
    /// Over the source's query rate.
    RateLimited,
}

impl Decided {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Decided::Allow => "allow",
            Decided::Deny => "deny",
            Decided::WouldDeny => "would_deny",
            Decided::Forward => "forward",
            Decided::Malformed => "malformed",
            Decided::RateLimited => "rate_limited",
        }
    }
}

/// A response, with what its audit line says.
#[derive(Debug)]
pub struct Reply {
    /// The message to send (before any truncation to the transport's size).
    pub message: Message,
    /// How it was decided.
    pub decided: Decided,
    /// The rule that decided.
    pub rule: Option<Arc<str>>,
    /// CONNECTION_TERMINATION_DETAILS: `autopath`, `audit_would_deny`, ...
    pub detail: Option<&'static str>,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Outcome {
    /// Send this.
    Reply(Reply),
    /// Ask the name servers `name` of type `rtype`, then send `reply` with their records.
    Forward {
        /// The canonical name.
        name: String,
        /// The type asked.
        rtype: RecordType,
        /// The response to fill.
        reply: Reply,
    },
}

/// Answers `request`, a query message that parsed.
pub fn answer(asked: &Asked<'_>, request: &Message) -> Outcome {
    let mut response = response_to(request);
    let reply = |message, decided, rule, detail| {
        Outcome::Reply(Reply {
            message,
            decided,
            rule,
            detail,
        })
    };
    if request.op_code() != OpCode::Query {
        response.set_response_code(ResponseCode::NotImp);
        return reply(response, Decided::Malformed, None, Some("opcode"));
    }
    let [query] = request.queries() else {
        response.set_response_code(ResponseCode::FormErr);
        return reply(response, Decided::Malformed, None, Some("question_count"));
    };
    let rtype = query.query_type();
    if query.query_class() != DNSClass::IN
        || matches!(rtype, RecordType::ANY | RecordType::AXFR | RecordType::IXFR)
    {
        response.set_response_code(ResponseCode::Refused);
        return reply(
            response,
            Decided::Malformed,
            None,
            Some("unsupported_query"),
        );
    }
    let on_deny = match asked.settings.on_deny {
        OnDeny::Refused => ResponseCode::Refused,
        OnDeny::Nxdomain => ResponseCode::NXDomain,
    };
    let Some(name) = canonical(query.name()) else {
        response.set_response_code(on_deny);
        return reply(response, Decided::Deny, None, Some("invalid_name"));
    };
    let host = Host::Name(name);
    let decision = asked.policy.decide_name(&host, asked.source);
    let name = host.name().unwrap_or_default();
    let internal = asked
        .settings
        .search_suffixes
        .iter()
        .any(|suffix| name == suffix || below(name, suffix).is_some());
    let rule = decision.rule.as_ref().map(|r| Arc::clone(&r.name));
    if decision.verdict == Verdict::Allow && rule.is_some() && (decision.specific || !internal) {
        let owner = query.name().clone();
        response.set_authoritative(true);
        add_addresses(asked, &mut response, &owner, name, rtype);
        return reply(response, Decided::Allow, rule, None);
    }
    if let Some((target, found)) = autopath(asked, name) {
        response.set_authoritative(true);
        let owner = query.name().clone();
        let ttl = ttl(asked.settings);
        if let Ok(target_name) = Name::from_ascii(format!("{target}.")) {
            let cname = RData::CNAME(CNAME(target_name.clone()));
            response.add_answer(Record::from_rdata(owner, ttl, cname));
            if rtype != RecordType::CNAME {
                add_addresses(asked, &mut response, &target_name, target, rtype);
            }
        }
        let rule = found.rule.as_ref().map(|r| Arc::clone(&r.name));
        return reply(response, Decided::Allow, rule, Some("autopath"));
    }
    let forward = |response, decided, detail| Outcome::Forward {
        name: name.to_owned(),
        rtype,
        reply: Reply {
            message: response,
            decided,
            rule: rule.clone(),
            detail,
        },
    };
    match decision.verdict {
        // A name no rule decides, in mode allow; or a cluster name only `*` matches.
        Verdict::Allow if decision.rule.is_none() => forward(response, Decided::Forward, None),
        Verdict::WouldDeny if internal => {
            forward(response, Decided::WouldDeny, Some("audit_would_deny"))
        }
        Verdict::WouldDeny => {
            response.set_authoritative(true);
            add_addresses(asked, &mut response, query.name(), name, rtype);
            reply(response, Decided::WouldDeny, rule, Some("audit_would_deny"))
        }
        // A search expansion nobody serves: NXDOMAIN whatever `on_deny` says, since a
        // resolver stops walking its search list at REFUSED.
        Verdict::Allow | Verdict::Deny if internal => {
            response.set_response_code(ResponseCode::NXDomain);
            reply(response, Decided::Deny, rule, None)
        }
        Verdict::Allow | Verdict::Deny => {
            response.set_response_code(on_deny);
            reply(response, Decided::Deny, rule, None)
        }
    }
}

/// The response every answer starts from: the request's id, opcode, question and
/// recursion-desired flag; EDNS answered with EDNS.
pub fn response_to(request: &Message) -> Message {
    let mut response = Message::new();
    response
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(request.checking_disabled());
    response.add_queries(request.queries().iter().cloned());
    if request.extensions().is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD).set_version(0);
        response.set_edns(edns);
    }
    response
}

/// `name` as policies spell names (lower case, no trailing dot), or `None` when it is
/// not a host name (the root, binary labels, an address).
fn canonical(name: &Name) -> Option<String> {
    if name.is_root() {
        return None;
    }
    let ascii = name.to_ascii();
    normalize_name(&ascii).ok()
}

/// The part of `name` before `.suffix`, if `name` is below `suffix`.
fn below<'a>(name: &'a str, suffix: &str) -> Option<&'a str> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    (!stem.is_empty()).then_some(stem)
}

/// A search expansion of an allowed name: the name with the longest search suffix
/// that leaves a name a rule lists (exactly or by `*.suffix`) for this source.
fn autopath<'a>(asked: &Asked<'_>, name: &'a str) -> Option<(&'a str, NameDecision)> {
    asked.settings.search_suffixes.iter().find_map(|suffix| {
        let stem = below(name, suffix)?;
        let host = Host::Name(stem.to_owned());
        let decision = asked.policy.decide_name(&host, asked.source);
        (decision.verdict == Verdict::Allow && decision.rule.is_some() && decision.specific)
            .then_some((stem, decision))
    })
}

fn ttl(settings: &DnsListener) -> u32 {
    u32::try_from(settings.ttl.as_secs()).unwrap_or(u32::MAX >> 1)
}

/// The addresses `name` resolves to here: its auto-allocated address, else
/// `answer_with`, else the address the query reached.
pub fn addresses(asked: &Asked<'_>, name: &str) -> Vec<IpAddr> {
    if let Some(range) = asked.settings.auto_allocate {
        if let Some(ip) = asked.policy.allocations().address(range, name) {
            return vec![ip];
        }
    }
    if asked.settings.answer_with.is_empty() {
        vec![asked.local.to_canonical()]
    } else {
        asked.settings.answer_with.clone()
    }
}

/// The A or AAAA records of `name` under `owner`; any other type has none (NOERROR,
/// no data: the name exists).
fn add_addresses(
    asked: &Asked<'_>,
    response: &mut Message,
    owner: &Name,
    name: &str,
    rtype: RecordType,
) {
    let ttl = ttl(asked.settings);
    for ip in addresses(asked, name) {
        let rdata = match (rtype, ip) {
            (RecordType::A, IpAddr::V4(v4)) => RData::A(A(v4)),
            (RecordType::AAAA, IpAddr::V6(v6)) => RData::AAAA(AAAA(v6)),
            _ => continue,
        };
        response.add_answer(Record::from_rdata(owner.clone(), ttl, rdata));
    }
}

/// The RESPONSE_CODE_DETAILS and metric label of `code`.
pub fn rcode_name(code: ResponseCode) -> &'static str {
    match code {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "OTHER",
    }
}
