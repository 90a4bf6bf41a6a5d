//! Several instances on one log: an admin who changed something through instance A and then
//! reads through instance B (a load balancer in front of both) must see the change. So a
//! read on an instance that shares its log first brings its state to the log's head (one
//! short read of PostgreSQL); writes need nothing, since the engine decides at the head it
//! appends on. With the embedded store this does nothing.

use super::{ApiContext, Backend};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

pub async fn catch_up_before_reads(
    State(ctx): State<ApiContext>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() == axum::http::Method::GET {
        if let Backend::Live(engine) = &ctx.backend {
            if engine.is_shared() {
                // On failure the read answers from what we have; health says why.
                let _ = engine.catch_up().await;
            }
        }
    }
    next.run(request).await
}
