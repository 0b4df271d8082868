//! The HTTP/1 request head path without a socket, for the fuzz targets in `fuzz/`: bytes
//! go through the same server, the same tracked socket and the same head checks as on
//! an `http` listener, and each request's verdict comes back instead of being sent on.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::{Activity, Tracked};
use super::http::admit;
use super::http_conn::http1_server;
use super::preface::{judge, Verdict, PREFACE};
use crate::policy::Listener;
use crate::wire::host::Host;

/// What the head checks said of one request: its destination, or the reason it was
/// refused (RESPONSE_CODE_DETAILS).
pub type HeadVerdict = Result<(Host, u16), String>;

/// Serves `reads` (the bytes of each read the client's socket returns, in order) as one
/// HTTP/1.1 connection on the listener `spec`: the verdict of each request that the
/// server parsed, in order. An allowed request's body is read to its end, as forwarding
/// it would; a refused one closes the connection, as on a listener. Bytes that open with
/// the HTTP/2 preface are not HTTP/1: no verdict.
///
/// The client keeps the connection open after its last read, as a real one would while
/// it waits for its responses: the connection ends when the server closes it, or a
/// second after it opened. Run it on a runtime whose clock is paused (`start_paused`),
/// where that second passes as soon as everything waits.
pub async fn http1_requests(
    reads: Vec<Bytes>,
    spec: &Listener,
    max_header_bytes: usize,
) -> Vec<HeadVerdict> {
    let first: Vec<u8> = reads
        .iter()
        .flatten()
        .take(PREFACE.len())
        .copied()
        .collect();
    if judge(&first, true) == Some(Verdict::Http2) {
        return Vec::new();
    }
    let activity = Activity::new();
    let verdicts = Arc::new(Mutex::new(Vec::new()));
    let spec = Arc::new(spec.clone());
    let service = {
        let activity = Arc::clone(&activity);
        let verdicts = Arc::clone(&verdicts);
        service_fn(move |req: Request<Incoming>| {
            let activity = Arc::clone(&activity);
            let verdicts = Arc::clone(&verdicts);
            let spec = Arc::clone(&spec);
            async move {
                let in_flight = activity.begin_request();
                let verdict = admit(&req, activity.head_had_both_lengths(), &spec)
                    .map(|d| (d.host, d.port))
                    .map_err(|e| e.details().into_owned());
                let refused = verdict.is_err();
                if let Ok(mut all) = verdicts.lock() {
                    all.push(verdict);
                }
                let mut response = Response::new(Empty::<Bytes>::new());
                if refused {
                    *response.status_mut() = StatusCode::BAD_REQUEST;
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                } else {
                    // A body that fails is the next request's problem no more: the
                    // connection ends with it.
                    let _ = req.into_body().collect().await;
                }
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(Tracked::new(
        Replay {
            reads: reads.into(),
        },
        Arc::clone(&activity),
    ));
    let served = http1_server(max_header_bytes)
        .serve_connection(io, service)
        .with_upgrades();
    let _ = tokio::time::timeout(QUIET, served).await;
    let verdicts = verdicts.lock().map(|v| v.clone()).unwrap_or_default();
    verdicts
}

/// How long a connection is served, on the runtime's clock.
const QUIET: Duration = Duration::from_secs(1);

/// A client that sends its reads, then waits; what it is sent is dropped.
struct Replay {
    reads: VecDeque<Bytes>,
}

impl AsyncRead for Replay {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while let Some(mut read) = self.reads.pop_front() {
            if read.is_empty() {
                continue;
            }
            let n = read.len().min(buf.remaining());
            buf.put_slice(&read.split_to(n));
            if !read.is_empty() {
                self.reads.push_front(read);
            }
            return Poll::Ready(Ok(()));
        }
        // Nothing more to send, and the connection stays open.
        Poll::Pending
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::policy::Protocol;

    fn listener() -> Listener {
        Listener {
            name: "http".into(),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
            protocol: Protocol::Http,
            target_port: 80,
            forward_to: None,
            tls: None,
            proxy_protocol: false,
            check_sni: false,
            route_by: crate::policy::RouteBy::ForwardTo,
            dns: None,
        }
    }

    async fn verdicts(stream: &[u8]) -> Vec<Result<String, String>> {
        let mut all = Vec::new();
        // One read, and reads of 5 bytes: the same verdicts.
        for reads in [
            vec![Bytes::copy_from_slice(stream)],
            stream.chunks(5).map(Bytes::copy_from_slice).collect(),
        ] {
            let got: Vec<_> = http1_requests(reads, &listener(), 64 * 1024)
                .await
                .into_iter()
                .map(|v| v.map(|(host, port)| format!("{host}:{port}")))
                .collect();
            if !all.is_empty() {
                assert_eq!(got, all);
            }
            all = got;
        }
        all
    }

    const SMUGGLED: &str = "POST /s HTTP/1.1\r\nHost: b.example\r\nContent-Length: 4\r\n\
                            Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    const REFUSED: &str = "transfer_encoding_with_content_length";

    #[tokio::test(start_paused = true)]
    async fn both_lengths_are_refused_after_empty_lines() {
        let stream = format!("\r\n\r\n{SMUGGLED}");
        assert_eq!(verdicts(stream.as_bytes()).await, [Err(REFUSED.into())]);
    }

    #[tokio::test(start_paused = true)]
    async fn both_lengths_are_refused_in_a_pipelined_request() {
        for first in [
            "GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "POST /1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc",
            "POST /1 HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ] {
            let stream = format!("{first}{SMUGGLED}");
            assert_eq!(
                verdicts(stream.as_bytes()).await,
                [Ok("a.example:80".into()), Err(REFUSED.into())],
                "{first:?}"
            );
        }
        // And the request before it is not refused for it.
        let stream = format!("{SMUGGLED}GET / HTTP/1.1\r\nHost: a.example\r\n\r\n");
        assert_eq!(verdicts(stream.as_bytes()).await, [Err(REFUSED.into())]);
    }
}
