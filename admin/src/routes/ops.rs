//! The operational routes: liveness, readiness, metrics, open connections, the live
//! audit tail, and draining.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use tokio::sync::{broadcast, watch};

use super::{body, openapi, Shared};
use crate::api::Connections;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `ready` or `not ready: ...`, then one line per detail (the store's state, refused
/// changes, unbound listeners): the store being down does not make a gateway unready.
pub async fn readyz(State(state): State<Shared>) -> Response {
    let (status, mut text) = if state.control.ready() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining or no policy loaded\n".to_owned(),
        )
    };
    for line in state.control.details() {
        text.push_str(&line);
        text.push('\n');
    }
    (status, text).into_response()
}

pub async fn fleet(State(state): State<Shared>) -> Response {
    match state.control.fleet() {
        Ok(fleet) => Json(fleet).into_response(),
        Err(e) => e.into_response(),
    }
}

pub async fn dns_allocations(State(state): State<Shared>) -> Response {
    Json(state.control.dns_allocations()).into_response()
}

pub async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.control.metrics(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    Json(openapi::document()).into_response()
}

pub async fn connections(State(state): State<Shared>) -> Response {
    Json(Connections {
        connections: state.control.connections(),
    })
    .into_response()
}

pub async fn drain(State(state): State<Shared>) -> Response {
    let report = state.control.drain().await;
    let status = if report.drained {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// A tail fell this far behind: it is told so and dropped, never waited for.
fn dropped_note(missed: u64) -> Bytes {
    Bytes::from(format!(
        "# egress-gateway: this tail fell behind by {missed} lines and was dropped; reconnect to follow again\n"
    ))
}

/// `GET /audit/tail[?filter=TEXT]`: audit lines as they are written, those containing
/// `TEXT` (a host, a rule name, ...) when a filter is given, case-insensitively.
pub async fn audit_tail(State(state): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let filter = body::query_value(query.as_deref(), "filter")
        .filter(|f| !f.is_empty())
        .map(|f| f.to_ascii_lowercase());
    let tail = Tail {
        lines: state.control.audit_tail(),
        closing: state.closing.subscribe(),
        filter: filter.map(Arc::from),
        done: false,
    };
    let stream = futures_util::stream::unfold(tail, Tail::next);
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

struct Tail {
    lines: broadcast::Receiver<Arc<str>>,
    closing: watch::Receiver<bool>,
    filter: Option<Arc<str>>,
    done: bool,
}

impl Tail {
    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, Tail)> {
        if self.done {
            return None;
        }
        loop {
            let received = tokio::select! {
                _ = self.closing.wait_for(|closing| *closing) => return None,
                received = self.lines.recv() => received,
            };
            match received {
                Ok(line) => {
                    let wanted = self
                        .filter
                        .as_deref()
                        .is_none_or(|f| line.to_ascii_lowercase().contains(f));
                    if wanted {
                        return Some((Ok(Bytes::copy_from_slice(line.as_bytes())), self));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    self.done = true;
                    return Some((Ok(dropped_note(missed)), self));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
