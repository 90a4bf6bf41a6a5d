//! Starting the embedded relay for `headscale serve`: its key (refused if equal to the Noise
//! key), the node-key verifier over the published state (`derp.server.verify_clients`) and
//! the bound STUN socket. `server.rs` only merges the router and runs the STUN task.
//!
//! With `verify_clients`, only the node key of an authorised, unexpired node is admitted,
//! and a revocation task closes the connections of keys that stop passing (node deleted,
//! expired, key rotated away): on every publication that may revoke one, and once a second
//! for expiries that pass with time (M3).

use super::server::{ClientVerifier, DerpOptions, DerpServer};
use crate::config::Config;
use crate::core::keys::NodeKey;
use crate::core::{Event, State, Timestamp};
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

/// Events after which a connected key may no longer pass `admits`.
fn may_revoke(event: &Event) -> bool {
    matches!(
        event,
        Event::NodeDeleted { .. }
            | Event::NodeExpiryChanged { .. }
            | Event::NodeKeyRotated { .. }
            | Event::NodeReauthenticated { .. }
    )
}

/// Whether a publication needs the relay's connections re-checked: it follows the last one
/// seen and none of its events can revoke a key, or it does not (the watch channel keeps
/// only the newest batch, so a gap may hide one that did).
fn needs_recheck(published: &Published, last_seq: u64) -> bool {
    let follows = match published.batch.first() {
        Some(first) => first.seq == last_seq + 1,
        None => published.state.last_seq == last_seq,
    };
    !follows || published.batch.iter().any(|e| may_revoke(&e.event))
}

/// Closes relay connections whose key no longer passes `admits`: after a publication that
/// may have revoked one, and every `RECHECK_INTERVAL` (expiries that pass with time). Ends
/// when the relay is dropped or the engine stops.
async fn revoke(relay: Weak<DerpServer>, mut published: watch::Receiver<Published>) {
    let mut tick = tokio::time::interval(RECHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seq = published.borrow_and_update().state.last_seq;
    loop {
        let ticked = tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = tick.tick() => true,
        };
        let (state, recheck) = {
            let current = published.borrow_and_update();
            let recheck = ticked || needs_recheck(&current, last_seq);
            last_seq = current.state.last_seq;
            (current.state.clone(), recheck)
        };
        if !recheck {
            continue;
        }
        let Some(relay) = relay.upgrade() else {
            return;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::NodeId;
    use crate::core::{Actor, Envelope};

    /// A publication of `events` as seqs `first..`, the state at the last of them.
    fn published(first: u64, events: Vec<Event>) -> Published {
        let batch: Vec<Envelope> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Envelope {
                seq: first + i as u64,
                at: Timestamp::EPOCH,
                actor: Actor::System,
                event,
            })
            .collect();
        let mut state = State::default();
        state.last_seq = first + batch.len() as u64 - 1;
        Published {
            state: Arc::new(state),
            batch: Arc::new(batch),
        }
    }

    #[test]
    fn only_revoking_batches_or_gaps_recheck_the_relay() {
        let renamed = Event::NodeRenamed {
            id: NodeId(1),
            given_name: "n".into(),
            by_admin: true,
        };
        let deleted = Event::NodeDeleted { id: NodeId(1) };
        // The next batch, nothing that revokes a key: no re-check.
        assert!(!needs_recheck(&published(5, vec![renamed.clone()]), 4));
        // A deletion, an expiry, a key change: re-check.
        assert!(needs_recheck(
            &published(5, vec![renamed.clone(), deleted]),
            4
        ));
        let expired = Event::NodeExpiryChanged {
            id: NodeId(1),
            expiry: Some(Timestamp::EPOCH),
        };
        assert!(needs_recheck(&published(5, vec![expired]), 4));
        // A batch missed in between (the watch keeps only the newest): re-check.
        assert!(needs_recheck(&published(7, vec![renamed]), 4));
        // The same state again (nothing new): no re-check.
        let mut state = State::default();
        state.last_seq = 4;
        let same = Published {
            state: Arc::new(state),
            batch: Arc::new(Vec::new()),
        };
        assert!(!needs_recheck(&same, 4));
    }
}
