//! The one place HTTP errors are shaped: every failure becomes a status code and headscale's
//! error body `{code, message, details}` (gRPC status codes, as headscale's gateway sends).
//! Internal failures are logged and answered with a generic message.

use crate::core::command::RejectionKind;
use crate::engine::EngineError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The daemon is not running, so this read-only view cannot change anything.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

/// headscale's error body (grpc-gateway shape).
#[derive(Serialize)]
pub struct ErrorBody {
    pub code: i32,
    pub message: String,
    pub details: Vec<serde_json::Value>,
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, i32) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, 3),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, 5),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, 6),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, 7),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, 16),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, 14),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, 13),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        match error {
            EngineError::Rejected(rejection) => {
                let message = rejection.to_string();
                match rejection.kind() {
                    RejectionKind::NotFound => ApiError::NotFound(message),
                    RejectionKind::Conflict => ApiError::Conflict(message),
                    RejectionKind::Forbidden => ApiError::Forbidden(message),
                    RejectionKind::Invalid => ApiError::BadRequest(message),
                }
            }
            EngineError::Stopped => ApiError::Unavailable(error.to_string()),
            EngineError::Store(_) => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering an API request");
                format!("internal error: {detail}")
            }
            other => other.to_string(),
        };
        (
            status,
            Json(ErrorBody {
                code,
                message,
                details: vec![],
            }),
        )
            .into_response()
    }
}
