//! `GET /policy/suggest?min_count=N&group_wildcards=true&since=1h`: rules for what this
//! gateway's audit log shows denied or would-be-denied. Nothing is applied.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body;
use super::Shared;
use crate::error::{ApiError, ControlError};

/// `GET /policy/suggest`.
pub async fn suggest(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let min_count = match body::query_value(query.as_deref(), "min_count") {
        Some(raw) => raw
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("min_count {raw:?} is not a count")))?,
        None => 1,
    };
    let group = body::query_value(query.as_deref(), "group_wildcards")
        .is_some_and(|v| matches!(v.as_str(), "" | "true" | "1" | "yes"));
    let since = match body::query_value(query.as_deref(), "since") {
        Some(raw) => Some(since_cutoff(&raw).ok_or_else(|| {
            ApiError::bad_request(format!(
                "since {raw:?} is neither a duration (1h, 30m) nor an RFC 3339 time"
            ))
        })?),
        None => None,
    };
    let control = Arc::clone(&state.control);
    let suggestion = tokio::task::spawn_blocking(move || control.suggest(min_count, group, since))
        .await
        .map_err(|e| ControlError::Internal(format!("the suggestion did not finish: {e}")))??;
    Ok(Json(suggestion).into_response())
}

/// `since` as the RFC 3339 UTC time lines are compared with: a duration back from now
/// (`1h`, `30m`), or a time as written.
pub fn since_cutoff(raw: &str) -> Option<String> {
    if let Ok(back) = humantime::parse_duration(raw) {
        let at = std::time::SystemTime::now().checked_sub(back)?;
        return Some(humantime::format_rfc3339_millis(at).to_string());
    }
    humantime::parse_rfc3339_weak(raw)
        .ok()
        .map(|at| humantime::format_rfc3339_millis(at).to_string())
}
