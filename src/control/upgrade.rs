//! `POST /ts2021`: the HTTP/1.1 upgrade into the Noise channel. Validates the upgrade
//! headers and the 101-byte initiation, answers `101 Switching Protocols`, writes the
//! handshake response, then serves HTTP/2 (prior knowledge) inside the Noise stream. Bad
//! input gets a 400 or an error frame and a closed connection, never a panic.

use super::noise::{self, error_frame};
use super::noise_stream::NoiseStream;
use super::server_key::ServerKey;
use crate::core::keys::MachineKey;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tower::ServiceExt;

pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
pub const HANDSHAKE_HEADER: &str = "x-tailscale-handshake";
/// Concurrent HTTP/2 streams per Noise connection: tailscaled uses one long poll, one
/// register and the occasional lite update; a 9th stream is refused (`REFUSED_STREAM`).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 8;
/// The server pings a connection it has heard nothing from for this long (a liveness check
/// that also spares phones frequent wake-ups)...
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and closes it when the ping is not answered within this (generous: a phone's client may
/// be slow to run). Stalled prefaces, frames and header blocks are cut sooner, by
/// `h2_deadline.rs` (10 s each).
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// A Noise session with no open stream for this long is closed (tailscaled keeps its long
/// poll open, so only idle or abusive sessions reach it).
pub const IDLE_SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// Flow-control windows: how much request data h2 buffers before the handler reads it.
/// Bodies are at most 256 KiB (`machine.rs`), so a stream window of 64 KiB costs a few
/// window updates and bounds a session's unread data to the connection window.
const STREAM_WINDOW_BYTES: u32 = 64 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 256 * 1024;
/// Response data h2 queues per stream before the handler waits.
const MAX_SEND_BUFFER_BYTES: usize = 128 * 1024;

/// What the Noise-side router needs to serve one connection.
#[derive(Clone)]
pub struct ControlContext {
    pub server_key: ServerKey,
    /// Routes served inside the Noise channel (`/machine/*`).
    pub machine_router: Router,
}

/// The authenticated peer of a Noise connection, attached to every request on it.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub machine_key: MachineKey,
    pub capability_version: u16,
    /// The TCP peer of the connection (the listener's `ConnectInfo`), for per-source limits;
    /// `None` only when a request was built without one (in-process tests).
    pub remote: Option<std::net::SocketAddr>,
}

/// The streams of one Noise session: how many are open, and how many were ever opened (so a
/// stream that opens and closes between two looks still counts as activity).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Streams {
    open: usize,
    opened: u64,
}

type StreamCount = std::sync::Arc<tokio::sync::watch::Sender<Streams>>;

/// One open HTTP/2 stream of a Noise session, counted while it lives.
struct OpenStream(StreamCount);

impl OpenStream {
    fn new(count: StreamCount) -> Self {
        count.send_modify(|streams| {
            streams.open += 1;
            streams.opened += 1;
        });
        OpenStream(count)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .send_modify(|streams| streams.open = streams.open.saturating_sub(1));
    }
}

/// Resolves once no stream has been open, nor opened, for `limit` (the session is then
/// closed).
async fn idle(mut streams: tokio::sync::watch::Receiver<Streams>, limit: Duration) {
    loop {
        let opened = match streams.wait_for(|s| s.open == 0).await {
            Ok(now) => now.opened,
            Err(_) => return,
        };
        let activity = streams.wait_for(|s| s.open > 0 || s.opened != opened);
        match tokio::time::timeout(limit, activity).await {
            Ok(Ok(_)) => continue,
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

/// Why an upgrade request is refused with a 400 before any Noise work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    MissingProtocol,
    UnknownProtocol,
    MissingHandshake,
    InvalidHandshake,
}

impl UpgradeRefusal {
    pub fn message(self) -> &'static str {
        match self {
            UpgradeRefusal::MissingProtocol => "missing next protocol",
            UpgradeRefusal::UnknownProtocol => "unknown next protocol",
            UpgradeRefusal::MissingHandshake => "missing Tailscale handshake header",
            UpgradeRefusal::InvalidHandshake => "invalid Tailscale handshake header",
        }
    }
}

/// The header checks of `/ts2021`, in Tailscale's order, on the raw values of `Upgrade` and
/// `X-Tailscale-Handshake`: the decoded initiation bytes, or why the request is refused.
/// Pure, so it can be fuzzed; the size and contents of the initiation are `noise::accept`'s.
pub fn validate_upgrade(
    upgrade: Option<&[u8]>,
    handshake: Option<&[u8]>,
) -> Result<Vec<u8>, UpgradeRefusal> {
    let upgrade = upgrade
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade.is_empty() {
        return Err(UpgradeRefusal::MissingProtocol);
    }
    if upgrade != UPGRADE_PROTOCOL {
        return Err(UpgradeRefusal::UnknownProtocol);
    }
    let encoded = handshake
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or(UpgradeRefusal::MissingHandshake)?;
    // The initiation is 101 bytes (136 base64 characters); anything much longer is not one.
    if encoded.len() > 1024 {
        return Err(UpgradeRefusal::InvalidHandshake);
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| UpgradeRefusal::InvalidHandshake)
}

pub async fn handle(State(ctx): State<ControlContext>, mut request: Request) -> Response {
    let remote = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    // The connection's place under the listener's caps moves into the upgraded task (M5);
    // the per-source handshake budget is checked before any X25519 work (L8).
    let slot = match crate::conn_limits::upgrade_slot(&request) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let headers = request.headers();
    let initiation = match validate_upgrade(
        headers.get(header::UPGRADE).map(|v| v.as_bytes()),
        headers.get(HANDSHAKE_HEADER).map(|v| v.as_bytes()),
    ) {
        Ok(initiation) => initiation,
        Err(refusal) => return bad_request(refusal.message()),
    };
    let accepted = noise::accept(ctx.server_key.secret(), &initiation);
    let on_upgrade = hyper::upgrade::on(&mut request);
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTOCOL))
        .header(header::CONNECTION, HeaderValue::from_static("upgrade"))
        .body(Body::empty())
        .unwrap_or_default();
    tokio::spawn(async move {
        let _slot = slot;
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "ts2021 upgrade did not complete");
                return;
            }
        };
        let mut io = TokioIo::new(upgraded);
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Debug, not info: anyone can send a bad initiation (L5).
                tracing::debug!(%error, "ts2021 handshake refused");
                let _ = io.write_all(&error_frame(&error.to_string())).await;
                let _ = io.shutdown().await;
                return;
            }
        };
        if io.write_all(&accepted.response).await.is_err() {
            return;
        }
        let peer = Peer {
            machine_key: accepted.machine_key,
            capability_version: accepted.version,
            remote,
        };
        tracing::debug!(machine = %peer.machine_key.short(), capver = peer.capability_version, "noise session open");
        // A peer that never starts HTTP/2, or stalls inside a frame or a header block, is
        // closed (10 s per unit), not kept.
        let stream = super::h2_deadline::H2ReadDeadline::new(
            NoiseStream::new(io, accepted.sender, accepted.receiver),
            super::h2_deadline::UNIT_DEADLINE,
        );
        let router = ctx.machine_router.clone();
        let (open_streams, streams_watch) = tokio::sync::watch::channel(Streams::default());
        let open_streams = std::sync::Arc::new(open_streams);
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                // The stream counts as open until its response body is dropped.
                let guard = OpenStream::new(open_streams.clone());
                let response = router.clone().oneshot(request.map(Body::new));
                async move {
                    let response = response.await?;
                    Ok::<_, std::convert::Infallible>(response.map(|body| {
                        Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                            let _ = &guard;
                            frame
                        }))
                    }))
                }
            },
        );
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .initial_stream_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_send_buf_size(MAX_SEND_BUFFER_BYTES)
            .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .max_header_list_size(64 * 1024)
            .timer(hyper_util::rt::TokioTimer::new());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            result = connection => {
                if let Err(error) = result {
                    tracing::debug!(%error, machine = %peer.machine_key.short(), "noise session closed");
                }
            }
            _ = idle(streams_watch, IDLE_SESSION_TIMEOUT) => {
                tracing::debug!(machine = %peer.machine_key.short(), "noise session idle; closed");
            }
        }
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SHORT: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn a_session_is_idle_only_without_open_streams_for_the_whole_limit() {
        let (count, watch) = tokio::sync::watch::channel(Streams::default());
        let count = Arc::new(count);
        // A stream stays open longer than the limit: not idle.
        let stream = OpenStream::new(count.clone());
        let idle_task = tokio::spawn(idle(watch, SHORT));
        tokio::time::sleep(SHORT * 3).await;
        assert!(!idle_task.is_finished(), "idle while a stream was open");
        // Closed: idle after the limit.
        let closed = tokio::time::Instant::now();
        drop(stream);
        tokio::time::timeout(Duration::from_secs(5), idle_task)
            .await
            .expect("never idle after the last stream closed")
            .unwrap();
        assert!(closed.elapsed() >= SHORT);
        assert_eq!(count.borrow().open, 0);
    }

    #[tokio::test]
    async fn a_new_stream_restarts_the_idle_clock() {
        let (count, watch) = tokio::sync::watch::channel(Streams::default());
        let count = Arc::new(count);
        let idle_task = tokio::spawn(idle(watch, SHORT * 3));
        tokio::time::sleep(SHORT * 2).await;
        drop(OpenStream::new(count.clone()));
        let reopened = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(5), idle_task)
            .await
            .unwrap()
            .unwrap();
        assert!(reopened.elapsed() >= SHORT * 3);
    }
}
