//! The admin API: headscale-0.29-shaped `/api/v1` plus our history endpoints. The same
//! router serves the unix socket (local trust), the TCP listener (Bearer API key) and the
//! CLI's offline mode, where it runs in-process over a read-only view of the store.

mod access_review;
mod auth;
pub mod cors;
mod error;
mod event_filter;
pub(crate) mod export;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod netmap_at;
pub(crate) mod nodes;
pub mod openapi;
pub mod point;
mod read_your_writes;
pub mod request_log;
pub(crate) mod state_diff;
pub(crate) mod user_roles;
pub(crate) mod users;
pub(crate) mod webhooks;
pub mod wire;

pub use auth::{
    authenticate_api_key, require_api_key, too_many_message, verify_bearer, wait_seconds,
    AuthGuard, KeyRefusal,
};
pub use error::{ApiError, ApiJson};

use crate::core::{Actor, Command, Envelope, State, Timestamp};
use crate::engine::EngineHandle;
use crate::store::replay::load_state_with;
use crate::store::EventStore;
use axum::extract::{DefaultBodyLimit, Request, State as AxumState};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use axum::{Json, Router};
use std::sync::Arc;

/// Request bodies are small JSON documents; policies are the largest.
pub const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// Where the API reads and writes.
#[derive(Clone)]
pub enum Backend {
    /// The running daemon: reads from the published state, writes through the engine.
    Live(EngineHandle),
    /// No daemon: the CLI opened the store itself; reads only.
    ReadOnly(Arc<dyn EventStore>),
}

#[derive(Clone)]
pub struct ApiContext {
    pub backend: Backend,
    pub now: Arc<dyn Fn() -> Timestamp + Send + Sync>,
    /// `policy.mode: database`: the API may replace the policy.
    pub policy_in_database: bool,
    /// The server's checkpoint key, when readable, so `events verify` checks signatures.
    pub checkpoint_key: Option<ed25519_dalek::VerifyingKey>,
    /// Live presence (online, last seen) from the map hub; `None` without a daemon.
    pub presence: Option<crate::control::hub::PresenceTable>,
    /// API-key failures per source and each key's last use (volatile).
    pub auth: AuthGuard,
    /// Interactive logins waiting for `nodes register`; `None` without a daemon.
    pub pending: Option<crate::control::pending::PendingLogins>,
    /// The tailnet-wide netmap parts from the config (DNS, DERP map, domain, self
    /// capabilities), for `GET /api/v1/node/{id}/netmap`; `None`: that route answers 503.
    pub netmap: Option<Arc<crate::core::netmap::NetmapContext>>,
    /// Webhook delivery (endpoints, status, secrets' directory); `None` when not wired.
    pub webhooks: Option<Arc<crate::webhooks::Hub>>,
}

impl ApiContext {
    /// A node's volatile presence, when a daemon serves map streams.
    fn presence(&self, id: crate::core::ids::NodeId) -> Option<crate::core::netmap::NodePresence> {
        let table = self.presence.as_ref()?;
        let table = table.read().unwrap_or_else(|e| e.into_inner());
        table.get(&id).cloned()
    }

    fn store(&self) -> Arc<dyn EventStore> {
        match &self.backend {
            Backend::Live(engine) => engine.store(),
            Backend::ReadOnly(store) => store.clone(),
        }
    }

    /// The state now, or at a past point (a seq, an RFC 3339 time or a duration ago). The
    /// live state is a pointer copy; a rebuild (`?at=`, or the CLI's offline mode) reads the
    /// store and replays, so it runs [`off_runtime`].
    pub fn state_at(&self, at: Option<&str>) -> Result<Arc<State>, ApiError> {
        let at = at.map(str::trim).filter(|a| !a.is_empty());
        if let (Backend::Live(engine), None) = (&self.backend, at) {
            return Ok(engine.state());
        }
        let store = self.store();
        // Snapshots are used only when signed by the checkpoint key (L11); without a
        // readable key the log is replayed from the start.
        let trusted = self.checkpoint_key;
        let now = self.now();
        off_runtime(|| {
            let upto = at
                .map(|at| resolve_at(store.as_ref(), at, now))
                .transpose()?;
            let loaded = load_state_with(store.as_ref(), upto, trusted.as_ref())?;
            Ok(Arc::new(loaded.state))
        })
    }

    async fn execute(&self, actor: Actor, command: Command) -> Result<Vec<Envelope>, ApiError> {
        match &self.backend {
            Backend::Live(engine) => Ok(engine.execute(actor, command).await?),
            Backend::ReadOnly(_) => Err(ApiError::Unavailable(
                "no headscale daemon is running; start it with `headscale serve` to make changes"
                    .into(),
            )),
        }
    }

    fn now(&self) -> Timestamp {
        (self.now)()
    }
}

/// Runs `work` (store reads that can take long: a replay, a search over the log) without
/// holding a runtime worker. On tokio's multi-thread runtime (the server's and the CLI's) the
/// worker hands its other tasks to a fresh worker for the duration (`block_in_place`), so a
/// long rebuild never delays other requests; elsewhere (a current-thread runtime, no runtime)
/// it just runs. For work that can be moved, prefer [`blocking`].
fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Runs `work` (log scans, chain verification) on tokio's blocking pool, so the runtime's
/// workers stay free for other requests while it reads the store.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a store read on the blocking pool failed: {e}")))?
}

/// Maps `--at` (a seq, an RFC 3339 time or a duration ago, see [`point`]) to a seq.
pub fn resolve_at(store: &dyn EventStore, at: &str, now: Timestamp) -> Result<u64, ApiError> {
    point::resolve(store, "--at", at, now)
}

/// Every `/api/v1` route as (method, path, handler); [`router`] is built from it, so
/// [`routes`] is exactly what the router serves (tests/openapi.rs checks the OpenAPI
/// document against it).
fn route_table() -> Vec<(Method, &'static str, MethodRouter<ApiContext>)> {
    vec![
        route(Method::GET, "/api/v1/health", health),
        route(Method::GET, "/api/v1/user", users::list),
        route(Method::POST, "/api/v1/user", users::create),
        route(
            Method::POST,
            "/api/v1/user/{old_id}/rename/{new_name}",
            users::rename,
        ),
        route(Method::DELETE, "/api/v1/user/{id}", users::delete),
        route(Method::GET, "/api/v1/preauthkey", keys::list_pre_auth),
        route(Method::POST, "/api/v1/preauthkey", keys::create_pre_auth),
        route(Method::DELETE, "/api/v1/preauthkey", keys::delete_pre_auth),
        route(
            Method::POST,
            "/api/v1/preauthkey/expire",
            keys::expire_pre_auth,
        ),
        route(Method::GET, "/api/v1/apikey", keys::list_api),
        route(Method::POST, "/api/v1/apikey", keys::create_api),
        route(Method::DELETE, "/api/v1/apikey", keys::delete_api_by_query),
        route(Method::POST, "/api/v1/apikey/expire", keys::expire_api),
        route(Method::DELETE, "/api/v1/apikey/{prefix}", keys::delete_api),
        route(Method::GET, "/api/v1/node", nodes::list),
        route(Method::POST, "/api/v1/node/register", nodes::register),
        route(Method::GET, "/api/v1/node/register", nodes::get_register),
        route(
            Method::POST,
            "/api/v1/node/backfillips",
            nodes::backfill_ips,
        ),
        route(Method::POST, "/api/v1/auth/register", nodes::auth_register),
        route(Method::POST, "/api/v1/auth/approve", nodes::auth_approve),
        route(Method::POST, "/api/v1/auth/reject", nodes::auth_reject),
        route(Method::GET, "/api/v1/node/{id}", nodes::get_one),
        route(Method::DELETE, "/api/v1/node/{id}", nodes::delete),
        route(Method::POST, "/api/v1/node/{id}/expire", nodes::expire),
        route(
            Method::POST,
            "/api/v1/node/{id}/rename/{new_name}",
            nodes::rename,
        ),
        route(Method::POST, "/api/v1/node/{id}/tags", nodes::set_tags),
        route(Method::POST, "/api/v1/node/{id}/user", nodes::move_to_user),
        route(Method::POST, "/api/v1/node/{id}/approve", nodes::approve),
        route(
            Method::POST,
            "/api/v1/node/{id}/approve_routes",
            nodes::approve_routes,
        ),
        route(Method::POST, "/api/v1/debug/node", nodes::debug_create),
        route(Method::GET, "/api/v1/routes", nodes::list_routes),
        route(Method::POST, "/api/v1/routes/enable", nodes::enable_route),
        route(Method::POST, "/api/v1/routes/disable", nodes::disable_route),
        route(Method::GET, "/api/v1/policy", history::get_policy),
        route(Method::PUT, "/api/v1/policy", history::set_policy),
        route(Method::POST, "/api/v1/policy/check", history::check_policy),
        route(Method::GET, "/api/v1/events", history::list_events),
        route(Method::GET, "/api/v1/events/verify", history::verify),
        route(Method::GET, "/api/v1/events/{seq}", history::show_event),
        route(Method::GET, "/api/v1/state", history::state),
        route(Method::GET, "/api/v1/node/{id}/netmap", netmap_at::netmap),
        route(Method::GET, "/api/v1/state/diff", state_diff::diff),
        route(
            Method::GET,
            "/api/v1/policy/who-can-reach",
            access_review::who_can_reach,
        ),
        route(
            Method::GET,
            "/api/v1/policy/what-can",
            access_review::what_can,
        ),
        route(Method::GET, "/api/v1/events/export", export::export_events),
        route(Method::GET, "/api/v1/webhook", webhooks::list),
        route(Method::POST, "/api/v1/webhook", webhooks::create),
        route(Method::DELETE, "/api/v1/webhook/{id}", webhooks::delete),
        route(
            Method::GET,
            "/api/v1/webhook/{id}/deliveries",
            webhooks::deliveries,
        ),
        route(Method::POST, "/api/v1/webhook/{id}/test", webhooks::test),
        route(Method::GET, "/api/v1/user/roles", user_roles::list),
        route(Method::POST, "/api/v1/user/{id}/role", user_roles::set),
    ]
}

/// One entry of [`route_table`]: the method given once, for the table and the router alike.
fn route<H, T>(
    method: Method,
    path: &'static str,
    handler: H,
) -> (Method, &'static str, MethodRouter<ApiContext>)
where
    H: axum::handler::Handler<T, ApiContext>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum can route");
    (method, path, axum::routing::on(filter, handler))
}

/// Every route served under `/api/v1` (method, path): the API's and the public
/// documentation's ([`openapi::router`]).
pub fn routes() -> Vec<(String, &'static str)> {
    route_table()
        .into_iter()
        .map(|(method, path, _)| (method.to_string(), path))
        .chain(
            openapi::ROUTES
                .iter()
                .map(|(method, path)| (method.to_string(), *path)),
        )
        .collect()
}

/// The API's router, without authentication (wrap it with `require_api_key` for TCP).
pub fn router(ctx: ApiContext) -> Router {
    route_table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(axum::middleware::from_fn(request_log::mark_actor))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            read_your_writes::catch_up_before_reads,
        ))
        .with_state(ctx)
}

/// Marks every request as coming from the trusted local socket.
pub async fn local_trust(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Actor::LocalSocket);
    next.run(request).await
}

/// Unknown paths: headscale's gateway answers `/api/...` with a JSON 404 (code 5); anything
/// else is a plain 404.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        error::status_body(axum::http::StatusCode::NOT_FOUND, 5, "Not Found")
    } else {
        (axum::http::StatusCode::NOT_FOUND, "404 page not found\n").into_response()
    }
}

/// A known path with the wrong method: headscale's gateway says 501, code 12 (Unimplemented).
async fn method_not_allowed() -> Response {
    error::status_body(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        12,
        "Method Not Allowed",
    )
}

#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "server",
    operation_id = "health",
    summary = "Whether the server can read its store",
    responses(
        (status = 200, description = "Success", body = openapi::HealthResponse),
        openapi::CommonErrors,
    )
)]
async fn health(AxumState(ctx): AxumState<ApiContext>) -> Response {
    let ok = database_connectivity(&ctx);
    let status = if ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({ "databaseConnectivity": ok })),
    )
        .into_response()
}

/// Whether the store can be read and written; REST and gRPC. A live engine whose appends
/// fail is not connected to its database (503, same shape).
pub(crate) fn database_connectivity(ctx: &ApiContext) -> bool {
    let writable = match &ctx.backend {
        Backend::Live(engine) => engine.health_problem().is_none(),
        Backend::ReadOnly(_) => true,
    };
    writable && ctx.state_at(None).is_ok()
}

/// Parses a decimal id from a path or body field.
fn parse_id(what: &str, text: &str) -> Result<u64, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid {what} id {text:?}: expected a number")))
}
