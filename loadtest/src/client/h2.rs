//! HTTP/2 with prior knowledge (h2c) through hyper's connection-level client: one
//! connection, requests one after another on it.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// A request sender on one h2c connection.
pub type Sender = SendRequest<Empty<Bytes>>;

/// Starts HTTP/2 on `tcp`; the connection runs in a task of its own until the sender
/// is dropped.
///
/// Fails when the handshake fails.
pub async fn handshake(tcp: TcpStream) -> Result<Sender, hyper::Error> {
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        // Its end (error or not) shows as a failed request on the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// `GET http://authority/path`; the status and the body bytes received.
///
/// Fails when the stream or connection fails.
pub async fn get(sender: &mut Sender, authority: &str, path: &str) -> Result<(u16, u64), H2Error> {
    sender.ready().await?;
    let request = http::Request::get(format!("http://{authority}{path}"))
        .header(http::header::USER_AGENT, "egress-loadtest")
        .body(Empty::new())
        .map_err(|_| H2Error::Request)?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    Ok((status, bytes))
}

/// Why an h2c request failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// The authority or path does not make a URI.
    #[error("request does not form a valid URI")]
    Request,
    /// hyper's error.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}
