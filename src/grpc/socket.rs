//! The routers that carry gRPC: on the unix socket, gRPC and REST share each connection
//! (a request whose `content-type` is `application/grpc…` goes to the service, anything
//! else to the REST router, so our own CLI's REST calls keep working); on
//! `grpc_listen_addr`, gRPC alone behind the API-key check.

use super::service::Service;
use crate::api::{self, ApiContext};
use axum::extract::Request;
use axum::Router;
use tower::ServiceExt as _;

/// Whether a request is a gRPC call.
pub fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// The unix socket's router: local trust for both APIs, gRPC by content type, and gRPC
/// server reflection (as headscale offers there, for tools such as grpcurl).
pub fn unix_router(rest: Router, ctx: ApiContext) -> anyhow::Result<Router> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(super::proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let grpc = tonic::service::Routes::new(Service::server(ctx))
        .add_service(reflection)
        .into_axum_router()
        .layer(axum::middleware::from_fn(api::local_trust));
    Ok(
        Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let target = if is_grpc(&request) {
                grpc.clone()
            } else {
                rest.clone()
            };
            target.oneshot(request)
        })),
    )
}

/// `grpc_listen_addr`'s router (`/headscale.v1.HeadscaleService/<Rpc>`; other paths answer
/// `UNIMPLEMENTED`): every call needs a valid API key.
pub fn remote_router(ctx: ApiContext) -> Router {
    tonic::service::Routes::new(Service::server(ctx.clone()))
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            ctx,
            super::auth::require_api_key,
        ))
}
