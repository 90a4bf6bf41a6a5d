//! The API-key check of `grpc_listen_addr`: `authorization: Bearer <api key>` metadata (how
//! the Go CLI sends `HEADSCALE_CLI_API_KEY`), verified by the REST API's own check
//! (`api::verify_bearer`: same keys, same per-source lockout, same last-use record), and
//! refused with headscale's gRPC codes and messages. The unix socket needs no key.

use crate::api::{self, ApiContext, KeyRefusal};
use crate::core::Actor;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tonic::{Code, Status};

/// The status a refused key gets (headscale's codes and messages; a lockout is
/// `RESOURCE_EXHAUSTED`, as REST's 429).
pub fn refusal_status(refusal: KeyRefusal) -> Status {
    match refusal {
        KeyRefusal::Missing => Status::unauthenticated("authorization token not supplied"),
        KeyRefusal::NotBearer => {
            Status::unauthenticated("missing \"Bearer \" prefix in \"Authorization\" header")
        }
        KeyRefusal::Invalid => Status::unauthenticated("invalid token"),
        KeyRefusal::TooMany(wait) => Status::new(
            Code::ResourceExhausted,
            api::too_many_message(api::wait_seconds(wait)),
        ),
        KeyRefusal::Unavailable(error) => super::service::status(error),
    }
}

/// Middleware: lets a request with a valid key through as `Actor::ApiKey`, answers any other
/// with a gRPC error status (HTTP 200 with `grpc-status`, as gRPC clients expect).
pub async fn require_api_key(
    State(ctx): State<ApiContext>,
    mut request: Request,
    next: Next,
) -> Response {
    match api::verify_bearer(&ctx, &request).await {
        Ok(id) => {
            request.extensions_mut().insert(Actor::ApiKey(id));
            next.run(request).await
        }
        Err(refusal) => refusal_status(refusal).into_http(),
    }
}
