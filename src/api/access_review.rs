//! Access review over the API: `GET /api/v1/policy/who-can-reach` and
//! `GET /api/v1/policy/what-can`, now, at a past point (`at`), or followed along the log
//! (`since`/`until`: every gain and loss, with the event that caused it). The analysis is
//! `core::policy::review`; here the state is rebuilt and the log walked, off the runtime.

use super::{blocking, point, ApiContext, ApiError};
use crate::core::policy::review::{self, Answer, Change, Destination, Host, Question, Review};
use crate::core::{State, Timestamp};
use crate::store::replay::{load_state_with, read_envelopes};
use axum::extract::{Query, State as AxumState};
use axum::Json;
use serde::{Deserialize, Serialize};

/// At most this many events are walked for one `since`/`until` request; a longer range is
/// refused (narrow it, or ask in several parts).
pub const MAX_WALK_EVENTS: u64 = 200_000;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WhoCanReachQuery {
    /// A node (id or name), or `ip`, `ip:port`, `ip:port/proto` (`[v6]:port` for IPv6).
    dest: Option<String>,
    /// The answer at a past point: a seq, an RFC 3339 time or a duration ago (`2h`).
    at: Option<String>,
    /// Walk the log from this point (a seq, an RFC 3339 time or a duration ago) and list
    /// when access was gained or lost.
    since: Option<String>,
    /// Walk up to this point (default: the end of the log).
    until: Option<String>,
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WhatCanQuery {
    /// The node (id or name).
    node: Option<String>,
    /// The answer at a past point: a seq, an RFC 3339 time or a duration ago (`2h`).
    at: Option<String>,
    /// Walk the log from this point and list when access was gained or lost.
    since: Option<String>,
    /// Walk up to this point (default: the end of the log).
    until: Option<String>,
}

/// A review answer: the rows at one point and, for a walk, what changed along it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    /// The question, e.g. `who-can-reach db:5432`.
    question: String,
    /// The point answered (for a walk: its end), as a seq.
    seq: String,
    /// The time of that point (RFC 3339).
    at: String,
    entries: Vec<review::Entry>,
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Timeline>,
}

/// When access was gained or lost between two points.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The walk starts after this seq (the answer there is the baseline).
    since: String,
    /// ... and ends with this seq.
    until: String,
    /// Events read.
    events: u64,
    /// Events that could change access, after which the answer was recomputed.
    recomputed: u64,
    changes: Vec<Change>,
    /// Changes beyond the listed 10 000, counted only.
    dropped: u64,
}

#[utoipa::path(
    get,
    path = "/api/v1/policy/who-can-reach",
    tag = "policy",
    operation_id = "whoCanReach",
    summary = "Who can reach a node or an address (and port/protocol), with the rule that allows each; with since/until, when that changed",
    params(WhoCanReachQuery),
    responses((status = 200, description = "Success", body = ReviewResponse), (status = 404, description = "No such node (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn who_can_reach(
    AxumState(ctx): AxumState<ApiContext>,
    Query(query): Query<WhoCanReachQuery>,
) -> Result<Json<ReviewResponse>, ApiError> {
    let text = nonempty(query.dest.as_deref()).ok_or_else(|| {
        ApiError::BadRequest(
            "dest is required: a node (id or name) or ip[:port][/proto], e.g. 100.64.0.3:5432/tcp"
                .into(),
        )
    })?;
    let destination = review::parse_destination(&text).map_err(ApiError::BadRequest)?;
    let points = Points::new(query.at, query.since, query.until)?;
    respond(
        ctx,
        Question::WhoCanReach(destination),
        format!("who-can-reach {text}"),
        points,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/policy/what-can",
    tag = "policy",
    operation_id = "whatCan",
    summary = "What a node can reach (nodes, routed prefixes, ports, capabilities), with the rule that allows each; with since/until, when that changed",
    params(WhatCanQuery),
    responses((status = 200, description = "Success", body = ReviewResponse), (status = 404, description = "No such node (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn what_can(
    AxumState(ctx): AxumState<ApiContext>,
    Query(query): Query<WhatCanQuery>,
) -> Result<Json<ReviewResponse>, ApiError> {
    let node = nonempty(query.node.as_deref())
        .ok_or_else(|| ApiError::BadRequest("node is required: a node id or name".into()))?;
    let points = Points::new(query.at, query.since, query.until)?;
    respond(
        ctx,
        Question::WhatCan(node.clone()),
        format!("what-can {node}"),
        points,
    )
    .await
}

fn nonempty(text: Option<&str>) -> Option<String> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// `at`, or `since`/`until` (a walk), never both.
enum Points {
    At(Option<String>),
    Walk {
        since: Option<String>,
        until: Option<String>,
    },
}

impl Points {
    fn new(
        at: Option<String>,
        since: Option<String>,
        until: Option<String>,
    ) -> Result<Points, ApiError> {
        let (at, since, until) = (
            nonempty(at.as_deref()),
            nonempty(since.as_deref()),
            nonempty(until.as_deref()),
        );
        match (at, since.is_some() || until.is_some()) {
            (Some(_), true) => Err(ApiError::BadRequest(
                "give either at (one point) or since/until (a walk along the log), not both".into(),
            )),
            (at, false) => Ok(Points::At(at)),
            (None, true) => Ok(Points::Walk { since, until }),
        }
    }
}

async fn respond(
    ctx: ApiContext,
    question: Question,
    label: String,
    points: Points,
) -> Result<Json<ReviewResponse>, ApiError> {
    let now = ctx.now();
    match points {
        Points::At(at) => {
            let state = ctx.state_at(at.as_deref())?;
            // Expiry is judged at the moment asked about.
            let moment = match &at {
                None => now,
                Some(text) => match point::parse("at", text, now).map_err(ApiError::BadRequest)? {
                    point::Point::Time(time) => time,
                    point::Point::Seq(_) => state.last_at,
                },
            };
            let answer = blocking(move || {
                let review = Review::for_state(&state, moment);
                let answer = question.answer(&review).map_err(ApiError::NotFound)?;
                Ok((answer, state.last_seq, state.last_at))
            })
            .await?;
            let (answer, seq, at) = answer;
            Ok(Json(response(label, seq, at, answer, None)))
        }
        Points::Walk { since, until } => {
            let store = ctx.store();
            let trusted = ctx.checkpoint_key;
            blocking(move || {
                let since =
                    point::resolve_optional(store.as_ref(), "since", since.as_deref(), now)?
                        .unwrap_or(0);
                let until =
                    point::resolve_optional(store.as_ref(), "until", until.as_deref(), now)?
                        .unwrap_or_else(|| store.head().seq);
                if since > until {
                    return Err(ApiError::BadRequest(format!(
                        "since (seq {since}) is after until (seq {until})"
                    )));
                }
                let events = until - since;
                if events > MAX_WALK_EVENTS {
                    return Err(ApiError::BadRequest(format!(
                        "the walk from seq {since} to seq {until} covers {events} events, more \
                         than the limit of {MAX_WALK_EVENTS} per request (MAX_WALK_EVENTS); \
                         narrow --since/--until or ask in several ranges"
                    )));
                }
                let mut state =
                    load_state_with(store.as_ref(), Some(since), trusted.as_ref())?.state;
                // A node named by its name is followed by id, whatever it is called later.
                let question = pin_node(question, &state, || {
                    Ok(load_state_with(store.as_ref(), Some(until), trusted.as_ref())?.state)
                })?;
                let start = question
                    .answer(&Review::for_state(&state, state.last_at))
                    .unwrap_or_default();
                let mut walk = review::Walk::start(question.clone(), &start);
                for envelope in read_envelopes(store.as_ref(), since + 1, until) {
                    let envelope = envelope?;
                    state.apply(&envelope);
                    walk.step(&state, &envelope);
                }
                let last = Review::for_state(&state, state.last_at);
                let answer = match question.answer(&last) {
                    Ok(answer) => answer,
                    Err(error) if walk.changes.is_empty() && start.entries.is_empty() => {
                        return Err(ApiError::NotFound(format!(
                            "{error} (from seq {since} to seq {until})"
                        )))
                    }
                    Err(error) => Answer {
                        entries: Vec::new(),
                        notes: vec![format!("at seq {until}: {error}")],
                    },
                };
                let timeline = Timeline {
                    since: since.to_string(),
                    until: until.to_string(),
                    events,
                    recomputed: walk.recomputed,
                    changes: walk.changes,
                    dropped: walk.dropped,
                };
                Ok(Json(response(
                    label,
                    state.last_seq,
                    state.last_at,
                    answer,
                    Some(timeline),
                )))
            })
            .await
        }
    }
}

fn response(
    question: String,
    seq: u64,
    at: Timestamp,
    answer: Answer,
    timeline: Option<Timeline>,
) -> ReviewResponse {
    ReviewResponse {
        question,
        seq: seq.to_string(),
        at: at.to_rfc3339(),
        entries: answer.entries,
        notes: answer.notes,
        timeline,
    }
}

/// The question with a node name replaced by the node's id (found at the walk's end, else
/// at its start), so a rename along the way does not lose it. `end` rebuilds the state at the
/// walk's end: only a question naming a node by name needs it.
fn pin_node(
    question: Question,
    start: &State,
    end: impl FnOnce() -> Result<State, ApiError>,
) -> Result<Question, ApiError> {
    let name = match &question {
        Question::WhatCan(name)
        | Question::WhoCanReach(Destination {
            host: Host::Node(name),
            ..
        }) if name.parse::<u64>().is_err() => name,
        _ => return Ok(question),
    };
    let id_of = |state: &State| {
        state
            .nodes
            .values()
            .find(|n| n.given_name == *name)
            .map(|n| n.id.0.to_string())
    };
    let Some(id) = id_of(&end()?).or_else(|| id_of(start)) else {
        return Ok(question);
    };
    Ok(match question {
        Question::WhatCan(_) => Question::WhatCan(id),
        Question::WhoCanReach(destination) => Question::WhoCanReach(Destination {
            host: Host::Node(id),
            ..destination
        }),
    })
}
