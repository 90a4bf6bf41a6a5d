//! The one place HTTP errors are shaped: every failure becomes a status code and headscale's
//! error body `{code, message, details}` (gRPC status codes, as headscale's gateway sends).
//! Internal failures are logged with their detail under a random error id and answered with a
//! generic message naming only that id (I1: no storage paths or I/O error text reach clients).

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
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// The gRPC status code: 3 invalid argument, 5 not found, 6 already exists, 7 permission
    /// denied, 8 resource exhausted, 12 unimplemented, 13 internal, 14 unavailable, 16
    /// unauthenticated.
    pub code: i32,
    pub message: String,
    /// Always empty.
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
            EngineError::Timeout(_) => ApiError::Unavailable(error.to_string()),
            EngineError::Store(_) => ApiError::Internal(error.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        ApiError::Internal(error.to_string())
    }
}

/// What a client is told about an internal failure: nothing but the id the log line carries.
fn internal_message(error_id: &str) -> String {
    format!("internal error (error id {error_id}; the server log has the detail)")
}

/// An error response with an explicit status and gRPC code.
pub fn status_body(status: StatusCode, code: i32, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            code,
            message: message.into(),
            details: vec![],
        }),
    )
        .into_response()
}

impl ApiError {
    /// The gRPC status code and the message a client is told: an internal failure is logged
    /// here under a fresh error id and answered with that id only. REST and gRPC both answer
    /// through this, so their messages are the same.
    pub fn code_and_message(&self) -> (i32, String) {
        let (_, code) = self.status_and_code();
        let message = match self {
            ApiError::Internal(detail) => {
                let error_id = format!("{:016x}", rand::random::<u64>());
                tracing::error!(%error_id, %detail, "internal error answering an API request");
                internal_message(&error_id)
            }
            other => other.to_string(),
        };
        (code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        let (code, message) = self.code_and_message();
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

/// A JSON request body read the way headscale's gateway reads one: any content type, an empty
/// body is `{}`, unknown fields are ignored (serde's default), and anything unreadable is a
/// 400 with the `{code: 3, message, details}` body rather than axum's plain-text rejection.
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(ApiError::BadRequest(
                "invalid request body: expected a JSON object".into(),
            ));
        }
        serde_json::from_slice(text)
            .map(ApiJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
    }
}

/// The TCP listener's answer to a missing, unknown or expired API key: headscale's plain
/// `401 Unauthorized` (not the JSON error body the API itself uses).
pub fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        "Unauthorized",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log sink the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn internal_errors_answer_an_id_and_log_the_detail_under_it() {
        let log = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let log = log.clone();
                move || log.clone()
            })
            .with_ansi(false)
            .finish();
        let detail = "storage I/O failed: open /var/lib/headscale/db.sled/events.log: EIO";
        let response = tracing::subscriber::with_default(subscriber, || {
            ApiError::Internal(detail.into()).into_response()
        });
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], 13);
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains("/var/lib"), "{message}");
        assert!(!message.contains("EIO"), "{message}");
        let id = message
            .strip_prefix("internal error (error id ")
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no error id in {message:?}"));
        assert_eq!(id.len(), 16, "{message}");
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let line = logged
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("the log has no line with error id {id}: {logged}"));
        assert!(line.contains(detail), "{line}");
    }
}
