//! The embedded DERP server's HTTP face on the main listener: `GET /derp` (the `Upgrade: DERP`
//! handshake, then the connection is handed to the relay), `/derp/probe` and
//! `/derp/latency-check` for netcheck, and `/generate_204` for captive-portal detection.
//!
//! `Derp-Fast-Start: 1` (skip the 101 response) cannot be honoured through hyper, which always
//! writes a response before handing over an upgraded connection. Tailscale clients only send
//! it after learning the server key from a TLS "meta certificate", which we never serve, so
//! they always expect and get the 101. The WebSocket variant (`Upgrade: websocket`, used only
//! by js/wasm clients and debug builds) is not served: it gets the 426.

use super::server::DerpServer;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::TokioIo;
use std::sync::Arc;

const CHALLENGE_HEADER: &str = "x-tailscale-challenge";
const RESPONSE_HEADER: &str = "x-tailscale-response";
const MAX_CHALLENGE_LEN: usize = 64;

/// The routes of the embedded relay.
pub fn router(relay: Arc<DerpServer>) -> Router {
    Router::new()
        .route("/derp", get(upgrade).with_state(relay))
        .route("/derp/probe", get(probe).head(probe))
        .route("/derp/latency-check", get(probe).head(probe))
        .route("/generate_204", get(no_content))
}

async fn upgrade(State(relay): State<Arc<DerpServer>>, mut request: Request) -> Response {
    let protocol = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if protocol != "derp" {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires connection upgrade",
        )
            .into_response();
    }
    // The connection's place under the listener's caps moves into the relay's task; the
    // per-source upgrade budget is checked before the relay's key exchange (L8).
    let slot = match crate::conn_limits::upgrade_slot(&request) {
        Ok(slot) => slot,
        Err(refused) => return refused.into_response(),
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let public = hex::encode(relay.public_key());
    tokio::spawn(async move {
        let _slot = slot;
        match on_upgrade.await {
            Ok(upgraded) => relay.serve_connection(TokioIo::new(upgraded)).await,
            Err(error) => tracing::debug!(%error, "derp upgrade did not complete"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("DERP"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert("derp-version", HeaderValue::from_static("2"));
    if let Ok(value) = HeaderValue::from_str(&public) {
        headers.insert("derp-public-key", value);
    }
    response
}

async fn probe() -> Response {
    (
        [(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        )],
        "",
    )
        .into_response()
}

/// `[A-Za-z0-9._:-]{1,64}`.
fn valid_challenge(challenge: &str) -> bool {
    !challenge.is_empty()
        && challenge.len() <= MAX_CHALLENGE_LEN
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

async fn no_content(headers: HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, no-transform, max-age=0"),
    );
    out.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    out.insert(header::EXPIRES, HeaderValue::from_static("0"));
    let challenge = headers
        .get(CHALLENGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|c| valid_challenge(c));
    if let Some(challenge) = challenge {
        if let Ok(value) = HeaderValue::from_str(&format!("response {challenge}")) {
            out.insert(RESPONSE_HEADER, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_checked() {
        assert!(valid_challenge("abc-1.2_3:4"));
        assert!(valid_challenge(&"a".repeat(64)));
        assert!(!valid_challenge(&"a".repeat(65)));
        assert!(!valid_challenge(""));
        assert!(!valid_challenge("a b"));
        assert!(!valid_challenge("a/b"));
    }
}
