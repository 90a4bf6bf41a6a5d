//! Starting the embedded relay for `headscale serve`: its key (refused if equal to the Noise
//! key), the node-key verifier over the published state (`derp.server.verify_clients`) and
//! the bound STUN socket. `server.rs` only merges the router and runs the STUN task.
//!
//! With `verify_clients`, only the node key of an authorised, unexpired node is admitted,
//! and a revocation task closes the connections of keys that stop passing (node deleted,
//! expired, unapproved, key rotated away): on every publication of the state, and once a
//! second for expiries that pass with time (M3).

use super::server::{ClientVerifier, DerpOptions, DerpServer};
use crate::config::Config;
use crate::core::keys::NodeKey;
use crate::core::{State, Timestamp};
use crate::engine::{Clock, EngineHandle, Published, SystemClock};
use anyhow::Context as _;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How often connections are re-checked when nothing is published (key expiries).
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The embedded relay, ready to serve.
pub struct Embedded {
    pub relay: Arc<DerpServer>,
    pub stun: tokio::net::UdpSocket,
}

/// Whether `key` is the node key of a node that may use the tailnet at `now` (registered,
/// authorised, not expired).
pub fn admits(state: &State, key: &[u8; 32], now: Timestamp) -> bool {
    state
        .node_by_node_key(&NodeKey(*key))
        .is_some_and(|node| !node.is_revoked(now))
}

/// Admits a DERP client only when an authorised, unexpired node has that node key.
pub fn node_key_verifier(engine: EngineHandle) -> ClientVerifier {
    Arc::new(move |key| admits(&engine.state(), key, SystemClock.now()))
}

/// Closes relay connections whose key no longer passes `admits`, after every publication
/// and every `RECHECK_INTERVAL`; ends when the relay is dropped or the engine stops.
async fn revoke(relay: Weak<DerpServer>, mut published: watch::Receiver<Published>) {
    let mut tick = tokio::time::interval(RECHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {}
        }
        let Some(relay) = relay.upgrade() else {
            return;
        };
        let state = published.borrow_and_update().state.clone();
        let now = SystemClock.now();
        let closed = relay.disconnect_unless(|key| admits(&state, key, now));
        if closed > 0 {
            tracing::info!(closed, "derp: closed connections of revoked node keys");
        }
    }
}

/// `None` when `derp.server.enabled` is false.
pub async fn start(
    config: &Config,
    noise_secret: &[u8; 32],
    engine: &EngineHandle,
) -> anyhow::Result<Option<Embedded>> {
    let settings = &config.derp.server;
    if !settings.enabled {
        return Ok(None);
    }
    let key = DerpServer::load_key(&settings.private_key_path, noise_secret)?;
    let verifier = settings
        .verify_clients
        .then(|| node_key_verifier(engine.clone()));
    let relay = Arc::new(DerpServer::new(key, verifier, DerpOptions::default()));
    if settings.verify_clients {
        tokio::spawn(revoke(Arc::downgrade(&relay), engine.subscribe()));
    }
    let stun = tokio::net::UdpSocket::bind(&settings.stun_listen_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen for STUN on udp {}",
                settings.stun_listen_addr
            )
        })?;
    tracing::info!(
        stun = %settings.stun_listen_addr,
        region = settings.region_id,
        verify_clients = settings.verify_clients,
        "embedded DERP relay on"
    );
    Ok(Some(Embedded { relay, stun }))
}
