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

#[derive(Deserialize, Default)]
pub struct PreAuthListQuery {
    user: Option<String>,
    at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyList {
    pre_auth_keys: Vec<PreAuthKeyWire>,
}

pub async fn list_pre_auth(
    State(ctx): State<ApiContext>,
    Query(query): Query<PreAuthListQuery>,
) -> Result<Json<PreAuthKeyList>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    let user = match query.user.as_deref().filter(|u| !u.is_empty()) {
        Some(text) => Some(UserId(parse_id("user", text)?)),
        None => None,
    };
    let now = ctx.now();
    let pre_auth_keys = state
        .pre_auth_keys
        .values()
        .filter(|k| user.is_none() || k.user == user)
        .map(|k| wire::pre_auth_key(&state, k, now, None))
        .collect();
    Ok(Json(PreAuthKeyList { pre_auth_keys }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatePreAuthBody {
    #[serde(default, deserialize_with = "lenient_id")]
    user: Option<String>,
    #[serde(default)]
    reusable: bool,
    #[serde(default)]
    ephemeral: bool,
    #[serde(default)]
    pre_approved: bool,
    expiration: Option<String>,
    #[serde(default)]
    acl_tags: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyResponse {
    pre_auth_key: PreAuthKeyWire,
}

pub async fn create_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreatePreAuthBody>,
) -> Result<Json<PreAuthKeyResponse>, ApiError> {
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
    Ok(Json(PreAuthKeyResponse {
        pre_auth_key: wire::pre_auth_key(&state, created, ctx.now(), Some(&key.full)),
    }))
}

#[derive(Deserialize)]
pub struct IdBody {
    #[serde(default, deserialize_with = "lenient_id")]
    id: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
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

pub async fn expire_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<IdBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // As headscale: a missing or unknown id is not an error (nothing to expire).
    let Some(id) = optional_pre_auth_key_id(body.id.as_deref())? else {
        return Ok(Json(serde_json::json!({})));
    };
    ignore_not_found(ctx.execute(actor, Command::ExpirePreAuthKey { id }).await)?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize, Default)]
pub struct IdQuery {
    id: Option<String>,
}

pub async fn delete_pre_auth(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<IdQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(id) = optional_pre_auth_key_id(query.id.as_deref())? else {
        return Ok(Json(serde_json::json!({})));
    };
    ignore_not_found(ctx.execute(actor, Command::DeletePreAuthKey { id }).await)?;
    Ok(Json(serde_json::json!({})))
}

#[derive(Deserialize, Default)]
pub struct AtQuery {
    at: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyWire>,
}

pub async fn list_api(
    State(ctx): State<ApiContext>,
    Query(query): Query<AtQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    Ok(Json(ApiKeyList {
        api_keys: state
            .api_keys
            .values()
            .map(|key| {
                let mut wire = wire::api_key(key);
                // Only what this server has seen: `--at` shows no volatile state.
                if query.at.is_none() {
                    wire.last_seen = ctx.auth.last_seen(key.id).map(|t| t.to_rfc3339());
                }
                wire
            })
            .collect(),
    }))
}

#[derive(Deserialize, Default)]
pub struct CreateApiBody {
    expiration: Option<String>,
}

pub async fn create_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateApiBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let expiration = parse_expiration(
        body.expiration.as_deref(),
        ctx.now(),
        DEFAULT_API_KEY_LIFETIME,
    )?;
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
    Ok(Json(serde_json::json!({ "apiKey": key.full })))
}

/// Finds an API key by `prefix` or `id`.
fn api_key_id(
    ctx: &ApiContext,
    id: Option<&str>,
    prefix: Option<&str>,
) -> Result<ApiKeyId, ApiError> {
    let state = ctx.state_at(None)?;
    // Listings show `hskey-api-<prefix>-***`; either form names the key.
    let prefix = prefix.map(|p| {
        p.strip_prefix("hskey-api-")
            .and_then(|p| p.strip_suffix("-***"))
            .unwrap_or(p)
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

pub async fn expire_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<IdBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = api_key_id(&ctx, body.id.as_deref(), body.prefix.as_deref())?;
    ctx.execute(actor, Command::ExpireApiKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}

pub async fn delete_api(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(prefix): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = api_key_id(&ctx, None, Some(&prefix))?;
    ctx.execute(actor, Command::DeleteApiKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}

pub async fn delete_api_by_query(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<IdQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = api_key_id(&ctx, query.id.as_deref(), None)?;
    ctx.execute(actor, Command::DeleteApiKey { id }).await?;
    Ok(Json(serde_json::json!({})))
}
