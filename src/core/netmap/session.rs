//! What one map session has told its client, and the message that brings the client up to
//! date. Deltas are computed against what was *sent*, not from a list of events, so changes
//! that pile up while a client is slow coalesce into one message, and a session can never
//! miss or repeat a change.
//!
//! Revocation (M3): a viewer whose key has expired, or that awaits device approval, is told
//! about itself only — no peers, an empty packet filter, no SSH policy, no DNS config, no
//! policy capabilities — in its full map and, from the first delta after the change, in
//! its deltas (the session notices the change itself, so an expiry that passes with time
//! needs no event). Its self node says why (`Expired`, `MachineAuthorized`).

use super::render::{PeerCache, PresenceFields};
use super::NetmapContext;
use crate::core::ids::NodeId;
use crate::core::state::State;
use crate::core::Timestamp;
use crate::tailcfg::{self, MapResponse, SharedJson, UserProfile};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Clone)]
struct SentPeer {
    identity: u64,
    presence: Arc<PresenceFields>,
}

/// The client's view as this session built it.
#[derive(Debug, Clone)]
pub struct SessionView {
    viewer: NodeId,
    self_identity: u64,
    peers: HashMap<NodeId, SentPeer>,
    profiles: HashMap<u64, UserProfile>,
    // What was sent is kept as the shared JSON itself, not a copy of its text: a packet
    // filter can be ~100 KB, and at thousands of sessions copies and their per-tick
    // comparisons dominated (memory and CPU). The pointer check usually settles it.
    derp_map: SharedJson,
    dns_config: SharedJson,
    packet_filter: SharedJson,
    ssh_policy: Option<SharedJson>,
    /// The self node's `CapMap` as last sent (capabilities change with the policy).
    self_caps: String,
    domain: String,
    /// Whether the viewer was revoked (expired or unapproved) when last brought up to date.
    revoked: bool,
}

/// What a revoked viewer gets where others get the tailnet's: nothing it could use.
fn empty_filter() -> SharedJson {
    SharedJson::new(&Vec::<tailcfg::FilterRule>::new()).expect("an empty list serialises")
}

fn empty_dns_config() -> SharedJson {
    SharedJson::new(&serde_json::json!({})).expect("an empty object serialises")
}

/// The result of bringing a session up to date.
#[derive(Debug)]
pub enum Delta {
    /// The client already has everything.
    Nothing,
    Message(Box<MapResponse>),
    /// The viewer itself is gone (deleted): its stream should end.
    ViewerGone,
}

impl SessionView {
    pub fn viewer(&self) -> NodeId {
        self.viewer
    }

    /// Whether this session has told its client about `peer`.
    pub fn has_peer(&self, peer: NodeId) -> bool {
        self.peers.contains_key(&peer)
    }

    /// The first message of a stream: everything. `None` if the viewer does not exist.
    pub fn full(
        viewer: NodeId,
        state: &State,
        cache: &PeerCache,
        context: &NetmapContext,
        now: Timestamp,
    ) -> Option<(SessionView, MapResponse)> {
        let node = state.nodes.get(&viewer)?;
        let own = cache.get(viewer)?;
        let revoked = node.is_revoked(now);
        let (filter, ssh_policy, dns_config) = if revoked {
            (empty_filter(), None, empty_dns_config())
        } else {
            (
                context.access.filter(viewer),
                context.access.ssh_policy(viewer),
                context.dns_config.clone(),
            )
        };
        let caps = self_caps(context, viewer, revoked);
        let mut view = SessionView {
            viewer,
            self_identity: own.identity,
            peers: HashMap::new(),
            profiles: HashMap::new(),
            derp_map: context.derp_map.clone(),
            dns_config: dns_config.clone(),
            packet_filter: filter.clone(),
            ssh_policy: ssh_policy.clone(),
            self_caps: caps_key(&caps),
            domain: context.domain.clone(),
            revoked,
        };
        let mut response = MapResponse {
            node: Some(with_caps(&own.json, &caps)),
            derp_map: Some(context.derp_map.clone()),
            dns_config: Some(dns_config),
            domain: context.domain.clone(),
            collect_services: Some(false),
            packet_filters: Some(BTreeMap::from([("base".to_string(), filter)])),
            ssh_policy,
            control_time: Some(now.to_rfc3339()),
            debug: Some(tailcfg::Debug {
                disable_log_tail: !context.log_tail,
            }),
            ..Default::default()
        };
        view.note_profile(super::user_profile(state, node), &mut response);
        for peer in state
            .nodes
            .values()
            .filter(|peer| !revoked && context.access.can_see(viewer, peer.id))
        {
            let Some(rendered) = cache.get(peer.id) else {
                continue;
            };
            let variant = peer_variant(viewer, peer.id, rendered, context);
            response.peers.push(variant.json(rendered));
            view.peers.insert(
                peer.id,
                SentPeer {
                    identity: variant.identity,
                    presence: rendered.presence.clone(),
                },
            );
            view.note_profile(super::user_profile(state, peer), &mut response);
        }
        Some((view, response))
    }

    /// Adds `profile` to the message unless the client already has it as it is.
    fn note_profile(&mut self, profile: UserProfile, response: &mut MapResponse) {
        if self.profiles.get(&profile.id) != Some(&profile) {
            self.profiles.insert(profile.id, profile.clone());
            response.user_profiles.push(profile);
        }
    }

    /// Brings the session up to date with the nodes in `changed` (or with every node, when
    /// `everything`), whose renderings in `cache` are current.
    pub fn delta(
        &mut self,
        changed: &[NodeId],
        everything: bool,
        state: &State,
        cache: &PeerCache,
        context: &NetmapContext,
        now: Timestamp,
    ) -> Delta {
        let Some(viewer) = state.nodes.get(&self.viewer) else {
            return Delta::ViewerGone;
        };
        let mut response = MapResponse::default();
        // Revoked or reinstated since the last message: every peer is re-examined.
        let revoked = viewer.is_revoked(now);
        let everything = everything || revoked != self.revoked;
        self.revoked = revoked;

        let mut candidates: Vec<NodeId> = if everything {
            // Everything the viewer may see now or was sent before (a node neither visible
            // nor sent needs nothing), and itself: at 10,000 nodes, walking every node per
            // session made a policy edit cost seconds.
            let mut all: Vec<NodeId> = if revoked {
                Vec::new()
            } else {
                context.access.visible_to(self.viewer)
            };
            all.extend(self.peers.keys().copied());
            all.push(self.viewer);
            all
        } else {
            changed.to_vec()
        };
        candidates.sort_unstable();
        candidates.dedup();

        for id in candidates {
            if id == self.viewer {
                if let Some(own) = cache.get(id) {
                    let caps = self_caps(context, self.viewer, revoked);
                    let key = caps_key(&caps);
                    if own.identity != self.self_identity || key != self.self_caps {
                        self.self_identity = own.identity;
                        self.self_caps = key;
                        response.node = Some(with_caps(&own.json, &caps));
                    }
                }
                // Its owner may have changed (tags, move) or been renamed.
                self.note_profile(super::user_profile(state, viewer), &mut response);
                continue;
            }
            let peer = state.nodes.get(&id);
            let visible =
                !revoked && peer.is_some_and(|peer| context.access.can_see(viewer.id, peer.id));
            let rendered = if visible { cache.get(id) } else { None };
            match (rendered, self.peers.get_mut(&id)) {
                (Some(rendered), None) => {
                    let variant = peer_variant(self.viewer, id, rendered, context);
                    response.peers_changed.push(variant.json(rendered));
                    self.peers.insert(
                        id,
                        SentPeer {
                            identity: variant.identity,
                            presence: rendered.presence.clone(),
                        },
                    );
                }
                (Some(rendered), Some(sent)) => {
                    let variant = peer_variant(self.viewer, id, rendered, context);
                    let identity = variant.identity;
                    // The owner's profile can only differ with a new identity (a move) or a
                    // tailnet-wide change (a rename); a presence patch alone skips the check.
                    let owner_may_differ = identity != sent.identity || everything;
                    if identity != sent.identity {
                        response.peers_changed.push(variant.json(rendered));
                    } else if !Arc::ptr_eq(&rendered.presence, &sent.presence) {
                        if let Some(patch) = rendered.presence.patch_from(&sent.presence, id.0) {
                            response.peers_changed_patch.push(patch);
                        }
                    }
                    // Share the current rendering (equal or newer) so old ones can be freed.
                    sent.identity = identity;
                    sent.presence = rendered.presence.clone();
                    if !owner_may_differ {
                        continue;
                    }
                    // On a tailnet-wide change an unchanged peer's owner may still have been
                    // renamed: its profile is checked below.
                }
                (None, Some(_)) => {
                    self.peers.remove(&id);
                    response.peers_removed.push(id.0);
                    continue;
                }
                (None, None) => continue,
            }
            if let Some(peer) = peer {
                self.note_profile(super::user_profile(state, peer), &mut response);
            }
        }

        if !same_json(&context.derp_map, &mut self.derp_map) {
            response.derp_map = Some(context.derp_map.clone());
        }
        let (filter, ssh_policy, dns_config) = if revoked {
            (empty_filter(), None, empty_dns_config())
        } else {
            (
                context.access.filter(self.viewer),
                context.access.ssh_policy(self.viewer),
                context.dns_config.clone(),
            )
        };
        if !same_json(&dns_config, &mut self.dns_config) {
            response.dns_config = Some(dns_config);
        }
        if !same_json(&filter, &mut self.packet_filter) {
            response.packet_filters = Some(BTreeMap::from([("base".to_string(), filter)]));
        }
        let same_ssh = match (&ssh_policy, &mut self.ssh_policy) {
            (Some(now), Some(sent)) => same_json(now, sent),
            (None, None) => true,
            _ => false,
        };
        if !same_ssh {
            self.ssh_policy = ssh_policy.clone();
            // Policy removed: an empty rule list, so the client drops what it had.
            response.ssh_policy = Some(ssh_policy.unwrap_or_else(|| {
                SharedJson::new(&serde_json::json!({ "rules": [] })).expect("serialises")
            }));
        }
        if context.domain != self.domain {
            self.domain = context.domain.clone();
            response.domain = context.domain.clone();
        }

        if is_empty(&response) {
            return Delta::Nothing;
        }
        response.control_time = Some(now.to_rfc3339());
        Delta::Message(Box::new(response))
    }
}

/// Whether `current` says what `sent` said; either way `sent` becomes `current`, so the
/// next check is a pointer comparison and older renderings can be freed.
fn same_json(current: &SharedJson, sent: &mut SharedJson) -> bool {
    if Arc::ptr_eq(&current.0, &sent.0) {
        return true;
    }
    let same = current.get() == sent.get();
    *sent = current.clone();
    same
}

fn is_empty(response: &MapResponse) -> bool {
    response.node.is_none()
        && response.derp_map.is_none()
        && response.peers_changed.is_empty()
        && response.peers_removed.is_empty()
        && response.peers_changed_patch.is_empty()
        && response.dns_config.is_none()
        && response.domain.is_empty()
        && response.packet_filters.is_none()
        && response.ssh_policy.is_none()
        && response.user_profiles.is_empty()
}

type Caps = BTreeMap<String, Vec<serde_json::Value>>;

/// The viewer's own capabilities: the tailnet-wide ones plus its `nodeAttrs` (none for a
/// revoked viewer).
fn self_caps(context: &NetmapContext, viewer: NodeId, revoked: bool) -> Caps {
    let mut caps = context.self_caps.clone();
    if revoked {
        return caps;
    }
    for (name, values) in context.access.node_caps(viewer) {
        caps.entry(name).or_default().extend(values);
    }
    caps
}

fn caps_key(caps: &Caps) -> String {
    serde_json::to_string(caps).unwrap_or_default()
}

/// The self node's JSON with its `CapMap` (peers are sent without one).
fn with_caps(own: &SharedJson, caps: &Caps) -> SharedJson {
    if caps.is_empty() {
        return own.clone();
    }
    let Ok(serde_json::Value::Object(mut node)) = serde_json::from_str(own.get()) else {
        return own.clone();
    };
    node.insert(
        "CapMap".into(),
        serde_json::to_value(caps).unwrap_or_default(),
    );
    SharedJson::new(&node).unwrap_or_else(|_| own.clone())
}

/// How `viewer` gets a peer: as rendered for everyone, or a variant (`peer_variant`).
/// The identity is known without building the variant's JSON, so a presence change on a
/// peer whose variant is unchanged costs no re-serialisation.
struct Variant<'a> {
    identity: u64,
    /// The routes in its `AllowedIPs`, when they differ from the rendering's.
    routes: Option<Vec<&'a ipnet::IpNet>>,
    /// Its IPv4 address, when the viewer is IPv6-only and the rendering shows it.
    hide_ipv4: Option<&'a str>,
}

/// The peer as `viewer` gets it: with the routes it carries for that viewer (`Access::
/// shows_route`: a subnet on its primary, or on a `via` router the viewer's grants steer it
/// to; none the policy keeps the viewer from — Tailscale leaves those out of `AllowedIPs`),
/// and without its IPv4 address when the viewer is IPv6-only (`disable-ipv4`; a peer that
/// is IPv6-only itself is rendered so for everyone). Most peers carry no routes, or the
/// same ones for everyone, and are shared as rendered; a variant is a re-serialisation with
/// its own identity, so a policy or election change that moves a route is a `PeersChanged`.
fn peer_variant<'a>(
    viewer: NodeId,
    peer: NodeId,
    rendered: &'a super::render::Rendered,
    context: &NetmapContext,
) -> Variant<'a> {
    let hide_ipv4 = rendered
        .ipv4
        .as_deref()
        .filter(|_| context.access.ipv4_disabled(viewer));
    let routes = if rendered.served.is_empty() {
        None
    } else {
        let shown: Vec<&ipnet::IpNet> = rendered
            .served
            .iter()
            .filter(|route| {
                let ranked = context.ranking.get(*route).map_or(&[][..], Vec::as_slice);
                context.access.shows_route(viewer, peer, route, ranked)
            })
            .collect();
        let as_rendered = shown.len() == rendered.routes.len()
            && shown.iter().all(|route| rendered.routes.contains(route));
        (!as_rendered).then_some(shown)
    };
    // Without IPv4, the peer has the identity it has when rendered IPv6-only for
    // everyone (`render::without_ipv4`).
    let base = match hide_ipv4 {
        Some(_) => rendered.identity_without_ipv4,
        None => rendered.identity,
    };
    let identity = match &routes {
        None => base,
        Some(routes) => {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            base.hash(&mut hasher);
            routes.hash(&mut hasher);
            hasher.finish()
        }
    };
    Variant {
        identity,
        routes,
        hide_ipv4,
    }
}

impl Variant<'_> {
    /// The variant's JSON.
    fn json(&self, rendered: &super::render::Rendered) -> SharedJson {
        if self.routes.is_none() && self.hide_ipv4.is_none() {
            return rendered.json.clone();
        }
        let Ok(serde_json::Value::Object(mut node)) = serde_json::from_str(rendered.json.get())
        else {
            return rendered.json.clone();
        };
        let drop_from = |node: &mut serde_json::Map<String, serde_json::Value>,
                         field: &str,
                         gone: &dyn Fn(&str) -> bool| {
            if let Some(serde_json::Value::Array(list)) = node.get_mut(field) {
                list.retain(|v| v.as_str().is_none_or(|s| !gone(s)));
            }
        };
        if let Some(shown) = &self.routes {
            let rendered_text: Vec<String> =
                rendered.routes.iter().map(|r| r.to_string()).collect();
            drop_from(&mut node, "AllowedIPs", &|s| {
                rendered_text.iter().any(|r| r == s)
            });
            if let Some(serde_json::Value::Array(list)) = node.get_mut("AllowedIPs") {
                list.extend(shown.iter().map(|r| serde_json::Value::from(r.to_string())));
            }
            let primary: Vec<serde_json::Value> = shown
                .iter()
                .filter(|r| r.prefix_len() != 0)
                .map(|r| r.to_string().into())
                .collect();
            if primary.is_empty() {
                node.remove("PrimaryRoutes");
            } else {
                node.insert("PrimaryRoutes".into(), primary.into());
            }
        }
        if let Some(ipv4) = self.hide_ipv4 {
            // Only the peer's own address: an IPv4 subnet it routes stays.
            drop_from(&mut node, "Addresses", &|s| s == ipv4);
            drop_from(&mut node, "AllowedIPs", &|s| s == ipv4);
        }
        SharedJson::new(&node).unwrap_or_else(|_| rendered.json.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{NodeHostinfo, RegisterMethod};
    use crate::core::netmap::{Access, NodePresence};
    use crate::core::routes;
    use crate::core::state::{Node, PolicyDocument};
    use serde_json::Value;

    const SUBNET: &str = "10.44.0.0/16";

    fn node(id: u64, tag: &str, routes: &[&str]) -> Node {
        let routes: Vec<ipnet::IpNet> = routes.iter().map(|r| r.parse().unwrap()).collect();
        Node {
            id: NodeId(id),
            machine_key: Default::default(),
            node_key: Default::default(),
            user: None,
            tags: vec![tag.into()],
            given_name: format!("n{id}"),
            given_name_by_admin: false,
            hostinfo: NodeHostinfo {
                advertised_routes: routes.clone(),
                ..Default::default()
            },
            ipv4: Some(format!("100.64.0.{id}").parse().unwrap()),
            ipv6: None,
            expiry: None,
            register_method: RegisterMethod::Cli,
            auth_key: None,
            ephemeral: false,
            authorized: true,
            approved_routes: routes,
            created_at: Timestamp::EPOCH,
        }
    }

    /// Two routers of one subnet (1 primary, 2 standby) and a client steered to the standby
    /// by `via`.
    fn state() -> State {
        let mut state = State::default();
        for n in [
            node(1, "tag:ra", &[SUBNET]),
            node(2, "tag:rb", &[SUBNET]),
            node(3, "tag:c", &[]),
        ] {
            state.nodes.insert(n.id, n);
        }
        state.policy = Some(PolicyDocument {
            text: r#"{"tagOwners": {"tag:ra": [], "tag:rb": [], "tag:c": []},
                "grants": [
                  {"src": ["tag:c"], "dst": ["tag:ra", "tag:rb"], "ip": ["*"]},
                  {"src": ["tag:c"], "dst": ["10.44.0.0/16"], "ip": ["*"], "via": ["tag:rb"]}]}"#
                .into(),
            updated_at: Timestamp::EPOCH,
        });
        state.rebuild_index();
        state
    }

    /// The hub's part: elects and ranks with `online`, renders every node.
    fn render(
        state: &State,
        online: &[u64],
    ) -> (
        PeerCache,
        Arc<routes::Ranking>,
        BTreeMap<NodeId, NodePresence>,
    ) {
        let is_online = |id: NodeId| online.contains(&id.0);
        let primaries = routes::elect(state, &is_online, &routes::Primaries::new());
        let ranking = routes::rank(state, &is_online, &primaries);
        let presence: BTreeMap<NodeId, NodePresence> = state
            .nodes
            .keys()
            .map(|&id| {
                let p = NodePresence {
                    online: is_online(id),
                    primary_routes: routes::primary_routes_of(&primaries, id),
                    ..Default::default()
                };
                (id, p)
            })
            .collect();
        let mut cache = PeerCache::default();
        let lookup = |id: NodeId| presence.get(&id).cloned().unwrap_or_default();
        let access = Access::for_state(state, "https://x");
        cache
            .refresh_all(state, &access, &lookup, Timestamp::EPOCH)
            .unwrap();
        (cache, Arc::new(ranking), presence)
    }

    fn netmap_context(state: &State, ranking: Arc<routes::Ranking>) -> NetmapContext {
        NetmapContext {
            derp_map: SharedJson::new(&serde_json::json!({})).unwrap(),
            dns_config: SharedJson::new(&serde_json::json!({})).unwrap(),
            access: Arc::new(Access::for_state(state, "https://x")),
            domain: String::new(),
            self_caps: BTreeMap::new(),
            log_tail: false,
            ranking,
        }
    }

    /// Peer id → (`AllowedIPs` routes beyond its address, `PrimaryRoutes`).
    fn routes_of(peers: &[SharedJson]) -> BTreeMap<u64, (Vec<String>, Vec<String>)> {
        peers
            .iter()
            .map(|json| {
                let peer: Value = serde_json::from_str(json.get()).unwrap();
                let list = |field: &str| -> Vec<String> {
                    peer[field]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str())
                        .filter(|s| !s.starts_with("100.64."))
                        .map(String::from)
                        .collect()
                };
                let id = peer["ID"].as_u64().unwrap();
                (id, (list("AllowedIPs"), list("PrimaryRoutes")))
            })
            .collect()
    }

    #[test]
    fn via_puts_a_subnet_on_the_via_router_and_moves_it_when_routers_come_and_go() {
        let state = state();
        let (cache, ranking, _) = render(&state, &[1, 2, 3]);
        let context = netmap_context(&state, ranking);
        let (mut view, full) =
            SessionView::full(NodeId(3), &state, &cache, &context, Timestamp::EPOCH).unwrap();
        let subnet = || vec![SUBNET.to_string()];
        assert_eq!(
            routes_of(&full.peers),
            BTreeMap::from([(1, (vec![], vec![])), (2, (subnet(), subnet()))])
        );
        // The via router goes offline: the client loses the subnet (it may not use the
        // primary), and gets it back when the router returns.
        let (cache, ranking, _) = render(&state, &[1, 3]);
        let offline = netmap_context(&state, ranking);
        let changed = [NodeId(1), NodeId(2)];
        let Delta::Message(message) =
            view.delta(&changed, false, &state, &cache, &offline, Timestamp::EPOCH)
        else {
            panic!("the via router's departure must reach the client");
        };
        assert_eq!(
            routes_of(&message.peers_changed),
            BTreeMap::from([(2, (vec![], vec![]))])
        );
        let (cache, ranking, _) = render(&state, &[1, 2, 3]);
        let back = netmap_context(&state, ranking);
        let Delta::Message(message) =
            view.delta(&changed, false, &state, &cache, &back, Timestamp::EPOCH)
        else {
            panic!("the via router's return must reach the client");
        };
        assert_eq!(
            routes_of(&message.peers_changed),
            BTreeMap::from([(2, (subnet(), subnet()))])
        );
    }

    /// `SUBNET`'s router (1), another node (2) and a client (3), each with both
    /// addresses, under `policy`.
    fn dual_stack(policy: &str) -> State {
        let mut state = State::default();
        for (id, tag, routes) in [
            (1, "tag:ra", &[SUBNET][..]),
            (2, "tag:rb", &[]),
            (3, "tag:c", &[]),
        ] {
            let mut n = node(id, tag, routes);
            n.ipv6 = Some(format!("fd7a:115c:a1e0::{id}").parse().unwrap());
            state.nodes.insert(n.id, n);
        }
        state.policy = Some(PolicyDocument {
            text: policy.into(),
            updated_at: Timestamp::EPOCH,
        });
        state.rebuild_index();
        state
    }

    /// Peer id → `Addresses`.
    fn addresses_of(peers: &[SharedJson]) -> BTreeMap<u64, Vec<String>> {
        peers
            .iter()
            .map(|json| {
                let peer: Value = serde_json::from_str(json.get()).unwrap();
                let list = peer["Addresses"].as_array().unwrap();
                let list = list.iter().map(|v| v.as_str().unwrap().to_string());
                (peer["ID"].as_u64().unwrap(), list.collect())
            })
            .collect()
    }

    #[test]
    fn a_policy_edit_that_toggles_disable_ipv4_reaches_every_session() {
        let owners = r#""tagOwners": {"tag:ra": [], "tag:rb": [], "tag:c": []}"#;
        let plain = dual_stack(&format!("{{{owners}}}"));
        let disabled = dual_stack(&format!(
            r#"{{{owners}, "nodeAttrs": [{{"target": ["tag:c"], "attr": ["disable-ipv4"]}}]}}"#
        ));
        let both = |id: u64| {
            vec![
                format!("100.64.0.{id}/32"),
                format!("fd7a:115c:a1e0::{id}/128"),
            ]
        };
        let v6 = |id: u64| vec![format!("fd7a:115c:a1e0::{id}/128")];
        let (cache, ranking, _) = render(&plain, &[1, 2, 3]);
        let context = netmap_context(&plain, ranking);
        let open = |viewer: u64| {
            SessionView::full(NodeId(viewer), &plain, &cache, &context, Timestamp::EPOCH).unwrap()
        };
        let ((mut client, full), (mut router, _)) = (open(3), open(1));
        assert_eq!(
            addresses_of(&full.peers),
            BTreeMap::from([(1, both(1)), (2, both(2))])
        );

        // The client becomes IPv6-only: it is told itself and every peer without IPv4 (the
        // router keeps its subnet); the router is told the client without IPv4.
        let (cache, ranking, _) = render(&disabled, &[1, 2, 3]);
        let context = netmap_context(&disabled, ranking);
        let Delta::Message(message) =
            client.delta(&[], true, &disabled, &cache, &context, Timestamp::EPOCH)
        else {
            panic!("the client must be told");
        };
        let own: Value = serde_json::from_str(message.node.as_ref().unwrap().get()).unwrap();
        assert_eq!(own["Addresses"], serde_json::json!(v6(3)));
        assert_eq!(own["AllowedIPs"], serde_json::json!(v6(3)));
        assert!(own["CapMap"].get("disable-ipv4").is_some(), "{own}");
        assert_eq!(
            addresses_of(&message.peers_changed),
            BTreeMap::from([(1, v6(1)), (2, v6(2))])
        );
        let router_peer = message
            .peers_changed
            .iter()
            .map(|json| serde_json::from_str::<Value>(json.get()).unwrap())
            .find(|peer| peer["ID"] == 1)
            .unwrap();
        assert_eq!(
            router_peer["AllowedIPs"],
            serde_json::json!([v6(1)[0].clone(), SUBNET.to_string()])
        );
        assert_eq!(router_peer["PrimaryRoutes"], serde_json::json!([SUBNET]));
        let Delta::Message(message) =
            router.delta(&[], true, &disabled, &cache, &context, Timestamp::EPOCH)
        else {
            panic!("the router must be told");
        };
        assert!(message.node.is_none(), "the router itself is unchanged");
        assert_eq!(
            addresses_of(&message.peers_changed),
            BTreeMap::from([(3, v6(3))])
        );
        // Nothing more to tell either of them until something changes again.
        for view in [&mut client, &mut router] {
            let again = view.delta(&[], true, &disabled, &cache, &context, Timestamp::EPOCH);
            assert!(matches!(again, Delta::Nothing), "{again:?}");
        }

        // Back: IPv4 returns everywhere.
        let (cache, ranking, _) = render(&plain, &[1, 2, 3]);
        let context = netmap_context(&plain, ranking);
        let Delta::Message(message) =
            client.delta(&[], true, &plain, &cache, &context, Timestamp::EPOCH)
        else {
            panic!("the client must be told");
        };
        assert_eq!(
            addresses_of(&message.peers_changed),
            BTreeMap::from([(1, both(1)), (2, both(2))])
        );
        let own: Value = serde_json::from_str(message.node.as_ref().unwrap().get()).unwrap();
        assert_eq!(own["Addresses"], serde_json::json!(both(3)));
    }
}
