//! The stub's h2c: hyper's HTTP/2 server with the same answers as the HTTP/1.1
//! responder, bodies sliced from static zeros.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::http1::{answer, Answer, ZEROS};

/// Serves HTTP/2 (prior knowledge) on `tcp` until the client leaves.
pub async fn serve(tcp: TcpStream, default_bytes: u64) {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let host = request
            .uri()
            .authority()
            .map(|a| a.host().as_bytes().to_vec())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::HOST)
                    .map(|h| h.as_bytes().to_vec())
            });
        let answer = answer(request.uri().path(), host.as_deref(), default_bytes);
        async move {
            let (status, body) = match answer {
                Answer::Body { bytes, delay } => {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    (200, zeros(bytes))
                }
                Answer::Denied => (403, Bytes::from_static(b"denied\n")),
                Answer::NotFound => (404, Bytes::new()),
                Answer::BadRequest => (400, Bytes::new()),
            };
            let mut response = http::Response::new(Full::new(body));
            *response.status_mut() =
                http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tcp), service)
        .await;
}

/// `n` zero bytes: a slice of the static buffer when it is large enough.
fn zeros(n: u64) -> Bytes {
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n <= ZEROS.len() {
        Bytes::from_static(&ZEROS[..n])
    } else {
        Bytes::from(vec![0u8; n])
    }
}
