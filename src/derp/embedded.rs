//! Starting the embedded relay for `headscale serve`: its key (refused if equal to the Noise
//! key), the node-key verifier over the published state (`derp.server.verify_clients`) and
//! the bound STUN socket. `server.rs` only merges the router and runs the STUN task.

use super::server::{ClientVerifier, DerpOptions, DerpServer};
use crate::config::Config;
use crate::core::keys::NodeKey;
use crate::engine::EngineHandle;
use anyhow::Context as _;
use std::sync::Arc;

/// The embedded relay, ready to serve.
pub struct Embedded {
    pub relay: Arc<DerpServer>,
    pub stun: tokio::net::UdpSocket,
}

/// Admits a DERP client only when a registered node has that node key.
pub fn node_key_verifier(engine: EngineHandle) -> ClientVerifier {
    Arc::new(move |key| engine.state().node_by_node_key(&NodeKey(*key)).is_some())
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
