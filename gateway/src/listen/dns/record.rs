//! The audit line and metrics of one DNS query: the Istio text layout with
//! `"DNS <type> <name>"` where the request line goes, the RCODE as
//! RESPONSE_CODE_DETAILS, the deciding rule as ROUTE_NAME and the client as
//! DOWNSTREAM_REMOTE_ADDRESS.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Instant;

use hickory_proto::op::Message;

use super::answer::{rcode_name, Decided, Reply};
use super::Context;
use crate::audit::{AuditRecord, ResponseFlags};

/// How a query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram.
    Udp,
    /// A length-prefixed message on a TCP connection.
    Tcp,
}

/// What is known of a query as it arrives.
#[derive(Debug)]
pub struct Meta {
    /// How it came.
    pub transport: Transport,
    /// The client.
    pub peer: SocketAddr,
    /// The gateway address it reached.
    pub local: SocketAddr,
    /// When it arrived.
    pub started: Instant,
    /// Its record, started on arrival.
    record: AuditRecord,
}

impl Meta {
    /// A query of `bytes` from `peer` to `local`, arriving now.
    pub fn new(transport: Transport, peer: SocketAddr, local: SocketAddr, bytes: &[u8]) -> Self {
        let mut record = AuditRecord::new();
        record.bytes_received = bytes.len() as u64;
        Self {
            transport,
            peer,
            local,
            started: Instant::now(),
            record,
        }
    }
}

/// Writes the audit line of the query `meta` describes and counts it.
pub fn write(
    ctx: &Context,
    listener: &str,
    meta: &Meta,
    request: Option<&Message>,
    reply: &Reply,
    answer: &[u8],
    truncated: bool,
) {
    let elapsed = meta.started.elapsed();
    let question = request.and_then(|r| r.queries().first());
    let qtype = question.map(|q| q.query_type().to_string());
    let rcode = rcode_name(reply.message.response_code());
    let mut record = meta.record.clone();
    record.duration = Some(elapsed);
    record.method = Some(Cow::Borrowed("DNS"));
    record.path = Some(qtype.clone().unwrap_or_else(|| "-".to_owned()));
    let name = question.map(|q| {
        let name = q.name().to_ascii();
        match name.strip_suffix('.') {
            Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
            _ => name,
        }
    });
    record.protocol = name.clone().map(Cow::Owned);
    record.authority = name;
    record.response_code_details = Some(Cow::Borrowed(rcode));
    let detail = match (reply.detail, truncated) {
        (Some(detail), true) => Some(format!("{detail},truncated")),
        (Some(detail), false) => Some(detail.to_owned()),
        (None, true) => Some("truncated".to_owned()),
        (None, false) => None,
    };
    record.connection_termination_details = detail;
    if reply.decided == Decided::RateLimited {
        record.response_flags.insert(ResponseFlags::RATE_LIMITED);
    }
    record.bytes_sent = answer.len() as u64;
    record.downstream_local_address = Some(meta.local);
    record.downstream_remote_address = Some(meta.peer);
    record.route_name = reply.rule.clone();
    ctx.recording.auditor.record(&record);
    ctx.egress.metrics.dns_queries.observe(
        listener,
        qtype.as_deref().unwrap_or("-"),
        rcode,
        reply.decided.as_str(),
        elapsed,
    );
}
