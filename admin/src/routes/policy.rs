//! The policy routes: read it, replace it, change one rule, its history and rollback,
//! and "would this be allowed?".

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::body;
use super::Shared;
use crate::api::{Applied, Change, CheckRequest, Format, WriteOptions};
use crate::auth::Author;
use crate::error::{ApiError, ControlError};

/// `GET /policy`: YAML unless `Accept` asks for JSON; the version is the `ETag`.
pub async fn get_policy(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let format = if accept.contains("json") {
        Format::Json
    } else {
        Format::Yaml
    };
    let view = state.control.policy(format);
    (
        [
            (header::CONTENT_TYPE, format.media_type().to_owned()),
            (header::ETAG, body::etag(view.version)),
        ],
        view.text,
    )
        .into_response()
}

/// `PUT /policy`.
pub async fn put_policy(
    State(state): State<Shared>,
    Extension(author): Extension<Author>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request, &headers, state.body_limit).await?;
    let text = body::policy_text(bytes, &headers)?;
    write(state, author, query, &headers, Change::Replace(text)).await
}

/// `PUT /rules/{name}`.
pub async fn put_rule(
    State(state): State<Shared>,
    Extension(author): Extension<Author>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request, &headers, state.body_limit).await?;
    let rule = body::policy_text(bytes, &headers)?;
    write(
        state,
        author,
        query,
        &headers,
        Change::SetRule { name, rule },
    )
    .await
}

/// `DELETE /rules/{name}`.
pub async fn delete_rule(
    State(state): State<Shared>,
    Extension(author): Extension<Author>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    write(state, author, query, &headers, Change::DeleteRule(name)).await
}

/// `POST /policy/rollback/{version}`.
pub async fn rollback(
    State(state): State<Shared>,
    Extension(author): Extension<Author>,
    Path(version): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let version = version.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "{version:?} is not a version; GET /policy/history lists them"
        ))
    })?;
    write(state, author, query, &headers, Change::Rollback(version)).await
}

/// Runs a change on a blocking thread (it fsyncs) and answers the new version.
async fn write(
    state: Shared,
    author: Author,
    query: Option<String>,
    headers: &HeaderMap,
    change: Change,
) -> Result<Response, ApiError> {
    let options = WriteOptions {
        author: author.0,
        if_match: body::if_match(headers)?,
        dry_run: body::dry_run(query.as_deref()),
    };
    let control = Arc::clone(&state.control);
    let applied: Applied = tokio::task::spawn_blocking(move || control.change(change, options))
        .await
        .map_err(|e| ControlError::Internal(format!("the policy write did not finish: {e}")))??;
    Ok((
        StatusCode::OK,
        [(header::ETAG, body::etag(applied.version))],
        Json(applied),
    )
        .into_response())
}

/// `GET /policy/history`.
pub async fn history(State(state): State<Shared>) -> Response {
    Json(state.control.history()).into_response()
}

/// `POST /policy/check` with a JSON body.
pub async fn check(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request, &headers, state.body_limit).await?;
    let format = body::format(&headers)?;
    let parsed: Result<CheckRequest, String> = match format {
        Format::Json => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    let request = parsed.map_err(|e| {
        ApiError::bad_request(format!(
            "the check request is not {{\"host\": ..., \"port\": ..., \"source\"?: ..., \"listener\"?: ...}}: {e}"
        ))
    })?;
    if request.port == 0 {
        return Err(ApiError::bad_request("port 0 is not a port (1-65535)"));
    }
    Ok(Json(state.control.check(request).await?).into_response())
}
