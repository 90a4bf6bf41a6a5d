//! The `/machine/*` endpoints served inside the Noise channel: register and map; everything
//! else is logged with its authenticated machine and answered 501, as headscale does.

use super::map_stream::MachineContext;
use super::upgrade::Peer;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::Router;

async fn not_implemented(request: Request) -> (StatusCode, &'static str) {
    let machine = request
        .extensions()
        .get::<Peer>()
        .map(|p| p.machine_key.short())
        .unwrap_or_default();
    tracing::info!(path = %request.uri().path(), %machine, "control request not implemented");
    (StatusCode::NOT_IMPLEMENTED, "not implemented\n")
}

/// Register and map requests are small JSON documents.
const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

pub fn router(context: MachineContext) -> Router {
    Router::new()
        .route(
            "/machine/register",
            axum::routing::post(super::register::register),
        )
        .route("/machine/map", axum::routing::post(super::map_stream::map))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .fallback(not_implemented)
        .with_state(context)
}
