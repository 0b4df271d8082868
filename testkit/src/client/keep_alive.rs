//! [`KeepAliveClient`]: several requests, one after another, on one HTTP/1.1 keep-alive
//! or h2c connection, each read whole.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use super::{connect, ClientError, DEFAULT_TIMEOUT};

/// A whole response read by [`KeepAliveClient`].
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, whole (de-chunked).
    pub body: Bytes,
}

impl Response {
    /// The first value of header `name`, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type ClientBody = Full<Bytes>;

#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<ClientBody>),
    Http2(http2::SendRequest<ClientBody>),
}

/// One client connection that sends requests one after another: HTTP/1.1 keep-alive, or
/// HTTP/2 with prior knowledge. Dropping it closes the connection.
#[derive(Debug)]
pub struct KeepAliveClient {
    addr: SocketAddr,
    sender: Sender,
    connection: JoinHandle<()>,
    timeout: Duration,
}

impl KeepAliveClient {
    /// Connects to `addr` and speaks HTTP/1.1.
    ///
    /// Fails when the connect or the handshake fails.
    pub async fn connect(addr: SocketAddr) -> Result<KeepAliveClient, ClientError> {
        let io = TokioIo::new(connect(addr).await?);
        let (sender, connection) = http1::handshake(io).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self::new(addr, Sender::Http1(sender), connection))
    }

    /// Connects to `addr` and speaks HTTP/2 with prior knowledge (h2c).
    ///
    /// Fails when the connect or the HTTP/2 handshake fails.
    pub async fn connect_h2(addr: SocketAddr) -> Result<KeepAliveClient, ClientError> {
        let io = TokioIo::new(connect(addr).await?);
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io).await?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self::new(addr, Sender::Http2(sender), connection))
    }

    fn new(addr: SocketAddr, sender: Sender, connection: JoinHandle<()>) -> Self {
        KeepAliveClient {
            addr,
            sender,
            connection,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long [`KeepAliveClient::request`] waits for a whole response.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// True once the server (or an error) closed the connection.
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    /// Sends one request and reads the whole response. `path` is origin form (`/x?y`) or
    /// absolute form (`http://api.example.com/x`). Without a `host` header among
    /// `headers`, the host is the dialled address; over HTTP/2 the host becomes the
    /// `:authority`.
    ///
    /// Fails when the request is invalid, the connection breaks, or no whole response
    /// arrives within the timeout.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Response, ClientError> {
        let what = format!("response to {method} {path}");
        let after = self.timeout;
        match tokio::time::timeout(after, self.exchange(method, path, headers, body.into())).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { what, after }),
        }
    }

    /// `GET path` with no extra headers and an empty body.
    ///
    /// Fails as [`KeepAliveClient::request`].
    pub async fn get(&mut self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    async fn exchange(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, ClientError> {
        let host = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map_or_else(|| self.addr.to_string(), |(_, value)| (*value).to_owned());
        let mut builder = Request::builder().method(method);
        let h2 = matches!(self.sender, Sender::Http2(_));
        builder = if h2 && path.starts_with('/') {
            builder.uri(format!("http://{host}{path}"))
        } else {
            builder.uri(path.parse::<Uri>().map_err(http::Error::from)?)
        };
        for (name, value) in headers {
            if h2 && name.eq_ignore_ascii_case("host") {
                continue;
            }
            builder = builder.header(*name, *value);
        }
        let mut request = builder.body(Full::new(body))?;
        if !h2 && !request.headers().contains_key(http::header::HOST) {
            let value = HeaderValue::from_str(&host).map_err(http::Error::from)?;
            request.headers_mut().insert(http::header::HOST, value);
        }
        let response = match &mut self.sender {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await?
            }
        };
        let (parts, incoming) = response.into_parts();
        let body = incoming.collect().await?.to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

impl Drop for KeepAliveClient {
    fn drop(&mut self) {
        self.connection.abort();
    }
}
