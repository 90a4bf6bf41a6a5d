//! `POST /machine/map` inside the Noise channel. A streaming request (`Stream:true`) opens
//! the node's map session with the hub and becomes a long HTTP/2 response: the full map,
//! then deltas, with a keep-alive whenever the stream has been quiet for the keep-alive
//! interval. A lite update (`Stream:false, OmitPeers:true`) only reports endpoints, disco
//! key and home DERP and gets an empty 200. The facts in the request's Hostinfo (hostname,
//! OS, advertised routes, requested tags) are recorded when they change.
//!
//! Everything the request reports goes through `core::limits` first (cut, never refused:
//! the node is registered). The hub's per-node slot records facts at most at the
//! `limits::HOSTINFO_EVENT_*` rate (the newest wins), and the requests that cost the hub a
//! full render are budgeted per node: stream (re)opens and non-streaming full maps over
//! their budget get `429` with `Retry-After` (tailscaled retries a failed poll with
//! backoff). Lite updates are never refused; the hub coalesces them.

use super::hub::{keep_alive_frame, MapHub, Report};
use super::register::MIN_CAPABILITY_VERSION;
use super::upgrade::Peer;
use crate::core::event::NodeHostinfo;
use crate::core::ids::NodeId;
use crate::core::keys::{DiscoKey, NodeKey};
use crate::core::limits;
use crate::engine::EngineHandle;
use crate::tailcfg::MapRequest;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body::Frame;
use rand::Rng;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// What the `/machine/*` handlers share.
#[derive(Clone)]
pub struct MachineContext {
    pub engine: EngineHandle,
    pub hub: MapHub,
    pub keep_alive: Duration,
    pub pending: super::pending::PendingLogins,
    /// `server_url` without a trailing slash, for AuthURLs.
    pub server_url: String,
}

impl FromRef<MachineContext> for EngineHandle {
    fn from_ref(context: &MachineContext) -> EngineHandle {
        context.engine.clone()
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    (code, format!("{message}\n")).into_response()
}

/// The client's report, from a map request, within the named limits (`core::limits`,
/// truncating: a registered node's stream keeps working, the excess is dropped and logged at
/// debug level), and the facts of its Hostinfo worth recording.
pub fn report_of(request: &MapRequest) -> (Report, Option<NodeHostinfo>) {
    let disco_key = DiscoKey::parse(&request.disco_key, false)
        .ok()
        .filter(|k| k.0 != [0; 32]);
    let mut cut = Vec::new();
    let (mut home_derp, mut hostinfo, mut facts) = (None, None, None);
    if let Some(raw) = &request.hostinfo {
        let reported = limits::normalise_reported_hostinfo(raw);
        home_derp = reported.home_derp;
        hostinfo = Some(Arc::new(reported.shown));
        facts = reported.facts;
        cut.extend(reported.cut);
    }
    let endpoints = request
        .endpoints
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(|endpoints| {
            let (kept, dropped) = limits::normalise_endpoints(endpoints);
            cut.extend(dropped);
            kept
        });
    if !cut.is_empty() {
        let cut: Vec<String> = cut.iter().map(ToString::to_string).collect();
        tracing::debug!(node_key = %request.node_key, ?cut, "map request over the limits: excess dropped");
    }
    let report = Report {
        endpoints,
        disco_key,
        home_derp,
        capability_version: request.version,
        hostinfo,
    };
    (report, facts)
}

pub async fn map(
    State(context): State<MachineContext>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    if peer.capability_version < MIN_CAPABILITY_VERSION {
        return status(
            StatusCode::BAD_REQUEST,
            "this Tailscale client is too old; this server needs Tailscale 1.80 or newer",
        );
    }
    let request: MapRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return status(
                StatusCode::BAD_REQUEST,
                &format!("invalid MapRequest: {error}"),
            )
        }
    };
    let Ok(node_key) = NodeKey::parse(&request.node_key, false) else {
        return status(StatusCode::BAD_REQUEST, "invalid NodeKey");
    };
    if !context.engine.is_fresh() {
        // Several instances: this one lost the shared log, so its maps may be stale.
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server lost its event log; try again (another instance)",
        );
    }
    // Registered a moment ago on another instance: read the shared log first.
    let state = context
        .engine
        .state_where(|state| {
            state
                .node_by_node_key(&node_key)
                .is_some_and(|n| n.machine_key == peer.machine_key)
        })
        .await;
    let Some(node) = state
        .node_by_node_key(&node_key)
        .filter(|n| n.machine_key == peer.machine_key)
    else {
        return status(StatusCode::NOT_FOUND, "node not found");
    };
    let node_id = node.id;
    // M6: the requests that cost the hub a full render are budgeted per node.
    let admitted = if request.stream {
        context.hub.admit_stream_open(node_id)
    } else if !request.omit_peers {
        context.hub.admit_full_map(node_id)
    } else {
        Ok(())
    };
    if let Err(wait) = admitted {
        tracing::debug!(
            node = node_id.0,
            stream = request.stream,
            "map request over the node's budget"
        );
        return too_many_requests(wait);
    }

    let (report, facts) = report_of(&request);
    // Record changed facts (hostname, OS, routes, tags) without holding up the stream:
    // the hub's per-node slot keeps the newest and commits at the limited rate.
    if let Some(facts) = facts.filter(|f| *f != node.hostinfo) {
        context.hub.record_facts(node_id, peer.machine_key, facts);
    }

    let compress = request.compress == "zstd";
    if !request.stream {
        context.hub.report(node_id, report).await;
        if request.omit_peers {
            return StatusCode::OK.into_response();
        }
        return match context.hub.snapshot(node_id, compress).await {
            Some(frame) => stream_response(Body::from(frame)),
            None => status(StatusCode::NOT_FOUND, "node not found"),
        };
    }

    let Some(session) = context.hub.open(node_id, report, compress).await else {
        return status(StatusCode::NOT_FOUND, "node not found");
    };
    tracing::info!(node = node_id.0, session = session.id, "map stream opened");
    let body = MapBody {
        frames: session.frames,
        keep_alive_frame: keep_alive_frame(compress),
        keep_alive: context.keep_alive,
        timer: Box::pin(tokio::time::sleep(jittered(context.keep_alive))),
        guard: SessionGuard {
            hub: context.hub.clone(),
            node: node_id,
            session: session.id,
        },
    };
    stream_response(Body::new(body))
}

/// 429 with `Retry-After` (whole seconds, at least 1). tailscaled treats any non-200 map
/// answer as a failed poll and retries with backoff.
fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, seconds.max(1).to_string())],
        "too many map requests from this node; retry later\n",
    )
        .into_response()
}

fn stream_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The keep-alive period plus up to a fifth of it at random, so streams opened together do
/// not wake together.
fn jittered(period: Duration) -> Duration {
    let spread = period.as_millis() as u64 / 5;
    period + Duration::from_millis(rand::thread_rng().gen_range(0..=spread))
}

/// Tells the hub when the response is dropped (client gone, or the stream ended).
struct SessionGuard {
    hub: MapHub,
    node: NodeId,
    session: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        tracing::info!(
            node = self.node.0,
            session = self.session,
            "map stream closed"
        );
        self.hub.close(self.node, self.session);
    }
}

/// The streaming body: frames from the hub, keep-alives in the quiet gaps.
struct MapBody {
    frames: mpsc::Receiver<Bytes>,
    keep_alive_frame: Bytes,
    keep_alive: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    guard: SessionGuard,
}

impl http_body::Body for MapBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let _ = &this.guard;
        match this.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => {
                let next = tokio::time::Instant::now() + jittered(this.keep_alive);
                this.timer.as_mut().reset(next);
                return Poll::Ready(Some(Ok(Frame::data(frame))));
            }
            // Replaced by a newer stream, or the node was deleted.
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            let next = tokio::time::Instant::now() + jittered(this.keep_alive);
            this.timer.as_mut().reset(next);
            crate::metrics::metrics().map_message("keepalive", this.keep_alive_frame.len());
            return Poll::Ready(Some(Ok(Frame::data(this.keep_alive_frame.clone()))));
        }
        Poll::Pending
    }
}
