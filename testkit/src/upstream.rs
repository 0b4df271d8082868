//! Upstreams for tests: [`StubUpstream`] (an HTTP/1.1 and h2c server whose routes answer
//! with a status, a delay, a reset, a body size, and otherwise echo the request),
//! [`BlackholeUpstream`] (accepts, never answers) and [`ClosedPort`] (refuses connects).

mod routes;
mod tls;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};

use crate::fail;

/// One request as the stub upstream received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// The request method.
    pub method: Method,
    /// Path and query as received, e.g. `/anything?a=1`.
    pub path: String,
    /// The authority of the request target: the absolute-form host, or HTTP/2's
    /// `:authority`. `None` for origin-form HTTP/1.1 (look at the `host` header then).
    pub authority: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: Version,
    /// Every header as received, repeated ones included.
    pub headers: HeaderMap,
    /// The request body once the stub has read it whole; empty while it is still
    /// arriving, and for `/reset`, which never reads it.
    pub body: Bytes,
    /// Which accepted TCP connection carried it, counting from 1, so tests can tell
    /// requests that shared a pooled connection.
    pub connection: u64,
    /// The address the request came from (the gateway's upstream-side socket).
    pub peer: SocketAddr,
}

impl ReceivedRequest {
    /// The first value of header `name` as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the accept loop and the handlers share with the [`StubUpstream`] handle.
#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<ReceivedRequest>>,
    connections: AtomicU64,
    /// The SNI of each TLS connection, in accept order (`None`: the client sent none).
    server_names: Mutex<Vec<Option<String>>>,
}

impl Shared {
    /// Records a request and returns its index, so its body can be filled in later.
    fn record(&self, request: ReceivedRequest) -> usize {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push(request);
        requests.len() - 1
    }

    fn set_body(&self, index: usize, body: Bytes) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(request) = requests.get_mut(index) {
            request.body = body;
        }
    }
}

/// A stub HTTP upstream on `127.0.0.1:<random port>`, serving HTTP/1.1 (keep-alive) and
/// HTTP/2 with prior knowledge (h2c) on the same port.
///
/// Routes:
/// - `/status/N` answers status `N` with an empty body.
/// - `/delay/N` waits `N` seconds (fractions allowed, `/delay/0.5`, at most 3600), then 200.
/// - `/reset` closes the TCP connection abruptly (RST, via `SO_LINGER` 0) without answering.
///   Over HTTP/2 this resets the whole connection, every stream on it.
/// - `/bytes/N` answers 200 with `N` bytes of `x` and a `content-length`.
/// - `/stream/N` answers 200 with a chunked body of `N` chunks, `chunk 0\n`, `chunk 1\n`…
/// - `/trailers` answers 200 (`content-type: application/grpc`) with the body
///   `trailers\n` and the trailers `grpc-status: 0`, `grpc-message: ok`, and each
///   request trailer echoed as `x-echo-<name>`, all announced in a `trailer` header
///   (gRPC's shape; over HTTP/1.1 trailers are sent only to a client that asked with
///   `te: trailers`).
/// - anything else echoes: 200, `content-type: application/json`, and a body
///   `{"method", "path", "version", "headers": {name: [values]}, "body_len"}`.
///
/// Every response carries `x-stub: <route>` (`echo`, `status`, …) so a test can tell the
/// stub's answers from the gateway's own. A malformed route number (`/status/abc`)
/// answers 400 with `x-stub: bad-route`.
///
/// Every request is recorded when it arrives; see [`StubUpstream::requests`]. Dropping the
/// handle stops the server and closes its connections.
#[derive(Debug)]
pub struct StubUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl StubUpstream {
    /// Starts a stub upstream on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When no loopback port can be bound, which leaves a test nothing to run against.
    pub async fn start() -> StubUpstream {
        match Self::try_start().await {
            Ok(stub) => stub,
            Err(e) => fail(format!("stub upstream: bind 127.0.0.1:0 failed: {e}")),
        }
    }

    /// Starts a stub upstream on `127.0.0.1:0`.
    ///
    /// Fails when the port cannot be bound.
    pub async fn try_start() -> io::Result<StubUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Self::start_on(listener)
    }

    /// Starts a stub upstream on a listener the caller bound (another address, `[::1]`,
    /// a port chosen in advance). Must be called inside a Tokio runtime.
    ///
    /// Fails when the listener's local address cannot be read.
    pub fn start_on(listener: TcpListener) -> io::Result<StubUpstream> {
        Self::serve(listener, None)
    }

    fn serve(
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> io::Result<StubUpstream> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), tls));
        Ok(StubUpstream { addr, shared, task })
    }

    /// The SNI each TLS connection sent, in accept order (`None` when it sent none).
    pub fn server_names(&self) -> Vec<Option<String>> {
        self.shared
            .server_names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Forgets the requests recorded so far (the connection count stays).
    pub fn clear_requests(&self) {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How many TCP connections were accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for StubUpstream {
    fn drop(&mut self) {
        // The accept task owns the JoinSet of connection tasks: aborting it aborts them.
        self.task.abort();
    }
}

/// A loopback port that refuses connections: a socket is bound to it but never listens,
/// so the port stays reserved (no other test can take it) and every connect gets a RST
/// (`ECONNREFUSED`). The port is released when this is dropped.
#[derive(Debug)]
pub struct ClosedPort {
    addr: SocketAddr,
    // Held only to keep the port bound.
    _socket: TcpSocket,
}

impl ClosedPort {
    /// Reserves a refusing port on `127.0.0.1`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn new() -> ClosedPort {
        match Self::try_new() {
            Ok(port) => port,
            Err(e) => fail(format!("closed port: bind 127.0.0.1:0 failed: {e}")),
        }
    }

    /// Reserves a refusing port on `127.0.0.1`.
    ///
    /// Fails when no loopback port can be bound.
    pub fn try_new() -> io::Result<ClosedPort> {
        let socket = TcpSocket::new_v4()?;
        socket.bind((Ipv4Addr::LOCALHOST, 0).into())?;
        let addr = socket.local_addr()?;
        Ok(ClosedPort {
            addr,
            _socket: socket,
        })
    }

    /// The refusing address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The refusing port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}

/// An upstream that accepts TCP connections, reads and discards what arrives, and never
/// answers nor closes: for request and idle timeouts. Dropping it closes everything.
#[derive(Debug)]
pub struct BlackholeUpstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl BlackholeUpstream {
    /// Starts one on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> BlackholeUpstream {
        match Self::try_start().await {
            Ok(hole) => hole,
            Err(e) => fail(format!("blackhole upstream: bind 127.0.0.1:0 failed: {e}")),
        }
    }

    /// Starts one on `127.0.0.1:0`.
    ///
    /// Fails when the port cannot be bound.
    pub async fn try_start() -> io::Result<BlackholeUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut held = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                held.spawn(async move {
                    let mut sink = [0u8; 4096];
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                    // The peer closed: keep our side open anyway, a blackhole never answers.
                    std::future::pending::<()>().await;
                });
            }
        });
        Ok(BlackholeUpstream {
            addr,
            connections,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many TCP connections were accepted so far.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for BlackholeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a request handler knows about its connection.
#[derive(Debug, Clone)]
struct ConnContext {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    /// Notified by `/reset`: the connection task then closes the socket with a RST.
    reset: Arc<Notify>,
    /// Its sender lives as long as the connection task: handlers that must never answer
    /// wait on it, so they end with the connection instead of leaking.
    closed: watch::Receiver<()>,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "stub upstream accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        connections.spawn(serve_connection(
            stream,
            peer,
            id,
            Arc::clone(&shared),
            tls.clone(),
        ));
        while connections.try_join_next().is_some() {}
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // A second descriptor on the same socket, kept here because hyper owns the stream:
    // `/reset` sets SO_LINGER 0 through it, so the close that follows sends a RST.
    let (stream, control) = match duplicate(stream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "stub upstream could not duplicate a socket");
            return;
        }
    };
    let reset = Arc::new(Notify::new());
    let (_closed_tx, closed) = watch::channel(());
    let shared_for_names = Arc::clone(&shared);
    let context = ConnContext {
        shared,
        id,
        peer,
        reset: Arc::clone(&reset),
        closed,
    };
    let service = service_fn(move |request| routes::handle(request, context.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = async {
        match tls {
            None => {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            Some(acceptor) => {
                let stream = match acceptor.accept(stream).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "stub upstream TLS handshake failed");
                        return;
                    }
                };
                let sni = stream.get_ref().1.server_name().map(str::to_owned);
                context_names(&shared_for_names, sni);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        }
    };
    tokio::select! {
        () = served => {}
        () = reset.notified() => {
            if let Err(e) = TcpSocket::from_std_stream(control).set_zero_linger() {
                tracing::warn!(error = %e, "stub upstream could not set SO_LINGER 0");
            }
        }
    }
}

fn context_names(shared: &Shared, sni: Option<String>) {
    shared
        .server_names
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(sni);
}

fn duplicate(stream: TcpStream) -> io::Result<(TcpStream, std::net::TcpStream)> {
    let std_stream = stream.into_std()?;
    let control = std_stream.try_clone()?;
    Ok((TcpStream::from_std(std_stream)?, control))
}
