//! Stub upstreams a run targets: HTTP/1.1 and h2c on one port (told apart by the h2
//! preface), TLS with HTTP/1.1 inside, a TCP echo and a TCP sink. All on loopback, all
//! in the process that starts them; they stop when [`Upstreams`] is dropped.

pub mod h2;
pub mod http1;
pub mod tcp;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Where each stub listens (port 0: any free port).
#[derive(Debug, Clone, Copy)]
pub struct UpstreamConfig {
    /// Body size of `/` and `/delay/MS`.
    pub body_bytes: u64,
    /// HTTP/1.1 and h2c.
    pub http: SocketAddr,
    /// TLS.
    pub tls: SocketAddr,
    /// TCP echo.
    pub echo: SocketAddr,
    /// TCP sink.
    pub sink: SocketAddr,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        UpstreamConfig {
            body_bytes: 64,
            http: any,
            tls: any,
            echo: any,
            sink: any,
        }
    }
}

/// Where the stubs listen: what a proxy configuration needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAddrs {
    /// HTTP/1.1 and h2c.
    pub http: SocketAddr,
    /// TLS (HTTP/1.1 inside).
    pub tls: SocketAddr,
    /// TCP echo.
    pub echo: SocketAddr,
    /// TCP sink.
    pub sink: SocketAddr,
}

/// Running stub upstreams.
#[derive(Debug)]
pub struct Upstreams {
    /// HTTP/1.1 and h2c.
    pub http: SocketAddr,
    /// TLS (HTTP/1.1 inside).
    pub tls: SocketAddr,
    /// TCP echo.
    pub echo: SocketAddr,
    /// TCP sink.
    pub sink: SocketAddr,
    /// The CA that signed the TLS stub's certificate, PEM.
    pub ca_pem: String,
    tasks: Vec<JoinHandle<()>>,
}

/// Why the stubs could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// A port could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS stub could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

impl Upstreams {
    /// Binds and serves every stub.
    ///
    /// Fails when an address cannot be bound (in use, not local) or TLS setup fails.
    pub async fn start(config: UpstreamConfig) -> Result<Upstreams, UpstreamError> {
        let body = config.body_bytes;
        let (acceptor, ca_pem) = tls::acceptor()?;
        let http = bind(config.http).await?;
        let tls_listener = bind(config.tls).await?;
        let echo = bind(config.echo).await?;
        let sink = bind(config.sink).await?;
        let addrs = [&http, &tls_listener, &echo, &sink].map(|l| l.local_addr().ok());
        let [Some(http_addr), Some(tls_addr), Some(echo_addr), Some(sink_addr)] = addrs else {
            return Err(UpstreamError::Bind {
                addr: config.http,
                source: std::io::Error::other("bound socket has no local address"),
            });
        };
        let acceptor = Arc::new(acceptor);
        let tasks = vec![
            tokio::spawn(accept(http, move |tcp| serve_http(tcp, body))),
            tokio::spawn(accept(tls_listener, move |tcp| {
                let acceptor = acceptor.clone();
                async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        http1::serve(tls, body).await;
                    }
                }
            })),
            tokio::spawn(accept(echo, tcp::echo)),
            tokio::spawn(accept(sink, tcp::sink)),
        ];
        Ok(Upstreams {
            http: http_addr,
            tls: tls_addr,
            echo: echo_addr,
            sink: sink_addr,
            ca_pem,
            tasks,
        })
    }
}

impl Upstreams {
    /// Where each stub listens.
    pub fn addrs(&self) -> UpstreamAddrs {
        UpstreamAddrs {
            http: self.http,
            tls: self.tls,
            echo: self.echo,
            sink: self.sink,
        }
    }
}

impl Drop for Upstreams {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, UpstreamError> {
    if !addr.ip().is_loopback() {
        return Err(UpstreamError::Bind {
            addr,
            source: std::io::Error::other("stub upstreams listen on loopback only"),
        });
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| UpstreamError::Bind { addr, source })
}

async fn accept<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp));
            }
            // Out of descriptors under a big run: back off instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// HTTP/1.1, or h2c when the client opens with the HTTP/2 preface (`PRI * HTTP/2.0`).
async fn serve_http(tcp: TcpStream, body: u64) {
    let mut first = [0u8; 3];
    // The preface arrives in one segment from any real client; a few peeks cover a
    // client that trickles it.
    for _ in 0..100 {
        match tcp.peek(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= 3 || first[..n] != b"PRI"[..n] => break,
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    if &first == b"PRI" {
        h2::serve(tcp, body).await;
    } else {
        http1::serve(tcp, body).await;
    }
}
