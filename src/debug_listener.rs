//! The metrics listener (`metrics_listen_addr`): Prometheus `/metrics`, and `/debug/*` JSON
//! pages for operators and integration harnesses (nodes, live sessions, HA routes, the policy
//! and each node's packet filter, the DERP map). The debug pages answer loopback callers only
//! (IPv4-mapped loopback included): they show every node's addresses and rules. The listener
//! is served by `listener.rs` (header deadline, [`MAX_CONNECTIONS`]); no page reads a request
//! body. `/debug/filter` without `?node=` is paged ([`FILTER_PAGE_MAX`] nodes at most).

use crate::control::hub::MapHub;
use crate::core::ids::NodeId;
use crate::engine::EngineHandle;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;

/// Connections at once on the metrics listener, and from one source.
pub const MAX_CONNECTIONS: usize = 64;
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 16;
/// Nodes per `/debug/filter` page (each costs a pass over every node for its peer count).
pub const FILTER_PAGE_DEFAULT: usize = 50;
pub const FILTER_PAGE_MAX: usize = 200;

#[derive(Clone)]
pub struct DebugContext {
    pub engine: EngineHandle,
    pub hub: MapHub,
}

/// The pages, for the index.
const PAGES: &[(&str, &str)] = &[
    ("/metrics", "Prometheus metrics"),
    (
        "/debug/nodes",
        "every node: identity, addresses, routes, live presence",
    ),
    (
        "/debug/sessions",
        "live map sessions and what each is waiting to send",
    ),
    (
        "/debug/routes",
        "announced and approved routes, and the HA primary of each prefix",
    ),
    ("/debug/policy", "the policy in force"),
    (
        "/debug/filter",
        "each node's packet filter and SSH policy (?node=ID for one; else paged: ?offset=&limit=)",
    ),
    ("/debug/derp", "the DERP map handed to clients"),
    ("/debug/dns", "the DNS config handed to clients"),
];

pub fn router(ctx: DebugContext) -> Router {
    let debug = Router::new()
        .route("/debug", get(index))
        .route("/debug/", get(index))
        .route("/debug/nodes", get(nodes))
        .route("/debug/sessions", get(sessions))
        .route("/debug/routes", get(routes))
        .route("/debug/policy", get(policy))
        .route("/debug/filter", get(filter))
        .route("/debug/derp", get(derp))
        .route("/debug/dns", get(dns))
        .layer(axum::middleware::from_fn(loopback_only))
        .with_state(ctx);
    Router::new().route("/metrics", get(metrics)).merge(debug)
}

async fn loopback_only(request: Request, next: Next) -> Response {
    let from_loopback = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|info| info.0.ip().to_canonical().is_loopback());
    if !from_loopback {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"code": 7, "message": "debug pages answer loopback callers only", "details": []})),
        )
            .into_response();
    }
    next.run(request).await
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::metrics().encode(),
    )
        .into_response()
}

async fn index() -> Json<Value> {
    Json(json!({
        "pages": PAGES
            .iter()
            .map(|(path, what)| json!({"path": path, "what": what}))
            .collect::<Vec<_>>()
    }))
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"code": 14, "message": "the map hub is not running", "details": []})),
    )
        .into_response()
}

async fn nodes(State(ctx): State<DebugContext>) -> Json<Value> {
    let state = ctx.engine.state();
    let presence = ctx.hub.presence();
    // Read under the lock rather than copying every node's presence first.
    let table = presence.read().unwrap_or_else(|e| e.into_inner());
    let nodes: Vec<Value> = state
        .nodes
        .values()
        .map(|node| {
            let live = table.get(&node.id).cloned().unwrap_or_default();
            json!({
                "id": node.id.0,
                "name": node.given_name,
                "hostname": node.hostinfo.hostname,
                "user": node.user.and_then(|u| state.users.get(&u)).map(|u| u.name.clone()),
                "tags": node.tags,
                "ipv4": node.ipv4,
                "ipv6": node.ipv6,
                "nodeKey": node.node_key.to_string(),
                "ephemeral": node.ephemeral,
                "authorized": node.authorized,
                "expiry": node.expiry.map(|e| e.to_rfc3339()),
                "online": live.online,
                "lastSeen": live.last_seen.map(|t| t.to_rfc3339()),
                "endpoints": live.endpoints,
                "homeDerp": live.home_derp,
                "capabilityVersion": live.capability_version,
                "announcedRoutes": node.hostinfo.advertised_routes,
                "approvedRoutes": node.approved_routes,
                "primaryRoutes": live.primary_routes,
            })
        })
        .collect();
    Json(json!({ "seq": state.last_seq, "count": nodes.len(), "nodes": nodes }))
}

async fn sessions(State(ctx): State<DebugContext>) -> Response {
    let Some(inspection) = ctx.hub.inspect().await else {
        return unavailable();
    };
    Json(json!({
        "count": inspection.sessions.len(),
        "sessions": inspection.sessions,
    }))
    .into_response()
}

async fn routes(State(ctx): State<DebugContext>) -> Response {
    let Some(inspection) = ctx.hub.inspect().await else {
        return unavailable();
    };
    let state = ctx.engine.state();
    let primaries: Vec<Value> = inspection
        .primaries
        .iter()
        .map(|(prefix, node)| json!({"prefix": prefix, "node": node.0}))
        .collect();
    let routers: Vec<Value> = state
        .nodes
        .values()
        .filter(|n| !n.hostinfo.advertised_routes.is_empty() || !n.approved_routes.is_empty())
        .map(|n| {
            json!({
                "node": n.id.0,
                "name": n.given_name,
                "announced": n.hostinfo.advertised_routes,
                "approved": n.approved_routes,
                "serving": n.subnet_routes(),
            })
        })
        .collect();
    Json(json!({"primaries": primaries, "routers": routers})).into_response()
}

async fn policy(State(ctx): State<DebugContext>) -> Json<Value> {
    let state = ctx.engine.state();
    Json(match &state.policy {
        Some(doc) => json!({
            "set": true,
            "updatedAt": doc.updated_at.to_rfc3339(),
            "policy": doc.text,
        }),
        None => json!({"set": false, "note": "no policy: every node sees every other (allow all)"}),
    })
}

#[derive(Deserialize)]
struct FilterQuery {
    node: Option<u64>,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

async fn filter(State(ctx): State<DebugContext>, Query(query): Query<FilterQuery>) -> Response {
    let Some(inspection) = ctx.hub.inspect().await else {
        return unavailable();
    };
    let state = ctx.engine.state();
    let access = inspection.access;
    let view = |id: NodeId| -> Value {
        let filter: Value = serde_json::from_str(access.filter(id).get()).unwrap_or(Value::Null);
        let ssh: Value = access
            .ssh_policy(id)
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or(Value::Null);
        let peers = state
            .nodes
            .keys()
            .filter(|peer| access.can_see(id, **peer))
            .count();
        json!({"node": id.0, "visiblePeers": peers, "packetFilter": filter, "sshPolicy": ssh})
    };
    match query.node {
        Some(id) if state.nodes.contains_key(&NodeId(id)) => Json(view(NodeId(id))).into_response(),
        Some(id) => (
            StatusCode::NOT_FOUND,
            Json(json!({"code": 5, "message": format!("node {id} not found"), "details": []})),
        )
            .into_response(),
        None => {
            let limit = query
                .limit
                .unwrap_or(FILTER_PAGE_DEFAULT)
                .clamp(1, FILTER_PAGE_MAX);
            let total = state.nodes.len();
            let page: Vec<Value> = state
                .nodes
                .keys()
                .skip(query.offset)
                .take(limit)
                .map(|id| view(*id))
                .collect();
            let end = query.offset.saturating_add(page.len());
            Json(json!({
                "total": total,
                "offset": query.offset,
                "limit": limit,
                "next": (end < total).then_some(end),
                "nodes": page,
            }))
            .into_response()
        }
    }
}

async fn derp(State(ctx): State<DebugContext>) -> Response {
    match ctx.hub.inspect().await {
        Some(inspection) => json_text(inspection.derp_map.get()),
        None => unavailable(),
    }
}

async fn dns(State(ctx): State<DebugContext>) -> Response {
    match ctx.hub.inspect().await {
        Some(inspection) => json_text(inspection.dns_config.get()),
        None => unavailable(),
    }
}

fn json_text(text: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        text.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn status_from(addr: &str) -> StatusCode {
        let router: Router = Router::new()
            .route("/debug/x", get(|| async { "secret" }))
            .layer(axum::middleware::from_fn(loopback_only));
        let mut request = Request::builder()
            .uri("/debug/x")
            .body(axum::body::Body::empty())
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(addr.parse::<SocketAddr>().unwrap()));
        router.oneshot(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn debug_pages_answer_loopback_only() {
        assert_eq!(status_from("127.0.0.1:5000").await, StatusCode::OK);
        assert_eq!(status_from("[::1]:5000").await, StatusCode::OK);
        // A dual-stack bind sees IPv4 loopback as IPv4-mapped IPv6.
        assert_eq!(status_from("[::ffff:127.0.0.1]:5000").await, StatusCode::OK);
        assert_eq!(
            status_from("[::ffff:192.0.2.7]:5000").await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(status_from("192.0.2.7:5000").await, StatusCode::FORBIDDEN);
        assert_eq!(
            status_from("[2001:db8::1]:5000").await,
            StatusCode::FORBIDDEN
        );
    }
}
