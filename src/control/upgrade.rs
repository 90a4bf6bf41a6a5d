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
/// Concurrent HTTP/2 streams per Noise connection (map stream, register, lite updates...).
const MAX_STREAMS_PER_CONNECTION: u32 = 32;
/// A connection that says nothing for this long is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(90);

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
}

fn bad_request(message: &str) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

pub async fn handle(State(ctx): State<ControlContext>, mut request: Request) -> Response {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if upgrade.is_empty() {
        return bad_request("missing next protocol");
    }
    if upgrade != UPGRADE_PROTOCOL {
        return bad_request("unknown next protocol");
    }
    let Some(encoded) = request
        .headers()
        .get(HANDSHAKE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return bad_request("missing Tailscale handshake header");
    };
    let Ok(initiation) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return bad_request("invalid Tailscale handshake header");
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
                tracing::info!(%error, "ts2021 handshake refused");
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
        };
        tracing::debug!(machine = %peer.machine_key.short(), capver = peer.capability_version, "noise session open");
        let stream = NoiseStream::new(io, accepted.sender, accepted.receiver);
        let router = ctx.machine_router.clone();
        let service = hyper::service::service_fn(
            move |mut request: hyper::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                router.clone().oneshot(request.map(Body::new))
            },
        );
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .keep_alive_interval(Some(KEEPALIVE_TIMEOUT / 3))
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .max_header_list_size(64 * 1024)
            .timer(hyper_util::rt::TokioTimer::new());
        if let Err(error) = builder
            .serve_connection(TokioIo::new(stream), service)
            .await
        {
            tracing::debug!(%error, machine = %peer.machine_key.short(), "noise session closed");
        }
    });
    response
}
