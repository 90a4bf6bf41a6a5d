//! What our control client decodes from the server: `MapResponse` as the Tailscale client
//! reads it (every field optional: absent means unchanged) and `PeerChange` with every
//! patchable field. Self and peer nodes reuse `tailcfg::Node`.

use crate::tailcfg::{Node, UserProfile};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// `tailcfg.MapResponse`, decoded.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MapResponseIn {
    #[serde(rename = "KeepAlive")]
    pub keep_alive: bool,
    #[serde(rename = "Node")]
    pub node: Option<Node>,
    #[serde(rename = "DERPMap")]
    pub derp_map: Option<Value>,
    #[serde(rename = "Peers")]
    pub peers: Option<Vec<Node>>,
    #[serde(rename = "PeersChanged")]
    pub peers_changed: Option<Vec<Node>>,
    #[serde(rename = "PeersRemoved")]
    pub peers_removed: Option<Vec<u64>>,
    #[serde(rename = "PeersChangedPatch")]
    pub peers_changed_patch: Option<Vec<PeerChangeIn>>,
    #[serde(rename = "PeerSeenChange")]
    pub peer_seen_change: Option<BTreeMap<u64, bool>>,
    #[serde(rename = "OnlineChange")]
    pub online_change: Option<BTreeMap<u64, bool>>,
    #[serde(rename = "DNSConfig")]
    pub dns_config: Option<Value>,
    #[serde(rename = "Domain")]
    pub domain: String,
    #[serde(rename = "CollectServices")]
    pub collect_services: Option<bool>,
    /// Legacy single filter: the same as the named chunk `"base"`.
    #[serde(rename = "PacketFilter")]
    pub packet_filter: Option<Vec<Value>>,
    /// Named chunks; a `null` value deletes a chunk, `"*": null` clears all first.
    #[serde(rename = "PacketFilters")]
    pub packet_filters: Option<BTreeMap<String, Option<Vec<Value>>>>,
    #[serde(rename = "UserProfiles")]
    pub user_profiles: Option<Vec<UserProfile>>,
    #[serde(rename = "SSHPolicy")]
    pub ssh_policy: Option<Value>,
    #[serde(rename = "ControlTime")]
    pub control_time: Option<String>,
    #[serde(rename = "PingRequest")]
    pub ping_request: Option<Value>,
    #[serde(rename = "Health")]
    pub health: Option<Vec<String>>,
    #[serde(rename = "Debug")]
    pub debug: Option<Value>,
}

impl MapResponseIn {
    /// A message whose JSON is exactly the keep-alive (`{"KeepAlive":true}`).
    pub fn is_keep_alive_only(json: &[u8]) -> bool {
        json == br#"{"KeepAlive":true}"#
    }
}

/// `tailcfg.PeerChange`: a partial update of one peer.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default)]
pub struct PeerChangeIn {
    #[serde(rename = "NodeID")]
    pub node_id: u64,
    #[serde(rename = "DERPRegion")]
    pub derp_region: Option<u32>,
    #[serde(rename = "Cap")]
    pub cap: Option<u32>,
    #[serde(rename = "CapMap")]
    pub cap_map: Option<BTreeMap<String, Vec<Value>>>,
    #[serde(rename = "Endpoints")]
    pub endpoints: Option<Vec<String>>,
    #[serde(rename = "Key")]
    pub key: Option<String>,
    #[serde(rename = "KeySignature")]
    pub key_signature: Option<String>,
    #[serde(rename = "DiscoKey")]
    pub disco_key: Option<String>,
    #[serde(rename = "Online")]
    pub online: Option<bool>,
    #[serde(rename = "LastSeen")]
    pub last_seen: Option<String>,
    #[serde(rename = "KeyExpiry")]
    pub key_expiry: Option<String>,
}
