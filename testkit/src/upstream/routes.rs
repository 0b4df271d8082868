//! The stub upstream's routes: parse the path, record the request, answer.

use std::convert::Infallible;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::{ConnContext, ReceivedRequest};
use crate::body::{self, StubBody};

/// The longest `/delay/N` accepted, so a typo cannot hang a test for days.
const MAX_DELAY_SECS: f64 = 3600.0;

/// What a path asks the stub to do.
#[derive(Debug, PartialEq)]
enum Route {
    Status(StatusCode),
    Delay(Duration),
    Reset,
    Bytes(u64),
    Stream(u64),
    Trailers,
    Echo,
    Bad(String),
}

fn route(path: &str) -> Route {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (first, arg) = (parts.next().unwrap_or(""), parts.next());
    match (first, arg) {
        ("status", Some(n)) => match n
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
        {
            Some(status) => Route::Status(status),
            None => Route::Bad(format!("{n} is not a status code (100-999)")),
        },
        ("delay", Some(n)) => match n.parse::<f64>() {
            Ok(secs) if (0.0..=MAX_DELAY_SECS).contains(&secs) => {
                Route::Delay(Duration::from_secs_f64(secs))
            }
            _ => Route::Bad(format!(
                "{n} is not a delay in seconds (0-{MAX_DELAY_SECS})"
            )),
        },
        ("reset", None) => Route::Reset,
        ("trailers", None) => Route::Trailers,
        ("bytes", Some(n)) => match n.parse() {
            Ok(n) => Route::Bytes(n),
            Err(_) => Route::Bad(format!("{n} is not a byte count")),
        },
        ("stream", Some(n)) => match n.parse() {
            Ok(n) => Route::Stream(n),
            Err(_) => Route::Bad(format!("{n} is not a chunk count")),
        },
        _ => Route::Echo,
    }
}

/// Serves one request. Never fails: a bad route is a 400 from the stub.
pub(super) async fn handle(
    request: Request<Incoming>,
    conn: ConnContext,
) -> Result<Response<StubBody>, Infallible> {
    let (parts, incoming) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let index = conn.shared.record(ReceivedRequest {
        method: parts.method.clone(),
        path: path.clone(),
        authority: parts.uri.authority().map(|a| a.as_str().to_owned()),
        version: parts.version,
        headers: parts.headers.clone(),
        body: bytes::Bytes::new(),
        connection: conn.id,
        peer: conn.peer,
    });

    let route = route(parts.uri.path());
    if route == Route::Reset {
        conn.reset.notify_one();
        // Never answer: wait until the connection task has torn the socket down.
        let mut closed = conn.closed.clone();
        while closed.changed().await.is_ok() {}
        return Ok(stub_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reset",
            body::empty(),
        ));
    }

    // Read the body whole before answering, as a well-behaved server does, so the
    // connection can be kept alive.
    let (body, request_trailers) = match incoming.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(e) => {
            let message = format!("reading the request body failed: {e}\n");
            return Ok(stub_response(
                StatusCode::BAD_REQUEST,
                "bad-body",
                body::full(message),
            ));
        }
    };
    let body_len = body.len();
    conn.shared.set_body(index, body);

    let response = match route {
        Route::Status(status) => stub_response(status, "status", body::empty()),
        Route::Delay(delay) => {
            // HTTP/2 streams run in tasks of their own: end them with the connection
            // rather than let a long delay outlive the stub.
            let mut closed = conn.closed.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = async { while closed.changed().await.is_ok() {} } => {}
            }
            stub_response(StatusCode::OK, "delay", body::empty())
        }
        Route::Bytes(n) => stub_response(StatusCode::OK, "bytes", body::repeated(n)),
        Route::Stream(n) => stub_response(StatusCode::OK, "stream", body::chunks(n)),
        Route::Trailers => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            trailers.insert("grpc-message", HeaderValue::from_static("ok"));
            for (name, value) in request_trailers.iter().flatten() {
                if let Ok(echo) = http::HeaderName::try_from(format!("x-echo-{name}")) {
                    trailers.append(echo, value.clone());
                }
            }
            let announced: Vec<&str> = trailers.keys().map(http::HeaderName::as_str).collect();
            let announced = HeaderValue::from_str(&announced.join(", "));
            let mut response = stub_response(
                StatusCode::OK,
                "trailers",
                body::with_trailers(bytes::Bytes::from_static(b"trailers\n"), trailers),
            );
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Ok(announced) = announced {
                // HTTP/1.1 sends only the trailers a response announces.
                response.headers_mut().insert(header::TRAILER, announced);
            }
            response
        }
        Route::Bad(message) => stub_response(
            StatusCode::BAD_REQUEST,
            "bad-route",
            body::full(message + "\n"),
        ),
        Route::Echo | Route::Reset => {
            let mut headers = Map::new();
            for name in parts.headers.keys() {
                let values = parts
                    .headers
                    .get_all(name)
                    .iter()
                    .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                headers.insert(name.as_str().to_owned(), Value::Array(values));
            }
            let echo = json!({
                "method": parts.method.as_str(),
                "path": path,
                "version": format!("{:?}", parts.version),
                "headers": headers,
                "body_len": body_len,
            });
            let mut response = stub_response(StatusCode::OK, "echo", body::full(echo.to_string()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    };
    Ok(response)
}

fn stub_response(status: StatusCode, route: &'static str, body: StubBody) -> Response<StubBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("x-stub", HeaderValue::from_static(route));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_their_argument() {
        assert_eq!(route("/status/418"), Route::Status(StatusCode::IM_A_TEAPOT));
        assert_eq!(
            route("/delay/0.5"),
            Route::Delay(Duration::from_millis(500))
        );
        assert_eq!(route("/reset"), Route::Reset);
        assert_eq!(route("/bytes/10"), Route::Bytes(10));
        assert_eq!(route("/stream/3"), Route::Stream(3));
        assert_eq!(route("/trailers"), Route::Trailers);
        assert_eq!(route("/anything/else"), Route::Echo);
        assert_eq!(route("/"), Route::Echo);
        assert_eq!(route("/reset/now"), Route::Echo);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(matches!(route("/status/abc"), Route::Bad(m) if m.contains("abc")));
        assert!(matches!(route("/status/1000"), Route::Bad(_)));
        assert!(matches!(route("/delay/-1"), Route::Bad(_)));
        assert!(matches!(route("/delay/NaN"), Route::Bad(_)));
        assert!(matches!(route("/delay/inf"), Route::Bad(_)));
        assert!(matches!(route("/bytes/x"), Route::Bad(_)));
    }
}
