//! `/api/v1/user/roles` and `/api/v1/user/{id}/role` (ours): users' roles (Owner, Admin,
//! ..., Member), which the policy's role autogroups name. headscale's user JSON is left as
//! it is; roles are answered beside it.

use super::wire::{self, UserWire};
use super::{parse_id, ApiContext, ApiError, ApiJson};
use crate::core::ids::UserId;
use crate::core::roles::Role;
use crate::core::{Actor, Command, State};
use axum::extract::{Path, Query, State as AxumState};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

/// A user and their role.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserRoleWire {
    user: UserWire,
    /// `owner`, `admin`, `network-admin`, `it-admin`, `billing-admin`, `auditor` or `member`.
    role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserRoleList {
    roles: Vec<UserRoleWire>,
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RolesQuery {
    /// The state at a past point: a seq number or an RFC 3339 time.
    at: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetRoleRequest {
    /// `owner`, `admin`, `network-admin`, `it-admin`, `billing-admin`, `auditor` or `member`.
    role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SetRoleResponse {
    /// Every user whose role this changed (an ownership transfer changes two), after it.
    changed: Vec<UserRoleWire>,
}

fn entry(state: &State, id: UserId) -> Option<UserRoleWire> {
    let user = state.users.get(&id)?;
    Some(UserRoleWire {
        user: wire::user(state, user),
        role: state.role_of(id).name().into(),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/user/roles",
    tag = "users",
    operation_id = "listUserRoles",
    summary = "Every user's role (ours)",
    params(RolesQuery),
    responses((status = 200, description = "Success", body = UserRoleList), super::openapi::CommonErrors)
)]
pub async fn list(
    AxumState(ctx): AxumState<ApiContext>,
    Query(query): Query<RolesQuery>,
) -> Result<Json<UserRoleList>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    let roles = state
        .users
        .keys()
        .filter_map(|id| entry(&state, *id))
        .collect();
    Ok(Json(UserRoleList { roles }))
}

#[utoipa::path(
    post,
    path = "/api/v1/user/{id}/role",
    tag = "users",
    operation_id = "setUserRole",
    summary = "Give a user a role; naming a new Owner transfers ownership (ours)",
    params(("id" = String, Path, description = "The user's id")),
    request_body = SetRoleRequest,
    responses((status = 200, description = "Success", body = SetRoleResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn set(
    AxumState(ctx): AxumState<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetRoleRequest>,
) -> Result<Json<SetRoleResponse>, ApiError> {
    let id = UserId(parse_id("user", &id)?);
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "unknown role {:?}: expected one of {}",
            body.role,
            Role::ALL.map(Role::name).join(", ")
        ))
    })?;
    let events = ctx
        .execute(actor, Command::SetUserRole { id, role })
        .await?;
    let state = ctx.state_at(None)?;
    let mut ids: Vec<UserId> = events.iter().filter_map(|e| e.event.user()).collect();
    if ids.is_empty() {
        // Already held: nothing recorded, the user as they are.
        ids.push(id);
    }
    let changed = ids.into_iter().filter_map(|id| entry(&state, id)).collect();
    Ok(Json(SetRoleResponse { changed }))
}
