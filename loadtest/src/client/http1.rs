//! The HTTP/1.1 the load generator speaks: requests written from a precomputed head,
//! responses read with httparse, bodies (Content-Length, chunked or to close) counted
//! and discarded without being copied anywhere.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a response head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
    /// How the body ends.
    pub body: BodyLength,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// No body (1xx, 204, 304, or the answer to CONNECT).
    Empty,
    /// `Content-Length`.
    Fixed(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the server closes.
    ToClose,
}

/// A response that is not HTTP/1.1 as the load generator reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// httparse refused the head.
    #[error("malformed response head")]
    Head,
    /// A head over the limit.
    #[error("response head over {MAX_HEAD} bytes")]
    TooLong,
    /// A bad Content-Length or chunk size.
    #[error("malformed body framing")]
    Framing,
}

/// Longest response head read.
pub const MAX_HEAD: usize = 64 * 1024;

/// A request head: `GET path HTTP/1.1`, `Host`, and `Connection: close` when asked.
pub fn request_head(method: &str, target: &str, host: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!(
        "{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: egress-loadtest\r\n{connection}\r\n"
    )
    .into_bytes()
}

/// Parses a response head at the start of `buf`; `None` while incomplete.
///
/// Fails when the bytes are not an HTTP/1.x response head.
pub fn parse_head(buf: &[u8], connect: bool) -> Result<Option<Head>, ProtocolError> {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ProtocolError::TooLong)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ProtocolError::Head),
    };
    let status = response.code.ok_or(ProtocolError::Head)?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = response.version == Some(0);
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| ProtocolError::Framing)?;
            content_length = Some(
                text.trim()
                    .parse::<u64>()
                    .map_err(|_| ProtocolError::Framing)?,
            );
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        }
    }
    let body = if (100..200).contains(&status)
        || status == 204
        || status == 304
        || (connect && (200..300).contains(&status))
    {
        BodyLength::Empty
    } else if chunked {
        BodyLength::Chunked
    } else if let Some(n) = content_length {
        BodyLength::Fixed(n)
    } else {
        close = true;
        BodyLength::ToClose
    };
    Ok(Some(Head {
        status,
        len,
        body,
        close,
    }))
}

/// Where a chunked body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: this many data bytes left, then CRLF.
    Data(u64),
    /// After the last chunk: trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// Consumes what it can of a chunked body from `buf`; returns the new state. Stops at
/// an incomplete line (more bytes needed) or when done.
///
/// Fails on a chunk-size line that is not hexadecimal.
pub fn advance_chunked(mut state: Chunked, buf: &mut BytesMut) -> Result<Chunked, ProtocolError> {
    loop {
        match state {
            Chunked::Done => return Ok(state),
            Chunked::Data(left) => {
                // Data then its CRLF, counted as two more bytes to skip.
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                buf.advance(take);
                let left = left - take as u64;
                if left > 0 {
                    return Ok(Chunked::Data(left));
                }
                state = Chunked::Size;
            }
            Chunked::Size | Chunked::Trailer => {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if buf.len() > MAX_HEAD {
                        return Err(ProtocolError::Framing);
                    }
                    return Ok(state);
                };
                let line = buf.split_to(end + 2);
                let line = &line[..end];
                if state == Chunked::Trailer {
                    if line.is_empty() {
                        state = Chunked::Done;
                    }
                    continue;
                }
                if line.is_empty() {
                    // The CRLF that ends a chunk's data.
                    continue;
                }
                let hex = line.split(|b| *b == b';').next().unwrap_or_default();
                let text = std::str::from_utf8(hex).map_err(|_| ProtocolError::Framing)?;
                let size =
                    u64::from_str_radix(text.trim(), 16).map_err(|_| ProtocolError::Framing)?;
                state = if size == 0 {
                    Chunked::Trailer
                } else {
                    Chunked::Data(size)
                };
            }
        }
    }
}

/// A response read in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Bytes received: head and body.
    pub bytes: u64,
    /// The connection cannot be used again.
    pub close: bool,
}

/// Why reading a response failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Not HTTP.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The connection closed early.
    #[error("connection closed before the response was complete")]
    Closed,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one response from `io`, using `buf` for what arrived beyond it (kept for the
/// next response). With `connect`, a 2xx has no body: the tunnel starts after it.
///
/// Fails when the connection closes early, on a socket error, or on bytes that are not
/// HTTP.
pub async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    connect: bool,
) -> Result<Response, ReadError> {
    let head = loop {
        if let Some(head) = parse_head(buf, connect)? {
            break head;
        }
        fill(io, buf).await?;
    };
    buf.advance(head.len);
    let mut bytes = head.len as u64;
    match head.body {
        BodyLength::Empty => {}
        BodyLength::Fixed(mut left) => loop {
            let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
            buf.advance(take);
            bytes += take as u64;
            left -= take as u64;
            if left == 0 {
                break;
            }
            fill(io, buf).await?;
        },
        BodyLength::Chunked => {
            let mut state = Chunked::Size;
            loop {
                let before = buf.len();
                state = advance_chunked(state, buf)?;
                bytes += (before - buf.len()) as u64;
                if state == Chunked::Done {
                    break;
                }
                fill(io, buf).await?;
            }
        }
        BodyLength::ToClose => loop {
            bytes += buf.len() as u64;
            buf.clear();
            match io.read_buf(buf).await? {
                0 => break,
                _ => continue,
            }
        },
    }
    Ok(Response {
        status: head.status,
        bytes,
        close: head.close,
    })
}

/// Reads more into `buf`; an empty buffer is reset first so a long body never grows it.
async fn fill<S: AsyncRead + Unpin>(io: &mut S, buf: &mut BytesMut) -> Result<(), ReadError> {
    if buf.is_empty() {
        buf.clear();
    }
    buf.reserve(16 * 1024);
    match io.read_buf(buf).await? {
        0 => Err(ReadError::Closed),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_with_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let head = parse_head(raw, false).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.len, raw.len() - 5);
        assert_eq!(head.body, BodyLength::Fixed(5));
        assert!(!head.close);
    }

    #[test]
    fn incomplete_head_asks_for_more_and_garbage_is_refused() {
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nConte", false), Ok(None));
        assert_eq!(
            parse_head(b"SSH-2.0-OpenSSH\r\n\r\n", false),
            Err(ProtocolError::Head)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Err(ProtocolError::Framing)
        );
    }

    #[test]
    fn connection_close_http10_and_unframed_bodies_close() {
        let h = parse_head(
            b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(h.unwrap().unwrap().close);
        let h = parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(h.unwrap().unwrap().close);
        let h = parse_head(b"HTTP/1.1 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.body, BodyLength::ToClose);
        assert!(h.close);
    }

    #[test]
    fn connect_2xx_has_no_body_but_its_403_has() {
        let h = parse_head(b"HTTP/1.1 200 Connection established\r\n\r\n", true);
        assert_eq!(h.unwrap().unwrap().body, BodyLength::Empty);
        let h = parse_head(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(h.unwrap().unwrap().body, BodyLength::Fixed(9));
    }

    #[test]
    fn chunked_body_in_pieces() {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::from(&b"5;ext=1\r\nhel"[..]);
        state = advance_chunked(state, &mut buf).unwrap();
        assert_eq!(state, Chunked::Data(2));
        buf.extend_from_slice(b"lo\r\n0\r\nX-Trailer: 1\r\n");
        state = advance_chunked(state, &mut buf).unwrap();
        assert_eq!(state, Chunked::Trailer);
        buf.extend_from_slice(b"\r\nNEXT");
        state = advance_chunked(state, &mut buf).unwrap();
        assert_eq!(state, Chunked::Done);
        assert_eq!(&buf[..], b"NEXT");
        let mut bad = BytesMut::from(&b"zz\r\n"[..]);
        assert_eq!(
            advance_chunked(Chunked::Size, &mut bad),
            Err(ProtocolError::Framing)
        );
    }

    #[tokio::test]
    async fn read_two_pipelined_responses_counting_bytes() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n";
        let mut io = &wire[..];
        let mut buf = BytesMut::new();
        let first = read_response(&mut io, &mut buf, false).await.unwrap();
        assert_eq!(first.status, 200);
        assert_eq!(first.bytes, 41);
        let second = read_response(&mut io, &mut buf, false).await.unwrap();
        assert_eq!(second.bytes, (wire.len() - 41) as u64);
        assert!(matches!(
            read_response(&mut io, &mut buf, false).await,
            Err(ReadError::Closed)
        ));
    }

    #[test]
    fn request_head_is_minimal() {
        let head = request_head("GET", "/bytes/64", "allowed.test", true);
        assert_eq!(
            head,
            b"GET /bytes/64 HTTP/1.1\r\nHost: allowed.test\r\nUser-Agent: egress-loadtest\r\nConnection: close\r\n\r\n"
        );
    }
}
