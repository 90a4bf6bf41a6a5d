//! One node as the client sees it (`tailcfg::Node`), rendered from facts plus presence, and
//! the cache that renders each node once per change for all viewers.

use super::{Access, NodePresence};
use crate::core::ids::NodeId;
use crate::core::state::{Node, State};
use crate::core::Timestamp;
use crate::tailcfg::{self, PeerChange, SharedJson, UserProfile};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// Tailscale's user id for tagged devices: a tagged node is owned by its tags, not a user.
pub const TAGGED_DEVICES_USER_ID: u64 = 2_147_455_555;

/// The user id a node is shown under.
fn shown_user(node: &Node) -> u64 {
    match node.user {
        Some(user) if !node.is_tagged() => user.0,
        _ => TAGGED_DEVICES_USER_ID,
    }
}

/// The profile of the user a node is shown under.
pub fn user_profile(state: &State, node: &Node) -> UserProfile {
    match node.user.and_then(|id| state.users.get(&id)) {
        Some(user) if !node.is_tagged() => UserProfile {
            id: user.id.0,
            login_name: if user.email.is_empty() {
                user.name.clone()
            } else {
                user.email.clone()
            },
            display_name: if user.display_name.is_empty() {
                user.name.clone()
            } else {
                user.display_name.clone()
            },
            profile_pic_url: user.picture_url.clone(),
        },
        _ => UserProfile {
            id: TAGGED_DEVICES_USER_ID,
            login_name: "tagged-devices".into(),
            display_name: "tagged-devices".into(),
            profile_pic_url: String::new(),
        },
    }
}

/// The node's `Hostinfo` for peers: what the client last reported (already within
/// `limits::MAX_HOSTINFO_JSON_BYTES`, see `limits::normalise_reported_hostinfo`), or (before it
/// has reported since a restart) the logged subset.
fn hostinfo(node: &Node, presence: &NodePresence) -> serde_json::Value {
    match &presence.hostinfo {
        Some(reported) => reported.as_ref().clone(),
        None => crate::core::limits::bounded_hostinfo_json(&node.hostinfo),
    }
}

/// A node's `Addresses` as a client is shown them: its IPv4 `/32` unless `show_ipv4` is
/// false (`disable-ipv4`, `Compiled::shows_ipv4`: the address stays allocated, only the
/// wire shape loses it), then its IPv6 `/128`.
pub fn node_addresses(
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<std::net::Ipv6Addr>,
    show_ipv4: bool,
) -> Vec<String> {
    let v4 = ipv4.filter(|_| show_ipv4).map(|v4| format!("{v4}/32"));
    let v6 = ipv6.map(|v6| format!("{v6}/128"));
    v4.into_iter().chain(v6).collect()
}

/// Renders `node` with both its addresses. What everyone is shown is made from this by
/// `Rendered::new` (without IPv4 for an IPv6-only node), what one viewer is shown by the
/// session (`session::peer_variant`: routes, an IPv6-only viewer).
pub fn render_node(
    state: &State,
    node: &Node,
    presence: &NodePresence,
    now: Timestamp,
) -> tailcfg::Node {
    let base_domain = &state.config.core.base_domain;
    let addresses = node_addresses(node.ipv4, node.ipv6, true);
    // A subnet is carried by its primary router only (HA, elected by the hub from
    // presence); exit routes by every approved exit node.
    let primary_routes: Vec<String> = presence
        .primary_routes
        .iter()
        .map(|r| r.to_string())
        .collect();
    let mut allowed_ips = addresses.clone();
    allowed_ips.extend(primary_routes.iter().cloned());
    let exit: Vec<String> = node
        .subnet_routes()
        .iter()
        .filter(|r| r.prefix_len() == 0)
        .map(|r| r.to_string())
        .collect();
    if exit.len() == 2 {
        allowed_ips.extend(exit);
    }
    let name = if base_domain.is_empty() {
        format!("{}.", node.given_name)
    } else {
        format!("{}.{}.", node.given_name, base_domain)
    };
    tailcfg::Node {
        id: node.id.0,
        stable_id: node.id.0.to_string(),
        name,
        user: shown_user(node),
        key: node.node_key.to_string(),
        key_expiry: node.expiry.map(|t| t.to_rfc3339()),
        machine: node.machine_key.to_string(),
        disco_key: presence
            .disco_key
            .map(|k| k.to_string())
            .unwrap_or_default(),
        addresses,
        allowed_ips,
        endpoints: presence.endpoints.clone(),
        legacy_derp: if presence.home_derp == 0 {
            String::new()
        } else {
            format!("127.3.3.40:{}", presence.home_derp)
        },
        home_derp: presence.home_derp,
        hostinfo: hostinfo(node, presence),
        created: node.created_at.to_rfc3339(),
        cap: presence.capability_version,
        tags: node.tags.clone(),
        primary_routes,
        last_seen: if presence.online {
            None
        } else {
            presence.last_seen.map(|t| t.to_rfc3339())
        },
        online: Some(presence.online),
        machine_authorized: node.authorized,
        cap_map: Default::default(),
        expired: node.is_expired(now),
    }
}

/// The fields a `PeersChangedPatch` can carry, as last rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceFields {
    pub home_derp: u32,
    pub endpoints: Vec<String>,
    pub disco_key: String,
    pub online: Option<bool>,
    pub last_seen: Option<String>,
}

impl PresenceFields {
    fn of(node: &tailcfg::Node) -> Self {
        PresenceFields {
            home_derp: node.home_derp,
            endpoints: node.endpoints.clone(),
            disco_key: node.disco_key.clone(),
            online: node.online,
            last_seen: node.last_seen.clone(),
        }
    }

    /// The patch that turns `sent` into `self`, or `None` when nothing differs.
    pub fn patch_from(&self, sent: &PresenceFields, node_id: u64) -> Option<PeerChange> {
        if self == sent {
            return None;
        }
        let mut patch = PeerChange {
            node_id,
            ..Default::default()
        };
        if self.home_derp != sent.home_derp {
            patch.derp_region = Some(self.home_derp);
        }
        if self.endpoints != sent.endpoints {
            patch.endpoints = Some(self.endpoints.clone());
        }
        // A key-typed field is never sent empty (the client would reject the message).
        if self.disco_key != sent.disco_key && !self.disco_key.is_empty() {
            patch.disco_key = Some(self.disco_key.clone());
        }
        if self.online != sent.online {
            patch.online = self.online;
        }
        if self.last_seen != sent.last_seen {
            patch.last_seen = self.last_seen.clone();
        }
        Some(patch)
    }
}

/// A node rendered once: its JSON, a hash of everything but presence (a change there needs
/// a full `PeersChanged`), and the presence fields (a change there is a patch).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub json: SharedJson,
    pub identity: u64,
    /// Shared with every session that was sent this rendering: a session remembers what it
    /// sent per peer, and at 1,000 nodes a copy per session would be a million copies.
    pub presence: Arc<PresenceFields>,
    pub user: u64,
    /// The routes in its `AllowedIPs` beyond its own addresses (primary subnets, exit
    /// routes): a viewer the policy keeps from a route gets a variant without it.
    pub routes: Vec<ipnet::IpNet>,
    /// Every route it could carry (approved subnets, exit routes of an exit node): a viewer
    /// steered to it by `via` gets a variant with a subnet it is not primary for.
    pub served: Vec<ipnet::IpNet>,
    /// Its IPv4 entry in `Addresses` (and `AllowedIPs`), when shown: an IPv6-only viewer
    /// (`disable-ipv4`) gets a variant without it.
    pub ipv4: Option<String>,
    /// The identity of that variant (`without_ipv4`).
    pub identity_without_ipv4: u64,
}

/// The routes `node` could carry for some viewer: its approved subnets, then both exit
/// routes when it is an exit node (one alone is not used).
fn served_routes(node: &Node) -> Vec<ipnet::IpNet> {
    let routes = node.subnet_routes();
    let (exit, mut served): (Vec<_>, Vec<_>) =
        routes.into_iter().partition(|r| r.prefix_len() == 0);
    if exit.len() == 2 {
        served.extend(exit);
    }
    served
}

/// The identity of a node shown without its IPv4 address, from its identity with it: one
/// value whether the node is rendered IPv6-only for everyone or an IPv6-only viewer gets a
/// variant of it, so one can follow the other without a needless `PeersChanged` (and no
/// second serialisation is needed to know it).
fn without_ipv4(identity: u64) -> u64 {
    let mut hasher = DefaultHasher::new();
    (identity, "without IPv4").hash(&mut hasher);
    hasher.finish()
}

impl Rendered {
    /// `node` as `render_node` made it; without its IPv4 address when `ipv4_disabled`
    /// (`Access::ipv4_disabled`).
    fn new(
        node: tailcfg::Node,
        served: Vec<ipnet::IpNet>,
        ipv4_disabled: bool,
    ) -> Result<Self, serde_json::Error> {
        let presence = Arc::new(PresenceFields::of(&node));
        let mut ipv4 = node
            .addresses
            .iter()
            .find(|a| a.parse::<ipnet::IpNet>().is_ok_and(|a| a.addr().is_ipv4()))
            .cloned();
        let routes = node
            .allowed_ips
            .iter()
            .filter(|ip| !node.addresses.contains(ip))
            .filter_map(|ip| ip.parse().ok())
            .collect();
        let json = match ipv4.as_ref().filter(|_| ipv4_disabled) {
            Some(v4) => {
                let mut shown = node.clone();
                shown.addresses.retain(|a| a != v4);
                shown.allowed_ips.retain(|a| a != v4);
                SharedJson::new(&shown)?
            }
            None => SharedJson::new(&node)?,
        };
        let mut identity_only = node;
        identity_only.home_derp = 0;
        identity_only.legacy_derp.clear();
        identity_only.endpoints.clear();
        identity_only.disco_key.clear();
        identity_only.online = None;
        identity_only.last_seen = None;
        let mut hasher = DefaultHasher::new();
        serde_json::to_string(&identity_only)?.hash(&mut hasher);
        let mut identity = hasher.finish();
        let identity_without_ipv4 = without_ipv4(identity);
        if ipv4_disabled && ipv4.take().is_some() {
            identity = identity_without_ipv4;
        }
        Ok(Rendered {
            json,
            identity,
            presence,
            user: identity_only.user,
            routes,
            served,
            ipv4,
            identity_without_ipv4,
        })
    }
}

/// Every node rendered once, refreshed only for the nodes that changed.
#[derive(Debug, Default)]
pub struct PeerCache {
    nodes: HashMap<NodeId, Rendered>,
}

impl PeerCache {
    pub fn get(&self, id: NodeId) -> Option<&Rendered> {
        self.nodes.get(&id)
    }

    /// Re-renders `ids` from `state` (dropping those that no longer exist), as `access`
    /// (compiled for `state`) shows them to everyone.
    pub fn refresh(
        &mut self,
        state: &State,
        access: &Access,
        presence: &dyn Fn(NodeId) -> NodePresence,
        ids: impl IntoIterator<Item = NodeId>,
        now: Timestamp,
    ) -> Result<(), serde_json::Error> {
        for id in ids {
            match state.nodes.get(&id) {
                Some(node) => {
                    let rendered = Rendered::new(
                        render_node(state, node, &presence(id), now),
                        served_routes(node),
                        access.ipv4_disabled(id),
                    )?;
                    self.nodes.insert(id, rendered);
                }
                None => {
                    self.nodes.remove(&id);
                }
            }
        }
        Ok(())
    }

    /// Re-renders everything (a tailnet-wide change).
    pub fn refresh_all(
        &mut self,
        state: &State,
        access: &Access,
        presence: &dyn Fn(NodeId) -> NodePresence,
        now: Timestamp,
    ) -> Result<(), serde_json::Error> {
        self.nodes.retain(|id, _| state.nodes.contains_key(id));
        let ids: Vec<NodeId> = state.nodes.keys().copied().collect();
        self.refresh(state, access, presence, ids, now)
    }
}
