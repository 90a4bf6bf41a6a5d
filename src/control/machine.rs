//! The `/machine/*` endpoints served inside the Noise channel: register and map; everything
//! else is answered 501, as headscale does (logged at debug: the path is the client's).
//!
//! Every request body is read here, before any handler sees it (audit H2): within
//! [`BODY_READ_DEADLINE`] as a whole, up to a per-path size limit, and only with a permit
//! from the process-wide [`BodyBudget`] of in-flight body bytes. A stalled body gets `408`,
//! an oversized one `413`, and one that finds the budget spent `503`; hyper then resets the
//! stream, so nothing of it is kept.

use super::map_stream::MachineContext;
use super::upgrade::Peer;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest `/machine/register` body (Tailscale sends a few KiB).
pub const MAX_REGISTER_BODY_BYTES: usize = 64 * 1024;
/// Largest `/machine/map` body (hostinfo and endpoints; a few KiB in practice).
pub const MAX_MAP_BODY_BYTES: usize = 256 * 1024;
/// Largest body of any other `/machine/*` request.
pub const MAX_OTHER_BODY_BYTES: usize = 64 * 1024;
/// A request body must be complete this long after its headers arrived.
pub const BODY_READ_DEADLINE: Duration = Duration::from_secs(10);
/// In-flight request-body bytes across all Noise sessions of the process.
pub const BODY_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// The size limit of a request body on `path`.
pub fn body_limit(path: &str) -> usize {
    match path {
        "/machine/register" => MAX_REGISTER_BODY_BYTES,
        "/machine/map" => MAX_MAP_BODY_BYTES,
        _ => MAX_OTHER_BODY_BYTES,
    }
}

/// The process-wide budget of request-body bytes being read or parsed: a request reserves
/// its declared length (or its path's limit when it declares none) before its body is read.
/// It also carries the read deadline, so tests can shorten it.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    deadline: Duration,
}

impl BodyBudget {
    pub fn new(bytes: usize, deadline: Duration) -> Self {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(bytes)),
            deadline,
        }
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget::new(BODY_BUDGET_BYTES, BODY_READ_DEADLINE)
    }
}

async fn not_implemented(request: Request) -> (StatusCode, &'static str) {
    let machine = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.machine_key.short())
        .unwrap_or_default();
    // Debug, not info: the path is chosen by any client that completes a handshake (L5).
    tracing::debug!(path = %request.uri().path(), %machine, "control request not implemented");
    (StatusCode::NOT_IMPLEMENTED, "not implemented\n")
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// Reads the whole body under the deadline, the size limit and the byte budget, then hands
/// the handler a request whose body is already in memory.
async fn read_body(State(budget): State<BodyBudget>, request: Request, next: Next) -> Response {
    let limit = body_limit(request.uri().path());
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        );
    }
    let reserve = declared.map_or(limit, |length| length as usize);
    let permit = match u32::try_from(reserve) {
        Ok(0) => None,
        Ok(bytes) => match budget.bytes.clone().try_acquire_many_owned(bytes) {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::debug!(bytes, "request body budget spent");
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server busy: too many request bodies in flight, retry later".into(),
                );
            }
        },
        Err(_) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".into(),
            )
        }
    };
    let collected = tokio::time::timeout(
        budget.deadline,
        http_body_util::Limited::new(body, limit).collect(),
    )
    .await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {limit} bytes"),
            );
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "request body not read");
            return refuse(StatusCode::BAD_REQUEST, "request body not readable".into());
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not complete within {} ms",
                    budget.deadline.as_millis()
                ),
            );
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(permit);
    response
}

pub fn router(context: MachineContext, budget: BodyBudget) -> Router {
    Router::new()
        .route(
            "/machine/register",
            axum::routing::post(super::register::register),
        )
        .route("/machine/map", axum::routing::post(super::map_stream::map))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_MAP_BODY_BYTES))
        .fallback(not_implemented)
        .layer(axum::middleware::from_fn_with_state(budget, read_body))
        .with_state(context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tower::ServiceExt;

    fn echo_router(budget: BodyBudget) -> Router {
        Router::new()
            .route(
                "/machine/register",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .route(
                "/machine/map",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(budget, read_body))
    }

    async fn post_to(router: Router, path: &str, body: Body, length: Option<usize>) -> StatusCode {
        let mut request = Request::post(path);
        if let Some(length) = length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        router
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn limits_depend_on_the_path() {
        let router = echo_router(BodyBudget::default());
        let small = vec![b'x'; MAX_REGISTER_BODY_BYTES];
        assert_eq!(
            post_to(router.clone(), "/machine/register", Body::from(small), None).await,
            StatusCode::OK
        );
        let over = vec![b'x'; MAX_REGISTER_BODY_BYTES + 1];
        assert_eq!(
            post_to(
                router.clone(),
                "/machine/register",
                Body::from(over.clone()),
                None
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            post_to(router.clone(), "/machine/map", Body::from(over), None).await,
            StatusCode::OK
        );
        // A declared length over the limit is refused before anything is read.
        assert_eq!(
            post_to(
                router,
                "/machine/map",
                Body::empty(),
                Some(MAX_MAP_BODY_BYTES + 1)
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn a_spent_budget_is_a_503_and_permits_come_back() {
        let budget = BodyBudget::new(MAX_MAP_BODY_BYTES, BODY_READ_DEADLINE);
        let router = echo_router(budget.clone());
        // Holding the whole budget: the next request cannot reserve and gets 503.
        let held = budget.bytes.clone().try_acquire_many_owned(1).unwrap();
        assert_eq!(
            post_to(router.clone(), "/machine/map", Body::from("{}"), None).await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(held);
        assert_eq!(
            post_to(router, "/machine/map", Body::from("{}"), Some(2)).await,
            StatusCode::OK
        );
        assert_eq!(budget.available(), MAX_MAP_BODY_BYTES);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        let router = echo_router(BodyBudget::new(
            BODY_BUDGET_BYTES,
            Duration::from_millis(50),
        ));
        // A body that never ends.
        let body = Body::from_stream(futures_util::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >());
        let status = post_to(router, "/machine/map", body, None).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    }
}
