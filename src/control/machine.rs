//! The `/machine/*` endpoints served inside the Noise channel. For now every request is
//! logged with its authenticated machine and answered 501; register and map come next.

use super::upgrade::Peer;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;

async fn not_yet(request: Request) -> (StatusCode, &'static str) {
    let machine = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.machine_key.short())
        .unwrap_or_default();
    tracing::info!(path = %request.uri().path(), %machine, "control request (not implemented yet)");
    (StatusCode::NOT_IMPLEMENTED, "not implemented yet\n")
}

pub fn router() -> Router {
    Router::new().fallback(not_yet)
}
