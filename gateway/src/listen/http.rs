//! The `http` listener: HTTP/1.1 and HTTP/2 from the mesh, destination from `Host`,
//! `:authority` or the absolute URI, forwarded through the upstream pool under the
//! rule's timeouts (in clear text, or under TLS where the rule originates it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST, TE, TRAILER, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::activity::Activity;
use super::connect;
use super::context::{Accepted, Context};
use super::headers::{ensure_request_id, host_header_is, method_text, protocol_name, strip};
use super::http_body::{CountingBody, ResponseBody};
use super::reply::local_reply;
use crate::audit::Recorder;
use crate::egress::limits::Admitted;
use crate::egress::{Destination, Leg, Outbound};
use crate::error::EgressError;
use crate::policy::{Listener, Protocol};
use crate::upstream::{Lease, Transport, UpstreamBody};
use crate::wire::host::parse_authority;

/// One downstream connection.
pub(super) struct Conn {
    pub(super) ctx: Arc<Context>,
    pub(super) accepted: Accepted,
    pub(super) activity: Arc<Activity>,
    /// The SNI of a terminated TLS session (REQUESTED_SERVER_NAME).
    pub(super) server_name: Option<String>,
}

impl Conn {
    pub(super) fn peer(&self) -> SocketAddr {
        self.accepted.source.addr
    }
}

/// Serves one request: always a response, and always exactly one audit line.
pub(super) async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let in_flight = conn.activity.begin_request();
    // Taken for every request, so that each takes its own head's.
    let both_lengths = conn.activity.head_had_both_lengths();
    let mut recorder = Recorder::start(
        Arc::clone(&conn.ctx.recording),
        Arc::clone(&conn.accepted.listener),
    );
    ensure_request_id(req.headers_mut());
    {
        let record = recorder.record();
        record.method = Some(method_text(req.method()));
        record.path = req.uri().path_and_query().map(|p| p.as_str().to_owned());
        record.protocol = Some(std::borrow::Cow::Borrowed(protocol_name(req.version())));
        record.authority = match req.uri().authority() {
            Some(authority) => Some(authority.as_str().to_owned()),
            None => req
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        };
        record.downstream_local_address = Some(conn.accepted.local);
        record.downstream_remote_address = Some(conn.peer());
        record.downstream_peer_uri_san = conn.accepted.source.identity.clone();
        record.requested_server_name = conn.server_name.clone();
    }
    recorder.capture_request_headers(req.headers());
    if req.method() == Method::CONNECT && conn.accepted.spec.protocol == Protocol::Connect {
        // Boxed so that the tunnel's large future does not size every request's.
        let response = Box::pin(connect::tunnel(&conn.ctx, &conn.accepted, req, recorder)).await;
        return response.map(|body| body.with_in_flight(in_flight));
    }
    // Most requests have no body: nothing to count or watch for them.
    let body_failed =
        (!http_body::Body::is_end_stream(req.body())).then(|| Arc::new(AtomicBool::new(false)));
    let exchanged = exchange(
        &conn,
        req,
        both_lengths,
        &mut recorder,
        body_failed.as_ref(),
    )
    .await;
    let response = match exchanged {
        Ok((response, lease, deadline, admitted)) => {
            upstream_response(response, lease, deadline, recorder)
                .map(|body| body.with_admitted(admitted))
        }
        Err(e) if body_failed.is_some_and(|failed| failed.load(Ordering::Relaxed)) => local_reply(
            EgressError::BadRequest {
                reason: "invalid_request_body",
                message: format!("the request body is malformed or was cut short: {e}"),
            },
            recorder,
        ),
        Err(e) => local_reply(e, recorder),
    };
    response.map(|body| body.with_in_flight(in_flight))
}

type Exchanged = (Response<Incoming>, Lease, Option<Instant>, Admitted);

/// The egress sequence, then the request sent upstream under the rule's timeouts,
/// filling the record as it goes.
async fn exchange(
    conn: &Conn,
    req: Request<Incoming>,
    both_lengths: bool,
    recorder: &mut Recorder,
    body_failed: Option<&Arc<AtomicBool>>,
) -> Result<Exchanged, EgressError> {
    let destination = admit(&req, both_lengths, &conn.accepted.spec)?;
    let accepted = &conn.accepted;
    let egress = &conn.ctx.egress;
    let outbound = Outbound {
        destination: &destination,
        listener: &accepted.listener,
        source: &accepted.source,
        leg: Leg::Request,
    };
    let opened = egress.open(outbound, recorder).await?;
    let route = opened.route();
    let counted = body_failed.map(|failed| {
        let received = Arc::new(AtomicU64::new(0));
        recorder.count_bytes(Some(Arc::clone(&received)), None);
        (received, Arc::clone(failed))
    });
    let upstream_req = upstream_request(req, &opened.upstream, &opened.transport, counted)?;
    let deadline = route.request_timeout.map(|t| Instant::now() + t);
    let sent_at = Instant::now();
    let sending = egress.pool.send(
        &opened.addrs,
        route.connect_timeout,
        &opened.transport,
        upstream_req,
    );
    let outcome = match deadline {
        Some(at) => match tokio::time::timeout_at(at, sending).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EgressError::UpstreamTimeout {
                addr: opened.addrs.first(),
                timeout: route.request_timeout.unwrap_or_default(),
            }),
        },
        None => sending.await,
    };
    drop(route);
    let (response, lease) = outcome?;
    let endpoints = lease.endpoints();
    let record = recorder.record();
    record.upstream_host = Some(endpoints.peer);
    record.upstream_local_address = Some(endpoints.local);
    record.upstream_service_time = Some(sent_at.elapsed());
    record
        .response_code_details
        .get_or_insert_with(|| "via_upstream".into());
    Ok((response, lease, deadline, opened.admitted))
}

/// The checks of a request head before anything is decided: its framing (`both_lengths`:
/// the raw head had Transfer-Encoding and Content-Length), its transfer codings, and
/// its destination.
pub(super) fn admit<B>(
    req: &Request<B>,
    both_lengths: bool,
    spec: &Listener,
) -> Result<Destination, EgressError> {
    if both_lengths {
        return Err(bad(
            "transfer_encoding_with_content_length",
            "the request has both Transfer-Encoding and Content-Length",
        ));
    }
    refuse_smuggling(req.headers())?;
    destination(req, spec)
}

/// The destination: the absolute URI's authority, else `Host`; both present and
/// different is ambiguous and refused, as are several `Host` headers.
fn destination<B>(req: &Request<B>, spec: &Listener) -> Result<Destination, EgressError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(bad(
            "duplicate_host_header",
            "the request has more than one Host header",
        ));
    }
    let from_host = match host_header {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| bad("invalid_host", "the Host header is not ASCII"))?;
            let (host, port) = parse_authority(text).map_err(|e| {
                bad(
                    "invalid_host",
                    format!("the Host header is not a valid host: {e}"),
                )
            })?;
            Some((host, port))
        }
    };
    if req.method() == Method::CONNECT {
        return Err(bad(
            "connect_not_supported",
            "CONNECT is not served on an http listener; use a connect listener",
        ));
    }
    if spec.protocol == Protocol::Connect && req.uri().authority().is_none() {
        return Err(bad(
            "origin_form_on_proxy",
            "a forward proxy serves CONNECT host:port and absolute URIs (GET http://host/path)",
        ));
    }
    let target = if let Some(authority) = req.uri().authority() {
        // HTTP/2 always carries :scheme, `https` when the listener terminated TLS: it
        // names the client's hop, and the rule decides how the upstream is reached.
        let scheme_ok = match req.version() {
            Version::HTTP_2 => matches!(req.uri().scheme_str(), Some("http" | "https")),
            _ => req.uri().scheme_str() == Some("http"),
        };
        if !scheme_ok {
            return Err(bad(
                "unsupported_scheme",
                "only http:// absolute URIs are served on an http listener",
            ));
        }
        let (host, port) = parse_authority(authority.as_str()).map_err(|e| {
            bad(
                "invalid_host",
                format!("the request URI's host is not valid: {e}"),
            )
        })?;
        if let Some((h, p)) = &from_host {
            if *h != host || p.unwrap_or(spec.target_port) != port.unwrap_or(spec.target_port) {
                return Err(bad(
                    "ambiguous_host",
                    "the request URI and the Host header name different destinations",
                ));
            }
        }
        (host, port)
    } else {
        from_host.ok_or_else(|| bad("missing_host_header", "the request has no Host header"))?
    };
    Ok(Destination {
        host: target.0,
        port: target.1.unwrap_or(spec.target_port),
    })
}

/// Transfer codings other than one plain `chunked`: hyper refuses most of them itself;
/// this keeps the rule whatever the parser lets through. (Transfer-Encoding with
/// Content-Length is caught from the raw head, since hyper drops Content-Length.)
fn refuse_smuggling(headers: &HeaderMap) -> Result<(), EgressError> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_none() {
        return Ok(());
    }
    let all: Vec<&HeaderValue> = codings.collect();
    if all.len() != 1 || !all[0].as_bytes().eq_ignore_ascii_case(b"chunked") {
        return Err(bad(
            "unsupported_transfer_encoding",
            "Transfer-Encoding other than a single \"chunked\" is refused",
        ));
    }
    Ok(())
}

fn bad(reason: &'static str, message: impl Into<String>) -> EgressError {
    EgressError::BadRequest {
        reason,
        message: message.into(),
    }
}

/// The request as the upstream gets it: origin form with a `Host` header (the pool
/// turns it into `:authority` on an HTTP/2 connection), without hop-by-hop and internal
/// headers, but with `te: trailers` kept, which gRPC needs. A body comes with its
/// counter of bytes received and the flag set when the client's body fails.
fn upstream_request(
    req: Request<Incoming>,
    upstream: &Destination,
    transport: &Transport,
    counted: Option<(Arc<AtomicU64>, Arc<AtomicBool>)>,
) -> Result<Request<UpstreamBody>, EgressError> {
    let (mut parts, body) = req.into_parts();
    let trailers = parts.headers.get_all(TE).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    });
    strip_hop_by_hop_but_trailer(&mut parts.headers, true);
    if trailers {
        parts
            .headers
            .insert(TE, HeaderValue::from_static("trailers"));
    }
    let default_port = if transport.tls.is_some() { 443 } else { 80 };
    let port = (upstream.port != default_port).then_some(upstream.port);
    // Most clients already sent the Host the upstream gets: kept as it is, unallocated.
    let sent = parts.headers.get(HOST);
    if !sent.is_some_and(|sent| host_header_is(sent.as_bytes(), &upstream.host, port)) {
        let host = match port {
            None => upstream.host.to_string(),
            Some(port) => format!("{}:{port}", upstream.host),
        };
        let host = HeaderValue::from_str(&host)
            .map_err(|_| bad("invalid_host", "the host cannot be sent"))?;
        parts.headers.insert(HOST, host);
    }
    // Origin form (the usual case on an http listener) is sent as it came.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        parts.uri = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad("invalid_path", "the request path is not valid"))?;
    }
    parts.version = Version::HTTP_11;
    let body = match counted {
        Some((received, failed)) => CountingBody::new(body, received, failed).boxed(),
        // No body: an empty one, which boxes without allocating.
        None => Empty::new().map_err(|never| match never {}).boxed(),
    };
    Ok(Request::from_parts(parts, body))
}

/// Strips hop-by-hop headers (with `internal`, the mesh's own too) but keeps `Trailer`,
/// which RFC 9110 no longer counts as one: HTTP/1.1 sends trailers only for the fields
/// it announces.
fn strip_hop_by_hop_but_trailer(headers: &mut HeaderMap, internal: bool) {
    let announced: Vec<HeaderValue> = headers.get_all(TRAILER).iter().cloned().collect();
    strip(headers, internal);
    for value in announced {
        headers.append(TRAILER, value);
    }
}

fn upstream_response(
    response: Response<Incoming>,
    lease: Lease,
    deadline: Option<Instant>,
    mut recorder: Recorder,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop_but_trailer(&mut parts.headers, false);
    let record = recorder.record();
    if let Some(service) = record.upstream_service_time {
        let millis = u64::try_from(service.as_millis()).unwrap_or(u64::MAX);
        parts.headers.insert(
            HeaderName::from_static("x-envoy-upstream-service-time"),
            HeaderValue::from(millis),
        );
    }
    record.response_code = parts.status.as_u16();
    recorder.capture_response_headers(&parts.headers);
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, lease, deadline, recorder),
    )
}
