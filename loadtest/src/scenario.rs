//! What one request of a scenario is, which requests of a mix go to a denied
//! destination, and how each request ended.

use serde::Serialize;

/// The allowed destination every target is configured for.
pub const ALLOWED_HOST: &str = "allowed.test";
/// A destination no target allows: requests of a mix go there. Stub upstreams refuse
/// names starting with `denied`, so a mix means the same on the direct path.
pub const DENIED_HOST: &str = "denied.test";

/// The protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// HTTP/1.1 GET; destination in `Host`. Target: an http listener.
    Http1,
    /// HTTP/2 with prior knowledge (h2c); destination in `:authority`.
    H2c,
    /// TLS passthrough: a TLS client whose SNI names the destination, HTTP/1.1 inside.
    /// Target: a tls listener.
    Tls,
    /// `CONNECT host:port`, then TLS and HTTP/1.1 inside the tunnel. Target: a connect
    /// listener.
    ConnectTls,
    /// `CONNECT host:port` to the echo upstream, then bytes each way inside the tunnel.
    ConnectEcho,
}

impl Scenario {
    /// The listener protocol a proxy needs for this scenario.
    pub fn listener(self) -> Listener {
        match self {
            Scenario::Http1 => Listener::Http,
            Scenario::H2c => Listener::H2c,
            Scenario::Tls => Listener::Tls,
            Scenario::ConnectTls | Scenario::ConnectEcho => Listener::Connect,
        }
    }

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Http1 => "http1",
            Scenario::H2c => "h2c",
            Scenario::Tls => "tls",
            Scenario::ConnectTls => "connect-tls",
            Scenario::ConnectEcho => "connect-echo",
        }
    }
}

/// The kind of proxy listener a scenario targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Listener {
    /// HTTP/1.1 (and h2c, for the gateway) by Host.
    Http,
    /// h2c prior knowledge (a separate port for peers that need one).
    H2c,
    /// TLS passthrough by SNI.
    Tls,
    /// HTTP CONNECT forward proxy.
    Connect,
}

/// One scenario with its parameters: the same for every target of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The protocol.
    pub scenario: Scenario,
    /// A new connection (TCP, TLS session or tunnel) for every request.
    pub new_connection: bool,
    /// Response body size (echo: bytes each way per request).
    pub body_bytes: usize,
    /// Percentage of requests sent to [`DENIED_HOST`].
    pub deny_percent: u8,
    /// The upstream port named in `CONNECT host:port` (connect scenarios).
    pub connect_port: u16,
}

impl Workload {
    /// A short description for reports: `http1 keep-alive, 64 B responses`.
    pub fn describe(&self) -> String {
        let reuse = if self.new_connection {
            "new connection per request"
        } else {
            "keep-alive"
        };
        let size = match self.scenario {
            Scenario::ConnectEcho => format!("{} echoed", format_bytes(self.body_bytes as u64)),
            _ => format!("{} responses", format_bytes(self.body_bytes as u64)),
        };
        let mix = if self.deny_percent > 0 {
            format!(", {}% denied", self.deny_percent)
        } else {
            String::new()
        };
        format!("{} {reuse}, {size}{mix}", self.scenario.name())
    }

    /// The request path: the stub upstream answers `/bytes/N` with N bytes.
    pub fn path(&self) -> String {
        format!("/bytes/{}", self.body_bytes)
    }
}

/// Whether request `k` of a connection goes to the denied destination: exactly
/// `percent` of every 100 consecutive requests, spread evenly.
pub fn is_denied(percent: u8, k: u64) -> bool {
    let p = u64::from(percent.min(100));
    (k + 1) * p / 100 > k * p / 100
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed and served in full; bytes received.
    Ok(u64),
    /// Sent to the denied destination and refused as expected (403, or a TLS connection
    /// closed before the handshake); bytes received.
    Denied(u64),
    /// Anything else.
    Error(ErrorKind),
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// The target refused or did not accept the TCP connection.
    Connect,
    /// The TLS handshake failed for an allowed destination.
    Tls,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection closed before the answer was complete.
    Closed,
    /// The answer was not valid HTTP, or a body was shorter than declared.
    Protocol,
    /// An HTTP status other than the expected one (200 allowed, 403 denied).
    Status(u16),
    /// A denied destination was served.
    NotDenied,
    /// Another socket error.
    Io,
}

impl ErrorKind {
    /// The key in reports: `connect`, `status_502`, ...
    pub fn key(self) -> String {
        match self {
            ErrorKind::Connect => "connect".to_owned(),
            ErrorKind::Tls => "tls".to_owned(),
            ErrorKind::Timeout => "timeout".to_owned(),
            ErrorKind::Closed => "closed".to_owned(),
            ErrorKind::Protocol => "protocol".to_owned(),
            ErrorKind::Status(code) => format!("status_{code}"),
            ErrorKind::NotDenied => "not_denied".to_owned(),
            ErrorKind::Io => "io".to_owned(),
        }
    }

    /// The kind of a socket error.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                ErrorKind::Closed
            }
            K::ConnectionRefused => ErrorKind::Connect,
            K::TimedOut => ErrorKind::Timeout,
            K::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Io,
        }
    }
}

/// `1048576` → `1 MiB`, `64` → `64 B`, `1536` → `1.5 KiB`.
pub fn format_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let v = n as f64;
    let (value, unit) = if v >= KIB * KIB * KIB {
        (v / (KIB * KIB * KIB), "GiB")
    } else if v >= KIB * KIB {
        (v / (KIB * KIB), "MiB")
    } else if v >= KIB {
        (v / KIB, "KiB")
    } else {
        return format!("{n} B");
    };
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_denies_exactly_the_percentage_spread_evenly() {
        for p in [0u8, 1, 10, 33, 50, 100] {
            let denied = (0..1000).filter(|k| is_denied(p, *k)).count();
            assert_eq!(denied, usize::from(p) * 10, "{p}%");
        }
        // 50%: every other request.
        let pattern: Vec<bool> = (0..4).map(|k| is_denied(50, k)).collect();
        assert_eq!(pattern, [false, true, false, true]);
    }

    #[test]
    fn workload_description_names_reuse_size_and_mix() {
        let w = Workload {
            scenario: Scenario::Http1,
            new_connection: false,
            body_bytes: 64,
            deny_percent: 10,
            connect_port: 0,
        };
        assert_eq!(w.describe(), "http1 keep-alive, 64 B responses, 10% denied");
        assert_eq!(w.path(), "/bytes/64");
        let w = Workload {
            scenario: Scenario::ConnectEcho,
            new_connection: true,
            body_bytes: 1 << 20,
            deny_percent: 0,
            connect_port: 7,
        };
        assert_eq!(
            w.describe(),
            "connect-echo new connection per request, 1 MiB echoed"
        );
    }

    #[test]
    fn error_keys_are_stable() {
        assert_eq!(ErrorKind::Status(502).key(), "status_502");
        assert_eq!(ErrorKind::NotDenied.key(), "not_denied");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(ErrorKind::of_io(&eof), ErrorKind::Closed);
    }

    #[test]
    fn bytes_are_formatted_in_binary_units() {
        assert_eq!(format_bytes(64), "64 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(1 << 20), "1 MiB");
    }
}
