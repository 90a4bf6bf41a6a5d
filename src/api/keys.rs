//! `/api/v1/preauthkey` and `/api/v1/apikey`. Secrets are generated here (the shell), hashed,
//! and only the hash reaches the log; the full key is in the create response only.

use super::wire::{self, ApiKeyWire, PreAuthKeyWire};
use super::{parse_id, ApiContext, ApiError, ApiJson};
use crate::core::event::Event;
use crate::core::ids::{ApiKeyId, PreAuthKeyId, UserId};
use crate::core::{Actor, Command, Timestamp};
use crate::secrets;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Deserializer, Serialize};
use std::time::Duration;

const DEFAULT_PRE_AUTH_KEY_LIFETIME: Duration = Duration::from_secs(3600);
const DEFAULT_API_KEY_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Protobuf JSON writes 64-bit ids as strings but accepts numbers too.
pub(super) fn lenient_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(serde::de::Error::custom(format!(
                "expected an id, got {other}"
            )))
        }
    })
}

fn parse_expiration(
    text: Option<&str>,
    now: Timestamp,
    default: Duration,
) -> Result<Timestamp, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(now.plus(default)),
        Some(text) => Timestamp::parse_rfc3339(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid expiration {text:?}: expected an RFC 3339 time"
            ))
        }),
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreAuthListQuery {
    /// Only the keys of this user id (ours).
    user: Option<String>,
    /// The state at a past point: a seq number or an RFC 3339 time (ours).
    at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyList {
    pre_auth_keys: Vec<PreAuthKeyWire>,
}

#[utoipa::path(
    get,
    path = "/api/v1/preauthkey",
    tag = "preauthkeys",
    operation_id = "listPreAuthKeys",
    summary = "List pre-auth keys",
    params(PreAuthListQuery),
    responses((status = 200, description = "Success", body = PreAuthKeyList), super::openapi::CommonErrors)
)]
pub async fn list_pre_auth(
    State(ctx): State<ApiContext>,
    Query(query): Query<PreAuthListQuery>,
) -> Result<Json<PreAuthKeyList>, ApiError> {
    let user = match query.user.as_deref().filter(|u| !u.is_empty()) {
        Some(text) => Some(UserId(parse_id("user", text)?)),
        None => None,
    };
    let pre_auth_keys = list_pre_auth_keys(&ctx, query.at.as_deref(), user)?;
    Ok(Json(PreAuthKeyList { pre_auth_keys }))
}

/// The pre-auth keys (of one user, when given); REST and gRPC.
pub(crate) fn list_pre_auth_keys(
    ctx: &ApiContext,
    at: Option<&str>,
    user: Option<UserId>,
) -> Result<Vec<PreAuthKeyWire>, ApiError> {
    let state = ctx.state_at(at)?;
    let now = ctx.now();
    Ok(state
        .pre_auth_keys
        .values()
        .filter(|k| user.is_none() || k.user == user)
        .map(|k| wire::pre_auth_key(&state, k, now, None))
        .collect())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = CreatePreAuthKeyRequest)]
#[serde(rename_all = "camelCase")]
pub struct CreatePreAuthBody {
    /// The owner's id (a string or a number); none for a key that registers tagged nodes.
    #[serde(default, deserialize_with = "lenient_id")]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) reusable: bool,
    #[serde(default)]
    pub(crate) ephemeral: bool,
    #[serde(default)]
    pub(crate) pre_approved: bool,
    /// RFC 3339; default: one hour from now.
    #[schema(format = DateTime)]
    pub(crate) expiration: Option<String>,
    #[serde(default)]
    pub(crate) acl_tags: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyResponse {
    pre_auth_key: PreAuthKeyWire,
}

#[utoipa::path(
    post,
    path = "/api/v1/preauthkey",
    tag = "preauthkeys",
    operation_id = "createPreAuthKey",
    summary = "Create a pre-auth key (the full key is shown only here)",
    request_body = CreatePreAuthBody,
    responses((status = 200, description = "Success", body = PreAuthKeyResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn create_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreatePreAuthBody>,
) -> Result<Json<PreAuthKeyResponse>, ApiError> {
    let pre_auth_key = create_pre_auth_key(&ctx, actor, body).await?;
    Ok(Json(PreAuthKeyResponse { pre_auth_key }))
}

/// Creates a pre-auth key; the answer holds the full key (the only time it is shown).
/// REST and gRPC.
pub(crate) async fn create_pre_auth_key(
    ctx: &ApiContext,
    actor: Actor,
    body: CreatePreAuthBody,
) -> Result<PreAuthKeyWire, ApiError> {
    let now = ctx.now();
    for tag in &body.acl_tags {
        validate_tag(tag)?;
    }
    let user = match body.user.as_deref() {
        Some(text) => Some(UserId(parse_id("user", text)?)),
        None => None,
    };
    let expiration = parse_expiration(
        body.expiration.as_deref(),
        now,
        DEFAULT_PRE_AUTH_KEY_LIFETIME,
    )?;
    let key = secrets::generate(secrets::PRE_AUTH_KEY_KIND);
    let events = ctx
        .execute(
            actor,
            Command::CreatePreAuthKey {
                user,
                reusable: body.reusable,
                ephemeral: body.ephemeral,
                pre_approved: body.pre_approved,
                tags: body.acl_tags,
                expiration,
                prefix: key.prefix.clone(),
                secret_hash: key.secret_hash,
            },
        )
        .await?;
    let id = events
        .iter()
        .find_map(|e| match e.event {
            Event::PreAuthKeyCreated { id, .. } => Some(id),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal("key creation recorded no event".into()))?;
    let state = ctx.state_at(None)?;
    let created = state
        .pre_auth_keys
        .get(&id)
        .ok_or_else(|| ApiError::Internal("created key is missing".into()))?;
    Ok(wire::pre_auth_key(
        &state,
        created,
        ctx.now(),
        Some(&key.full),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = KeyIdRequest)]
pub struct IdBody {
    /// The key's id (a string or a number).
    #[serde(default, deserialize_with = "lenient_id")]
    id: Option<String>,
    /// API keys: the prefix, bare or as listed (`hskey-api-<prefix>-***`).
    #[serde(default)]
    prefix: Option<String>,
    /// Pre-auth keys, headscale before 0.28 (and Headplane for those): the key itself, full
    /// or as listed, instead of its id.
    #[serde(default)]
    key: Option<String>,
    /// With `key` (before 0.28): the owner's id, or name before 0.26. Must match.
    #[serde(default, deserialize_with = "lenient_id")]
    user: Option<String>,
}

/// A pre-auth key named the way headscale before 0.28 named it (`{user, key}`): by the key
/// (`hskey-auth-<prefix>-<secret>`, or `-***` as listed) and, optionally, its owner. Such a
/// request must never pass as a no-op: an unknown key is 404 and a wrong owner 400.
fn pre_auth_key_by_key(
    ctx: &ApiContext,
    key: &str,
    user: Option<&str>,
) -> Result<PreAuthKeyId, ApiError> {
    let state = ctx.state_at(None)?;
    let prefix = key
        .trim()
        .strip_prefix("hskey-auth-")
        .and_then(|rest| rest.get(..12))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "key: {:?} is not a pre-auth key (hskey-auth-<prefix>-<secret>); name the key by id",
                key.chars().take(24).collect::<String>()
            ))
        })?;
    let found = state
        .pre_auth_keys
        .values()
        .find(|k| k.prefix == prefix)
        .ok_or_else(|| {
            ApiError::NotFound(format!("pre-auth key hskey-auth-{prefix}-*** not found"))
        })?;
    if let Some(user) = user.filter(|u| !u.is_empty() && *u != "0") {
        let owner = found.user.and_then(|id| state.users.get(&id));
        let matches = owner.is_some_and(|o| o.id.to_string() == user || o.name == user);
        if !matches {
            return Err(ApiError::BadRequest(format!(
                "user: pre-auth key hskey-auth-{prefix}-*** does not belong to user {user:?}"
            )));
        }
    }
    Ok(found.id)
}

/// The pre-auth key a request names: by `id` (0.28+), or by `key` (+ `user`) as before; both
/// must then agree. `None`: neither (headscale answers that with success).
fn requested_pre_auth_key(
    ctx: &ApiContext,
    id: Option<&str>,
    key: Option<&str>,
    user: Option<&str>,
) -> Result<Option<PreAuthKeyId>, ApiError> {
    let by_id = optional_pre_auth_key_id(id)?;
    match key.filter(|k| !k.trim().is_empty()) {
        Some(key) => {
            let by_key = pre_auth_key_by_key(ctx, key, user)?;
            if by_id.is_some_and(|id| id != by_key) {
                return Err(ApiError::BadRequest(
                    "id and key name different pre-auth keys".into(),
                ));
            }
            Ok(Some(by_key))
        }
        None if by_id.is_none() && user.is_some_and(|u| !u.is_empty()) => Err(ApiError::BadRequest(
            "user alone does not name a pre-auth key: give id (or key, as before headscale 0.28)"
                .into(),
        )),
        None => Ok(by_id),
    }
}

fn optional_pre_auth_key_id(id: Option<&str>) -> Result<Option<PreAuthKeyId>, ApiError> {
    match id.filter(|s| !s.is_empty()) {
        None | Some("0") => Ok(None),
        Some(id) => Ok(Some(PreAuthKeyId(parse_id("pre-auth key", id)?))),
    }
}

/// Expire and delete of a pre-auth key that does not exist succeed, as in headscale.
fn ignore_not_found<T>(result: Result<T, ApiError>) -> Result<(), ApiError> {
    match result {
        Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
        Err(other) => Err(other),
    }
}

/// headscale's tag rules for pre-auth keys beyond the `tag:` prefix (which the core checks):
/// lower case, no spaces.
fn validate_tag(tag: &str) -> Result<(), ApiError> {
    if tag.to_lowercase() != tag {
        return Err(ApiError::BadRequest(format!(
            "invalid tag {tag:?}: tag should be lowercase"
        )));
    }
    if tag.split_whitespace().count() > 1 {
        return Err(ApiError::BadRequest(format!(
            "invalid tag {tag:?}: tags must not contain spaces"
        )));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/preauthkey/expire",
    tag = "preauthkeys",
    operation_id = "expirePreAuthKey",
    summary = "Expire a pre-auth key (an unknown id is not an error)",
    request_body = IdBody,
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn expire_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<IdBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // As headscale: a missing or unknown id is not an error (nothing to expire); the older
    // `{user, key}` names the key too, and must find it.
    let id = requested_pre_auth_key(
        &ctx,
        body.id.as_deref(),
        body.key.as_deref(),
        body.user.as_deref(),
    )?;
    pre_auth_key_command(&ctx, actor, id, |id| Command::ExpirePreAuthKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}

/// Expires or deletes a pre-auth key (`command` says which). As headscale: a missing or
/// unknown id is not an error (nothing to do). REST and gRPC.
pub(crate) async fn pre_auth_key_command(
    ctx: &ApiContext,
    actor: Actor,
    id: Option<PreAuthKeyId>,
    command: fn(PreAuthKeyId) -> Command,
) -> Result<(), ApiError> {
    let Some(id) = id else {
        return Ok(());
    };
    ignore_not_found(ctx.execute(actor, command(id)).await)
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdQuery {
    /// The key's id.
    id: Option<String>,
    /// Pre-auth keys: the key itself instead of the id (as before headscale 0.28).
    key: Option<String>,
    /// With `key`: its owner's id or name; must match.
    user: Option<String>,
}

#[utoipa::path(
    delete,
    path = "/api/v1/preauthkey",
    tag = "preauthkeys",
    operation_id = "deletePreAuthKey",
    summary = "Delete a pre-auth key (an unknown id is not an error)",
    params(IdQuery),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<IdQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = requested_pre_auth_key(
        &ctx,
        query.id.as_deref(),
        query.key.as_deref(),
        query.user.as_deref(),
    )?;
    pre_auth_key_command(&ctx, actor, id, |id| Command::DeletePreAuthKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// The state at a past point: a seq number or an RFC 3339 time (ours).
    at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyWire>,
}

#[utoipa::path(
    get,
    path = "/api/v1/apikey",
    tag = "apikeys",
    operation_id = "listApiKeys",
    summary = "List API keys",
    params(AtQuery),
    responses((status = 200, description = "Success", body = ApiKeyList), super::openapi::CommonErrors)
)]
pub async fn list_api(
    State(ctx): State<ApiContext>,
    Query(query): Query<AtQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    Ok(Json(ApiKeyList {
        api_keys: list_api_keys(&ctx, query.at.as_deref())?,
    }))
}

/// The API keys, with their last use when `at` is none; REST and gRPC.
pub(crate) fn list_api_keys(
    ctx: &ApiContext,
    at: Option<&str>,
) -> Result<Vec<ApiKeyWire>, ApiError> {
    let state = ctx.state_at(at)?;
    Ok(state
        .api_keys
        .values()
        .map(|key| {
            let mut wire = wire::api_key(key);
            // Only what this server has seen: `--at` shows no volatile state.
            if at.is_none() {
                wire.last_seen = ctx.auth.last_seen(key.id).map(|t| t.to_rfc3339());
            }
            wire
        })
        .collect())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = CreateApiKeyRequest)]
pub struct CreateApiBody {
    /// RFC 3339; default: 90 days from now.
    #[schema(format = DateTime)]
    expiration: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/apikey",
    tag = "apikeys",
    operation_id = "createApiKey",
    summary = "Create an API key (the full key is shown only here)",
    request_body = CreateApiBody,
    responses((status = 200, description = "Success", body = super::openapi::CreateApiKeyResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn create_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateApiBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = create_api_key(&ctx, actor, body.expiration.as_deref()).await?;
    Ok(Json(serde_json::json!({ "apiKey": key })))
}

/// Creates an API key (RFC 3339 `expiration`, default 90 days); the full key, shown once.
/// REST and gRPC.
pub(crate) async fn create_api_key(
    ctx: &ApiContext,
    actor: Actor,
    expiration: Option<&str>,
) -> Result<String, ApiError> {
    let expiration = parse_expiration(expiration, ctx.now(), DEFAULT_API_KEY_LIFETIME)?;
    let key = secrets::generate(secrets::API_KEY_KIND);
    ctx.execute(
        actor,
        Command::CreateApiKey {
            expiration,
            prefix: key.prefix,
            secret_hash: key.secret_hash,
        },
    )
    .await?;
    Ok(key.full)
}

/// Finds an API key by `prefix` or `id`.
fn api_key_id(
    ctx: &ApiContext,
    id: Option<&str>,
    prefix: Option<&str>,
) -> Result<ApiKeyId, ApiError> {
    let state = ctx.state_at(None)?;
    // Listings show `hskey-api-<prefix>-***`; either form names the key.
    // headscale's prefixes are 12 base64url characters (mixed case, may contain `-`): after
    // `hskey-api-` the prefix is the next 12 characters, not the text up to a `-`.
    let prefix = prefix.map(|p| match p.strip_prefix("hskey-api-") {
        Some(rest) if rest.is_char_boundary(secrets::PREFIX_LEN.min(rest.len())) => {
            &rest[..secrets::PREFIX_LEN.min(rest.len())]
        }
        _ => p,
    });
    match (
        id.filter(|s| !s.is_empty() && *s != "0"),
        prefix.filter(|s| !s.is_empty()),
    ) {
        (Some(_), Some(_)) => Err(ApiError::BadRequest(
            "provide either id or prefix, not both".into(),
        )),
        (Some(id), None) => Ok(ApiKeyId(parse_id("api key", id)?)),
        (None, Some(prefix)) => state
            .api_key_by_prefix(prefix)
            .map(|k| k.id)
            .ok_or_else(|| ApiError::NotFound(format!("api key with prefix {prefix:?} not found"))),
        (None, None) => Err(ApiError::BadRequest("must provide id or prefix".into())),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/apikey/expire",
    tag = "apikeys",
    operation_id = "expireApiKey",
    summary = "Expire an API key by id or prefix",
    request_body = IdBody,
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn expire_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<IdBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (id, prefix) = (body.id.as_deref(), body.prefix.as_deref());
    api_key_command(&ctx, actor, id, prefix, |id| Command::ExpireApiKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}

/// Expires or deletes (`command` says which) the API key named by `id` or `prefix`; REST
/// and gRPC.
pub(crate) async fn api_key_command(
    ctx: &ApiContext,
    actor: Actor,
    id: Option<&str>,
    prefix: Option<&str>,
    command: fn(ApiKeyId) -> Command,
) -> Result<(), ApiError> {
    let id = api_key_id(ctx, id, prefix)?;
    ctx.execute(actor, command(id)).await?;
    Ok(())
}

#[utoipa::path(
    delete,
    path = "/api/v1/apikey/{prefix}",
    tag = "apikeys",
    operation_id = "deleteApiKey",
    summary = "Delete an API key by prefix",
    params(("prefix" = String, Path, description = "The prefix, bare or as listed")),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(prefix): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let delete = |id| Command::DeleteApiKey { id };
    api_key_command(&ctx, actor, None, Some(&prefix), delete).await?;
    Ok(Json(serde_json::json!({})))
}

#[utoipa::path(
    delete,
    path = "/api/v1/apikey",
    tag = "apikeys",
    operation_id = "deleteApiKeyById",
    summary = "Delete an API key by id (ours)",
    params(IdQuery),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete_api_by_query(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<IdQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let delete = |id| Command::DeleteApiKey { id };
    api_key_command(&ctx, actor, query.id.as_deref(), None, delete).await?;
    Ok(Json(serde_json::json!({})))
}
