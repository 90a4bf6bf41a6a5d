//! The `/machine/*` endpoints served inside the Noise channel: register works; everything
//! else is logged with its authenticated machine and answered 501 (map streams come next).

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

/// RegisterRequests are small JSON documents.
const MAX_REGISTER_BODY_BYTES: usize = 1 << 20;

pub fn router(engine: crate::engine::EngineHandle) -> Router {
    Router::new()
        .route(
            "/machine/register",
            axum::routing::post(super::register::register),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            MAX_REGISTER_BODY_BYTES,
        ))
        .fallback(not_yet)
        .with_state(engine)
}
