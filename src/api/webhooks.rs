//! `/api/v1/webhook` (ours): webhook endpoints — list (with each one's cursor, lag behind
//! the head and delivery health), create (the signing secret is made here, written to a 0600
//! file and shown once), delete, recent delivery attempts, and a signed test event.

use super::{blocking, ApiContext, ApiError, ApiJson};
use crate::core::{Actor, Command, Event};
use crate::webhooks::{secret, Attempt, Endpoint, Hub};
use axum::extract::{Path, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// One endpoint as listed.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookWire {
    /// The managed endpoint's id, or the configured endpoint's name.
    id: String,
    /// `api` (CLI/API-managed, recorded in the log) or `config` (the config file).
    source: String,
    url: String,
    /// The event types it receives (`*`: all).
    events: Vec<String>,
    /// When it was created (managed endpoints; RFC 3339).
    created_at: Option<String>,
    /// The last seq delivered and acknowledged (none before delivery starts).
    cursor: Option<u64>,
    /// The log's head.
    head: u64,
    /// Records between the cursor and the head.
    lag: Option<u64>,
    /// This process's delivery record (null without a running server).
    last_success: Option<String>,
    last_failure: Option<String>,
    last_error: Option<String>,
    consecutive_failures: Option<u64>,
    delivered_events: Option<u64>,
    /// Why delivery is stopped, if it is (e.g. an unreadable secret file).
    problem: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WebhookList {
    webhooks: Vec<WebhookWire>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CreateWebhookResponse {
    webhook: WebhookWire,
    /// The signing secret: shown only here (kept in `<data dir>/webhooks/<id>.secret`).
    secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct CreateWebhookRequest {
    /// `http://` or `https://`.
    url: String,
    /// Event types (`nodeCreated`, ...), or `["*"]` for all.
    events: Vec<String>,
}

/// One delivery attempt.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptWire {
    /// RFC 3339.
    at: String,
    first_seq: u64,
    last_seq: u64,
    events: u64,
    /// The HTTP status, when an answer came.
    status: Option<u16>,
    error: Option<String>,
    duration_ms: u64,
    ok: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Oldest first; at most `MAX_RECENT_ATTEMPTS` (this process only).
    deliveries: Vec<AttemptWire>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TestResponse {
    delivery: AttemptWire,
}

fn attempt_wire(attempt: &Attempt) -> AttemptWire {
    AttemptWire {
        at: attempt.at.to_rfc3339(),
        first_seq: attempt.first_seq,
        last_seq: attempt.last_seq,
        events: attempt.events as u64,
        status: attempt.status,
        error: attempt.error.clone(),
        duration_ms: attempt.duration_ms,
        ok: attempt.ok,
    }
}

fn hub(ctx: &ApiContext) -> Result<&Arc<Hub>, ApiError> {
    ctx.webhooks.as_ref().ok_or_else(|| {
        ApiError::Unavailable("webhooks need a running server (`headscale serve`)".into())
    })
}

/// Every endpoint with its cursor (read off the runtime) and this process's record.
async fn listing(ctx: &ApiContext) -> Result<Vec<WebhookWire>, ApiError> {
    let state = ctx.state_at(None)?;
    let hub = hub(ctx)?.clone();
    let store = ctx.store();
    let endpoints = hub.endpoints(&state);
    let (head, cursors) = blocking(move || {
        let cursors: Vec<Option<u64>> = endpoints
            .iter()
            .map(|e| crate::webhooks::cursor(store.as_ref(), e))
            .collect();
        Ok((store.head().seq, (endpoints, cursors)))
    })
    .await?;
    let (endpoints, cursors) = cursors;
    Ok(endpoints
        .into_iter()
        .zip(cursors)
        .map(|(endpoint, cursor)| wire(&hub, &state, &endpoint, cursor, head))
        .collect())
}

fn wire(
    hub: &Hub,
    state: &crate::core::State,
    endpoint: &Endpoint,
    cursor: Option<u64>,
    head: u64,
) -> WebhookWire {
    let status = hub.status(&endpoint.key);
    let live = ctx_is_live(&status);
    let created_at = endpoint
        .name
        .parse::<u64>()
        .ok()
        .filter(|_| endpoint.source == "api")
        .and_then(|id| state.webhooks.endpoints.get(&id))
        .map(|hook| hook.created_at.to_rfc3339());
    WebhookWire {
        id: endpoint.name.clone(),
        source: endpoint.source.to_string(),
        url: endpoint.url.clone(),
        events: endpoint.kinds.clone(),
        created_at,
        cursor,
        head,
        lag: cursor.map(|c| head.saturating_sub(c)),
        last_success: status.last_success.map(|t| t.to_rfc3339()),
        last_failure: status.last_failure.as_ref().map(|(t, _)| t.to_rfc3339()),
        last_error: status.last_failure.as_ref().map(|(_, e)| e.clone()),
        consecutive_failures: live.then_some(status.consecutive_failures),
        delivered_events: live.then_some(status.delivered_events),
        problem: status.problem.clone(),
    }
}

/// Whether this process has delivered (or tried) anything for the endpoint.
fn ctx_is_live(status: &crate::webhooks::Status) -> bool {
    status.cursor.is_some() || !status.recent.is_empty() || status.problem.is_some()
}

#[utoipa::path(
    get,
    path = "/api/v1/webhook",
    tag = "webhooks",
    operation_id = "listWebhooks",
    summary = "List webhook endpoints with their delivery cursor, lag and health (ours)",
    responses((status = 200, description = "Success", body = WebhookList), super::openapi::CommonErrors)
)]
pub async fn list(State(ctx): State<ApiContext>) -> Result<Json<WebhookList>, ApiError> {
    Ok(Json(WebhookList {
        webhooks: listing(&ctx).await?,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhook",
    tag = "webhooks",
    operation_id = "createWebhook",
    summary = "Add a webhook endpoint (its signing secret is shown only here; ours)",
    request_body = CreateWebhookRequest,
    responses((status = 200, description = "Success", body = CreateWebhookResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn create(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<CreateWebhookRequest>,
) -> Result<Json<CreateWebhookResponse>, ApiError> {
    let hub = hub(&ctx)?.clone();
    let secret = secret::generate();
    let envelopes = ctx
        .execute(
            actor,
            Command::CreateWebhook {
                url: body.url,
                kinds: body.events,
            },
        )
        .await?;
    let id = envelopes
        .iter()
        .find_map(|e| match e.event {
            Event::WebhookCreated { id, .. } => Some(id),
            _ => None,
        })
        .ok_or_else(|| ApiError::Internal("the endpoint was not recorded".into()))?;
    let path = secret::managed_path(&hub.data_dir, id);
    let written = secret.clone();
    blocking(move || {
        secret::write(&path, &written).map_err(|e| {
            ApiError::Internal(format!(
                "webhook {id} was created but its secret could not be written to {}: {e}; \
                 delete it and create it again",
                path.display()
            ))
        })
    })
    .await?;
    let state = ctx.state_at(None)?;
    let endpoint = hub
        .endpoint(&state, &id.to_string())
        .ok_or_else(|| ApiError::Internal(format!("webhook {id} is not in the state")))?;
    let head = state.last_seq;
    Ok(Json(CreateWebhookResponse {
        webhook: wire(&hub, &state, &endpoint, None, head),
        secret,
    }))
}

/// A managed endpoint's id from the path.
fn managed_id(text: &str) -> Result<u64, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid webhook id {text:?}: expected a number (endpoints from the config file are \
             removed from the config)"
        ))
    })
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhook/{id}",
    tag = "webhooks",
    operation_id = "deleteWebhook",
    summary = "Delete a CLI/API-managed webhook endpoint (ours)",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn delete(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = managed_id(&id)?;
    let hub = hub(&ctx)?.clone();
    ctx.execute(actor, Command::DeleteWebhook { id }).await?;
    let path = secret::managed_path(&hub.data_dir, id);
    blocking(move || {
        secret::remove(&path);
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({})))
}

/// The endpoint named in the path (a managed id or a config name).
fn named(ctx: &ApiContext, name: &str) -> Result<(Arc<Hub>, Endpoint), ApiError> {
    let hub = hub(ctx)?.clone();
    let state = ctx.state_at(None)?;
    let endpoint = hub
        .endpoint(&state, name.trim())
        .ok_or_else(|| ApiError::NotFound(format!("webhook {name} not found")))?;
    Ok((hub, endpoint))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhook/{id}/deliveries",
    tag = "webhooks",
    operation_id = "listWebhookDeliveries",
    summary = "Recent delivery attempts to a webhook endpoint, oldest first (ours)",
    params(("id" = String, Path, description = "The endpoint's id or configured name")),
    responses((status = 200, description = "Success", body = DeliveryList), super::openapi::CommonErrors)
)]
pub async fn deliveries(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryList>, ApiError> {
    let (hub, endpoint) = named(&ctx, &id)?;
    let status = hub.status(&endpoint.key);
    Ok(Json(DeliveryList {
        deliveries: status.recent.iter().map(attempt_wire).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/webhook/{id}/test",
    tag = "webhooks",
    operation_id = "testWebhook",
    summary = "Send a signed test event to a webhook endpoint now (ours)",
    params(("id" = String, Path, description = "The endpoint's id or configured name")),
    responses((status = 200, description = "The attempt (see `ok`)", body = TestResponse), super::openapi::CommonErrors)
)]
pub async fn test(
    State(ctx): State<ApiContext>,
    Path(id): Path<String>,
) -> Result<Json<TestResponse>, ApiError> {
    let (hub, endpoint) = named(&ctx, &id)?;
    let attempt = hub.send_test(&endpoint, ctx.now()).await;
    Ok(Json(TestResponse {
        delivery: attempt_wire(&attempt),
    }))
}
