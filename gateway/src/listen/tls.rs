//! The `tls` listener: TLS passthrough by SNI. The ClientHello is read (never
//! terminated), its server name decided on with the listener's `target_port`, and the
//! bytes read so far replayed to the upstream before relaying both ways.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::context::{Accepted, Context};
use super::downstream::Downstream;
use super::tunnel::Tunnel;
use crate::audit::ResponseFlags;
use crate::egress::Destination;
use crate::wire::host::{parse_host, Host};
use crate::wire::sni::{parse_client_hello, ClientHello, SniError, MAX_CLIENT_HELLO_BYTES};

/// Bytes asked of the socket per read while the ClientHello is incomplete: one
/// typical hello, so most arrive in one read.
const READ_CHUNK: usize = 4 * 1024;

/// Why a connection was closed before its ClientHello gave a destination; the words
/// are CONNECTION_TERMINATION_DETAILS, listed in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HelloRefusal {
    /// Nothing complete within `header_timeout`.
    Timeout,
    /// The client closed (or reset) before its ClientHello was complete.
    Incomplete,
    /// The first bytes are not a TLS handshake.
    NotTls,
    /// A TLS handshake, but not a well-formed ClientHello.
    Malformed,
    /// Over the size bound.
    TooLarge,
    /// A well-formed ClientHello without a server name.
    MissingSni,
    /// A server name that is an IP literal (RFC 6066 forbids them) or not a host name.
    InvalidSni,
}

impl HelloRefusal {
    fn details(self) -> &'static str {
        match self {
            HelloRefusal::Timeout => "tls_client_hello_timeout",
            HelloRefusal::Incomplete => "tls_client_hello_incomplete",
            HelloRefusal::NotTls => "tls_not_tls",
            HelloRefusal::Malformed => "tls_malformed_client_hello",
            HelloRefusal::TooLarge => "tls_client_hello_too_large",
            HelloRefusal::MissingSni => "tls_missing_sni",
            HelloRefusal::InvalidSni => "tls_invalid_sni",
        }
    }

    fn flags(self) -> ResponseFlags {
        match self {
            HelloRefusal::Incomplete => ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION,
            HelloRefusal::MissingSni => ResponseFlags::NONE,
            _ => ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
        }
    }
}

/// Serves one connection on a `tls` listener.
pub(crate) async fn serve_connection(ctx: Arc<Context>, accepted: Accepted, mut io: Downstream) {
    let port = accepted.spec.target_port;
    let mut tunnel = Tunnel::open(Arc::clone(&ctx), accepted);
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let read = read_client_hello(&mut io, &mut buf, ctx.limits.header_timeout).await;
    tunnel
        .entry()
        .bytes_received
        .fetch_add(buf.len() as u64, Ordering::Relaxed);
    let host = match read.and_then(server_host) {
        Ok((name, host)) => {
            tunnel.record().requested_server_name = Some(name);
            host
        }
        Err((refusal, name)) => {
            tunnel.record().requested_server_name = name;
            if refusal.flags() == ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR {
                ctx.egress.metrics.bad_request(refusal.details());
            }
            tunnel.refuse(refusal.flags(), refusal.details());
            return;
        }
    };
    match tunnel.connect(Destination { host, port }, false).await {
        Ok(upstream) => tunnel.relay(io.into(), upstream, &buf).await,
        Err(e) => tunnel.fail(&e),
    }
}

/// The server name as sent, and canonical: names only, as RFC 6066 allows.
fn server_host(hello: ClientHello) -> Result<(String, Host), (HelloRefusal, Option<String>)> {
    let Some(name) = hello.server_name else {
        return Err((HelloRefusal::MissingSni, None));
    };
    match parse_host(&name) {
        Ok(host @ Host::Name(_)) => Ok((name, host)),
        Ok(Host::Ip(_)) | Err(_) => Err((HelloRefusal::InvalidSni, Some(name))),
    }
}

/// Reads into `buf` until it holds a complete ClientHello, within `timeout` in all and
/// [`MAX_CLIENT_HELLO_BYTES`] in size. `buf` keeps every byte read, for the upstream.
async fn read_client_hello<R>(
    io: &mut R,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<ClientHello, (HelloRefusal, Option<String>)>
where
    R: AsyncRead + Unpin,
{
    let deadline = Instant::now() + timeout;
    loop {
        match parse_client_hello(buf) {
            Ok(hello) => return Ok(hello),
            Err(SniError::Incomplete { .. }) => {}
            Err(e) => {
                tracing::debug!(error = %e, "client hello refused");
                let refusal = match e {
                    SniError::NotTls => HelloRefusal::NotTls,
                    SniError::TooLarge => HelloRefusal::TooLarge,
                    SniError::Malformed(_) | SniError::Incomplete { .. } => HelloRefusal::Malformed,
                };
                return Err((refusal, None));
            }
        }
        let room = MAX_CLIENT_HELLO_BYTES
            .saturating_sub(buf.len())
            .min(READ_CHUNK);
        if room == 0 {
            // The parser says too large before the bound is reached; this is a backstop.
            return Err((HelloRefusal::TooLarge, None));
        }
        let start = buf.len();
        buf.resize(start + room, 0);
        let read = tokio::time::timeout_at(deadline, io.read(&mut buf[start..])).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => {
                buf.truncate(start);
                return Err((HelloRefusal::Timeout, None));
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return Err((HelloRefusal::Incomplete, None));
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    async fn read_from(chunks: Vec<Vec<u8>>) -> Result<ClientHello, HelloRefusal> {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = async move {
            for chunk in chunks {
                client.write_all(&chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        };
        let mut buf = Vec::new();
        let (result, _client) = tokio::join!(
            read_client_hello(&mut server, &mut buf, Duration::from_millis(300)),
            writer
        );
        result.map_err(|(r, _)| r)
    }

    fn hello(name: &str) -> Vec<u8> {
        // A minimal TLS 1.2 ClientHello with one SNI entry.
        let mut sni = vec![0u8];
        sni.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
        sni.extend_from_slice(name.as_bytes());
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&u16::try_from(sni.len() + 2).unwrap().to_be_bytes());
        ext.extend_from_slice(&u16::try_from(sni.len()).unwrap().to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&u16::try_from(ext.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&ext);
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut msg = vec![1, len[1], len[2], len[3]];
        msg.extend_from_slice(&body);
        let mut out = vec![22, 3, 1];
        out.extend_from_slice(&u16::try_from(msg.len()).unwrap().to_be_bytes());
        out.extend_from_slice(&msg);
        out
    }

    #[tokio::test]
    async fn a_hello_dribbled_byte_by_byte_is_read() {
        let chunks = hello("api.example.com")
            .into_iter()
            .map(|b| vec![b])
            .collect();
        let hello = read_from(chunks).await.unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("api.example.com"));
    }

    #[tokio::test]
    async fn silence_and_cut_hellos_are_refused() {
        let mut bytes = hello("api.example.com");
        bytes.truncate(20);
        // The writer keeps its end open: the timeout decides.
        assert_eq!(read_from(vec![bytes]).await, Err(HelloRefusal::Timeout));
        assert_eq!(read_from(vec![]).await, Err(HelloRefusal::Timeout));
        assert_eq!(
            read_from(vec![b"GET / HTTP/1.1\r\n".to_vec()]).await,
            Err(HelloRefusal::NotTls)
        );
    }

    #[test]
    fn server_names_must_be_host_names() {
        let named = |n: &str| ClientHello {
            server_name: Some(n.to_owned()),
            alpn: Vec::new(),
        };
        let (name, host) = server_host(named("WWW.Baidu.com.")).unwrap();
        assert_eq!(name, "WWW.Baidu.com.");
        assert_eq!(host, Host::Name("www.baidu.com".into()));
        for bad in ["127.0.0.1", "0x7f.1", "[::1]", "a..b", "a_b c"] {
            assert_eq!(
                server_host(named(bad)).unwrap_err().0,
                HelloRefusal::InvalidSni,
                "{bad}"
            );
        }
        assert_eq!(
            server_host(ClientHello::default()).unwrap_err().0,
            HelloRefusal::MissingSni
        );
    }
}
