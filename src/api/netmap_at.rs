//! `GET /api/v1/node/{id}/netmap?at=`: the full map a node's client was given at a point of
//! the log (or would have been, had it been connected), computed by the pure code that
//! serves live clients (`core::netmap::at_point`). The tailnet-wide parts that live in the
//! config (DNS, DERP map, domain, self capabilities, logtail) come from the config this
//! server (or the offline CLI) runs with: `ApiContext::netmap`.

use super::{off_runtime, point, ApiContext, ApiError};
use crate::core::ids::NodeId;
use crate::core::netmap::at_point::{self, Missing};
use crate::core::State;
use axum::extract::{Path, Query, State as AxumState};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NetmapQuery {
    /// The point: a seq, an RFC 3339 time or a duration ago (`2h`); default now.
    at: Option<String>,
}

/// The netmap of one node at a point.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetmapAtResponse {
    /// The node's id (a decimal string).
    pub node_id: String,
    /// The node's name at that point.
    pub node_name: String,
    /// The last event applied at that point (a decimal string).
    pub seq: String,
    /// The time expiry was judged at: the point asked for (a time), or the time of the
    /// event at `seq`, or now.
    #[schema(format = DateTime)]
    pub at: String,
    /// What this answer cannot know (presence, the HA election) and where the config
    /// parts come from.
    pub note: String,
    /// The `MapResponse` a client would receive as its first message (tailcfg JSON).
    pub netmap: serde_json::Value,
}

#[utoipa::path(
    get,
    path = "/api/v1/node/{id}/netmap",
    tag = "history",
    operation_id = "getNodeNetmap",
    summary = "The full netmap a node was (or would have been) given at a point of the log",
    params(("id" = String, Path, description = "The node's id or name"), NetmapQuery),
    responses((status = 200, description = "Success", body = NetmapAtResponse), (status = 404, description = "No such node at that point (code 5)", body = super::error::ErrorBody), super::openapi::CommonErrors)
)]
pub async fn netmap(
    AxumState(ctx): AxumState<ApiContext>,
    Path(node): Path<String>,
    Query(query): Query<NetmapQuery>,
) -> Result<Json<NetmapAtResponse>, ApiError> {
    let template = ctx.netmap.clone().ok_or_else(|| {
        ApiError::Unavailable("this server has no netmap configuration to render with".into())
    })?;
    let at = query.at.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let now = ctx.now();
    // A time given is the moment expiry is judged at; a seq means the time of its event.
    let judged_at = match at {
        Some(text) => match point::parse("--at", text, now).map_err(ApiError::BadRequest)? {
            point::Point::Time(time) => Some(time),
            point::Point::Seq(_) => None,
        },
        None => Some(now),
    };
    let state = ctx.state_at(at)?;
    let when = judged_at.unwrap_or(state.last_at);
    let viewer = find_node(&ctx, &state, at.is_some(), &node)?;
    let map = off_runtime(|| at_point::netmap_at(&state, viewer, &template, when));
    let map = map.map_err(|why| {
        let what = match why {
            Missing::Deleted => "it had been deleted by then",
            Missing::NotYetRegistered => "it was not registered yet",
            Missing::Unrenderable(error) => {
                return ApiError::Internal(format!("cannot render the netmap: {error}"))
            }
        };
        ApiError::NotFound(format!(
            "node {} did not exist at seq {}: {what}",
            viewer.0, state.last_seq
        ))
    })?;
    let name = state
        .nodes
        .get(&viewer)
        .map(|n| n.given_name.clone())
        .unwrap_or_default();
    let mut note = at_point::PRESENCE_NOTE.to_string();
    note.push_str(
        "; DNS config, DERP map, domain and self capabilities are from the config in use now, \
         not as configured at that point",
    );
    Ok(Json(NetmapAtResponse {
        node_id: viewer.0.to_string(),
        node_name: name,
        seq: state.last_seq.to_string(),
        at: when.to_rfc3339(),
        note,
        netmap: map,
    }))
}

/// The node named by `text` (an id, or a given name at the point, else now): a name that
/// only exists now still finds its id, so the error can say why it is missing at the point.
/// The state now is rebuilt only for such a name (`past`: the point is not now).
fn find_node(ctx: &ApiContext, state: &State, past: bool, text: &str) -> Result<NodeId, ApiError> {
    let text = text.trim();
    if let Ok(id) = text.parse::<u64>() {
        return Ok(NodeId(id));
    }
    let by_name = |s: &State| {
        s.nodes
            .values()
            .find(|n| n.given_name == text)
            .map(|n| n.id)
    };
    if let Some(id) = by_name(state) {
        return Ok(id);
    }
    let now = if past {
        by_name(&*ctx.state_at(None)?)
    } else {
        None
    };
    now.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no node named {text:?} at seq {} (nor now)",
            state.last_seq
        ))
    })
}
