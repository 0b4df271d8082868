//! The PROXY protocol (v1 and v2) in front of a listener's connections: the header is
//! read off the socket, exactly its bytes and no more, before the listener's protocol
//! sees the stream; a connection without a valid one is refused with an audit line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::context::Context;
use crate::audit::{Recorder, ResponseFlags};
use crate::wire::proxy::{parse, ProxyError, ProxyHeader, V1_MAX_LEN};

/// How much is peeked at once after the first look: v2 headers with TLVs can be longer
/// than a v1 line, up to 64 KiB.
const PEEK_LEN: usize = 16 * 1024;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// No complete header within the header timeout.
    #[error("no PROXY header within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The client closed before the header ended.
    #[error("the connection closed before its PROXY header ended")]
    Closed,
    /// The bytes are not a valid header.
    #[error(transparent)]
    Invalid(#[from] ProxyError),
    /// Reading the socket failed.
    #[error("reading the PROXY header failed: {0}")]
    Io(#[from] std::io::Error),
}

impl ProxyHeaderError {
    /// RESPONSE_CODE_DETAILS of the refusal.
    pub fn details(&self) -> &'static str {
        match self {
            ProxyHeaderError::Timeout(_) => "proxy_protocol_timeout",
            _ => "proxy_protocol_invalid",
        }
    }

    /// CONNECTION_TERMINATION_DETAILS: which way the header was wrong.
    pub fn termination(&self) -> &'static str {
        match self {
            ProxyHeaderError::Timeout(_) => "timeout",
            ProxyHeaderError::Closed => "closed",
            ProxyHeaderError::Invalid(e) => e.as_str(),
            ProxyHeaderError::Io(_) => "read_error",
        }
    }
}

/// Reads the PROXY header: the client's address, or `None` for a `LOCAL` / `UNKNOWN`
/// header (health checks of the load balancer itself).
///
/// Fails when the header is missing, malformed, or does not arrive within `timeout`.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let header = tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout(timeout))??;
    Ok(match header {
        ProxyHeader::Proxied { source, .. } => Some(source),
        ProxyHeader::Local | ProxyHeader::Unknown => None,
    })
}

/// Peeks at what has arrived and consumes only bytes the parser says are the header's:
/// all of them while it is incomplete (then the next peek waits for more), exactly its
/// length once it is complete. The payload behind it stays in the socket.
async fn read(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyHeaderError> {
    let mut header = Vec::with_capacity(V1_MAX_LEN);
    let mut peeked = vec![0u8; V1_MAX_LEN];
    loop {
        let n = stream.peek(&mut peeked).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        let had = header.len();
        header.extend_from_slice(&peeked[..n]);
        match parse(&header) {
            Ok((found, len)) => {
                let mut rest = vec![0u8; len.saturating_sub(had)];
                stream.read_exact(&mut rest).await?;
                return Ok(found);
            }
            Err(ProxyError::Incomplete) => {
                let mut taken = vec![0u8; n];
                stream.read_exact(&mut taken).await?;
                peeked.resize(PEEK_LEN, 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes the audit line of a connection refused for its PROXY header: a TCP-level line
/// (`"- - -"`, code 0) from the peer that connected, the load balancer.
pub fn refuse(
    ctx: &Context,
    listener: &str,
    peer: SocketAddr,
    local: SocketAddr,
    error: &ProxyHeaderError,
) {
    tracing::debug!(%peer, %listener, error = %error, "PROXY header refused");
    ctx.egress.metrics.bad_request(error.details());
    let mut recorder = Recorder::start(Arc::clone(&ctx.recording), Arc::from(listener));
    let record = recorder.record();
    record.response_flags = ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR;
    record.response_code_details = Some(error.details().into());
    record.connection_termination_details = Some(error.termination().to_owned());
    record.downstream_local_address = Some(local);
    record.downstream_remote_address = Some(peer);
    recorder.finish();
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: the client's end and the gateway's.
    #[expect(
        clippy::disallowed_methods,
        reason = "a test client dialling the test's own listener"
    )]
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    async fn dribble(mut client: TcpStream, bytes: Vec<u8>) -> TcpStream {
        for byte in bytes {
            client.write_all(&[byte]).await.unwrap();
            client.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    }

    #[tokio::test]
    async fn a_header_sent_byte_by_byte_is_read_and_the_payload_left_whole() {
        let mut v2 = crate::wire::proxy::V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[
            0x21, 0x11, 0, 12, 192, 0, 2, 1, 10, 0, 0, 1, 0x1f, 0x90, 1, 187,
        ]);
        for (header, source) in [
            (
                b"PROXY TCP4 192.0.2.1 10.0.0.1 8080 443\r\n".to_vec(),
                "192.0.2.1:8080",
            ),
            (v2, "192.0.2.1:8080"),
        ] {
            let (client, mut server) = pair().await;
            let mut bytes = header;
            bytes.extend_from_slice(b"\r\n\r\nPROXY payload");
            let sending = tokio::spawn(dribble(client, bytes));
            let got = read_header(&mut server, Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(got, Some(source.parse().unwrap()));
            let client = sending.await.unwrap();
            drop(client);
            let mut payload = Vec::new();
            server.read_to_end(&mut payload).await.unwrap();
            assert_eq!(payload, b"\r\n\r\nPROXY payload");
        }
    }

    #[tokio::test]
    async fn silence_is_a_timeout_and_an_early_close_is_closed() {
        let (_client, mut server) = pair().await;
        let err = read_header(&mut server, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.details(), "proxy_protocol_timeout");
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 19").await.unwrap();
        drop(client);
        let err = read_header(&mut server, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(
            (err.details(), err.termination()),
            ("proxy_protocol_invalid", "closed")
        );
    }
}
