//! `POST /policy/import/istio`: Istio resources in, a policy document and the report of
//! what was not translated out. Nothing is applied: review it, then `PUT /policy`.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body;
use super::Shared;
use crate::error::ApiError;

/// `POST /policy/import/istio` with a YAML body (many documents).
pub async fn istio(
    State(state): State<Shared>,
    headers: HeaderMap,
    request: Body,
) -> Result<Response, ApiError> {
    let bytes = body::read(request, &headers, state.body_limit).await?;
    let text = String::from_utf8(bytes).map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body is not UTF-8 text, so not YAML",
        )
    })?;
    Ok(Json(state.control.import_istio(&text)?).into_response())
}
