//! One upstream HTTP connection: the HTTP/1.1 or HTTP/2 handshake on a stream (plain
//! or TLS), and a request in the form each version wants.

use std::net::SocketAddr;

use http::header::HOST;
use http::{Request, Uri, Version};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::UpstreamBody;
use crate::error::EgressError;

/// A connection ready for a request.
pub(super) enum Conn {
    /// Lent to one request at a time.
    Http1(http1::SendRequest<UpstreamBody>),
    /// Shared by every request to its pool key.
    Http2(http2::SendRequest<UpstreamBody>),
}

/// The HTTP/2 (`h2`) or HTTP/1.1 handshake on `io`, its connection driven by a task of
/// its own.
///
/// Fails as [`upstream_error`] says when the upstream does not complete it.
pub(super) async fn handshake<T>(io: T, h2: bool, peer: SocketAddr) -> Result<Conn, EgressError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| upstream_error(peer, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
            }
        });
        Ok(Conn::Http2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, UpstreamBody>(io)
            .await
            .map_err(|e| upstream_error(peer, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Conn::Http1(sender))
    }
}

/// HTTP/1.1 form: origin-form target and a `Host` header.
pub(super) fn as_http1(mut request: Request<UpstreamBody>) -> Request<UpstreamBody> {
    if let Some(authority) = request.uri().authority().cloned() {
        if !request.headers().contains_key(HOST) {
            if let Ok(value) = authority.as_str().parse() {
                request.headers_mut().insert(HOST, value);
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.uri_mut() = path;
    }
    *request.version_mut() = Version::HTTP_11;
    request
}

/// HTTP/2 form: `:scheme` and `:authority` from the `Host` header, which HTTP/2 carries
/// as a pseudo-header instead.
pub(super) fn as_http2(mut request: Request<UpstreamBody>, scheme: &str) -> Request<UpstreamBody> {
    if let Some(host) = request.headers_mut().remove(HOST) {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let absolute = format!(
            "{scheme}://{}{path}",
            String::from_utf8_lossy(host.as_bytes())
        );
        if let Ok(uri) = absolute.parse() {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = Version::HTTP_2;
    request
}

/// A hyper error before the response: UPE when the upstream sent something that is not
/// HTTP, else UC.
pub(super) fn upstream_error(addr: SocketAddr, e: hyper::Error) -> EgressError {
    if e.is_parse() || e.is_parse_status() {
        EgressError::UpstreamProtocol {
            addr,
            reason: e.to_string(),
        }
    } else {
        EgressError::UpstreamReset {
            addr,
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    fn request(uri: &str, host: Option<&str>) -> Request<UpstreamBody> {
        let mut builder = Request::builder().uri(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder
            .body(Empty::new().map_err(|never| match never {}).boxed())
            .unwrap()
    }

    #[test]
    fn requests_switch_forms_both_ways() {
        let h2 = as_http2(request("/a?b=1", Some("api.example.com:8443")), "https");
        assert_eq!(h2.uri().to_string(), "https://api.example.com:8443/a?b=1");
        assert!(h2.headers().get(HOST).is_none());
        assert_eq!(h2.version(), Version::HTTP_2);
        let h1 = as_http1(h2);
        assert_eq!(h1.uri().to_string(), "/a?b=1");
        assert_eq!(h1.headers()[HOST], "api.example.com:8443");
        assert_eq!(h1.version(), Version::HTTP_11);
    }
}
