//! `/api/v1/user`: create, list (with filters and `at`), rename, delete.

use super::wire::{self, UserWire};
use super::{parse_id, ApiContext, ApiError, ApiJson};
use crate::core::event::Event;
use crate::core::ids::UserId;
use crate::core::{Actor, Command};
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
pub struct ListQuery {
    id: Option<String>,
    name: Option<String>,
    email: Option<String>,
    at: Option<String>,
}

#[derive(Serialize)]
pub struct UserList {
    users: Vec<UserWire>,
}

pub async fn list(
    State(ctx): State<ApiContext>,
    Query(query): Query<ListQuery>,
) -> Result<Json<UserList>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    let id = match query.id.as_deref().filter(|s| !s.is_empty()) {
        Some(text) => Some(parse_id("user", text)?),
        None => None,
    };
    let users = state
        .users
        .values()
        .filter(|u| id.is_none_or(|id| u.id.0 == id))
        .filter(|u| {
            query
                .name
                .as_deref()
                .is_none_or(|n| n.is_empty() || u.name == n)
        })
        .filter(|u| {
            query
                .email
                .as_deref()
                .is_none_or(|e| e.is_empty() || u.email == e)
        })
        .map(wire::user)
        .collect();
    Ok(Json(UserList { users }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email: String,
}

#[derive(Serialize)]
pub struct UserResponse {
    user: UserWire,
}

pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Json<UserResponse>, ApiError> {
    let events = ctx
        .execute(
            actor,
            Command::CreateUser {
                name: body.name.trim().to_string(),
                display_name: body.display_name,
                email: body.email,
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
    user_response(&ctx, id)
}

fn user_response(ctx: &ApiContext, id: UserId) -> Result<Json<UserResponse>, ApiError> {
    let state = ctx.state_at(None)?;
    let user = state
        .users
        .get(&id)
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))?;
    Ok(Json(UserResponse {
        user: wire::user(user),
    }))
}

pub async fn rename(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path((old_id, new_name)): Path<(String, String)>,
) -> Result<Json<UserResponse>, ApiError> {
    let id = UserId(parse_id("user", &old_id)?);
    ctx.execute(actor, Command::RenameUser { id, new_name })
        .await?;
    user_response(&ctx, id)
}

#[derive(Deserialize, Default)]
pub struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = UserId(parse_id("user", &id)?);
    ctx.execute(
        actor,
        Command::DeleteUser {
            id,
            force: query.force,
        },
    )
    .await?;
    Ok(Json(serde_json::json!({})))
}
