//! How an HTTP connection is served once accepted: which protocol it speaks (the
//! HTTP/2 preface or not), the HTTP/1.1 and HTTP/2 server loops with their timeouts and
//! draining, and the audit lines of connections that fail outside any request.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use super::activity::{Activity, Phase, Tracked};
use super::context::{Accepted, Context};
use super::downstream::Downstream;
use super::http::{handle, Conn};
use super::preface::{self, Rewind, Verdict};
use crate::audit::{Recorder, ResponseFlags};
use crate::connections::Kind;

/// How long a keep-alive connection may rest between requests once the gateway drains:
/// a client sending its next request at once is answered (with `Connection: close`),
/// one that rests longer is closed as an idle connection would be.
const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// Serves one HTTP connection until it closes, the gateway drains, or a timeout:
/// HTTP/2 when ALPN agreed on it or the client opens with the HTTP/2 preface (h2c prior
/// knowledge), else HTTP/1.1.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, mut io: Downstream) {
    let _registration = ctx.connections.register(
        Arc::clone(&accepted.listener),
        accepted.source.clone(),
        accepted.local,
        Kind::Http,
    );
    let conn = Arc::new(Conn {
        ctx: Arc::clone(&ctx),
        accepted,
        activity: Activity::new(),
        server_name: io.server_name().map(str::to_owned),
    });
    let (verdict, read) = match io.alpn_protocol() {
        Some(b"h2") => (Verdict::Http2, Vec::new()),
        Some(b"http/1.1") => (Verdict::Http1, Vec::new()),
        _ => match sniff(&conn, &mut io).await {
            Some(sniffed) => sniffed,
            None => return,
        },
    };
    let io = Rewind::new(Bytes::from(read), io);
    match verdict {
        Verdict::Http2 => serve_http2(conn, io).await,
        Verdict::Http1 => serve_http1(conn, io).await,
        Verdict::Closed => {}
    }
}

/// Reads the first bytes to tell HTTP/2 prior knowledge from HTTP/1.1: the verdict and
/// the bytes read, to replay. `None` when the connection is over: the client left, or
/// stopped inside the preface for the header timeout.
///
/// A connection with nothing sent yet rests as an idle keep-alive one would (closed
/// quietly after the idle timeout); once bytes arrive, the head must complete within
/// the header timeout. A drain does not close a connection that was accepted before it:
/// its first request is waited for (up to the header timeout) and answered.
async fn sniff(conn: &Conn, io: &mut Downstream) -> Option<(Verdict, Vec<u8>)> {
    let limits = &conn.ctx.limits;
    let mut read = Vec::new();
    let idle_until = Instant::now() + limits.idle_timeout;
    let first = {
        let reading = preface::read_more(io, &mut read);
        tokio::pin!(reading);
        tokio::select! {
            first = tokio::time::timeout_at(idle_until, &mut reading) => first,
            () = conn.ctx.drain.cancelled() => {
                let until = idle_until.min(Instant::now() + limits.header_timeout);
                tokio::time::timeout_at(until, reading).await
            }
        }
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
async fn serve_http1(conn: Arc<Conn>, io: Rewind<Downstream>) {
    let ctx = Arc::clone(&conn.ctx);
    let activity = Arc::clone(&conn.activity);
    let service_conn = Arc::clone(&conn);
    let service = service_fn(move |req| {
        let conn = Arc::clone(&service_conn);
        async move {
            let mut response = handle(Arc::clone(&conn), req).await;
            // Draining: answered, then closed, so the client's next request goes to a
            // gateway that stays.
            if conn.ctx.drain.is_cancelled() {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(Tracked::new(io, Arc::clone(&activity)));
    let served = http1_server(ctx.limits.max_header_bytes)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(served);

    let limits = &ctx.limits;
    // Set when the gateway drains: from then on a connection may rest only
    // DRAIN_IDLE_GRACE between requests (counted from the drain at the earliest).
    let mut draining: Option<std::time::Instant> = None;
    let mut closing = false;
    // One timer and one drain future for the connection's life. No phase change wakes
    // this loop: the timer checks back at least every header timeout, so a head that
    // starts meanwhile is still cut a header timeout after its first byte, and a busy
    // connection runs the loop once per header timeout instead of once per request.
    let drain = ctx.drain.cancelled();
    tokio::pin!(drain);
    let timer = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(timer);
    let result = loop {
        let phase = match (activity.phase(), draining) {
            (Phase::Idle(since), Some(drained)) => Phase::Idle(since.max(drained)),
            (phase, _) => phase,
        };
        let idle_timeout = match draining {
            Some(_) => DRAIN_IDLE_GRACE.min(limits.idle_timeout),
            None => limits.idle_timeout,
        };
        let timer_at = check_back(phase, limits.header_timeout, idle_timeout);
        if timer.deadline() != timer_at {
            timer.as_mut().reset(timer_at);
        }
        tokio::select! {
            result = &mut served => break result,
            () = &mut drain, if draining.is_none() => {
                draining = Some(std::time::Instant::now());
            }
            () = &mut timer => match phase {
                Phase::Head(since) if since.elapsed() >= limits.header_timeout => {
                    audit_connection_failure(&conn, 0, ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR, "request_header_timeout");
                    return;
                }
                Phase::Idle(since) if since.elapsed() >= idle_timeout => {
                    if draining.is_none() {
                        return;
                    }
                    // Resting past the grace while draining: closed between requests.
                    if !closing {
                        closing = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
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

/// The HTTP/1.1 server as every connection gets it.
pub(super) fn http1_server(max_header_bytes: usize) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The header timeout is the connection loop's (one timer per connection):
        // hyper's own would arm and cancel a timer for every request.
        .header_read_timeout(None)
        .max_header_size(max_header_bytes)
        .max_buf_size(max_header_bytes.max(64 * 1024) + 16 * 1024)
        .keep_alive(true);
    builder
}

/// HTTP/2 (h2c prior knowledge, or h2 by ALPN): every stream is a request with its own
/// audit line. The connection closes after the idle timeout with no stream open, and
/// drains with a GOAWAY.
async fn serve_http2(conn: Arc<Conn>, io: Rewind<Downstream>) {
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

    let limits = &ctx.limits;
    let mut draining = false;
    // As for HTTP/1.1, the timer checks back at least every header timeout: the end of
    // the last stream does not wake this loop.
    let timer = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(timer);
    loop {
        // No Tracked socket here: HTTP/2 frames (pings, window updates, settings) arrive
        // between requests, so the phase is only idle or serving.
        let timer_at = check_back(activity.phase(), limits.header_timeout, limits.idle_timeout);
        if timer.deadline() != timer_at {
            timer.as_mut().reset(timer_at);
        }
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
            () = &mut timer => {
                if matches!(activity.phase(), Phase::Idle(since) if since.elapsed() >= limits.idle_timeout) {
                    return;
                }
            }
        }
    }
}

/// When a connection's timer should next fire in `phase`: at the end of a head's
/// timeout, at the end of the idle timeout, and never later than `check_every` from now
/// (the phase may change without waking the connection's loop).
fn check_back(phase: Phase, check_every: Duration, idle_timeout: Duration) -> tokio::time::Instant {
    let latest = std::time::Instant::now() + check_every;
    let at = match phase {
        Phase::Head(since) => (since + check_every).min(latest),
        Phase::Idle(since) => (since + idle_timeout).min(latest),
        Phase::Request => latest,
    };
    tokio::time::Instant::from_std(at)
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
    audit_connection_failure(conn, code, flags, details);
}

/// The audit line of a connection that failed outside any request.
pub(super) fn audit_connection_failure(
    conn: &Conn,
    code: u16,
    flags: ResponseFlags,
    details: &'static str,
) {
    let mut recorder = Recorder::start(
        Arc::clone(&conn.ctx.recording),
        Arc::clone(&conn.accepted.listener),
    );
    if flags.contains(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR) {
        recorder.bad_request(details);
    }
    let record = recorder.record();
    record.response_code = code;
    record.response_flags = flags;
    record.response_code_details = Some(details.into());
    record.downstream_local_address = Some(conn.accepted.local);
    record.downstream_remote_address = Some(conn.peer());
    record.downstream_peer_uri_san = conn.accepted.source.identity.clone();
    record.requested_server_name = conn.server_name.clone();
    recorder.finish();
}
