//! A small HTTP/1.1 client for the admin API, as `egressctl` uses it: one connection per
//! request, the bearer token on every request, bounded waits.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why a request to the admin API failed before an answer came.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not `host:port` or `http://host:port`.
    #[error("{0:?} is not an admin address; pass --admin host:port (or set EGRESS_ADMIN)")]
    Address(String),
    /// Nothing answered there.
    #[error("cannot reach the admin API at {addr}: {source}; is the gateway running? pass --admin (or set EGRESS_ADMIN)")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the admin API at {addr} did not answer within {after:?}")]
    Timeout {
        /// The address.
        addr: String,
        /// The limit.
        after: Duration,
    },
    /// The exchange failed half way.
    #[error("talking to the admin API at {addr}: {source}")]
    Http {
        /// The address.
        addr: String,
        /// Why.
        source: hyper::Error,
    },
    /// A header value that HTTP cannot carry (e.g. a token with a newline).
    #[error("invalid header value for {0}")]
    Header(&'static str),
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The admin API at one address, with one token.
#[derive(Debug, Clone)]
pub struct Client {
    authority: String,
    token: Option<String>,
    connect_timeout: Duration,
}

impl Client {
    /// A client for `admin` (`host:port`, optionally prefixed `http://`).
    ///
    /// Fails when the address has no port or names another scheme.
    pub fn new(admin: &str, token: Option<String>) -> Result<Self, ClientError> {
        let trimmed = admin.trim().trim_end_matches('/');
        let authority = match trimmed.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(ClientError::Address(admin.to_owned())),
            None => trimmed,
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port || authority.contains('/') {
            return Err(ClientError::Address(admin.to_owned()));
        }
        Ok(Self {
            authority: authority.to_owned(),
            token,
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// The `host:port` requests go to.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends one request and reads the whole answer within `timeout`.
    ///
    /// Fails when the admin API cannot be reached or does not answer in time.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Option<(Vec<u8>, &str)>,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        let exchange = async {
            let response = self.start(method, path, headers, body).await?;
            self.read(response).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.authority.clone(),
                after: timeout,
            })?
    }

    /// Reads the whole of an answer's body.
    ///
    /// Fails when the connection breaks before the body ends.
    pub async fn read(&self, response: hyper::Response<Incoming>) -> Result<Reply, ClientError> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| self.http(source))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a GET and hands back the answer with its body unread, for streams.
    ///
    /// Fails when the admin API cannot be reached or sends no head within the connect
    /// timeout.
    pub async fn stream(&self, path: &str) -> Result<hyper::Response<Incoming>, ClientError> {
        tokio::time::timeout(
            self.connect_timeout,
            self.start(Method::GET, path, &[], None),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            addr: self.authority.clone(),
            after: self.connect_timeout,
        })?
    }

    fn http(&self, source: hyper::Error) -> ClientError {
        ClientError::Http {
            addr: self.authority.clone(),
            source,
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the admin API is the operator's own endpoint, not an egress destination"
    )]
    async fn start(
        &self,
        method: Method,
        path: &str,
        headers: &[(HeaderName, String)],
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let connect = tokio::net::TcpStream::connect(&self.authority);
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.authority.clone(),
                after: self.connect_timeout,
            })?
            .map_err(|source| ClientError::Connect {
                addr: self.authority.clone(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| self.http(source))?;
        tokio::spawn(async move {
            // Errors surface through the response future.
            let _ = connection.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::Header("Authorization"))?;
            request = request.header(hyper::header::AUTHORIZATION, value);
        }
        for (name, value) in headers {
            let value =
                HeaderValue::from_str(value).map_err(|_| ClientError::Header("a header"))?;
            request = request.header(name, value);
        }
        let bytes = match body {
            Some((bytes, content_type)) => {
                request = request.header(hyper::header::CONTENT_TYPE, content_type);
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|_| ClientError::Header("the request"))?;
        sender
            .send_request(request)
            .await
            .map_err(|source| self.http(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_and_port_with_an_optional_http_scheme() {
        assert_eq!(
            Client::new("http://127.0.0.1:15000/", None)
                .unwrap()
                .authority(),
            "127.0.0.1:15000"
        );
        assert_eq!(
            Client::new("[::1]:15000", None).unwrap().authority(),
            "[::1]:15000"
        );
        assert!(Client::new("https://gw:15000", None).is_err());
        assert!(Client::new("gateway", None).is_err());
    }
}
