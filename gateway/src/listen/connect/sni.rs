//! `check_sni` on a `connect` listener: when a tunnel's first bytes are a TLS
//! ClientHello, its server name must be the CONNECT host, so an allowed name cannot
//! front for another (domain fronting). The hello is read, not consumed: its bytes are
//! handed back to be sent upstream as they came.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::wire::host::{normalize_name, Host};
use crate::wire::sni::{parse_client_hello, SniError, MAX_CLIENT_HELLO_BYTES};

/// A tunnel that may go on.
#[derive(Debug)]
pub(super) struct Checked {
    /// What was read from the client: send it upstream first.
    pub prefix: Vec<u8>,
    /// The ClientHello's server name, when it had one (REQUESTED_SERVER_NAME).
    pub server_name: Option<String>,
}

/// A tunnel closed for what its client sent first.
#[derive(Debug)]
pub(super) struct Refusal {
    /// CONNECTION_TERMINATION_DETAILS.
    pub reason: &'static str,
    /// The ClientHello's server name, when it had one.
    pub server_name: Option<String>,
    /// How many bytes were read from the client (BYTES_RECEIVED).
    pub received: usize,
}

impl Refusal {
    fn new(reason: &'static str, received: usize) -> Self {
        Self {
            reason,
            server_name: None,
            received,
        }
    }
}

/// Reads the client's first bytes and, if they are a ClientHello, compares its SNI with
/// `host`. A name must match exactly (after canonicalisation); an IP literal target
/// takes only a hello without SNI. Bytes that are not TLS pass unchecked, and so does a
/// tunnel whose upstream speaks first (TLS never does).
///
/// Fails when the SNI differs or is missing, the hello is malformed, too large or cut
/// short, it does not complete within `hello_timeout` of its first byte, or nothing
/// arrives from either side within `idle`.
pub(super) async fn check<C>(
    client: &mut C,
    early: Vec<u8>,
    upstream: &TcpStream,
    host: &Host,
    idle: Duration,
    hello_timeout: Duration,
) -> Result<Checked, Refusal>
where
    C: AsyncRead + Unpin,
{
    let mut prefix = early;
    let mut chunk = vec![0u8; 4096];
    if prefix.is_empty() {
        let mut probe = [0u8; 1];
        let n = tokio::select! {
            read = client.read(&mut chunk) => read.unwrap_or(0),
            _ = upstream.peek(&mut probe) => 0,
            () = tokio::time::sleep(idle) => return Err(Refusal::new("idle_timeout", 0)),
        };
        if n == 0 {
            // The client closed, or the upstream spoke first: not a TLS client.
            return Ok(Checked {
                prefix,
                server_name: None,
            });
        }
        prefix.extend_from_slice(&chunk[..n]);
    }
    let deadline = Instant::now() + hello_timeout;
    loop {
        match parse_client_hello(&prefix) {
            Ok(hello) => return judge(prefix, hello.server_name, host),
            Err(SniError::NotTls) => {
                return Ok(Checked {
                    prefix,
                    server_name: None,
                })
            }
            Err(SniError::Incomplete { .. }) if prefix.len() < MAX_CLIENT_HELLO_BYTES => {}
            Err(_) => return Err(Refusal::new("tls_client_hello_invalid", prefix.len())),
        }
        match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => prefix.extend_from_slice(&chunk[..n]),
            Ok(_) => return Err(Refusal::new("tls_client_hello_invalid", prefix.len())),
            Err(_) => return Err(Refusal::new("tls_client_hello_timeout", prefix.len())),
        }
    }
}

fn judge(prefix: Vec<u8>, server_name: Option<String>, host: &Host) -> Result<Checked, Refusal> {
    let matches = match (host, &server_name) {
        (Host::Name(name), Some(sni)) => normalize_name(sni).is_ok_and(|sni| sni == *name),
        (Host::Ip(_), None) => true,
        _ => false,
    };
    if matches {
        Ok(Checked {
            prefix,
            server_name,
        })
    } else {
        Err(Refusal {
            reason: "tls_sni_mismatch",
            server_name,
            received: prefix.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    #[test]
    fn the_sni_must_name_the_connect_host() {
        let ok = |sni: Option<&str>, host: &Host| {
            judge(Vec::new(), sni.map(str::to_owned), host).is_ok()
        };
        let api = name("api.example.com");
        assert!(ok(Some("api.example.com"), &api));
        assert!(ok(Some("API.Example.COM."), &api));
        assert!(!ok(Some("other.example.com"), &api));
        assert!(!ok(Some("example.com"), &api));
        assert!(!ok(None, &api));
        assert!(!ok(Some("not a name"), &api));
        let ip = Host::Ip("192.0.2.1".parse().unwrap());
        assert!(ok(None, &ip));
        assert!(!ok(Some("192.0.2.1"), &ip));
    }
}
