//! The `http` listener: HTTP/1.1 from the mesh, destination from `Host` or the absolute
//! URI, forwarded through the upstream pool under the rule's timeouts.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST, TRANSFER_ENCODING};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::time::Instant;

use super::activity::{Activity, Phase, Tracked};
use super::headers::{ensure_request_id, protocol_name, strip_hop_by_hop, strip_internal};
use super::http_body::{CountingBody, ResponseBody};
use super::{Accepted, Context, Downstream};
use crate::audit::{Recorder, ResponseFlags};
use crate::connections::Kind;
use crate::egress::{Destination, Judged};
use crate::error::EgressError;
use crate::policy::{Listener, Protocol, Verdict};
use crate::upstream::{Lease, UpstreamBody};
use crate::wire::host::{parse_authority, Host};

/// One downstream connection.
struct Conn {
    ctx: Arc<Context>,
    accepted: Accepted,
    activity: Arc<Activity>,
}

impl Conn {
    fn peer(&self) -> SocketAddr {
        self.accepted.source.addr
    }
}

/// Serves one HTTP/1.1 connection until it closes, the gateway drains, or a timeout.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, io: Downstream) {
    let _registration = ctx.connections.register(
        Arc::clone(&accepted.listener),
        accepted.source.clone(),
        accepted.local,
        Kind::Http,
    );
    let activity = Activity::new();
    let conn = Arc::new(Conn {
        ctx: Arc::clone(&ctx),
        accepted,
        activity: Arc::clone(&activity),
    });
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |req| {
        let conn = Arc::clone(&service_conn);
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    let io = TokioIo::new(Tracked::new(io, Arc::clone(&activity)));
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .max_header_size(ctx.limits.max_header_bytes)
        .max_buf_size(ctx.limits.max_header_bytes.max(64 * 1024) + 16 * 1024)
        .keep_alive(true)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(served);

    let limits = &ctx.limits;
    let mut draining = false;
    let result = loop {
        let deadline = match activity.phase() {
            Phase::Head(since) => Some(since + limits.header_timeout),
            Phase::Idle(since) => Some(since + limits.idle_timeout),
            Phase::Request => None,
        };
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut served => break result,
            () = ctx.drain.cancelled(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            () = activity.changed() => {}
            () = sleep => match activity.phase() {
                Phase::Head(since) if since.elapsed() >= limits.header_timeout => {
                    audit_connection_failure(&conn, 0, ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "request_header_timeout");
                    return;
                }
                Phase::Idle(since) if since.elapsed() >= limits.idle_timeout => return,
                _ => {}
            },
        }
    };
    if let Err(e) = result {
        // Errors while a request is being served are on that request's own line.
        if !activity.in_request() {
            connection_error(&conn, &e);
        }
    }
}

/// hyper answered (or closed) the connection itself: a head it could not parse, too
/// large, or cut short. Each still gets an audit line.
fn connection_error(conn: &Conn, e: &hyper::Error) {
    let (code, flags, details) = if e.is_parse_too_large() {
        if e.to_string().contains("uri") {
            (
                414,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "http1.uri_too_long",
            )
        } else {
            (
                431,
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "http1.headers_too_large",
            )
        }
    } else if e.is_parse() || e.is_parse_status() {
        (
            400,
            ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
            "http1.codec_error",
        )
    } else if e.is_incomplete_message() {
        (
            0,
            ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            "downstream_remote_disconnect",
        )
    } else {
        tracing::debug!(peer = %conn.peer(), error = %e, "downstream connection ended");
        return;
    };
    conn.ctx.egress.metrics.bad_requests.inc();
    audit_connection_failure(conn, code, flags, details);
}

fn audit_connection_failure(conn: &Conn, code: u16, flags: ResponseFlags, details: &str) {
    let mut recorder = Recorder::start(
        Arc::clone(&conn.ctx.recording),
        Arc::clone(&conn.accepted.listener),
    );
    let record = recorder.record();
    record.response_code = code;
    record.response_flags = flags;
    record.response_code_details = Some(details.to_owned());
    record.downstream_local_address = Some(conn.accepted.local);
    record.downstream_remote_address = Some(conn.peer());
    recorder.finish();
}

/// Serves one request: always a response, and always exactly one audit line.
async fn handle(conn: Arc<Conn>, mut req: Request<Incoming>) -> Response<ResponseBody> {
    let in_flight = conn.activity.begin_request();
    let mut recorder = Recorder::start(
        Arc::clone(&conn.ctx.recording),
        Arc::clone(&conn.accepted.listener),
    );
    ensure_request_id(req.headers_mut());
    {
        let record = recorder.record();
        record.method = Some(req.method().as_str().to_owned());
        record.path = req.uri().path_and_query().map(|p| p.as_str().to_owned());
        record.protocol = Some(protocol_name(req.version()));
        record.authority = match req.uri().authority() {
            Some(authority) => Some(authority.as_str().to_owned()),
            None => req
                .headers()
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()),
        };
        record.request_headers = req.headers().clone();
        record.downstream_local_address = Some(conn.accepted.local);
        record.downstream_remote_address = Some(conn.peer());
    }
    if req.method() == Method::CONNECT && conn.accepted.spec.protocol == Protocol::Connect {
        let response = super::connect::tunnel(&conn.ctx, &conn.accepted, req, recorder).await;
        return response.map(|body| body.with_in_flight(in_flight));
    }
    let body_failed = Arc::new(AtomicBool::new(false));
    let response = match exchange(&conn, req, &mut recorder, &body_failed).await {
        Ok((response, lease, deadline)) => upstream_response(response, lease, deadline, recorder),
        Err(e) if body_failed.load(Ordering::Relaxed) => local_reply(
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

type Exchanged = (Response<Incoming>, Lease, Option<Instant>);

/// decide → resolve → guard → send, filling the record as it goes.
async fn exchange(
    conn: &Conn,
    req: Request<Incoming>,
    recorder: &mut Recorder,
    body_failed: &Arc<AtomicBool>,
) -> Result<Exchanged, EgressError> {
    if conn.activity.head_had_both_lengths() {
        return Err(bad(
            "transfer_encoding_with_content_length",
            "the request has both Transfer-Encoding and Content-Length",
        ));
    }
    refuse_smuggling(req.headers())?;
    let destination = destination(&req, &conn.accepted.spec)?;
    let accepted = &conn.accepted;
    let judged = conn
        .ctx
        .egress
        .decide(&destination, &accepted.listener, &accepted.source);
    recorder.set_decision(judged.label());
    recorder.record().route_name = judged.rule_name().map(str::to_owned);
    let route = judged.route(&destination)?;
    recorder.record().upstream_cluster = Some(destination.cluster_name());
    let addrs = conn.ctx.egress.addresses(&route, &destination).await?;

    let received = Arc::new(AtomicU64::new(0));
    recorder.count_bytes(Some(Arc::clone(&received)), None);
    let upstream_req = upstream_request(req, &destination, received, Arc::clone(body_failed))?;
    let deadline = route.request_timeout.map(|t| Instant::now() + t);
    let sent_at = Instant::now();
    let sending = conn
        .ctx
        .egress
        .pool
        .send(&addrs, route.connect_timeout, upstream_req);
    let outcome = match deadline {
        Some(at) => match tokio::time::timeout_at(at, sending).await {
            Ok(outcome) => outcome,
            Err(_) => Err(EgressError::UpstreamTimeout {
                addr: addrs[0],
                timeout: route.request_timeout.unwrap_or_default(),
            }),
        },
        None => sending.await,
    };
    let (response, lease) = outcome.inspect_err(|e| {
        recorder.record().upstream_host = e.upstream_addr();
    })?;
    let endpoints = lease.endpoints();
    let record = recorder.record();
    record.upstream_host = Some(endpoints.peer);
    record.upstream_local_address = Some(endpoints.local);
    record.upstream_service_time = Some(sent_at.elapsed());
    record.response_code_details = Some(match judged.decision.verdict {
        Verdict::WouldDeny => would_deny_details(&judged),
        _ => "via_upstream".to_owned(),
    });
    Ok((response, lease, deadline))
}

fn would_deny_details(judged: &Judged) -> String {
    format!("audit_would_deny[{}]", judged.rule_name().unwrap_or("none"))
}

/// The destination: the absolute URI's authority, else `Host`; both present and
/// different is ambiguous and refused, as are several `Host` headers.
fn destination(req: &Request<Incoming>, spec: &Listener) -> Result<Destination, EgressError> {
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
        if req.uri().scheme_str() != Some("http") {
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

fn upstream_request(
    req: Request<Incoming>,
    destination: &Destination,
    received: Arc<AtomicU64>,
    failed: Arc<AtomicBool>,
) -> Result<Request<UpstreamBody>, EgressError> {
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    strip_internal(&mut parts.headers);
    let host = match (&destination.host, destination.port) {
        (Host::Ip(_) | Host::Name(_), 80) => destination.host.to_string(),
        (_, port) => format!("{}:{port}", destination.host),
    };
    let host =
        HeaderValue::from_str(&host).map_err(|_| bad("invalid_host", "the host cannot be sent"))?;
    parts.headers.insert(HOST, host);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| bad("invalid_path", "the request path is not valid"))?;
    parts.uri = path;
    parts.version = Version::HTTP_11;
    let body = CountingBody::new(body, received, failed).boxed();
    Ok(Request::from_parts(parts, body))
}

fn upstream_response(
    response: Response<Incoming>,
    lease: Lease,
    deadline: Option<Instant>,
    mut recorder: Recorder,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let record = recorder.record();
    if let Some(service) = record.upstream_service_time {
        if let Ok(value) = HeaderValue::from_str(&service.as_millis().to_string()) {
            parts.headers.insert(
                HeaderName::from_static("x-envoy-upstream-service-time"),
                value,
            );
        }
    }
    record.response_code = parts.status.as_u16();
    record.response_headers = parts.headers.clone();
    Response::from_parts(
        parts,
        ResponseBody::upstream(body, lease, deadline, recorder),
    )
}

/// The gateway's own answer to a request it does not forward: one line of text.
pub(super) fn local_reply(error: EgressError, mut recorder: Recorder) -> Response<ResponseBody> {
    let status = error.status();
    let record = recorder.record();
    record.response_code = status.as_u16();
    record.response_flags.insert(error.flags());
    record.response_code_details = Some(error.details());
    record.upstream_transport_failure_reason = error.transport_failure();
    if record.upstream_host.is_none() {
        record.upstream_host = error.upstream_addr();
    }
    let close = matches!(error, EgressError::BadRequest { .. });
    let mut response = Response::new(ResponseBody::local(
        Bytes::from(format!("{error}\n")),
        recorder,
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        // After a request we refuse to parse, the rest of the stream cannot be trusted.
        headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
