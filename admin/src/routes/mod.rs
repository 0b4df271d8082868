//! The route table: every path, its methods and whether it is open, in one list that
//! the router is built from and that `GET /openapi.json` is checked against.

mod body;
mod import;
pub mod openapi;
mod ops;
mod policy;
pub mod stats;
mod suggest;

pub use suggest::since_cutoff;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;
use tokio::sync::watch;

use crate::auth::{require_token, TokenCheck, Tokens};
use crate::error::ApiError;
use crate::Control;

/// What every handler shares.
pub struct AppState {
    pub(crate) control: Arc<dyn Control>,
    pub(crate) body_limit: usize,
    /// Turns true when the server shuts down, ending live tails.
    closing: Arc<watch::Sender<bool>>,
}

impl AppState {
    /// State for `control`, refusing bodies over `body_limit` bytes.
    pub fn new(control: Arc<dyn Control>, body_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            control,
            body_limit,
            closing: Arc::new(watch::Sender::new(false)),
        })
    }

    /// Send `true` here to end every live tail.
    pub fn closing(&self) -> Arc<watch::Sender<bool>> {
        Arc::clone(&self.closing)
    }
}

type Shared = Arc<AppState>;

/// One route of the admin API.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpec {
    /// The path, with `{param}` segments as in OpenAPI.
    pub path: &'static str,
    /// The methods it answers.
    pub methods: &'static [&'static str],
    /// Served without a token.
    pub open: bool,
}

/// Every route. `GET /openapi.json` must describe exactly these (a test checks it).
pub const ROUTES: &[RouteSpec] = &[
    open("/healthz", &["GET"]),
    open("/readyz", &["GET"]),
    open("/metrics", &["GET"]),
    guarded("/policy", &["GET", "PUT"]),
    guarded("/policy/check", &["POST"]),
    guarded("/policy/import/istio", &["POST"]),
    guarded("/policy/suggest", &["GET"]),
    guarded("/policy/history", &["GET"]),
    guarded("/policy/rollback/{version}", &["POST"]),
    guarded("/rules/{name}", &["PUT", "DELETE"]),
    guarded("/connections", &["GET"]),
    guarded("/audit/tail", &["GET"]),
    guarded("/drain", &["POST"]),
    guarded("/fleet", &["GET"]),
    guarded("/dns/allocations", &["GET"]),
    guarded("/openapi.json", &["GET"]),
];

const fn open(path: &'static str, methods: &'static [&'static str]) -> RouteSpec {
    RouteSpec {
        path,
        methods,
        open: true,
    }
}

const fn guarded(path: &'static str, methods: &'static [&'static str]) -> RouteSpec {
    RouteSpec {
        path,
        methods,
        open: false,
    }
}

/// The handlers of one path of [`ROUTES`].
fn handlers(path: &str) -> MethodRouter<Shared> {
    match path {
        "/healthz" => get(ops::healthz),
        "/readyz" => get(ops::readyz),
        "/metrics" => get(ops::metrics),
        "/openapi.json" => get(ops::openapi),
        "/policy" => get(policy::get_policy).put(policy::put_policy),
        "/policy/check" => post(policy::check),
        "/policy/import/istio" => post(import::istio),
        "/policy/suggest" => get(suggest::suggest),
        "/policy/history" => get(policy::history),
        "/policy/rollback/{version}" => post(policy::rollback),
        "/rules/{name}" => put(policy::put_rule).merge(delete(policy::delete_rule)),
        "/connections" => get(ops::connections),
        "/audit/tail" => get(ops::audit_tail),
        "/drain" => post(ops::drain),
        "/fleet" => get(ops::fleet),
        "/dns/allocations" => get(ops::dns_allocations),
        _ => MethodRouter::new(),
    }
}

/// Builds the router from [`ROUTES`]: open routes as they are, the rest behind the
/// bearer-token check.
pub fn router(state: Shared, tokens: Arc<Tokens>) -> Router {
    let mut open = Router::new();
    let mut guarded = Router::new();
    for spec in ROUTES {
        if spec.open {
            open = open.route(spec.path, handlers(spec.path));
        } else {
            guarded = guarded.route(spec.path, handlers(spec.path));
        }
    }
    let check = TokenCheck {
        tokens,
        control: Arc::clone(&state.control),
    };
    let guarded = guarded.route_layer(from_fn_with_state(check, require_token));
    open.merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(Arc::clone(&state), count_request))
        .with_state(state)
}

/// Tells the control of every request answered, by its route in [`ROUTES`], method and
/// status: labels from bounded sets, whatever path a client sends.
async fn count_request(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let route = ROUTES
        .iter()
        .find(|r| openapi::path_matches(r.path, request.uri().path()))
        .map_or("unmatched", |r| r.path);
    let method = match *request.method() {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "other",
    };
    let response = next.run(request).await;
    state
        .control
        .admin_request(route, method, response.status().as_u16());
    response
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!("no route {}; GET /openapi.json lists them", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let allowed = ROUTES
        .iter()
        .find(|r| openapi::path_matches(r.path, uri.path()))
        .map(|r| r.methods.join(", "))
        .unwrap_or_default();
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}; use {allowed}", uri.path()),
    )
}
