//! `/api/v1/user`: create, list (with filters and `at`), rename, delete.

use super::wire::{self, UserWire};
use super::{parse_id, ApiContext, ApiError, ApiJson};
use crate::core::event::Event;
use crate::core::ids::UserId;
use crate::core::{Actor, Command};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only the user with this id.
    id: Option<String>,
    /// Only the user with this name.
    name: Option<String>,
    /// Only users with this email.
    email: Option<String>,
    /// The state at a past point: a seq number or an RFC 3339 time (ours).
    at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    users: Vec<UserWire>,
}

#[utoipa::path(
    get,
    path = "/api/v1/user",
    tag = "users",
    operation_id = "listUsers",
    summary = "List users",
    params(ListQuery),
    responses((status = 200, description = "Success", body = UserList), super::openapi::CommonErrors)
)]
pub async fn list(
    State(ctx): State<ApiContext>,
    Query(query): Query<ListQuery>,
) -> Result<Json<UserList>, ApiError> {
    let id = match query.id.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(parse_id("user", text)?),
        None => None,
    };
    let users = list_users(
        &ctx,
        query.at.as_deref(),
        id,
        query.name.as_deref(),
        query.email.as_deref(),
    )?;
    Ok(Json(UserList { users }))
}

/// The users, filtered by id, name and email (an empty filter matches all); REST and gRPC.
pub(crate) fn list_users(
    ctx: &ApiContext,
    at: Option<&str>,
    id: Option<u64>,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<Vec<UserWire>, ApiError> {
    let state = ctx.state_at(at)?;
    Ok(state
        .users
        .values()
        .filter(|u| id.is_none_or(|id| u.id.0 == id))
        .filter(|u| name.is_none_or(|n| n.is_empty() || u.name == n))
        .filter(|u| email.is_none_or(|e| e.is_empty() || u.email == e))
        .map(|user| wire::user(&state, user))
        .collect())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreateUserRequest)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) display_name: String,
    #[serde(default)]
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) picture_url: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserResponse {
    user: UserWire,
}

#[utoipa::path(
    post,
    path = "/api/v1/user",
    tag = "users",
    operation_id = "createUser",
    summary = "Create a user",
    request_body = CreateBody,
    responses((status = 200, description = "Success", body = UserResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Json<UserResponse>, ApiError> {
    let user = create_user(&ctx, actor, body).await?;
    Ok(Json(UserResponse { user }))
}

/// Creates a user; REST and gRPC.
pub(crate) async fn create_user(
    ctx: &ApiContext,
    actor: Actor,
    body: CreateBody,
) -> Result<UserWire, ApiError> {
    let events = ctx
        .execute(
            actor,
            Command::CreateUser {
                name: body.name.trim().to_string(),
                display_name: body.display_name,
                email: body.email,
                picture_url: body.picture_url.trim().to_string(),
            },
        )
        .await?;
    let id = events
        .iter()
        .find_map(|e| match e.event {
            Event::UserCreated { id, .. } => Some(id),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal("user creation recorded no event".into()))?;
    user_wire(ctx, id)
}

fn user_wire(ctx: &ApiContext, id: UserId) -> Result<UserWire, ApiError> {
    let state = ctx.state_at(None)?;
    let user = state
        .users
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    Ok(wire::user(&state, user))
}

#[utoipa::path(
    post,
    path = "/api/v1/user/{old_id}/rename/{new_name}",
    tag = "users",
    operation_id = "renameUser",
    summary = "Rename a user",
    params(
        ("old_id" = String, Path, description = "The user's id"),
        ("new_name" = String, Path, description = "The new name"),
    ),
    responses((status = 200, description = "Success", body = UserResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn rename(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path((old_id, new_name)): Path<(String, String)>,
) -> Result<Json<UserResponse>, ApiError> {
    let id = UserId(parse_id("user", &old_id)?);
    let user = rename_user(&ctx, actor, id, new_name).await?;
    Ok(Json(UserResponse { user }))
}

/// Renames a user; REST and gRPC.
pub(crate) async fn rename_user(
    ctx: &ApiContext,
    actor: Actor,
    id: UserId,
    new_name: String,
) -> Result<UserWire, ApiError> {
    ctx.execute(actor, Command::RenameUser { id, new_name })
        .await?;
    user_wire(ctx, id)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete the user's nodes too (ours; without it a user who owns nodes is not deleted).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(
    delete,
    path = "/api/v1/user/{id}",
    tag = "users",
    operation_id = "deleteUser",
    summary = "Delete a user",
    params(("id" = String, Path, description = "The user's id"), DeleteQuery),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = UserId(parse_id("user", &id)?);
    delete_user(&ctx, actor, id, query.force).await?;
    Ok(Json(serde_json::json!({})))
}

/// Deletes a user (with its nodes when `force`); REST and gRPC.
pub(crate) async fn delete_user(
    ctx: &ApiContext,
    actor: Actor,
    id: UserId,
    force: bool,
) -> Result<(), ApiError> {
    ctx.execute(actor, Command::DeleteUser { id, force })
        .await?;
    Ok(())
}
