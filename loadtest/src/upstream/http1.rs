//! The stub's HTTP/1.1: a raw responder that parses request heads with httparse and
//! answers from static bytes, with no per-request allocation but the head it formats,
//! so it is never what limits a run.
//!
//! `/` → the configured body; `/bytes/N` → N bytes; `/delay/MS` → the configured body
//! after MS milliseconds; a `Host` (or CONNECT authority) starting with `denied` → 403.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Body bytes: zeros, shared by every response.
pub static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// Longest `/delay/MS`.
const MAX_DELAY_MS: u64 = 60_000;
/// Largest `/bytes/N`.
const MAX_BYTES: u64 = 1 << 30;
/// Bodies up to this size go out in the same write as their head.
const INLINE_BODY: usize = 16 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// 200 with this many bytes, after this delay.
    Body {
        /// Body size.
        bytes: u64,
        /// Wait before answering.
        delay: Duration,
    },
    /// 403: the destination is one a mix denies.
    Denied,
    /// 404.
    NotFound,
    /// 400 (and close).
    BadRequest,
}

/// What the request at `path` for `host` asks for, with `default_bytes` for `/`.
pub fn answer(path: &str, host: Option<&[u8]>, default_bytes: u64) -> Answer {
    if host.is_some_and(|h| h.len() >= 6 && h[..6].eq_ignore_ascii_case(b"denied")) {
        return Answer::Denied;
    }
    let path = path.split('?').next().unwrap_or_default();
    let number = |rest: &str| rest.parse::<u64>().ok();
    if path == "/" {
        Answer::Body {
            bytes: default_bytes,
            delay: Duration::ZERO,
        }
    } else if let Some(rest) = path.strip_prefix("/bytes/") {
        match number(rest) {
            Some(bytes) if bytes <= MAX_BYTES => Answer::Body {
                bytes,
                delay: Duration::ZERO,
            },
            _ => Answer::BadRequest,
        }
    } else if let Some(rest) = path.strip_prefix("/delay/") {
        match number(rest) {
            Some(ms) if ms <= MAX_DELAY_MS => Answer::Body {
                bytes: default_bytes,
                delay: Duration::from_millis(ms),
            },
            _ => Answer::BadRequest,
        }
    } else {
        Answer::NotFound
    }
}

/// Appends the response head for `answer` (and a small body) to `out`; returns the body
/// bytes still to write.
pub fn write_head(out: &mut BytesMut, answer: Answer, close: bool) -> u64 {
    let (status, body): (&[u8], u64) = match answer {
        Answer::Body { bytes, .. } => (b"200 OK", bytes),
        Answer::Denied => (b"403 Forbidden", 7),
        Answer::NotFound => (b"404 Not Found", 0),
        Answer::BadRequest => (b"400 Bad Request", 0),
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body).as_bytes());
    if close {
        out.extend_from_slice(b"\r\nConnection: close");
    }
    out.extend_from_slice(b"\r\n\r\n");
    if answer == Answer::Denied {
        out.extend_from_slice(b"denied\n");
        return 0;
    }
    let inline = usize::try_from(body).unwrap_or(usize::MAX);
    if inline <= INLINE_BODY {
        out.extend_from_slice(&ZEROS[..inline]);
        return 0;
    }
    body
}

/// Serves HTTP/1.1 requests on `io` until the client closes, a request asks to close,
/// or a request is malformed.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, default_bytes: u64) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = BytesMut::with_capacity(INLINE_BODY + 512);
    // Request body bytes still to discard (clients of a load test send none, but a
    // proxy may forward one).
    let mut skip: u64 = 0;
    loop {
        match io.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            if skip > 0 {
                let take = usize::try_from(skip).unwrap_or(usize::MAX).min(buf.len());
                buf.advance(take);
                skip -= take as u64;
                if skip > 0 {
                    break;
                }
            }
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut request = httparse::Request::new(&mut headers);
            let parsed = request.parse(&buf);
            let (len, answer, close, body) = match parsed {
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => break,
                Ok(httparse::Status::Complete(len)) => {
                    let mut host = None;
                    let mut close = request.version == Some(0);
                    let mut body = 0u64;
                    for h in request.headers.iter() {
                        if h.name.eq_ignore_ascii_case("host") {
                            host = Some(h.value);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        } else if h.name.eq_ignore_ascii_case("content-length") {
                            body = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        }
                    }
                    let path = request.path.unwrap_or("/");
                    let host = if request.method == Some("CONNECT") {
                        Some(path.as_bytes())
                    } else {
                        host
                    };
                    let answer = answer(path, host, default_bytes);
                    // A refused CONNECT ends the connection, as a proxy's would.
                    let refused_connect =
                        answer == Answer::Denied && request.method == Some("CONNECT");
                    let close = close || answer == Answer::BadRequest || refused_connect;
                    (len, answer, close, body)
                }
                _ => (buf.len(), Answer::BadRequest, true, 0),
            };
            buf.advance(len);
            skip = body;
            if let Answer::Body { delay, .. } = answer {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            let rest = write_head(&mut out, answer, close);
            if rest > 0 || close {
                if io.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
                if write_zeros(&mut io, rest).await.is_err() {
                    return;
                }
            }
            if close {
                let _ = io.flush().await;
                let _ = io.shutdown().await;
                return;
            }
        }
        // One write for every response the last read completed (pipelining included).
        if !out.is_empty() {
            if io.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if io.flush().await.is_err() {
            return;
        }
    }
}

async fn write_zeros<S: AsyncWrite + Unpin>(io: &mut S, mut left: u64) -> std::io::Result<()> {
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(ZEROS.len());
        io.write_all(&ZEROS[..chunk]).await?;
        left -= chunk as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hosts_map_to_answers() {
        let body = |bytes| Answer::Body {
            bytes,
            delay: Duration::ZERO,
        };
        assert_eq!(answer("/", Some(b"allowed.test"), 64), body(64));
        assert_eq!(answer("/bytes/1048576", None, 64), body(1 << 20));
        assert_eq!(
            answer("/delay/250", None, 64),
            Answer::Body {
                bytes: 64,
                delay: Duration::from_millis(250)
            }
        );
        assert_eq!(answer("/", Some(b"Denied.test"), 64), Answer::Denied);
        assert_eq!(answer("/bytes/x", None, 64), Answer::BadRequest);
        assert_eq!(answer("/delay/999999", None, 64), Answer::BadRequest);
        assert_eq!(answer("/other", None, 64), Answer::NotFound);
    }

    #[test]
    fn small_bodies_are_inlined_large_ones_left_to_write() {
        let mut out = BytesMut::new();
        let rest = write_head(&mut out, answer("/bytes/5", None, 0), false);
        assert_eq!(rest, 0);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0"
        );
        out.clear();
        let rest = write_head(&mut out, answer("/bytes/1048576", None, 0), true);
        assert_eq!(rest, 1 << 20);
        assert_eq!(
            &out[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\nConnection: close\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn pipelined_requests_get_ordered_answers_and_close_is_honoured() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(serve(server, 3));
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /bytes/1 HTTP/1.1\r\nHost: denied.test\r\n\r\nGET /bytes/2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8(all).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n\0\0\0\
             HTTP/1.1 403 Forbidden\r\nContent-Length: 7\r\n\r\ndenied\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\0\0"
        );
        task.await.unwrap();
    }
}
