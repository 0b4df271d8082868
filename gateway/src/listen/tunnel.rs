//! What every tunnel listener (tls, tcp, connect) does around the bytes: register the
//! connection, decide its destination, connect upstream, relay, and write its audit
//! lines — interim ones while it lasts, and one when it ends, whatever ends it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Accepted, Context, Downstream};
use crate::audit::{AuditRecord, Recorder, ResponseFlags};
use crate::connections::{Entry, Kind, Registration};
use crate::egress::limits::Admitted;
use crate::egress::{Destination, Judged};
use crate::error::EgressError;
use crate::policy::{Route, Verdict};
use crate::relay::{self, Ending, Settings};

/// RESPONSE_CODE_DETAILS of an interim line: the tunnel is still open, and its bytes
/// and duration are the totals so far.
pub const TUNNEL_INTERIM: &str = "tunnel_interim";
/// CONNECTION_TERMINATION_DETAILS of a tunnel closed for `idle_timeout`.
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// One tunnel from accept to its last audit line.
#[derive(Debug)]
pub(crate) struct Tunnel {
    ctx: Arc<Context>,
    accepted: Accepted,
    registration: Registration,
    recorder: Recorder,
    /// Counted by its rule's `max_concurrent` while the tunnel lasts.
    admitted: Option<Admitted>,
}

/// An upstream connection made for a tunnel, and the route it was made under.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The socket.
    pub stream: TcpStream,
    /// The route of the rule that allowed it.
    pub route: Route,
}

impl Tunnel {
    /// Registers the connection and starts its audit record.
    pub fn open(ctx: Arc<Context>, accepted: Accepted) -> Self {
        let registration = ctx.connections.register(
            Arc::clone(&accepted.listener),
            accepted.source.clone(),
            accepted.local,
            Kind::Tunnel,
        );
        let mut recorder =
            Recorder::start(Arc::clone(&ctx.recording), Arc::clone(&accepted.listener));
        let record = recorder.record();
        record.downstream_local_address = Some(accepted.local);
        record.downstream_remote_address = Some(accepted.source.addr);
        record.downstream_peer_uri_san = accepted.source.identity.clone();
        Self {
            ctx,
            accepted,
            registration,
            recorder,
            admitted: None,
        }
    }

    /// The audit record, to fill in (e.g. REQUESTED_SERVER_NAME).
    pub fn record(&mut self) -> &mut AuditRecord {
        self.recorder.record()
    }

    /// The registry entry: byte counters and revocation.
    pub fn entry(&self) -> &Arc<Entry> {
        self.registration.entry()
    }

    /// Ends the tunnel before any upstream: writes its line with `flags` and `details`
    /// (CONNECTION_TERMINATION_DETAILS).
    pub fn refuse(mut self, flags: ResponseFlags, details: &str) {
        let record = self.recorder.record();
        record.response_flags.insert(flags);
        record.connection_termination_details = Some(details.to_owned());
        self.finish();
    }

    /// Ends the tunnel on an error of the egress path (denied, refused address, DNS,
    /// connect failure): its flag, its details, and the upstream tried if any.
    pub fn fail(mut self, error: &EgressError) {
        self.recorder.note_failure(error);
        self.recorder.record().connection_termination_details = Some(error.details().into_owned());
        self.finish();
    }

    /// Decides `destination`, resolves, guards and connects.
    ///
    /// Fails with the denial or the egress error; nothing is written until the caller
    /// passes it to [`Tunnel::fail`] (a CONNECT listener answers the client first).
    pub async fn connect(&mut self, destination: Destination) -> Result<Connected, EgressError> {
        let judged = self.decide(&destination);
        let record = self.recorder.record();
        record.route_name = judged.route_name();
        record.upstream_cluster = Some(destination.cluster_name());
        self.recorder.set_decision(judged.label());
        let route = judged.route(&destination)?;
        if judged.decision.verdict == Verdict::WouldDeny {
            let rule = judged.rule_name().unwrap_or("none");
            self.recorder.record().response_code_details =
                Some(format!("audit_would_deny[{rule}]").into());
        }
        let egress = &self.ctx.egress;
        self.admitted = Some(egress.admit(&judged, &route, &self.accepted.source)?);
        let addrs = self.ctx.egress.addresses(&route, &destination).await?;
        let connects = &self.ctx.egress.metrics.upstream;
        let (stream, endpoints) =
            crate::upstream::connect_tcp(&addrs, route.connect_timeout, connects).await?;
        let record = self.recorder.record();
        record.upstream_host = Some(endpoints.peer);
        record.upstream_local_address = Some(endpoints.local);
        Ok(Connected {
            stream,
            route: route.into_owned(),
        })
    }

    /// Decides on the policy in force and registers the destination for re-decision.
    /// A policy swapped in between the two would miss this tunnel, so the decision is
    /// taken again until the snapshot it was made on is still the one in force.
    fn decide(&self, destination: &Destination) -> Judged {
        let accepted = &self.accepted;
        loop {
            let judged = self
                .ctx
                .egress
                .decide(destination, &accepted.listener, &accepted.source);
            if judged.decision.verdict != Verdict::Deny {
                let rule = judged.rule_name().map(str::to_owned);
                self.entry().set_target(destination.clone(), rule);
            }
            if Arc::ptr_eq(&judged.policy, &self.ctx.egress.store.current()) {
                return judged;
            }
        }
    }

    /// Writes `first` (bytes already read from the client, e.g. its ClientHello) to the
    /// upstream, then relays until the tunnel ends, and writes the final line.
    pub async fn relay(mut self, downstream: Downstream, mut upstream: Connected, first: &[u8]) {
        self.recorder.tunnel_opened();
        if let Err(e) = upstream.stream.write_all(first).await {
            self.end(Ending::Upstream(e));
            return;
        }
        let settings = Settings {
            idle_timeout: upstream.route.idle_timeout,
            report_every: self.ctx.audit_flush_interval,
        };
        let Self {
            ctx,
            registration,
            recorder,
            ..
        } = &mut self;
        let entry = registration.entry();
        let auditor = &ctx.recording.auditor;
        let ending = carry(downstream, upstream.stream, entry, settings, || {
            auditor.record(&interim_record(recorder, entry));
        })
        .await;
        self.end(ending);
    }

    /// Writes the final line for how the relay ended.
    fn end(mut self, ending: Ending) {
        let record = self.recorder.record();
        match ending {
            Ending::Closed => {}
            Ending::IdleTimeout => {
                record.connection_termination_details = Some(IDLE_TIMEOUT.to_owned());
            }
            Ending::Revoked(reason) => {
                record.connection_termination_details = Some(reason.to_owned());
            }
            Ending::Downstream(e) => {
                record
                    .response_flags
                    .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                tracing::debug!(peer = %self.accepted.source.addr, error = %e, "tunnel client failed");
            }
            Ending::Upstream(e) => {
                record
                    .response_flags
                    .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                record.upstream_transport_failure_reason = Some(e.to_string());
            }
        }
        self.finish();
    }

    fn finish(mut self) {
        let entry = self.registration.entry();
        let received = entry.bytes_received.load(Ordering::Relaxed);
        let sent = entry.bytes_sent.load(Ordering::Relaxed);
        let record = self.recorder.record();
        record.bytes_received = received;
        record.bytes_sent = sent;
        self.recorder.finish();
    }
}

/// Relays a tunnel: spliced in the kernel when the client's side is a plain socket,
/// copied through the gateway when the listener terminated its TLS.
pub(super) async fn carry(
    downstream: Downstream,
    upstream: TcpStream,
    entry: &Entry,
    settings: Settings,
    report: impl FnMut(),
) -> Ending {
    match downstream {
        Downstream::Plain(socket) => {
            relay::relay_sockets(socket, upstream, entry, settings, report).await
        }
        terminated => relay::relay(terminated, upstream, entry, settings, report).await,
    }
}

/// The interim line of a tunnel still open: its record so far, marked `tunnel_interim`,
/// with the bytes and duration up to now.
pub(super) fn interim_record(recorder: &mut Recorder, entry: &Entry) -> AuditRecord {
    let mut line = recorder.record().clone();
    line.duration = Some(recorder.elapsed());
    line.bytes_received = entry.bytes_received.load(Ordering::Relaxed);
    line.bytes_sent = entry.bytes_sent.load(Ordering::Relaxed);
    line.response_code_details = Some(TUNNEL_INTERIM.into());
    line
}
