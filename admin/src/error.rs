//! The one place errors become responses: every failure of the admin API is JSON of one
//! shape, `{"error": "...", "details": [{"path": ..., "message": ...}]}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::{Detail, ErrorBody};

/// Why a [`Control`](crate::Control) refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The policy (or rule) does not validate; `details` holds every error. → 400
    #[error("{message}")]
    Invalid {
        /// A summary, e.g. `invalid policy: 3 errors; nothing changed`.
        message: String,
        /// Every error.
        details: Vec<Detail>,
    },
    /// A request that makes no sense as sent. → 400
    #[error("{0}")]
    BadRequest(String),
    /// `If-Match` names a version that is no longer in force. → 412
    #[error("the policy changed since version {expected}: version {current} is in force; fetch it again and retry")]
    Stale {
        /// The version the writer prepared against.
        expected: u64,
        /// The version in force.
        current: u64,
    },
    /// The policy directory cannot be written (a mounted ConfigMap). → 409
    #[error("read-only store: {0}")]
    ReadOnly(String),
    /// A rule or version that does not exist. → 404
    #[error("{0}")]
    NotFound(String),
    /// Something failed inside the gateway. → 500
    #[error("{0}")]
    Internal(String),
    /// The policy store (etcd) cannot be reached; nothing changed. → 503
    #[error("{0}")]
    Unavailable(String),
}

/// An error response: a status, the JSON body, and extra headers where HTTP wants them.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorBody,
    /// `WWW-Authenticate` for 401.
    pub challenge: bool,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                details: Vec::new(),
            },
            challenge: false,
        }
    }

    /// 401, with the `WWW-Authenticate` challenge.
    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, error)
        }
    }

    /// 400.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let status = match &e {
            ControlError::Invalid { .. } | ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
            ControlError::ReadOnly(_) => StatusCode::CONFLICT,
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let details = match &e {
            ControlError::Invalid { details, .. } => details.clone(),
            _ => Vec::new(),
        };
        Self {
            status,
            body: ErrorBody {
                error: e.to_string(),
                details,
            },
            challenge: false,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&self.body)
            .unwrap_or_else(|_| r#"{"error":"internal error","details":[]}"#.to_owned());
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body + "\n",
        )
            .into_response();
        if self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="egress-gateway admin""#),
            );
        }
        response
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        ApiError::from(self).into_response()
    }
}
