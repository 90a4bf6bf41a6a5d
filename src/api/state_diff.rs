//! `GET /api/v1/state/diff?from=&to=`: what changed between two points of the log (users,
//! keys, nodes, config, policy), each change with the events responsible. The two states come
//! from snapshot + replay like every `?at=`; the range between them is read once, folded onto
//! the state at `from` and attributed (`core::state_diff`), within a named budget.

use super::{blocking, point, ApiContext, ApiError};
use crate::core::state_diff::{self, Attribution};
use crate::store::replay::{load_state_with, read_envelopes};
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

/// A range longer than this is not read event by event: the diff is computed from the two
/// states alone, without the events responsible (`eventsListed: false`, and a note says why),
/// so no request walks more of the log than one `events list` page.
pub const MAX_DIFF_EVENTS: u64 = super::history::MAX_SCANNED_PER_PAGE;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The earlier point (required): a seq, an RFC 3339 time or a duration ago (`2h`).
    from: Option<String>,
    /// The later point; default now (the head of the log).
    to: Option<String>,
}

/// The documented shape of a diff (`core::state_diff::StateDiff`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateDiffResponse {
    /// The seq of the earlier point (a decimal string).
    pub from: String,
    /// The seq of the later point.
    pub to: String,
    #[schema(format = DateTime)]
    pub from_at: String,
    #[schema(format = DateTime)]
    pub to_at: String,
    /// Events in (from, to].
    pub event_count: u64,
    /// False when the range was longer than 200 000 events: changes come without the
    /// events responsible.
    pub events_listed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Each `{change: added|removed|changed, id, name, fields: [{field, from, to}],
    /// events: [{seq, type, actor, at}]}`.
    pub users: Vec<serde_json::Value>,
    pub pre_auth_keys: Vec<serde_json::Value>,
    pub api_keys: Vec<serde_json::Value>,
    pub nodes: Vec<serde_json::Value>,
    /// The core config's fields that differ (`{field, from, to}`); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Vec<serde_json::Value>>,
    /// `{change, unified, events}`: a unified diff of the policy text; absent when equal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<serde_json::Value>,
}

#[utoipa::path(
    get,
    path = "/api/v1/state/diff",
    tag = "history",
    operation_id = "diffState",
    summary = "What changed between two points of the log, with the events responsible",
    params(DiffQuery),
    responses((status = 200, description = "Success", body = StateDiffResponse), super::openapi::CommonErrors)
)]
pub async fn diff(
    State(ctx): State<ApiContext>,
    Query(query): Query<DiffQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from = query
        .from
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "--from is required: a seq, an RFC 3339 time or a duration ago".into(),
            )
        })?;
    let to = query
        .to
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let store = ctx.store();
    let trusted = ctx.checkpoint_key;
    let now = ctx.now();
    let diff = blocking(move || {
        let store = store.as_ref();
        let a = point::resolve(store, "--from", &from, now)?;
        let b = match &to {
            Some(to) => point::resolve(store, "--to", to, now)?,
            None => store.head().seq,
        };
        if a > b {
            return Err(ApiError::BadRequest(format!(
                "--from {from} (seq {a}) is after --to (seq {b})"
            )));
        }
        let before = load_state_with(store, Some(a), trusted.as_ref())?.state;
        if b - a > MAX_DIFF_EVENTS {
            let after = load_state_with(store, Some(b), trusted.as_ref())?.state;
            let mut diff = state_diff::diff(&before, &after, None);
            diff.note = Some(format!(
                "{} events between the two points, more than the {MAX_DIFF_EVENTS} read to \
                 name the events responsible: changes are listed without them (narrow the \
                 range, or read them with `events list --since {a} --until {b}`)",
                b - a
            ));
            return Ok(diff);
        }
        // Fold the range onto the earlier state: the later state and the attribution in one
        // read, holding one event at a time.
        let mut after = before.clone();
        let mut attribution = Attribution::default();
        for envelope in read_envelopes(store, a + 1, b) {
            let envelope = envelope?;
            after.apply(&envelope);
            attribution.note(&envelope);
        }
        Ok(state_diff::diff(&before, &after, Some(&attribution)))
    })
    .await?;
    serde_json::to_value(&diff)
        .map(Json)
        .map_err(|e| ApiError::Internal(format!("cannot encode the diff: {e}")))
}
