//! "What the client now believes": a pure model that applies map messages the way the
//! Tailscale client does (`control/controlclient/map.go`, protocol notes §5.4 and §6.4).
//! Keep-alives change nothing; the first other message must carry the self node; `Peers`
//! (when non-empty) replaces every peer, otherwise `PeersRemoved`, `PeersChanged`,
//! `PeerSeenChange`, `OnlineChange` and `PeersChangedPatch` apply in that order (patches for
//! unknown peers are ignored); `Node`, `DNSConfig`, `SSHPolicy` replace when present; the
//! DERP map keeps its old regions when the new one has none; packet filter chunks are
//! patched by name; user profiles accumulate.

use super::wire::{MapResponseIn, PeerChangeIn};
use crate::tailcfg::{Node, UserProfile};
use serde_json::Value;
use std::collections::BTreeMap;

/// A message the client would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetmapError {
    #[error("initial MapResponse lacked node")]
    InitialMapLacksNode,
}

#[derive(Debug, Clone, Default)]
pub struct Netmap {
    pub self_node: Option<Node>,
    pub peers: BTreeMap<u64, Node>,
    pub derp_map: Option<Value>,
    pub dns_config: Option<Value>,
    pub domain: String,
    pub collect_services: Option<bool>,
    pub packet_filters: BTreeMap<String, Vec<Value>>,
    pub user_profiles: BTreeMap<u64, UserProfile>,
    pub ssh_policy: Option<Value>,
    pub control_time: Option<String>,
    /// Non-keep-alive messages applied.
    pub updates: u64,
    pub keep_alives: u64,
}

impl Netmap {
    pub fn new() -> Netmap {
        Netmap::default()
    }

    /// Applies one decoded message.
    pub fn apply(&mut self, message: &MapResponseIn) -> Result<(), NetmapError> {
        if let Some(time) = &message.control_time {
            self.control_time = Some(time.clone());
        }
        if message.keep_alive {
            self.keep_alives += 1;
            return Ok(());
        }
        if self.self_node.is_none() && message.node.is_none() {
            return Err(NetmapError::InitialMapLacksNode);
        }
        self.updates += 1;
        if let Some(node) = &message.node {
            self.self_node = Some(node.clone());
        }
        if let Some(derp) = &message.derp_map {
            self.apply_derp_map(derp);
        }
        self.apply_peers(message);
        if let Some(filter) = &message.packet_filter {
            self.packet_filters.insert("base".into(), filter.clone());
        }
        if let Some(chunks) = &message.packet_filters {
            if chunks.get("*").is_some_and(Option::is_none) {
                self.packet_filters.clear();
            }
            for (name, chunk) in chunks {
                match chunk {
                    Some(rules) => {
                        self.packet_filters.insert(name.clone(), rules.clone());
                    }
                    None => {
                        self.packet_filters.remove(name);
                    }
                }
            }
        }
        if let Some(dns) = &message.dns_config {
            self.dns_config = Some(dns.clone());
        }
        if !message.domain.is_empty() {
            self.domain = message.domain.clone();
        }
        if message.collect_services.is_some() {
            self.collect_services = message.collect_services;
        }
        if let Some(ssh) = &message.ssh_policy {
            self.ssh_policy = Some(ssh.clone());
        }
        for profile in message.user_profiles.iter().flatten() {
            self.user_profiles.insert(profile.id, profile.clone());
        }
        Ok(())
    }

    /// `nil` regions or home params keep the old ones (`map.go`).
    fn apply_derp_map(&mut self, new: &Value) {
        let mut merged = new.clone();
        if let (Some(old), Some(object)) = (&self.derp_map, merged.as_object_mut()) {
            for key in ["Regions", "HomeParams"] {
                if object.get(key).is_none_or(Value::is_null) {
                    if let Some(previous) = old.get(key) {
                        object.insert(key.into(), previous.clone());
                    }
                }
            }
        }
        self.derp_map = Some(merged);
    }

    fn apply_peers(&mut self, message: &MapResponseIn) {
        if let Some(peers) = message.peers.as_ref().filter(|p| !p.is_empty()) {
            self.peers = peers.iter().map(|p| (p.id, p.clone())).collect();
            return;
        }
        for id in message.peers_removed.iter().flatten() {
            self.peers.remove(id);
        }
        for peer in message.peers_changed.iter().flatten() {
            self.peers.insert(peer.id, peer.clone());
        }
        for (id, seen) in message.peer_seen_change.iter().flatten() {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.last_seen = seen.then(|| message.control_time.clone().unwrap_or_default());
            }
        }
        for (id, online) in message.online_change.iter().flatten() {
            if let Some(peer) = self.peers.get_mut(id) {
                peer.online = Some(*online);
            }
        }
        for patch in message.peers_changed_patch.iter().flatten() {
            if let Some(peer) = self.peers.get_mut(&patch.node_id) {
                apply_patch(peer, patch);
            }
        }
    }

    /// The effective packet filter: the chunks concatenated in key order.
    pub fn packet_filter(&self) -> Vec<Value> {
        self.packet_filters.values().flatten().cloned().collect()
    }

    /// The peer called `name` (its FQDN with or without the trailing dot).
    pub fn peer_named(&self, name: &str) -> Option<&Node> {
        let name = name.trim_end_matches('.');
        self.peers
            .values()
            .find(|p| p.name.trim_end_matches('.') == name)
    }
}

fn apply_patch(peer: &mut Node, patch: &PeerChangeIn) {
    // Zero region and capability version mean "unchanged" (map.go checks `!= 0`).
    if let Some(region) = patch.derp_region.filter(|r| *r != 0) {
        peer.home_derp = region;
    }
    if let Some(cap) = patch.cap.filter(|c| *c != 0) {
        peer.cap = cap;
    }
    if let Some(cap_map) = &patch.cap_map {
        peer.cap_map = cap_map.clone();
    }
    if let Some(endpoints) = &patch.endpoints {
        peer.endpoints = endpoints.clone();
    }
    if let Some(key) = &patch.key {
        peer.key = key.clone();
    }
    if let Some(disco) = &patch.disco_key {
        peer.disco_key = disco.clone();
    }
    if let Some(online) = patch.online {
        peer.online = Some(online);
    }
    if let Some(seen) = &patch.last_seen {
        peer.last_seen = Some(seen.clone());
    }
    if let Some(expiry) = &patch.key_expiry {
        peer.key_expiry = Some(expiry.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(json: &str) -> MapResponseIn {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn full_map_then_deltas_in_client_order() {
        let mut netmap = Netmap::new();
        assert_eq!(
            netmap.apply(&message(r#"{"Peers":[{"ID":2}]}"#)),
            Err(NetmapError::InitialMapLacksNode)
        );
        netmap.apply(&message(r#"{"KeepAlive":true}"#)).unwrap();
        netmap
            .apply(&message(
                r#"{"Node":{"ID":1,"Name":"a.ts.net."},"Peers":[{"ID":2},{"ID":3}],
                    "DERPMap":{"Regions":{"900":{}}},"PacketFilter":[{"SrcIPs":["*"]}],
                    "UserProfiles":[{"ID":7,"LoginName":"x"}]}"#,
            ))
            .unwrap();
        assert_eq!(netmap.peers.len(), 2);
        // Removed, then changed (re-adds 3), then online, then a patch on top.
        netmap
            .apply(&message(
                r#"{"PeersRemoved":[2,3],"PeersChanged":[{"ID":3,"Name":"c."}],
                    "OnlineChange":{"3":false},"PeersChangedPatch":[{"NodeID":3,"Online":true,
                    "Endpoints":["1.2.3.4:5"]},{"NodeID":99,"Online":true}],
                    "DERPMap":{"HomeParams":null},"PacketFilters":{"*":null,"x":[]},
                    "UserProfiles":[{"ID":8}]}"#,
            ))
            .unwrap();
        assert_eq!(netmap.peers.keys().copied().collect::<Vec<_>>(), [3]);
        let peer = &netmap.peers[&3];
        assert_eq!(peer.online, Some(true));
        assert_eq!(peer.endpoints, ["1.2.3.4:5"]);
        assert_eq!(
            netmap.derp_map.as_ref().unwrap()["Regions"]["900"],
            serde_json::json!({})
        );
        assert!(netmap.packet_filter().is_empty());
        assert_eq!(netmap.user_profiles.len(), 2);
        // An empty Peers list is "no change", not "no peers".
        netmap.apply(&message(r#"{"Peers":[]}"#)).unwrap();
        assert_eq!(netmap.peers.len(), 1);
        assert_eq!(netmap.peer_named("c").map(|p| p.id), Some(3));
    }
}
