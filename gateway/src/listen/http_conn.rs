//! How an HTTP connection is served once accepted: which protocol it speaks (the
//! HTTP/2 preface or not), the HTTP/1.1 and HTTP/2 server loops with their timeouts and
//! draining, and the audit lines of connections that fail outside any request.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::activity::{Phase, Tracked};
use super::http::{handle, Conn};
use super::preface::{self, Rewind, Verdict};
use super::Downstream;
use crate::audit::{Recorder, ResponseFlags};

/// Reads the first bytes to tell HTTP/2 prior knowledge from HTTP/1.1: the verdict and
/// the bytes read, to replay. `None` when the connection is over: the client left, the
/// gateway drains, or the client stopped inside the preface for the header timeout.
///
/// A connection with nothing sent yet rests as an idle keep-alive one would (closed
/// quietly after the idle timeout); once bytes arrive, the head must complete within
/// the header timeout.
pub(super) async fn sniff(conn: &Conn, io: &mut Downstream) -> Option<(Verdict, Vec<u8>)> {
    let limits = &conn.ctx.limits;
    let mut read = Vec::new();
    let first = tokio::select! {
        () = conn.ctx.drain.cancelled() => return None,
        first = tokio::time::timeout(limits.idle_timeout, preface::read_more(io, &mut read)) => first,
    };
    let mut verdict = match first {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(_)) | Err(_) => return None,
    };
    let deadline = Instant::now() + limits.header_timeout;
    while verdict.is_none() {
        match tokio::time::timeout_at(deadline, preface::read_more(io, &mut read)).await {
            Ok(Ok(next)) => verdict = next,
            Ok(Err(_)) => return None,
            Err(_) => {
                audit_connection_failure(
                    conn,
                    0,
                    ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                    "request_header_timeout",
                );
                return None;
            }
        }
    }
    verdict.map(|verdict| (verdict, read))
}

/// HTTP/1.1 with keep-alive; the connection's [`Activity`] tells a client dribbling its
/// request head (cut at the header timeout) from one resting between requests.
pub(super) async fn serve_http1(conn: Arc<Conn>, io: Rewind<Downstream>) {
    let ctx = Arc::clone(&conn.ctx);
    let activity = Arc::clone(&conn.activity);
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
    // One timer and one drain future for the connection's life, re-armed rather than
    // re-created: the loop runs once per request, so this is hot.
    let drain = ctx.drain.cancelled();
    tokio::pin!(drain);
    let timer = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(timer);
    let result = loop {
        // While a request is served, check back a header timeout later: the end of a
        // request does not wake this loop, the next head does.
        let deadline = match activity.phase() {
            Phase::Head(since) => since + limits.header_timeout,
            Phase::Idle(since) => since + limits.idle_timeout,
            Phase::Request => std::time::Instant::now() + limits.header_timeout,
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        tokio::select! {
            result = &mut served => break result,
            () = &mut drain, if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            () = activity.changed() => {}
            () = &mut timer => match activity.phase() {
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

/// HTTP/2 (h2c prior knowledge, or h2 by ALPN): every stream is a request with its own
/// audit line. The connection closes after the idle timeout with no stream open, and
/// drains with a GOAWAY.
pub(super) async fn serve_http2(conn: Arc<Conn>, io: Rewind<Downstream>) {
    let ctx = Arc::clone(&conn.ctx);
    let activity = Arc::clone(&conn.activity);
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |req| {
        let conn = Arc::clone(&service_conn);
        async move { Ok::<_, Infallible>(handle(conn, req).await) }
    });
    let max_headers = u32::try_from(ctx.limits.max_header_bytes).unwrap_or(u32::MAX);
    let served = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(max_headers)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);

    let idle_timeout = ctx.limits.idle_timeout;
    let mut draining = false;
    loop {
        // No Tracked socket here: HTTP/2 frames (pings, window updates, settings) arrive
        // between requests, so the phase is only idle or serving.
        let idle_since = match activity.phase() {
            Phase::Idle(since) => Some(since),
            Phase::Head(_) | Phase::Request => None,
        };
        let sleep = async {
            match idle_since {
                Some(since) => tokio::time::sleep_until((since + idle_timeout).into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = &mut served => {
                if let Err(e) = result {
                    tracing::debug!(peer = %conn.peer(), error = %e, "downstream HTTP/2 connection ended");
                }
                return;
            }
            () = ctx.drain.cancelled(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            () = activity.changed() => {}
            () = sleep => {
                if matches!(activity.phase(), Phase::Idle(since) if since.elapsed() >= idle_timeout) {
                    return;
                }
            }
        }
    }
}

/// hyper answered (or closed) the connection itself: a head it could not parse, too
/// large, or cut short. Each still gets an audit line.
pub(super) fn connection_error(conn: &Conn, e: &hyper::Error) {
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

/// The audit line of a connection that failed outside any request.
pub(super) fn audit_connection_failure(
    conn: &Conn,
    code: u16,
    flags: ResponseFlags,
    details: &str,
) {
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
    record.downstream_peer_uri_san = conn.accepted.source.identity.clone();
    record.requested_server_name = conn.server_name.clone();
    recorder.finish();
}
