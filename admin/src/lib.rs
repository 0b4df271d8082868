//! The admin HTTP API of egress-gateway, as a library: [`router`] serves what a
//! [`Control`] exposes. The gateway implements `Control`; this crate never depends on
//! the gateway, so the API can be tested with a stand-in.
//!
//! Open routes: `GET /healthz`, `GET /readyz`, `GET /metrics`; [`stats_router`] serves
//! only those, for the stats listener.
//! Every other route needs `Authorization: Bearer <token>` ([`auth`]). Errors are JSON
//! of one shape ([`error`]); bodies are the types of [`api`], which `egressctl` shares
//! through [`client`].

pub mod api;
pub mod auth;
pub mod client;
pub mod error;
pub mod routes;
pub mod suggest;
pub mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use tokio::sync::broadcast;

use api::{
    Applied, Change, CheckAnswer, CheckRequest, ConnectionInfo, DrainReport, Fleet, Format,
    History, ImportAnswer, PolicyView, WriteOptions,
};
pub use auth::Tokens;
pub use error::ControlError;

/// Request bodies larger than this are refused (413) unless [`Options`] says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// What the admin API needs from the gateway.
///
/// [`change`](Control::change) may block on disk I/O (fsync); the router calls it on a
/// blocking thread.
pub trait Control: Send + Sync + 'static {
    /// Whether the gateway takes traffic: a policy is loaded and it is not draining.
    fn ready(&self) -> bool;
    /// What `/readyz` adds below its first line: the policy store's state, refused
    /// changes, listeners that could not bind. Empty when all is well.
    fn details(&self) -> Vec<String> {
        Vec::new()
    }
    /// Every replica sharing the policy store (a gateway with a store of its own is a
    /// fleet of one).
    ///
    /// Fails when the store cannot say.
    fn fleet(&self) -> Result<Fleet, ControlError> {
        Ok(Fleet {
            store: String::new(),
            latest: 0,
            answered_by: String::new(),
            members: Vec::new(),
        })
    }
    /// The addresses `auto_allocate` gave to TCP services in the policy in force.
    fn dns_allocations(&self) -> api::DnsAllocations {
        api::DnsAllocations::default()
    }
    /// The Prometheus text exposition of every metric.
    fn metrics(&self) -> String;
    /// The policy set in force, as one document in `format`, with its version.
    fn policy(&self, format: Format) -> PolicyView;
    /// Validates `change` and, unless it is a dry run, applies and persists it.
    ///
    /// Fails with every error of an invalid policy, when `If-Match` is stale, when the
    /// store is read-only, or when a rule or version does not exist.
    fn change(&self, change: Change, options: WriteOptions) -> Result<Applied, ControlError>;
    /// The versions kept, newest first.
    fn history(&self) -> History;
    /// What a request to one destination would meet: the decision of the policy in
    /// force and, unless `request.resolve` is false, the name resolved and the address
    /// guard applied.
    ///
    /// Fails when the host, source or listener is not valid.
    fn check(
        &self,
        request: CheckRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CheckAnswer, ControlError>> + Send>>;
    /// Istio resources (YAML, many documents) translated into a policy document, with a
    /// report of what was not translated. Changes nothing.
    ///
    /// Fails when this gateway cannot import.
    fn import_istio(&self, text: &str) -> Result<ImportAnswer, ControlError> {
        let _ = text;
        Err(ControlError::BadRequest(
            "this gateway does not import Istio resources".to_owned(),
        ))
    }
    /// Rules for what this gateway's audit log shows denied (or would be, in audit mode)
    /// that the policy in force still refuses, appended to that policy; only lines from
    /// `since` (RFC 3339, UTC) on when given. Reads the log:
    /// the router calls it on a blocking thread.
    ///
    /// Fails when the audit log is not a file this gateway can read.
    fn suggest(
        &self,
        min_count: u64,
        group_wildcards: bool,
        since: Option<String>,
    ) -> Result<suggest::Suggestion, ControlError> {
        let _ = (min_count, group_wildcards, since);
        Err(ControlError::BadRequest(
            "this gateway does not suggest rules".to_owned(),
        ))
    }
    /// The connections open now, oldest first.
    fn connections(&self) -> Vec<ConnectionInfo>;
    /// A live feed of audit lines as they are written (each with its newline).
    fn audit_tail(&self) -> broadcast::Receiver<Arc<str>>;
    /// Stops accepting, lets work in flight finish up to the drain timeout, and reports.
    /// Readiness turns false at once.
    fn drain(&self) -> Pin<Box<dyn Future<Output = DrainReport> + Send>>;
    /// Called once per admin API request answered, for metrics: `route` is its path in
    /// [`routes::ROUTES`] (`unmatched` for none), `method` one the API serves (`other`
    /// for the rest), `code` the status sent. All three come from bounded sets.
    fn admin_request(&self, route: &'static str, method: &'static str, code: u16) {
        let _ = (route, method, code);
    }
    /// Called once per request refused for its token, for metrics: `reason` is one of
    /// [`auth::FAILURE_REASONS`].
    fn admin_auth_failed(&self, reason: &'static str) {
        let _ = reason;
    }
}

/// How the admin API is served.
#[derive(Debug, Clone)]
pub struct Options {
    /// The accepted bearer tokens.
    pub tokens: Arc<Tokens>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Options {
    /// Options with `tokens` and the default body limit.
    pub fn new(tokens: Tokens) -> Self {
        Self {
            tokens: Arc::new(tokens),
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
}

/// The admin router. Live tails it serves end only when their client leaves; use
/// [`serve`] to have them end at shutdown.
pub fn router(control: Arc<dyn Control>, options: Options) -> Router {
    routes::router(
        routes::AppState::new(control, options.body_limit),
        options.tokens,
    )
}

/// Serves the admin API on `listener` until `shutdown` resolves; live tails end then,
/// so the graceful shutdown does not wait for them.
///
/// Fails when accepting fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: Arc<dyn Control>,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = routes::AppState::new(control, options.body_limit);
    let closing = state.closing();
    let app = routes::router(state, options.tokens);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        closing.send_replace(true);
    })
    .await
}

/// The stats router: `/healthz`, `/readyz` and `/metrics` as the admin API serves them,
/// without a token, and 404 for every other path.
pub fn stats_router(control: Arc<dyn Control>) -> Router {
    routes::stats::router(routes::AppState::new(control, DEFAULT_BODY_LIMIT))
}

/// Serves [`stats_router`] on `listener` until `shutdown` resolves.
///
/// Fails when accepting fails for good.
pub async fn serve_stats(
    listener: tokio::net::TcpListener,
    control: Arc<dyn Control>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, stats_router(control))
        .with_graceful_shutdown(shutdown)
        .await
}
