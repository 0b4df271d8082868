//! Clients the protocol tests need beyond the testkit's: HTTP/1.1 or HTTP/2 over any
//! stream (plain, or TLS with a client certificate), with request trailers and the
//! response's trailers read back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type Body = BoxBody<Bytes, Infallible>;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A body of `data` followed by `trailers` when given.
pub fn body(data: &'static [u8], trailers: Option<HeaderMap>) -> Body {
    let mut frames = vec![Ok(Frame::data(Bytes::from_static(data)))];
    if let Some(trailers) = trailers {
        frames.push(Ok(Frame::trailers(trailers)));
    }
    StreamBody::new(stream::iter(frames)).boxed()
}

/// A response read whole, trailers included.
#[derive(Debug)]
pub struct Whole {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Whole {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn read_whole(response: Response<hyper::body::Incoming>) -> Whole {
    let (parts, body) = response.into_parts();
    let collected = tokio::time::timeout(TIMEOUT, body.collect())
        .await
        .expect("the response body arrives in time")
        .expect("the response body is read");
    let trailers = collected.trailers().cloned();
    Whole {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

/// One HTTP connection, HTTP/1.1 or HTTP/2.
pub enum Client {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

impl Client {
    /// Handshakes over `io`: HTTP/2 when `h2`, else HTTP/1.1.
    pub async fn over<T>(io: T, h2: bool) -> Client
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        if h2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("HTTP/2 handshake");
            tokio::spawn(conn);
            Client::H2(sender)
        } else {
            let (sender, conn) = http1::handshake(io).await.expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            Client::H1(sender)
        }
    }

    /// A plain connection to `addr`.
    pub async fn plain(addr: SocketAddr, h2: bool) -> Client {
        Client::over(plain(addr).await, h2).await
    }

    /// Sends `request` and reads the whole response; `Err` when the connection fails.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Whole, hyper::Error> {
        let response = tokio::time::timeout(TIMEOUT, async {
            match self {
                Client::H1(sender) => {
                    sender.ready().await?;
                    sender.send_request(request).await
                }
                Client::H2(sender) => {
                    sender.ready().await?;
                    sender.send_request(request).await
                }
            }
        })
        .await
        .expect("a response arrives in time")?;
        Ok(read_whole(response).await)
    }

    /// `GET uri` with `host`, an empty body.
    pub async fn get(&mut self, uri: &str, host: &str) -> Result<Whole, hyper::Error> {
        let mut builder = Request::get(uri);
        if matches!(self, Client::H1(_)) {
            builder = builder.header(http::header::HOST, host);
        }
        self.send(builder.body(body(b"", None)).unwrap()).await
    }
}

/// A TCP connection to `addr`.
pub async fn plain(addr: SocketAddr) -> TcpStream {
    egress_testkit::client::connect(addr)
        .await
        .expect("connect to the gateway")
}

/// A TLS connection to `addr`, verifying it as `name`.
///
/// Fails when the handshake fails.
pub async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = rustls_pki_types::ServerName::try_from(name.to_owned()).expect("a server name");
    tokio::time::timeout(
        TIMEOUT,
        TlsConnector::from(config).connect(name, plain(addr).await),
    )
    .await
    .expect("the TLS handshake ends in time")
}
