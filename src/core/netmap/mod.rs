//! Netmaps, computed purely: what one node (the *viewer*) is told about itself and its
//! peers, first in full and then as deltas. The inputs are the fact state, the volatile
//! presence of each node (online, endpoints, disco key, home DERP — never in the log), the
//! tailnet-wide context (DERP map, DNS, packet filter) and the time; the output is a
//! `tailcfg::MapResponse`. The shell (`control::hub`) decides *when* to compute; this
//! module decides *what*.
//!
//! Cost model: a peer is rendered once per change and its JSON shared by every viewer
//! (`PeerCache`); a session's delta looks only at the nodes that changed since it was last
//! served (`SessionView::delta`), so one node's change costs O(viewers), not O(viewers ×
//! peers). Only tailnet-wide changes (users, policy, config) re-examine every peer.

mod access;
pub mod at_point;
mod render;
mod session;

pub use access::Access;
pub use render::{
    node_addresses, render_node, user_profile, PeerCache, Rendered, TAGGED_DEVICES_USER_ID,
};
pub use session::{Delta, SessionView};

use crate::core::keys::DiscoKey;
use crate::core::Timestamp;
use crate::tailcfg::SharedJson;
use std::sync::Arc;

/// What a node reports about itself while connected; rebuilt from clients after a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePresence {
    pub online: bool,
    /// Set when the node went offline (shown to peers as `LastSeen`).
    pub last_seen: Option<Timestamp>,
    pub endpoints: Vec<String>,
    pub disco_key: Option<DiscoKey>,
    /// `Hostinfo.NetInfo.PreferredDERP`.
    pub home_derp: u32,
    /// The client's capability version.
    pub capability_version: u32,
    /// The client's own Hostinfo, minus `NetInfo` (which changes with every latency probe
    /// and is of no use to peers).
    pub hostinfo: Option<Arc<serde_json::Value>>,
    /// Subnets this node is the primary router for (elected by the hub, `core::routes`).
    pub primary_routes: Vec<ipnet::IpNet>,
}

/// The tailnet-wide parts of every netmap, rendered once.
#[derive(Debug, Clone)]
pub struct NetmapContext {
    pub derp_map: SharedJson,
    pub dns_config: SharedJson,
    /// Who sees whom and each node's packet filter and SSH policy, for the current policy
    /// and topology (replaced by the hub when either changes).
    pub access: Arc<Access>,
    /// `Domain`: the tailnet's name (the MagicDNS base domain).
    pub domain: String,
    /// Capabilities every node gets on itself (`CapMap` of the self node): admin and SSH
    /// as headscale gives them, file sharing when `taildrop.enabled`. The policy's
    /// `nodeAttrs` are added per node.
    pub self_caps: std::collections::BTreeMap<String, Vec<serde_json::Value>>,
    /// `logtail.enabled`: clients may upload logs to Tailscale's log service; when false
    /// every full map carries `Debug.DisableLogTail`, as headscale sends it.
    pub log_tail: bool,
    /// The routers that can carry each subnet now, the primary first (elected by the hub,
    /// `core::routes`): a viewer steered by `via` gets a subnet on the first via router.
    pub ranking: Arc<crate::core::routes::Ranking>,
}
