//! `GET /policy/suggest?min_count=N&group_wildcards=true`: rules for what this gateway's
//! audit log shows denied or would-be-denied. Nothing is applied.

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
    let control = Arc::clone(&state.control);
    let suggestion = tokio::task::spawn_blocking(move || control.suggest(min_count, group))
        .await
        .map_err(|e| ControlError::Internal(format!("the suggestion did not finish: {e}")))??;
    Ok(Json(suggestion).into_response())
}
