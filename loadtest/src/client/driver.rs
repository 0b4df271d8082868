//! One connection's worth of a scenario: sends a request, reads its answer, decides how
//! it ended, and keeps the connection (or tunnel, or TLS session) for the next request
//! unless the scenario asks for a new one each time.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::http1::{self, ReadError};
use super::{connect, h2, tls_connector, tls_handshake, Io};
use crate::scenario::{ErrorKind, Outcome, Scenario, Workload, ALLOWED_HOST, DENIED_HOST};

/// Zeros sent as the echo payload.
static ZEROS: [u8; 256 * 1024] = [0; 256 * 1024];

/// What every connection of a run shares: the workload, where to send it, and the
/// request heads made once.
pub struct Plan {
    workload: Workload,
    target: SocketAddr,
    direct: bool,
    tls: TlsConnector,
    get_allowed: Vec<u8>,
    get_denied: Vec<u8>,
    connect_allowed: Vec<u8>,
    connect_denied: Vec<u8>,
    path: String,
}

impl Plan {
    /// The shared part of a run of `workload` against `target` (a proxy listener, or
    /// with `direct` the upstream itself).
    pub fn new(workload: Workload, target: SocketAddr, direct: bool) -> Plan {
        let path = workload.path();
        let close = workload.new_connection;
        let authority = |host: &str| format!("{host}:{}", workload.connect_port);
        Plan {
            get_allowed: http1::request_head("GET", &path, ALLOWED_HOST, close),
            get_denied: http1::request_head("GET", &path, DENIED_HOST, close),
            connect_allowed: http1::request_head(
                "CONNECT",
                &authority(ALLOWED_HOST),
                &authority(ALLOWED_HOST),
                false,
            ),
            connect_denied: http1::request_head(
                "CONNECT",
                &authority(DENIED_HOST),
                &authority(DENIED_HOST),
                false,
            ),
            tls: tls_connector(),
            path,
            workload,
            target,
            direct,
        }
    }
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("workload", &self.workload)
            .field("target", &self.target)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// A connection of a run.
#[derive(Debug)]
pub struct Driver {
    plan: Arc<Plan>,
    conn: Option<Conn>,
    buf: BytesMut,
}

#[derive(Debug)]
enum Conn {
    Stream(Io),
    H2(h2::Sender),
}

impl Driver {
    /// A connection that opens its socket on the first request.
    pub fn new(plan: Arc<Plan>) -> Driver {
        Driver {
            plan,
            conn: None,
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// Forgets the connection (after a timeout, its state is unknown).
    pub fn reset(&mut self) {
        self.conn = None;
        self.buf.clear();
    }

    /// Sends one request, to the denied destination when `deny`, and says how it ended.
    pub async fn request(&mut self, deny: bool) -> Outcome {
        let plan = self.plan.clone();
        let outcome = match (plan.workload.scenario, deny) {
            (Scenario::Http1, _) => self.http1(deny).await,
            (Scenario::H2c, _) => self.h2(deny).await,
            (Scenario::Tls | Scenario::ConnectTls | Scenario::ConnectEcho, true) => {
                self.denied_tunnel().await
            }
            (Scenario::Tls | Scenario::ConnectTls, false) => self.tls_get().await,
            (Scenario::ConnectEcho, false) => self.echo().await,
        };
        if matches!(outcome, Outcome::Error(_)) || plan.workload.new_connection {
            self.reset();
        }
        outcome
    }

    async fn http1(&mut self, deny: bool) -> Outcome {
        let mut io = match self.conn.take() {
            Some(Conn::Stream(io)) => io,
            _ => match connect(self.plan.target).await {
                Ok(tcp) => Io::Plain(tcp),
                Err(e) => return Outcome::Error(connect_error(&e)),
            },
        };
        let plan = self.plan.clone();
        let head = if deny {
            &plan.get_denied
        } else {
            &plan.get_allowed
        };
        let result = self.exchange(&mut io, head, deny).await;
        self.keep(io, result)
    }

    async fn h2(&mut self, deny: bool) -> Outcome {
        let mut sender = match self.conn.take() {
            Some(Conn::H2(sender)) => sender,
            _ => {
                let tcp = match connect(self.plan.target).await {
                    Ok(tcp) => tcp,
                    Err(e) => return Outcome::Error(connect_error(&e)),
                };
                match h2::handshake(tcp).await {
                    Ok(sender) => sender,
                    Err(_) => return Outcome::Error(ErrorKind::Protocol),
                }
            }
        };
        let host = if deny { DENIED_HOST } else { ALLOWED_HOST };
        let outcome = match h2::get(&mut sender, host, &self.plan.path).await {
            Ok((status, bytes)) => judge(status, bytes, deny),
            Err(h2::H2Error::Hyper(e)) if e.is_closed() || e.is_canceled() => {
                Outcome::Error(ErrorKind::Closed)
            }
            Err(_) => Outcome::Error(ErrorKind::Protocol),
        };
        if !matches!(outcome, Outcome::Error(_)) {
            self.conn = Some(Conn::H2(sender));
        }
        outcome
    }

    async fn tls_get(&mut self) -> Outcome {
        let mut io = match self.conn.take() {
            Some(Conn::Stream(io)) => io,
            _ => match self.open_tls().await {
                Ok(io) => io,
                Err(kind) => return Outcome::Error(kind),
            },
        };
        let plan = self.plan.clone();
        let result = self.exchange(&mut io, &plan.get_allowed, false).await;
        self.keep(io, result)
    }

    async fn echo(&mut self) -> Outcome {
        let mut io = match self.conn.take() {
            Some(Conn::Stream(io)) => io,
            _ => match self.open_tunnel(false).await {
                Ok(Ok(tcp)) => Io::Plain(tcp),
                Ok(Err(status)) => return Outcome::Error(ErrorKind::Status(status)),
                Err(kind) => return Outcome::Error(kind),
            },
        };
        let n = self.plan.workload.body_bytes;
        let (mut reader, mut writer) = tokio::io::split(&mut io);
        let write = async {
            let mut left = n;
            while left > 0 {
                let chunk = left.min(ZEROS.len());
                writer.write_all(&ZEROS[..chunk]).await?;
                left -= chunk;
            }
            writer.flush().await
        };
        let read = read_exactly(&mut reader, n, &mut self.buf);
        let outcome = match tokio::join!(write, read) {
            (Ok(()), Ok(())) => Outcome::Ok(n as u64),
            (Err(e), _) | (_, Err(e)) => Outcome::Error(ErrorKind::of_io(&e)),
        };
        if !matches!(outcome, Outcome::Error(_)) {
            self.conn = Some(Conn::Stream(io));
        }
        outcome
    }

    /// A one-off connection to the denied destination: refused by the proxy (403 to
    /// CONNECT, a TLS connection closed), or by the upstream on the direct path.
    async fn denied_tunnel(&mut self) -> Outcome {
        let scenario = self.plan.workload.scenario;
        if scenario == Scenario::Tls || self.plan.direct {
            let tcp = match connect(self.plan.target).await {
                Ok(tcp) => tcp,
                Err(e) => return Outcome::Error(connect_error(&e)),
            };
            return match tls_handshake(&self.plan.tls, DENIED_HOST, tcp).await {
                Ok(_) => Outcome::Error(ErrorKind::NotDenied),
                Err(_) => Outcome::Denied(0),
            };
        }
        match self.open_tunnel(true).await {
            Ok(Ok(_)) => Outcome::Error(ErrorKind::NotDenied),
            Ok(Err(403)) => Outcome::Denied(0),
            Ok(Err(status)) => Outcome::Error(ErrorKind::Status(status)),
            Err(kind) => Outcome::Error(kind),
        }
    }

    /// TLS to the allowed destination: straight to the target (a tls listener, or the
    /// upstream), or inside a CONNECT tunnel.
    async fn open_tls(&mut self) -> Result<Io, ErrorKind> {
        let tcp = match self.open_tunnel(false).await? {
            Ok(tcp) => tcp,
            Err(status) => return Err(ErrorKind::Status(status)),
        };
        match tls_handshake(&self.plan.tls, ALLOWED_HOST, tcp).await {
            Ok(tls) => Ok(Io::Tls(Box::new(tls))),
            Err(_) => Err(ErrorKind::Tls),
        }
    }

    /// A TCP connection to the target; for connect scenarios through a proxy, after a
    /// CONNECT answered 2xx (`Ok(Err(status))` when answered otherwise).
    async fn open_tunnel(&mut self, deny: bool) -> Result<Result<TcpStream, u16>, ErrorKind> {
        let mut tcp = connect(self.plan.target)
            .await
            .map_err(|e| connect_error(&e))?;
        let scenario = self.plan.workload.scenario;
        if self.plan.direct || scenario == Scenario::Tls {
            return Ok(Ok(tcp));
        }
        let plan = self.plan.clone();
        let head = if deny {
            &plan.connect_denied
        } else {
            &plan.connect_allowed
        };
        tcp.write_all(head)
            .await
            .map_err(|e| ErrorKind::of_io(&e))?;
        self.buf.clear();
        let response = http1::read_response(&mut tcp, &mut self.buf, true)
            .await
            .map_err(|e| read_error(&e))?;
        if !(200..300).contains(&response.status) {
            return Ok(Err(response.status));
        }
        if !self.buf.is_empty() {
            // Bytes after the CONNECT answer before we sent anything: not a tunnel.
            return Err(ErrorKind::Protocol);
        }
        Ok(Ok(tcp))
    }

    /// Writes `head`, reads the response; the outcome and whether the connection may
    /// carry another request.
    async fn exchange(&mut self, io: &mut Io, head: &[u8], deny: bool) -> (Outcome, bool) {
        if let Err(e) = io.write_all(head).await {
            return (Outcome::Error(ErrorKind::of_io(&e)), false);
        }
        match http1::read_response(io, &mut self.buf, false).await {
            Ok(response) => (
                judge(response.status, response.bytes, deny),
                !response.close,
            ),
            Err(e) => (Outcome::Error(read_error(&e)), false),
        }
    }

    fn keep(&mut self, io: Io, (outcome, reusable): (Outcome, bool)) -> Outcome {
        if reusable && !matches!(outcome, Outcome::Error(_)) {
            self.conn = Some(Conn::Stream(io));
        } else {
            self.buf.clear();
        }
        outcome
    }
}

/// The outcome of an HTTP answer: 200 expected when allowed, 403 when denied.
fn judge(status: u16, bytes: u64, deny: bool) -> Outcome {
    match (deny, status) {
        (false, 200) => Outcome::Ok(bytes),
        (true, 403) => Outcome::Denied(bytes),
        (true, 200) => Outcome::Error(ErrorKind::NotDenied),
        (_, status) => Outcome::Error(ErrorKind::Status(status)),
    }
}

fn connect_error(e: &std::io::Error) -> ErrorKind {
    match ErrorKind::of_io(e) {
        ErrorKind::Timeout => ErrorKind::Timeout,
        _ => ErrorKind::Connect,
    }
}

fn read_error(e: &ReadError) -> ErrorKind {
    match e {
        ReadError::Protocol(_) => ErrorKind::Protocol,
        ReadError::Closed => ErrorKind::Closed,
        ReadError::Io(e) => ErrorKind::of_io(e),
    }
}

/// Reads and discards exactly `n` bytes.
async fn read_exactly<R: AsyncRead + Unpin>(
    reader: &mut R,
    n: usize,
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    let mut left = n;
    while left > 0 {
        buf.clear();
        buf.reserve(256 * 1024);
        match reader.read_buf(buf).await? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            got => left = left.saturating_sub(got),
        }
    }
    buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_judged_against_the_destination() {
        assert_eq!(judge(200, 10, false), Outcome::Ok(10));
        assert_eq!(judge(403, 5, true), Outcome::Denied(5));
        assert_eq!(judge(200, 5, true), Outcome::Error(ErrorKind::NotDenied));
        assert_eq!(judge(403, 5, false), Outcome::Error(ErrorKind::Status(403)));
        assert_eq!(judge(502, 0, true), Outcome::Error(ErrorKind::Status(502)));
    }
}
