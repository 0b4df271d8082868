//! Connection limits, checked as a connection is accepted (after its PROXY header, so
//! that the client is the one the header names): `limits.max_connections` per listener
//! and `limits.max_connections_per_source` per client address. A connection over a
//! limit gets an HTTP 503 on http and connect listeners (closed at once on tls and tcp
//! ones), an audit line with flag `UO` and `overflow{...}`, and a count in
//! `egress_connections_refused_total{listener, reason}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::AsyncWriteExt;

use super::context::Context;
use crate::audit::{Recorder, ResponseFlags};
use crate::policy::{Listener, Protocol};

/// The open connections of one listener, by source.
#[derive(Debug)]
pub struct Admission {
    per_listener: Option<usize>,
    per_source: Option<usize>,
    per_identity: Option<usize>,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
    by_identity: HashMap<String, usize>,
}

/// A connection let in under its identity's limit; dropping it lets the next one in.
#[derive(Debug)]
pub struct IdentityAdmitted {
    admission: Arc<Admission>,
    identity: String,
}

/// A connection let in; dropping it lets the next one in.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

/// Which limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `limits.max_connections`.
    Listener,
    /// `limits.max_connections_per_source`.
    Source,
    /// `limits.max_connections_per_identity`.
    Identity,
}

impl Refused {
    /// The metric label and the audit detail's inner word.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Listener => "max_connections",
            Refused::Source => "max_connections_per_source",
            Refused::Identity => "max_connections_per_identity",
        }
    }
}

impl Admission {
    /// Limits for one listener (`None`: no limit).
    pub fn new(
        per_listener: Option<usize>,
        per_source: Option<usize>,
        per_identity: Option<usize>,
    ) -> Arc<Self> {
        Arc::new(Self {
            per_listener,
            per_source,
            per_identity,
            open: Mutex::new(Open::default()),
        })
    }

    /// Lets a connection whose client certificate names `identity` in, once its TLS
    /// handshake is done; `None` when no identity limit is set.
    pub fn admit_identity(
        self: &Arc<Self>,
        identity: &str,
    ) -> Result<Option<IdentityAdmitted>, Refused> {
        let Some(max) = self.per_identity else {
            return Ok(None);
        };
        let mut open = self.open();
        let count = open.by_identity.get(identity).copied().unwrap_or(0);
        if count >= max {
            return Err(Refused::Identity);
        }
        *open.by_identity.entry(identity.to_owned()).or_default() += 1;
        Ok(Some(IdentityAdmitted {
            admission: Arc::clone(self),
            identity: identity.to_owned(),
        }))
    }

    fn open(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a connection from `source` in, or says which limit it would pass.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refused> {
        if self.per_listener.is_none() && self.per_source.is_none() {
            return Ok(Admitted {
                admission: Arc::clone(self),
                source,
            });
        }
        let mut open = self.open();
        if self.per_listener.is_some_and(|max| open.total >= max) {
            return Err(Refused::Listener);
        }
        let from_source = open.by_source.get(&source).copied().unwrap_or(0);
        if self.per_source.is_some_and(|max| from_source >= max) {
            return Err(Refused::Source);
        }
        open.total += 1;
        *open.by_source.entry(source).or_default() += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            source,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        if admission.per_listener.is_none() && admission.per_source.is_none() {
            return;
        }
        let mut open = admission.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.by_source.remove(&self.source);
            }
        }
    }
}

impl Drop for IdentityAdmitted {
    fn drop(&mut self) {
        let mut open = self.admission.open();
        if let Some(n) = open.by_identity.get_mut(&self.identity) {
            *n -= 1;
            if *n == 0 {
                open.by_identity.remove(&self.identity);
            }
        }
    }
}

/// Records a connection over its identity's limit, found once its TLS handshake was
/// done: it is closed without an answer.
pub fn refuse_identity(
    ctx: &Context,
    spec: &Listener,
    source: &crate::source::Source,
    local: SocketAddr,
) {
    let why = Refused::Identity;
    ctx.egress
        .metrics
        .connection_refused(&spec.name, why.as_str());
    let mut recorder = Recorder::start(Arc::clone(&ctx.recording), Arc::from(spec.name.as_str()));
    let record = recorder.record();
    record.response_flags = ResponseFlags::UPSTREAM_OVERFLOW;
    record.response_code_details = Some(format!("overflow{{{}}}", why.as_str()).into());
    record.downstream_local_address = Some(local);
    record.downstream_remote_address = Some(source.addr);
    record.downstream_peer_uri_san = source.identity.clone();
    recorder.finish();
}

/// Answers and records a connection over a limit, then closes it.
pub async fn refuse(
    ctx: &Context,
    spec: &Listener,
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    why: Refused,
) {
    ctx.egress
        .metrics
        .connection_refused(&spec.name, why.as_str());
    let details = format!("overflow{{{}}}", why.as_str());
    let mut code = 0;
    if matches!(spec.protocol, Protocol::Http | Protocol::Connect) && spec.tls.is_none() {
        let body = format!("too many connections ({})\n", why.as_str());
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(answer.as_bytes()).await.is_ok() {
            code = 503;
        }
        let _ = stream.shutdown().await;
    }
    drop(stream);
    let mut recorder = Recorder::start(Arc::clone(&ctx.recording), Arc::from(spec.name.as_str()));
    let record = recorder.record();
    record.response_code = code;
    record.response_flags = ResponseFlags::UPSTREAM_OVERFLOW;
    record.response_code_details = Some(details.into());
    record.downstream_local_address = Some(local);
    record.downstream_remote_address = Some(peer);
    recorder.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_open_connections_per_listener_and_per_source() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let admission = Admission::new(Some(3), Some(2), None);
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refused::Source);
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refused::Listener);
        drop(first);
        assert!(
            admission.admit(b).is_ok(),
            "a closed connection lets the next in"
        );
    }
}
