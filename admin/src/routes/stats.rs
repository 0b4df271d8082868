//! The stats router: the open routes of [`ROUTES`] and nothing else, for an address that
//! a cluster's Prometheus and kubelet reach without reaching the policy API.

use axum::http::{Method, StatusCode, Uri};
use axum::Router;

use super::{handlers, Shared, ROUTES};
use crate::error::ApiError;

/// The paths the stats router serves: exactly the open routes of the admin API.
pub fn paths() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().filter(|r| r.open).map(|r| r.path)
}

/// Builds the stats router; every other path is 404, whatever its method.
pub fn router(state: Shared) -> Router {
    let mut router = Router::new();
    for path in paths() {
        router = router.route(path, handlers(path));
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn served() -> String {
    paths().collect::<Vec<_>>().join(", ")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} on the stats listener; it serves {}",
            uri.path(),
            served()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; use GET", uri.path()),
    )
}
