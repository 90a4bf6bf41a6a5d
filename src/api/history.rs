//! The log as an audit trail: `/api/v1/events` (filters), one event, chain verification,
//! the whole state at any past point, and the policy document (get, set, check).

use super::event_filter::EventFilter;
use super::wire::{self, EventWire};
use super::{blocking, point, ApiContext, ApiError, ApiJson};
use crate::core::{Actor, Command};
use crate::store::replay::{read_envelopes, verify_chain};
use crate::store::EventStore;
use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

/// At most this many events in one answer; the CLI pages with `since`.
pub const MAX_EVENTS_PER_PAGE: usize = 100_000;

/// At most this many records are read for one answer, matching or not: a filter that rarely
/// matches stops here and the answer says where to resume (`nextSince`), so no request scans
/// the whole log at once.
pub const MAX_SCANNED_PER_PAGE: u64 = 200_000;

/// An answer stops adding events once their JSON passes this size (at least one event is
/// always sent), so a page of large events cannot build a response of gigabytes.
pub const MAX_PAGE_BYTES: usize = 32 << 20;

/// The follow stream reads the log in chunks of at most this many records and sends each
/// chunk before reading the next, so it holds at most one chunk, whatever the log's length.
pub const FOLLOW_CHUNK: u64 = 1024;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this point: a seq, an RFC 3339 time or a duration ago (`2h`).
    pub(super) since: Option<String>,
    /// Only events up to this point: a seq, an RFC 3339 time or a duration ago.
    pub(super) until: Option<String>,
    /// Comma-separated event types.
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    /// Only events about this node id.
    pub(super) node: Option<u64>,
    /// Only events naming this user (name or id).
    pub(super) user: Option<String>,
    /// Only events done by this actor: `system`, `admin` (any), `socket`, `apikey:N`,
    /// `node:N`, `machine:<key prefix>`, `oidc` (any) or `oidc:<issuer/subject>`.
    pub(super) actor: Option<String>,
    limit: Option<usize>,
    /// Stream: the matching events so far, then new ones as they are appended, as
    /// server-sent events (`id:` is the seq, `event:` the type, `data:` the event JSON).
    #[serde(default)]
    follow: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventList {
    events: Vec<EventWire>,
    /// True when the answer stops before `until` (the `limit`, the scan budget of 200 000
    /// records, or the 32 MiB size budget of one answer); continue with `since=nextSince`.
    truncated: bool,
    /// Where to resume when `truncated`: every record up to this seq has been examined.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_since: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "history",
    operation_id = "listEvents",
    summary = "List events of the log, oldest first (with follow=true: a text/event-stream of them, then of new ones)",
    params(EventsQuery),
    responses((status = 200, description = "Success", body = EventList), super::openapi::CommonErrors)
)]
pub async fn list_events(
    State(ctx): State<ApiContext>,
    headers: axum::http::HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let filter = EventFilter::from_query(&ctx, &query)?;
    let store = ctx.store();
    let now = ctx.now();
    // An optional point (a time is a search over the log: on the blocking pool).
    let resolve = move |store: &dyn EventStore, flag: &str, text: Option<String>| {
        point::resolve_optional(store, flag, text.as_deref(), now)
    };
    let since = query.since.clone();
    if query.follow {
        let since = blocking(move || resolve(store.as_ref(), "since", since)).await?;
        // A reconnecting EventSource resumes after the last event it saw.
        let resume = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        return follow_events(&ctx, &query, filter, since.or(resume))
            .map(IntoResponse::into_response);
    }
    let until = query.until.clone();
    let limit = query
        .limit
        .unwrap_or(MAX_EVENTS_PER_PAGE)
        .min(MAX_EVENTS_PER_PAGE);
    let page = blocking(move || {
        let since = resolve(store.as_ref(), "since", since)?.unwrap_or(0);
        let until = resolve(store.as_ref(), "until", until)?.unwrap_or_else(|| store.head().seq);
        scan_page(
            store.as_ref(),
            &filter,
            since,
            until,
            limit,
            MAX_SCANNED_PER_PAGE,
        )
    })
    .await?;
    Ok(Json(page).into_response())
}

/// One page of `list_events`: the events after `since` up to `until` that `filter` selects,
/// stopping at `limit` matches, after `budget` records read, or once the events' JSON passes
/// [`MAX_PAGE_BYTES`], whichever comes first.
fn scan_page(
    store: &dyn EventStore,
    filter: &EventFilter,
    since: u64,
    until: u64,
    limit: usize,
    budget: u64,
) -> Result<EventList, ApiError> {
    let mut events = Vec::new();
    let mut bytes = 0;
    // The last seq examined; the page is complete when it reaches `until`.
    let mut examined = since;
    let end = until.min(since.saturating_add(budget));
    for envelope in read_envelopes(store, since + 1, end) {
        let envelope = envelope?;
        if filter.matches(&envelope.actor, &envelope.event) {
            if events.len() == limit || bytes >= MAX_PAGE_BYTES {
                break;
            }
            let event = wire::event(&envelope);
            bytes += json_len(&event);
            events.push(event);
        }
        examined = envelope.seq;
    }
    let truncated = examined < until;
    Ok(EventList {
        events,
        truncated,
        next_since: truncated.then(|| examined.to_string()),
    })
}

type SseItem = Result<axum::response::sse::Event, std::convert::Infallible>;

/// `?follow=true`: what matches since `since`, then every new matching event. New events
/// are read back from the store after each publication (the engine's watch channel keeps
/// only the newest batch, so reading the log is what guarantees nothing is skipped).
fn follow_events(
    ctx: &ApiContext,
    query: &EventsQuery,
    filter: EventFilter,
    since: Option<u64>,
) -> Result<
    axum::response::sse::Sse<impl futures_util::Stream<Item = SseItem> + Send + 'static>,
    ApiError,
> {
    use axum::response::sse::{KeepAlive, Sse};
    if query.until.as_deref().is_some_and(|u| !u.is_empty()) || query.limit.is_some() {
        return Err(ApiError::BadRequest(
            "follow streams without an end: drop until and limit".into(),
        ));
    }
    let super::Backend::Live(engine) = &ctx.backend else {
        return Err(ApiError::Unavailable(
            "following the log needs a running headscale daemon".into(),
        ));
    };
    let store = ctx.store();
    // Subscribe first: anything appended from here on is noticed.
    let published = engine.subscribe();
    let start = since.unwrap_or(0);
    let head = store.head().seq;
    if start > head {
        return Err(ApiError::BadRequest(format!(
            "since {start} is beyond the end of the log (last seq is {head})"
        )));
    }
    struct Cursor {
        store: std::sync::Arc<dyn EventStore>,
        published: tokio::sync::watch::Receiver<crate::engine::Published>,
        filter: std::sync::Arc<EventFilter>,
        /// The last seq read (sent or filtered out).
        read: u64,
        /// The head as of the last read; more is waiting while `read < head`.
        head: u64,
        /// The matching events of the last chunk not sent yet.
        ready: std::vec::IntoIter<SseItem>,
    }
    let cursor = Cursor {
        store,
        published,
        filter: std::sync::Arc::new(filter),
        read: start,
        head,
        ready: Vec::new().into_iter(),
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(item) = cursor.ready.next() {
                return Some((item, cursor));
            }
            if cursor.read >= cursor.head {
                // Nothing unread as of the last look: wait for the next publication (or the
                // engine stopping), then look again. The receiver was subscribed before the
                // first look, so nothing appended in between goes unnoticed.
                if cursor.published.changed().await.is_err() {
                    return None;
                }
            }
            let (store, filter, from) = (cursor.store.clone(), cursor.filter.clone(), cursor.read);
            // A record that cannot be read ends the stream; the client sees the close and can
            // retry from its Last-Event-ID.
            let chunk =
                tokio::task::spawn_blocking(move || read_chunk(store.as_ref(), &filter, from))
                    .await
                    .ok()?
                    .ok()?;
            cursor.read = chunk.read;
            cursor.head = chunk.head;
            cursor.ready = chunk.items.into_iter();
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The length of `value`'s JSON, counted without building it.
fn json_len(value: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serializing wire types into a sink that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// One chunk of the follow stream: the events after `after` up to [`FOLLOW_CHUNK`] records
/// further (or the head), as SSE items.
struct Chunk {
    items: Vec<SseItem>,
    /// The last seq read.
    read: u64,
    /// The head when the chunk was read.
    head: u64,
}

fn read_chunk(
    store: &dyn EventStore,
    filter: &EventFilter,
    after: u64,
) -> Result<Chunk, crate::store::StoreError> {
    let head = store.head().seq;
    let to = head.min(after.saturating_add(FOLLOW_CHUNK));
    let mut items = Vec::new();
    for envelope in read_envelopes(store, after + 1, to) {
        let envelope = envelope?;
        if filter.matches(&envelope.actor, &envelope.event) {
            let data =
                serde_json::to_string(&wire::event(&envelope)).unwrap_or_else(|_| "{}".into());
            items.push(Ok(axum::response::sse::Event::default()
                .id(envelope.seq.to_string())
                .event(envelope.event.kind())
                .data(data)));
        }
    }
    Ok(Chunk {
        items,
        read: to.max(after),
        head,
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/events/{seq}",
    tag = "history",
    operation_id = "showEvent",
    summary = "One event with its hashes",
    params(("seq" = String, Path, description = "The event's seq number")),
    responses((status = 200, description = "Success", body = super::openapi::EventDetail), (status = 404, description = "Not found (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn show_event(
    State(ctx): State<ApiContext>,
    Path(seq): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let seq: u64 = seq
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid seq {seq:?}: expected a number")))?;
    let store = ctx.store();
    let record = blocking(move || {
        store.read(seq)?.ok_or_else(|| {
            ApiError::NotFound(format!(
                "event {seq} not found (the log ends at {})",
                store.head().seq
            ))
        })
    })
    .await?;
    let envelope = record
        .envelope()
        .map_err(|e| ApiError::Internal(format!("event {seq} is corrupt: {e}")))?;
    Ok(Json(serde_json::json!({
        "event": wire::event(&envelope),
        "prevHash": record.prev_hash.to_hex(),
        "hash": record.hash().to_hex(),
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/events/verify",
    tag = "history",
    operation_id = "verifyEvents",
    summary = "Verify the hash chain and the signed checkpoints",
    responses((status = 200, description = "Success", body = super::openapi::VerifyResponse), super::openapi::CommonErrors)
)]
pub async fn verify(State(ctx): State<ApiContext>) -> Result<Json<serde_json::Value>, ApiError> {
    let store = ctx.store();
    let key = ctx.checkpoint_key;
    match blocking(move || Ok(verify_chain(store.as_ref(), key.as_ref()))).await? {
        Ok(report) => {
            let snapshots: Vec<_> = report
                .snapshots
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "seq": s.seq.to_string(),
                        "status": s.status.label(),
                        "detail": s.status.to_string(),
                    })
                })
                .collect();
            // A snapshot that is badly signed, bound to another chain or differs from the
            // log is evidence of tampering (L11): the verdict is not ok.
            let suspicious: Vec<_> = report
                .suspicious_snapshots()
                .map(|s| format!("snapshot at seq {}: {}", s.seq, s.status))
                .collect();
            let mut body = serde_json::json!({
                "ok": suspicious.is_empty(),
                "events": report.events.to_string(),
                "headHash": report.head_hash.to_hex(),
                "checkpointsVerified": report.checkpoints_verified,
                "signaturesChecked": ctx.checkpoint_key.is_some(),
                "snapshots": snapshots,
            });
            if !suspicious.is_empty() {
                body["error"] = suspicious.join("; ").into();
            }
            if let Some(key) = ctx.checkpoint_key {
                body["checkpointKey"] = hex::encode(key.to_bytes()).into();
            }
            Ok(Json(body))
        }
        // The store could not be read: no verdict, and the I/O detail goes to the log (I1).
        Err(error @ crate::store::StoreError::Io(_)) => Err(error.into()),
        Err(error) => Ok(Json(serde_json::json!({
            "ok": false,
            "error": error.to_string(),
        }))),
    }
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// The state at a past point: a seq number or an RFC 3339 time.
    at: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/state",
    tag = "history",
    operation_id = "getState",
    summary = "The whole state, now or at a past point",
    params(AtQuery),
    responses((status = 200, description = "Success", body = super::openapi::StateResponse), super::openapi::CommonErrors)
)]
pub async fn state(
    State(ctx): State<ApiContext>,
    Query(query): Query<AtQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = ctx.state_at(query.at.as_deref())?;
    Ok(Json(serde_json::json!({
        "seq": state.last_seq.to_string(),
        "at": state.last_at.to_rfc3339(),
        "state": state.canonical_json(),
    })))
}

#[utoipa::path(
    get,
    path = "/api/v1/policy",
    tag = "policy",
    operation_id = "getPolicy",
    summary = "The policy in force (404 when none is set)",
    params(AtQuery),
    responses((status = 200, description = "Success", body = super::openapi::PolicyResponse), (status = 404, description = "Not found (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn get_policy(
    State(ctx): State<ApiContext>,
    Query(query): Query<AtQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (text, updated_at) = policy_in_force(&ctx, query.at.as_deref())?;
    Ok(Json(serde_json::json!({
        "policy": text,
        "updatedAt": updated_at.to_rfc3339(),
    })))
}

/// The policy text in force and when it was set (not found when none is); REST and gRPC.
pub(crate) fn policy_in_force(
    ctx: &ApiContext,
    at: Option<&str>,
) -> Result<(String, crate::core::Timestamp), ApiError> {
    let state = ctx.state_at(at)?;
    match &state.policy {
        Some(policy) => Ok((policy.text.clone(), policy.updated_at)),
        None => Err(ApiError::NotFound(
            "no policy is set (every node may reach every other)".into(),
        )),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = PolicyRequest)]
pub struct PolicyBody {
    /// The policy text (HuJSON). Absent or empty on `PUT` clears the policy, as in headscale.
    #[serde(default)]
    policy: String,
}

#[utoipa::path(
    put,
    path = "/api/v1/policy",
    tag = "policy",
    operation_id = "setPolicy",
    summary = "Replace the policy (policy.mode: database)",
    request_body = PolicyBody,
    responses((status = 200, description = "Success", body = super::openapi::PolicyResponse), super::openapi::CommonErrors, super::openapi::WriteErrors)
)]
pub async fn set_policy(
    State(ctx): State<ApiContext>,
    Extension(actor): Extension<Actor>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cleared = body.policy.trim().is_empty();
    replace_policy(&ctx, actor, body.policy).await?;
    if cleared {
        // headscale answers a cleared policy with an empty one.
        return Ok(Json(serde_json::json!({ "policy": "" })));
    }
    get_policy(State(ctx), Query(AtQuery::default())).await
}

/// Replaces the policy (`policy.mode: database` only); REST and gRPC.
pub(crate) async fn replace_policy(
    ctx: &ApiContext,
    actor: Actor,
    text: String,
) -> Result<(), ApiError> {
    if !ctx.policy_in_database {
        return Err(ApiError::BadRequest(
            "the policy is read from a file (policy.mode: file); edit the file and send SIGHUP, or set policy.mode: database".into(),
        ));
    }
    ctx.execute(actor, Command::ReplacePolicy { text }).await?;
    Ok(())
}

/// `POST /api/v1/policy/check` (headscale's route): whether the policy would be accepted now,
/// against the live users and nodes, without setting it. `{}` when it would; otherwise the
/// same one-line refusal `PUT /api/v1/policy` gives.
#[utoipa::path(
    post,
    path = "/api/v1/policy/check",
    tag = "policy",
    operation_id = "checkPolicy",
    summary = "Check a policy against the live tailnet without setting it",
    request_body = PolicyBody,
    responses((status = 200, description = "Success", body = super::openapi::Empty), super::openapi::CommonErrors)
)]
pub async fn check_policy(
    State(ctx): State<ApiContext>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_policy_text(&ctx, &body.policy)?;
    Ok(Json(serde_json::json!({})))
}

/// Whether `text` would be accepted as the policy now; REST and gRPC.
pub(crate) fn check_policy_text(ctx: &ApiContext, text: &str) -> Result<(), ApiError> {
    let state = ctx.state_at(None)?;
    crate::core::policy::check_for_state(text, &state)
        .map_err(|e| ApiError::BadRequest(crate::core::Rejection::InvalidPolicy(e).to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::UserId;
    use crate::core::{Envelope, Event, Timestamp};
    use crate::store::memory::MemoryStore;
    use crate::store::record::encode_chain;

    /// A log of `n` events: one user created, then renamed over and over.
    fn store_with(n: u64) -> MemoryStore {
        let envelopes: Vec<Envelope> = (1..=n)
            .map(|seq| Envelope {
                seq,
                at: Timestamp::from_unix_ms(seq as i64),
                actor: Actor::System,
                event: if seq == 1 {
                    Event::UserCreated {
                        id: UserId(1),
                        name: "ann".into(),
                        display_name: String::new(),
                        email: String::new(),
                    }
                } else {
                    Event::UserRenamed {
                        id: UserId(1),
                        name: format!("u{seq}"),
                    }
                },
            })
            .collect();
        let store = MemoryStore::new();
        store
            .append(&encode_chain(&envelopes, Default::default()).unwrap())
            .unwrap();
        store
    }

    fn only(kind: &str) -> EventFilter {
        EventFilter::only(kind)
    }

    const ALL: EventFilter = EventFilter::ALL;

    fn seqs(page: &EventList) -> Vec<String> {
        page.events.iter().map(|e| e.seq.clone()).collect()
    }

    #[test]
    fn a_page_cut_by_limit_resumes_after_its_last_event() {
        let store = store_with(50);
        let page = scan_page(&store, &ALL, 0, 50, 10, 1000).unwrap();
        assert_eq!(seqs(&page).len(), 10);
        assert!(page.truncated);
        assert_eq!(page.next_since.as_deref(), Some("10"));
        let rest = scan_page(&store, &ALL, 10, 50, 100, 1000).unwrap();
        assert_eq!(seqs(&rest).first().map(String::as_str), Some("11"));
        assert_eq!(seqs(&rest).len(), 40);
        assert!(!rest.truncated);
        assert_eq!(rest.next_since, None);
    }

    #[test]
    fn a_rare_filter_stops_at_the_scan_budget_and_says_where_to_resume() {
        let store = store_with(50);
        let page = scan_page(&store, &only("UserDeleted"), 0, 50, 10, 20).unwrap();
        assert!(page.events.is_empty());
        assert!(page.truncated);
        assert_eq!(page.next_since.as_deref(), Some("20"));
        // The last stretch ends at `until`: complete.
        let last = scan_page(&store, &only("UserDeleted"), 40, 50, 10, 20).unwrap();
        assert!(!last.truncated);
        // A match at the edge of the budget is included, and resuming goes on after it.
        let page = scan_page(&store, &only("UserCreated"), 0, 50, 10, 1).unwrap();
        assert_eq!(seqs(&page), ["1"]);
        assert_eq!(page.next_since.as_deref(), Some("1"));
    }

    #[test]
    fn follow_chunks_hold_at_most_a_chunk_and_cover_the_log() {
        let total = 3 * FOLLOW_CHUNK + 7;
        let store = store_with(total);
        let mut after = 0;
        let mut sent = 0;
        while after < total {
            let chunk = read_chunk(&store, &ALL, after).unwrap();
            assert!(chunk.items.len() as u64 <= FOLLOW_CHUNK);
            assert_eq!(chunk.head, total);
            assert!(chunk.read > after);
            sent += chunk.items.len() as u64;
            after = chunk.read;
        }
        assert_eq!(sent, total);
        // At the head: nothing, and the cursor stays.
        let chunk = read_chunk(&store, &ALL, total).unwrap();
        assert!(chunk.items.is_empty());
        assert_eq!(chunk.read, total);
    }
}
