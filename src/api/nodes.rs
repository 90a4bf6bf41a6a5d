//! `/api/v1/node` (list, get, delete, expire, rename, tags, move, approve, routes), the debug
//! node creator, and our `/api/v1/routes` view with enable/disable by prefix.

use super::keys::lenient_id;
use super::wire::{self, NodeWire};
use super::{parse_id, ApiContext, ApiError, ApiJson};
use crate::core::event::{Event, NodeHostinfo};
use crate::core::ids::{NodeId, UserId};
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::state::State as TailnetState;
use crate::core::{Actor, Command, ExpiryChange, RegisterAuth, Timestamp};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use ipnet::IpNet;
use rand::RngCore;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the nodes of this user (a name or an id).
    user: Option<String>,
    /// The state at a past point: a seq number or an RFC 3339 time (ours).
    at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeList {
    nodes: Vec<NodeWire>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeResponse {
    node: NodeWire,
}

/// A user given by name or by numeric id.
pub(super) fn find_user(state: &TailnetState, text: &str) -> Result<UserId, ApiError> {
    let text = text.trim();
    if let Some(user) = state.user_by_name(text) {
        return Ok(user.id);
    }
    if let Ok(id) = text.parse::<u64>() {
        if state.users.contains_key(&UserId(id)) {
            return Ok(UserId(id));
        }
    }
    Err(ApiError::NotFound(format!("user {text:?} not found")))
}

fn node_id(text: &str) -> Result<NodeId, ApiError> {
    Ok(NodeId(parse_id("node", text)?))
}

#[utoipa::path(
    get,
    path = "/api/v1/node",
    tag = "nodes",
    operation_id = "listNodes",
    summary = "List nodes (tagged nodes show the tagged-devices user)",
    params(ListQuery),
    responses((status = 200, description = "Success", body = NodeList), super::openapi::CommonErrors)
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    Query(query): Query<ListQuery>,
) -> Result<Json<NodeList>, ApiError> {
    let nodes = list_nodes(&ctx, query.at.as_deref(), query.user.as_deref())?;
    Ok(Json(NodeList { nodes }))
}

/// The nodes (of one user, by name or id, when given); REST and gRPC.
pub(crate) fn list_nodes(
    ctx: &ApiContext,
    at: Option<&str>,
    user: Option<&str>,
) -> Result<Vec<NodeWire>, ApiError> {
    let state = ctx.state_at(at)?;
    let user = match user.filter(|u| !u.is_empty()) {
        Some(text) => Some(find_user(&state, text)?),
        None => None,
    };
    let now = ctx.now();
    let live = at.is_none();
    let nodes = state
        .nodes
        .values()
        .filter(|n| user.is_none() || n.user == user)
        .map(|n| {
            let presence = live.then(|| ctx.presence(n.id)).flatten();
            let mut node = wire::node(&state, n, now, presence.as_ref());
            // As headscale's listing: tagged nodes belong to the "tagged-devices" pseudo-user.
            if !n.tags.is_empty() {
                node.user = Some(wire::tagged_devices_user());
            }
            node
        })
        .collect();
    Ok(nodes)
}

fn node_response(ctx: &ApiContext, id: NodeId) -> Result<Json<NodeResponse>, ApiError> {
    Ok(Json(NodeResponse {
        node: node_wire(ctx, id)?,
    }))
}

/// One node as the API shows it; REST and gRPC.
pub(crate) fn node_wire(ctx: &ApiContext, id: NodeId) -> Result<NodeWire, ApiError> {
    let state = ctx.state_at(None)?;
    let node = state
        .nodes
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("node {id} not found")))?;
    Ok(wire::node(
        &state,
        node,
        ctx.now(),
        ctx.presence(id).as_ref(),
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/node/{id}",
    tag = "nodes",
    operation_id = "getNode",
    summary = "One node",
    params(("id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "Success", body = NodeResponse), (status = 404, description = "Not found (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn get_one(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<NodeResponse>, ApiError> {
    node_response(&ctx, node_id(&id)?)
}

/// `GET /api/v1/node/register`: headscale's gateway reads this as `GET /api/v1/node/{id}`
/// with the id "register".
#[utoipa::path(
    get,
    path = "/api/v1/node/register",
    tag = "nodes",
    operation_id = "getNodeRegister",
    summary = "Always 400: the gateway reads this as GET /api/v1/node/{id} with the id \"register\"",
    responses(super::openapi::CommonErrors)
)]
pub async fn get_register() -> ApiError {
    ApiError::BadRequest("invalid node id \"register\": expected a number".into())
}

#[utoipa::path(
    delete,
    path = "/api/v1/node/{id}",
    tag = "nodes",
    operation_id = "deleteNode",
    summary = "Delete a node",
    params(("id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    delete_node(&ctx, actor, node_id(&id)?).await?;
    Ok(Json(serde_json::json!({})))
}

/// Deletes a node; REST and gRPC.
pub(crate) async fn delete_node(
    ctx: &ApiContext,
    actor: Actor,
    id: NodeId,
) -> Result<(), ApiError> {
    ctx.execute(actor, Command::DeleteNode { id }).await?;
    Ok(())
}

#[derive(Deserialize, Default, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
#[schema(as = ExpireNodeRequest)]
#[serde(rename_all = "camelCase")]
pub struct ExpireParams {
    /// When the node's key expires (RFC 3339); neither this nor `disableExpiry`: now.
    #[schema(format = DateTime)]
    expiry: Option<String>,
    /// The node's key never expires.
    #[serde(default)]
    disable_expiry: bool,
}

/// Reads optional JSON parameters from a body that may be empty.
fn optional_body<T: for<'de> Deserialize<'de> + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid request body: {e}")))
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/expire",
    tag = "nodes",
    operation_id = "expireNode",
    summary = "Expire a node now, at a time, or never (query or body)",
    params(("id" = String, Path, description = "The node's id"), ExpireParams),
    request_body(content = Option<ExpireParams>, description = "The same fields as the query, optional"),
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn expire(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(query): Query<ExpireParams>,
    body: Bytes,
) -> Result<Json<NodeResponse>, ApiError> {
    let id = node_id(&id)?;
    let from_body: ExpireParams = optional_body(&body)?;
    let disable = query.disable_expiry || from_body.disable_expiry;
    let expiry = query.expiry.or(from_body.expiry);
    let node = expire_node(&ctx, actor, id, expiry, disable).await?;
    Ok(Json(NodeResponse { node }))
}

/// Expires a node now (neither argument), at `expiry` (RFC 3339), or never (`disable`);
/// REST and gRPC.
pub(crate) async fn expire_node(
    ctx: &ApiContext,
    actor: Actor,
    id: NodeId,
    expiry: Option<String>,
    disable: bool,
) -> Result<NodeWire, ApiError> {
    let expiry = expiry.filter(|e| !e.trim().is_empty());
    let change = match (disable, expiry) {
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "give either an expiry or disableExpiry, not both".into(),
            ))
        }
        (true, None) => ExpiryChange::Never,
        (false, None) => ExpiryChange::Now,
        (false, Some(text)) => {
            ExpiryChange::At(Timestamp::parse_rfc3339(&text).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid expiry {text:?}: expected an RFC 3339 time"
                ))
            })?)
        }
    };
    ctx.execute(actor, Command::ExpireNode { id, change })
        .await?;
    node_wire(ctx, id)
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/rename/{new_name}",
    tag = "nodes",
    operation_id = "renameNode",
    summary = "Rename a node (its given name)",
    params(("id" = String, Path, description = "The node's id"), ("new_name" = String, Path, description = "The new name")),
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn rename(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path((id, new_name)): Path<(String, String)>,
) -> Result<Json<NodeResponse>, ApiError> {
    let node = rename_node(&ctx, actor, node_id(&id)?, new_name).await?;
    Ok(Json(NodeResponse { node }))
}

/// Renames a node (its given name); REST and gRPC.
pub(crate) async fn rename_node(
    ctx: &ApiContext,
    actor: Actor,
    id: NodeId,
    new_name: String,
) -> Result<NodeWire, ApiError> {
    ctx.execute(actor, Command::RenameNode { id, new_name })
        .await?;
    node_wire(ctx, id)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = SetTagsRequest)]
pub struct TagsBody {
    /// The complete new tag list (`tag:…`); empty removes every tag.
    #[serde(default)]
    tags: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/tags",
    tag = "nodes",
    operation_id = "setTags",
    summary = "Set a node's tags",
    params(("id" = String, Path, description = "The node's id")),
    request_body = TagsBody,
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn set_tags(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TagsBody>,
) -> Result<Json<NodeResponse>, ApiError> {
    let node = set_node_tags(&ctx, actor, node_id(&id)?, body.tags).await?;
    Ok(Json(NodeResponse { node }))
}

/// Sets a node's tags; REST and gRPC. Tags the policy does not define are refused by
/// `decide` (`RequestedTagsNotPermitted`).
pub(crate) async fn set_node_tags(
    ctx: &ApiContext,
    actor: Actor,
    id: NodeId,
    tags: Vec<String>,
) -> Result<NodeWire, ApiError> {
    ctx.execute(actor, Command::SetNodeTags { id, tags })
        .await?;
    node_wire(ctx, id)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = MoveNodeRequest)]
pub struct MoveBody {
    /// The new owner (a name or an id, as a string or a number).
    #[serde(default, deserialize_with = "lenient_id")]
    user: Option<String>,
}

/// headscale's MoveNode (0.23–0.27) sent the new owner as a query parameter.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MoveQuery {
    /// The new owner, as headscale before 0.28 sent it (`?user=`).
    user: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/user",
    tag = "nodes",
    operation_id = "moveNode",
    summary = "Give a node to another user (ours)",
    params(("id" = String, Path, description = "The node's id"), MoveQuery),
    request_body = MoveBody,
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn move_to_user(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(query): Query<MoveQuery>,
    ApiJson(body): ApiJson<MoveBody>,
) -> Result<Json<NodeResponse>, ApiError> {
    let id = node_id(&id)?;
    let state = ctx.state_at(None)?;
    let user_text = match (body.user, query.user.filter(|u| !u.is_empty())) {
        (Some(body), Some(query)) if body != query => {
            return Err(ApiError::BadRequest(
                "user is given twice (query and body) with different values".into(),
            ))
        }
        (Some(user), _) | (None, Some(user)) => user,
        (None, None) => return Err(ApiError::BadRequest("missing user".into())),
    };
    let user = find_user(&state, &user_text)?;
    ctx.execute(actor, Command::MoveNode { id, user }).await?;
    node_response(&ctx, id)
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/approve",
    tag = "nodes",
    operation_id = "approveNode",
    summary = "Approve a node waiting for device approval (ours)",
    params(("id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn approve(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<NodeResponse>, ApiError> {
    let id = node_id(&id)?;
    ctx.execute(actor, Command::ApproveNode { id }).await?;
    node_response(&ctx, id)
}

fn parse_routes(routes: &[String]) -> Result<Vec<IpNet>, ApiError> {
    routes
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .map(parse_route)
        .collect()
}

fn parse_route(text: &str) -> Result<IpNet, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid route {text:?}: expected a CIDR prefix such as 10.0.0.0/24"
        ))
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = ApproveRoutesRequest)]
pub struct RoutesBody {
    /// The complete list of approved prefixes (CIDR).
    #[serde(default)]
    routes: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/node/{id}/approve_routes",
    tag = "nodes",
    operation_id = "approveRoutes",
    summary = "Set a node's approved routes",
    params(("id" = String, Path, description = "The node's id")),
    request_body = RoutesBody,
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn approve_routes(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RoutesBody>,
) -> Result<Json<NodeResponse>, ApiError> {
    let node = approve_node_routes(&ctx, actor, node_id(&id)?, &body.routes).await?;
    Ok(Json(NodeResponse { node }))
}

/// Sets a node's approved routes (CIDR prefixes); REST and gRPC.
pub(crate) async fn approve_node_routes(
    ctx: &ApiContext,
    actor: Actor,
    id: NodeId,
    routes: &[String],
) -> Result<NodeWire, ApiError> {
    let routes = parse_routes(routes)?;
    ctx.execute(actor, Command::ApproveRoutes { id, routes })
        .await?;
    node_wire(ctx, id)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// The owner (a name or an id).
    user: Option<String>,
    /// The registration id from the login URL, or the node key.
    key: Option<String>,
}

/// Completes an interactive login: `key` is the registration id from the AuthURL (or the
/// node key shown on the login page), `user` the owner. The client's waiting follow-up
/// request is answered at once.
#[utoipa::path(
    post,
    path = "/api/v1/node/register",
    tag = "nodes",
    operation_id = "registerNode",
    summary = "Complete a waiting interactive login for a user",
    params(RegisterQuery),
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn register(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<RegisterQuery>,
) -> Result<Json<NodeResponse>, ApiError> {
    let key = query.key.unwrap_or_default();
    let user = query.user.unwrap_or_default();
    let node = complete_login(&ctx, actor, &key, Some(&user)).await?;
    Ok(Json(NodeResponse { node }))
}

fn pending(ctx: &ApiContext) -> Result<&crate::control::pending::PendingLogins, ApiError> {
    ctx.pending
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest("no daemon is running: nothing is pending".into()))
}

/// A pending-login lookup that found no single login: unknown (404), or a node key that
/// names several (M2: refused, never one picked at random).
fn lookup_error(error: crate::control::pending::LookupError) -> ApiError {
    use crate::control::pending::LookupError;
    match error {
        LookupError::NotFound(_) => ApiError::NotFound(error.to_string()),
        LookupError::Ambiguous { .. } => ApiError::Conflict(error.to_string()),
        LookupError::Unavailable(_) => ApiError::Unavailable(error.to_string()),
    }
}

/// Registers the pending login `key` for `user` — or, without a user, for the owner of the
/// machine's existing node (a re-login after logout). REST and gRPC.
pub(crate) async fn complete_login(
    ctx: &ApiContext,
    actor: Actor,
    key: &str,
    user: Option<&str>,
) -> Result<NodeWire, ApiError> {
    valid_auth_id(key.trim())?;
    let pending = pending(ctx)?;
    let (id, login) = pending.find(key.trim()).await.map_err(lookup_error)?;
    let state = ctx.state_at(None)?;
    let owner = match user.filter(|u| !u.is_empty()) {
        Some(user) => find_user(&state, user)?,
        None => state
            .node_by_machine_key(&login.machine_key)
            .and_then(|n| n.user)
            .ok_or_else(|| {
                ApiError::BadRequest(
                    "this machine is new: say which user it belongs to (auth register --user)"
                        .into(),
                )
            })?,
    };
    let entropy = rand::thread_rng().next_u64();
    let events = ctx
        .execute(
            actor,
            Command::RegisterNode {
                machine_key: login.machine_key,
                node_key: login.node_key,
                hostinfo: login.hostinfo,
                auth: RegisterAuth::Admin { user: owner },
                requested_expiry: login.requested_expiry,
                ephemeral: login.ephemeral,
                entropy,
            },
        )
        .await?;
    let node = events
        .iter()
        .find_map(|e| match &e.event {
            Event::NodeRegistered(reg) => Some(reg.id),
            Event::NodeReauthenticated { id, .. } => Some(*id),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal("registration recorded no event".into()))?;
    pending
        .finish(&id, crate::control::pending::Outcome::Registered(node))
        .await;
    node_wire(ctx, node)
}

/// headscale 0.29's `auth` bodies (`authId`, and `user` for register).
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = AuthRequest)]
#[serde(rename_all = "camelCase")]
pub struct AuthBody {
    /// The registration id (`hskey-authreq-…`, ours from the login URL, or a node key).
    auth_id: String,
    /// The owner (a name or an id): required by register.
    #[serde(default)]
    user: Option<String>,
}

/// `POST /api/v1/auth/register`: as `node/register`, with a JSON body.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "nodes",
    operation_id = "authRegister",
    summary = "Complete a waiting interactive login for a user",
    request_body = AuthBody,
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn auth_register(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<AuthBody>,
) -> Result<Json<NodeResponse>, ApiError> {
    let node = auth_register_login(&ctx, actor, &body.auth_id, body.user.as_deref()).await?;
    Ok(Json(NodeResponse { node }))
}

/// `auth register`: completes a waiting login for `user` (required); REST and gRPC.
pub(crate) async fn auth_register_login(
    ctx: &ApiContext,
    actor: Actor,
    auth_id: &str,
    user: Option<&str>,
) -> Result<NodeWire, ApiError> {
    let user = user.unwrap_or_default();
    if user.is_empty() {
        return Err(ApiError::BadRequest("user is required".into()));
    }
    complete_login(ctx, actor, auth_id, Some(user)).await
}

/// `POST /api/v1/auth/approve`: a re-login of a known machine, for its current owner.
#[utoipa::path(
    post,
    path = "/api/v1/auth/approve",
    tag = "nodes",
    operation_id = "authApprove",
    summary = "Approve a waiting re-login of a known machine",
    request_body = AuthBody,
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn auth_approve(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<AuthBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth_approve_login(&ctx, actor, &body.auth_id, body.user.as_deref()).await?;
    Ok(Json(serde_json::json!({})))
}

/// `auth approve`: a re-login of a known machine, for its current owner; REST and gRPC.
pub(crate) async fn auth_approve_login(
    ctx: &ApiContext,
    actor: Actor,
    auth_id: &str,
    user: Option<&str>,
) -> Result<(), ApiError> {
    valid_auth_id(auth_id.trim())?;
    let pending = pending(ctx)?;
    let (_, login) = pending.find(auth_id.trim()).await.map_err(lookup_error)?;
    // A machine without a node has no owner to approve it for: like headscale, the answer is
    // success, and the login keeps waiting for `auth register --user`.
    let known = ctx
        .state_at(None)?
        .node_by_machine_key(&login.machine_key)
        .is_some();
    if known {
        let _node = complete_login(ctx, actor, auth_id, user).await?;
    }
    Ok(())
}

/// `POST /api/v1/auth/reject`: the waiting client is told it was refused.
#[utoipa::path(
    post,
    path = "/api/v1/auth/reject",
    tag = "nodes",
    operation_id = "authReject",
    summary = "Reject a waiting login",
    request_body = AuthBody,
    responses((status = 200, description = "Success", body = super::openapi::Empty), (status = 404, description = "Not found (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn auth_reject(
    State(ctx): State<ApiContext>,
    ApiJson(body): ApiJson<AuthBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    auth_reject_login(&ctx, &body.auth_id).await?;
    Ok(Json(serde_json::json!({})))
}

/// `auth reject`: the waiting client is told it was refused; REST and gRPC.
pub(crate) async fn auth_reject_login(ctx: &ApiContext, auth_id: &str) -> Result<(), ApiError> {
    valid_auth_id(auth_id.trim())?;
    let pending = pending(ctx)?;
    let (id, _) = pending.find(auth_id.trim()).await.map_err(lookup_error)?;
    pending
        .finish(
            &id,
            crate::control::pending::Outcome::Rejected(
                "this login was rejected by an administrator".into(),
            ),
        )
        .await;
    Ok(())
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BackfillQuery {
    /// Must be true.
    #[serde(default)]
    confirmed: bool,
}

/// `POST /api/v1/node/backfillips?confirmed=true`: every node gets an address from each
/// configured family at registration and keeps it, so there is never anything to fill in.
#[utoipa::path(
    post,
    path = "/api/v1/node/backfillips",
    tag = "nodes",
    operation_id = "backfillNodeIps",
    summary = "Give every node its missing addresses (there never are any)",
    params(BackfillQuery),
    responses((status = 200, description = "Success", body = super::openapi::BackfillResponse), super::openapi::CommonErrors)
)]
pub async fn backfill_ips(
    Query(query): Query<BackfillQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let changes = backfill_node_ips(query.confirmed)?;
    Ok(Json(serde_json::json!({ "changes": changes })))
}

/// The addresses a backfill would give (none, ever); REST and gRPC.
pub(crate) fn backfill_node_ips(confirmed: bool) -> Result<Vec<String>, ApiError> {
    if !confirmed {
        return Err(ApiError::BadRequest("not confirmed, aborting".into()));
    }
    Ok(Vec::new())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = DebugCreateNodeRequest)]
pub struct DebugNodeBody {
    /// The owner (a name or an id).
    pub(crate) user: String,
    /// A registration id (`hskey-authreq-…`: queued, as headscale) or a `nodekey:…` (ours:
    /// registered at once); none: registered at once under a random key.
    #[serde(default)]
    pub(crate) key: Option<String>,
    /// The node's host name.
    pub(crate) name: String,
    /// Announced subnet routes (CIDR).
    #[serde(default)]
    pub(crate) routes: Vec<String>,
}

/// headscale's registration ids: `hskey-authreq-` and 24 random characters. Ours (from a
/// client's AuthURL) are the 24 characters alone, and a node key names its login too.
fn valid_auth_id(key: &str) -> Result<(), ApiError> {
    let ours = key.len() == 24 && key.bytes().all(|b| b.is_ascii_alphanumeric());
    if ours || key.starts_with("nodekey:") {
        return Ok(());
    }
    if !key.starts_with("hskey-authreq-") {
        return Err(ApiError::BadRequest(
            "auth ID has invalid prefix: expected prefix \"hskey-authreq-\"".into(),
        ));
    }
    if key.len() != 38 {
        return Err(ApiError::BadRequest(format!(
            "auth ID has invalid length: expected 38, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// `POST /api/v1/debug/node` (a test and demo aid: no client is needed).
///
/// With a `key` (a registration id `hskey-authreq-…`), as headscale: a made-up machine's
/// login is queued under that id and echoed back as a node that does not exist yet (id 0,
/// zero times); `node/register` or `auth/register` then registers it. Without a key, or with
/// a `nodekey:…` (ours), the node is registered for `user` at once, with `routes` announced.
#[utoipa::path(
    post,
    path = "/api/v1/debug/node",
    tag = "nodes",
    operation_id = "debugCreateNode",
    summary = "Create a node without a client (tests and demos)",
    request_body = DebugNodeBody,
    responses((status = 200, description = "Success", body = NodeResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn debug_create(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<DebugNodeBody>,
) -> Result<Json<NodeResponse>, ApiError> {
    let node = debug_create_node(&ctx, actor, body).await?;
    Ok(Json(NodeResponse { node }))
}

/// The debug node creator (see [`debug_create`]); REST and gRPC.
pub(crate) async fn debug_create_node(
    ctx: &ApiContext,
    actor: Actor,
    body: DebugNodeBody,
) -> Result<NodeWire, ApiError> {
    let state = ctx.state_at(None)?;
    let user = find_user(&state, &body.user)?;
    let random_key = || {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        bytes
    };
    let routes = parse_routes(&body.routes)?;
    let machine = MachineKey(random_key());
    let key = body.key.as_deref().filter(|k| !k.is_empty());
    // Ours: a `nodekey:…` registers the node at once under that node key.
    let node_key = match key.filter(|k| k.starts_with("nodekey:")) {
        Some(text) => Some(
            NodeKey::parse(text, true)
                .map_err(|e| ApiError::BadRequest(format!("invalid node key {text:?}: {e}")))?,
        ),
        None => None,
    };
    if let Some(auth_id) = key.filter(|_| node_key.is_none()) {
        valid_auth_id(auth_id)?;
        let pending = pending(ctx)?;
        let node_key = NodeKey(random_key());
        pending
            .insert(
                auth_id,
                crate::control::pending::PendingLogin {
                    machine_key: machine,
                    node_key,
                    hostinfo: NodeHostinfo {
                        hostname: body.name.clone(),
                        ..Default::default()
                    },
                    ephemeral: false,
                    requested_expiry: None,
                },
            )
            .await
            .map_err(lookup_error)?;
        let owner = state
            .users
            .get(&user)
            .map(|owner| wire::user(&state, owner));
        return Ok(wire::pending_node(
            machine, node_key, &body.name, owner, &routes,
        ));
    }
    let entropy = rand::thread_rng().next_u64();
    let hostinfo = NodeHostinfo {
        hostname: body.name,
        advertised_routes: routes,
        ..Default::default()
    };
    let events = ctx
        .execute(
            actor,
            Command::RegisterNode {
                machine_key: machine,
                node_key: node_key.unwrap_or_else(|| NodeKey(random_key())),
                hostinfo,
                auth: RegisterAuth::Admin { user },
                requested_expiry: None,
                ephemeral: false,
                entropy,
            },
        )
        .await?;
    let id = events
        .iter()
        .find_map(|e| match &e.event {
            Event::NodeRegistered(reg) => Some(reg.id),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal("registration recorded no event".into()))?;
    node_wire(ctx, id)
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Route)]
#[serde(rename_all = "camelCase")]
pub struct RouteWire {
    node_id: String,
    node_name: String,
    prefix: String,
    advertised: bool,
    approved: bool,
    /// Advertised and approved: peers may use it.
    enabled: bool,
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoutesQuery {
    /// Only the routes of this node id.
    node: Option<String>,
    /// The state at a past point: a seq number or an RFC 3339 time.
    at: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/routes",
    tag = "routes",
    operation_id = "listRoutes",
    summary = "Every advertised or approved route, per node (ours)",
    params(RoutesQuery),
    responses((status = 200, description = "Success", body = super::openapi::RouteList), super::openapi::CommonErrors)
)]
pub async fn list_routes(
    State(ctx): State<ApiContext>,
    Query(query): Query<RoutesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    let only = match query.node.as_deref().filter(|n| !n.is_empty()) {
        Some(text) => Some(node_id(text)?),
        None => None,
    };
    let mut routes = Vec::new();
    for node in state
        .nodes
        .values()
        .filter(|n| only.is_none_or(|id| n.id == id))
    {
        let mut prefixes: Vec<IpNet> = node
            .hostinfo
            .advertised_routes
            .iter()
            .chain(node.approved_routes.iter())
            .copied()
            .collect();
        prefixes.sort();
        prefixes.dedup();
        for prefix in prefixes {
            let advertised = node.hostinfo.advertised_routes.contains(&prefix);
            let approved = node.approved_routes.contains(&prefix);
            routes.push(RouteWire {
                node_id: node.id.to_string(),
                node_name: node.given_name.clone(),
                prefix: prefix.to_string(),
                advertised,
                approved,
                enabled: advertised && approved,
            });
        }
    }
    Ok(Json(serde_json::json!({ "routes": routes })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = RouteChangeRequest)]
#[serde(rename_all = "camelCase")]
pub struct RouteChangeBody {
    /// The prefix (CIDR).
    route: String,
    /// Only on this node (a string or a number); none: every node that advertises it.
    #[serde(default, deserialize_with = "lenient_id")]
    node_id: Option<String>,
}

async fn change_route(
    ctx: ApiContext,
    actor: Actor,
    body: RouteChangeBody,
    enable: bool,
) -> Result<Json<NodeList>, ApiError> {
    let route = parse_route(&body.route)?;
    let node = match body.node_id.as_deref() {
        Some(text) => Some(node_id(text)?),
        None => None,
    };
    let command = if enable {
        Command::EnableRoute { route, node }
    } else {
        Command::DisableRoute { route, node }
    };
    let events = ctx.execute(actor, command).await?;
    let state = ctx.state_at(None)?;
    let now = ctx.now();
    let nodes = events
        .iter()
        .filter_map(|e| match e.event {
            Event::RoutesApproved { id, .. } => state.nodes.get(&id),
            _ => None,
        })
        .map(|n| wire::node(&state, n, now, ctx.presence(n.id).as_ref()))
        .collect();
    Ok(Json(NodeList { nodes }))
}

#[utoipa::path(
    post,
    path = "/api/v1/routes/enable",
    tag = "routes",
    operation_id = "enableRoute",
    summary = "Approve a route by prefix (ours); the nodes changed",
    request_body = RouteChangeBody,
    responses((status = 200, description = "Success", body = NodeList), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn enable_route(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<RouteChangeBody>,
) -> Result<Json<NodeList>, ApiError> {
    change_route(ctx, actor, body, true).await
}

#[utoipa::path(
    post,
    path = "/api/v1/routes/disable",
    tag = "routes",
    operation_id = "disableRoute",
    summary = "Withdraw a route's approval by prefix (ours); the nodes changed",
    request_body = RouteChangeBody,
    responses((status = 200, description = "Success", body = NodeList), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn disable_route(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<RouteChangeBody>,
) -> Result<Json<NodeList>, ApiError> {
    change_route(ctx, actor, body, false).await
}
