//! Clients for driving the gateway in tests: raw bytes in, raw text out (for malformed and
//! smuggling requests, slow senders), and a keep-alive client that sends several
//! requests on one HTTP/1.1 or h2c connection.

mod keep_alive;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub use keep_alive::{KeepAliveClient, Response};

/// How long the raw clients wait for the peer to close, and the keep-alive client for
/// one response, unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connect failed (refused, unreachable).
    #[error("connect to {addr} failed: {source}")]
    Connect {
        /// The address dialled.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// Nothing came back in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for: `connect to …`, `response to GET /x`.
        what: String,
        /// The time limit.
        after: Duration,
    },
    /// The request could not be built (bad method, path or header).
    #[error("invalid request: {0}")]
    Request(#[from] http::Error),
    /// The HTTP exchange failed: the connection closed or broke mid-way.
    #[error("http exchange failed: {0}")]
    Http(#[from] hyper::Error),
}

/// What came back on a raw connection.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// Every byte read, as text (invalid UTF-8 replaced).
    pub text: String,
    /// Every byte read.
    pub bytes: Vec<u8>,
    /// The status code of the first status line, when the bytes start with
    /// `HTTP/x.y NNN`.
    pub status: Option<u16>,
    /// How many of the request bytes were written before the peer stopped taking them.
    pub sent: usize,
    /// True when reading stopped at the timeout, not because the peer closed.
    pub timed_out: bool,
    /// True when the connection ended with a reset (or another error) instead of a close.
    pub reset: bool,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive) in the first response head.
    pub fn header(&self, name: &str) -> Option<&str> {
        let head = self.text.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// Everything after the first response head (the body, raw: chunked stays chunked).
    pub fn body(&self) -> &str {
        self.text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// Opens a TCP connection to `addr`. Tests dial the gateway or a stub directly, which is
/// why this does not go through a resolver.
#[expect(
    clippy::disallowed_methods,
    reason = "tests dial the gateway and stubs on loopback, the addresses they started"
)]
pub async fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|source| ClientError::Connect { addr, source })?;
    match tokio::time::timeout(DEFAULT_TIMEOUT, socket.connect(addr)).await {
        Ok(Ok(stream)) => {
            // Small test requests must leave at once, not wait on Nagle.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ClientError::Connect { addr, source }),
        Err(_) => Err(ClientError::Timeout {
            what: format!("connect to {addr}"),
            after: DEFAULT_TIMEOUT,
        }),
    }
}

/// Writes `bytes` to `addr` and reads until the peer closes, or [`DEFAULT_TIMEOUT`]
/// passes. Send `Connection: close` (or expect a close, as after a 400) to avoid waiting
/// for the timeout on a keep-alive server.
///
/// Fails only when the connect fails; a peer that closes early is reported in
/// [`RawResponse::sent`] and [`RawResponse::reset`].
pub async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Result<RawResponse, ClientError> {
    exchange(addr, bytes, None, DEFAULT_TIMEOUT).await
}

/// [`raw_request`] with another read timeout.
///
/// Fails only when the connect fails.
pub async fn raw_request_timeout(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<RawResponse, ClientError> {
    exchange(addr, bytes, None, timeout).await
}

/// `GET path` with `Host: host` and `Connection: close`, read until the peer closes.
///
/// Fails only when the connect fails.
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<RawResponse, ClientError> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).await
}

/// Writes `bytes` one byte at a time with `delay_per_byte` between them (a slow-header
/// client), stopping when the peer stops taking them, then reads as [`raw_request`]
/// does. The response is read while sending, so a 408 sent mid-way is kept.
///
/// Fails only when the connect fails.
pub async fn send_slowly(
    addr: SocketAddr,
    bytes: &[u8],
    delay_per_byte: Duration,
) -> Result<RawResponse, ClientError> {
    exchange(addr, bytes, Some(delay_per_byte), DEFAULT_TIMEOUT).await
}

async fn exchange(
    addr: SocketAddr,
    bytes: &[u8],
    delay_per_byte: Option<Duration>,
    timeout: Duration,
) -> Result<RawResponse, ClientError> {
    let stream = connect(addr).await?;
    let (mut reader, mut writer) = stream.into_split();
    // Read concurrently with writing: a server that answers and closes before taking
    // the whole request must not lose its answer behind our write error.
    let read = tokio::spawn(async move {
        let (mut bytes, mut reset) = (Vec::new(), false);
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(_) => {
                    reset = true;
                    break;
                }
            }
        }
        (bytes, reset)
    });

    let mut sent = 0;
    match delay_per_byte {
        None => {
            if writer.write_all(bytes).await.is_ok() {
                sent = bytes.len();
            }
        }
        Some(delay) => {
            for byte in bytes {
                if writer.write_all(&[*byte]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(delay).await;
            }
        }
    }

    let mut response = RawResponse {
        sent,
        ..RawResponse::default()
    };
    let abort = read.abort_handle();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok((bytes, reset))) => {
            response.bytes = bytes;
            response.reset = reset;
        }
        Ok(Err(_)) => response.reset = true,
        Err(_) => {
            abort.abort();
            response.timed_out = true;
        }
    }
    // Keep the write half open until reading is over: a half-close could make the
    // server drop its answer.
    drop(writer);
    response.text = String::from_utf8_lossy(&response.bytes).into_owned();
    response.status = parse_status(&response.text);
    Ok(response)
}

fn parse_status(text: &str) -> Option<u16> {
    let mut words = text.split(' ');
    let version = words.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let code = words.next()?.trim_end_matches("\r\n");
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_the_status_line() {
        assert_eq!(parse_status("HTTP/1.1 403 Forbidden\r\n\r\n"), Some(403));
        assert_eq!(parse_status("HTTP/1.0 200\r\n"), Some(200));
        assert_eq!(parse_status("garbage"), None);
        assert_eq!(parse_status("HTTP/1.1 2000 x"), None);
        assert_eq!(parse_status(""), None);
    }

    #[test]
    fn raw_response_headers_and_body() {
        let text = "HTTP/1.1 200 OK\r\nX-Stub: echo\r\nContent-Length: 2\r\n\r\nhi".to_owned();
        let response = RawResponse {
            text,
            ..RawResponse::default()
        };
        assert_eq!(response.header("x-stub"), Some("echo"));
        assert_eq!(response.header("missing"), None);
        assert_eq!(response.body(), "hi");
    }
}
