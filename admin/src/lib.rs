//! The admin HTTP API of egress-gateway, as a library: [`router`] serves what a
//! [`Control`] exposes. The gateway implements `Control`; this crate never depends on
//! the gateway, so the API can be tested with a stand-in.
//!
//! Open routes: `GET /healthz`, `GET /readyz`, `GET /metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// What the admin API needs from the gateway.
pub trait Control: Send + Sync + 'static {
    /// Whether the gateway takes traffic: a policy is loaded and it is not draining.
    fn ready(&self) -> bool;
    /// The Prometheus text exposition of every metric.
    fn metrics(&self) -> String;
}

/// The admin router.
pub fn router(control: Arc<dyn Control>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(control)
}

/// Serves the admin API on `listener` until `shutdown` resolves.
///
/// Fails when accepting fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn Control>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(control): State<Arc<dyn Control>>) -> Response {
    if control.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: draining or no policy loaded\n",
        )
            .into_response()
    }
}

async fn metrics(State(control): State<Arc<dyn Control>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        control.metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    struct Stand(AtomicBool);

    impl Control for Stand {
        fn ready(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
        fn metrics(&self) -> String {
            "egress_policy_version 3\n".to_owned()
        }
    }

    async fn get(control: Arc<Stand>, path: &str) -> (StatusCode, String) {
        let response = router(control)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_follows_the_gateway() {
        let control = Arc::new(Stand(AtomicBool::new(false)));
        assert_eq!(
            get(control.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        control.0.store(true, Ordering::Relaxed);
        assert_eq!(get(control.clone(), "/readyz").await.0, StatusCode::OK);
        assert_eq!(
            get(control, "/healthz").await,
            (StatusCode::OK, "ok\n".to_owned())
        );
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let control = Arc::new(Stand(AtomicBool::new(true)));
        let (status, body) = get(control, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("egress_policy_version 3"));
    }
}
