//! A node's netmap at any point of the log: the full map its client was given there (or
//! would have been, had it been connected), computed by the very code that serves live
//! clients — `Access` compiled against the state at that point, every node rendered into a
//! `PeerCache`, then `SessionView::full` — so the answer cannot drift from what streams send.
//!
//! Presence (online, endpoints, disco key, home DERP, last seen) is volatile and not in the
//! log, so peers are rendered without it: no `Online` field is invented. The HA election of
//! subnet primaries depends on presence too; it is run as if every router were online (the
//! lowest-id router of each subnet wins), and the answer says so.

use super::{NetmapContext, NodePresence, PeerCache, SessionView};
use crate::core::ids::NodeId;
use crate::core::routes;
use crate::core::state::State;
use crate::core::Timestamp;
use serde_json::Value;
use std::sync::Arc;

/// Why there is no netmap for the node at the point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Its id had not been handed out yet.
    NotYetRegistered,
    /// It existed before the point and was deleted by then.
    Deleted,
    /// A node could not be rendered (serde refused a value; our types never hold one).
    Unrenderable(String),
}

/// What the answer must admit it could not know: presence and the HA election.
pub const PRESENCE_NOTE: &str = "presence is not in the log: peers are shown without Online, \
LastSeen, Endpoints, DiscoKey or home DERP, and each subnet is given to its lowest-id router \
as if every router were online";

/// Whether `viewer` existed at `state`'s point, and if not, why.
pub fn missing(state: &State, viewer: NodeId) -> Option<Missing> {
    if state.nodes.contains_key(&viewer) {
        None
    } else if viewer.0 < state.next_ids.node {
        Some(Missing::Deleted)
    } else {
        Some(Missing::NotYetRegistered)
    }
}

/// The full map `viewer` gets from `state` at `now` (expiry is judged at `now`), with the
/// tailnet-wide parts (DERP map, DNS, domain, self capabilities, logtail) taken from
/// `template` and the access view and route ranking derived from `state`. The map is the
/// JSON a client receives, minus the presence fields nobody recorded.
pub fn netmap_at(
    state: &State,
    viewer: NodeId,
    template: &NetmapContext,
    now: Timestamp,
) -> Result<Value, Missing> {
    if let Some(why) = missing(state, viewer) {
        return Err(why);
    }
    let everyone_online = |_: NodeId| true;
    let primaries = routes::elect(state, &everyone_online, &routes::Primaries::new());
    let ranking = routes::rank(state, &everyone_online, &primaries);
    let mut context = template.clone();
    context.access = Arc::new(super::Access::for_state(
        state,
        template.access.server_url(),
    ));
    context.ranking = Arc::new(ranking);
    let presence = |id: NodeId| NodePresence {
        primary_routes: routes::primary_routes_of(&primaries, id),
        ..NodePresence::default()
    };
    let mut cache = PeerCache::default();
    cache
        .refresh_all(state, &context.access, &presence, now)
        .map_err(|e| Missing::Unrenderable(e.to_string()))?;
    let (_, response) =
        SessionView::full(viewer, state, &cache, &context, now).ok_or(Missing::Deleted)?;
    let mut map =
        serde_json::to_value(&response).map_err(|e| Missing::Unrenderable(e.to_string()))?;
    strip_presence(&mut map);
    Ok(map)
}

/// Removes what only presence could say (`Online: false` would be a guess).
fn strip_presence(map: &mut Value) {
    if let Some(node) = map.get_mut("Node").and_then(Value::as_object_mut) {
        node.remove("Online");
    }
    if let Some(peers) = map.get_mut("Peers").and_then(Value::as_array_mut) {
        for peer in peers.iter_mut().filter_map(Value::as_object_mut) {
            peer.remove("Online");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{NodeHostinfo, NodeRegistration, RegisterMethod};
    use crate::core::ids::UserId;
    use crate::core::keys::{MachineKey, NodeKey};
    use crate::core::{Actor, Envelope, Event};
    use crate::tailcfg::SharedJson;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_ms(secs * 1000)
    }

    fn template() -> NetmapContext {
        NetmapContext {
            derp_map: SharedJson::new(&serde_json::json!({"Regions": {}})).unwrap(),
            dns_config: SharedJson::new(&serde_json::json!({"Domains": ["example.net"]})).unwrap(),
            access: Arc::new(super::super::Access::new(
                &State::default(),
                None,
                "https://hs.example.net",
            )),
            domain: "example.net".into(),
            self_caps: Default::default(),
            log_tail: false,
            ranking: Arc::default(),
        }
    }

    fn state(events: Vec<Event>) -> State {
        let mut state = State::default();
        for (i, event) in events.into_iter().enumerate() {
            state.apply(&Envelope {
                seq: i as u64 + 1,
                at: at(i as i64 + 1),
                actor: Actor::System,
                event,
            });
        }
        state
    }

    fn node(id: u64, user: u64, last: u8, routes: &[&str]) -> Event {
        let routes: Vec<ipnet::IpNet> = routes.iter().map(|r| r.parse().unwrap()).collect();
        Event::NodeRegistered(Box::new(NodeRegistration {
            id: NodeId(id),
            machine_key: MachineKey([last; 32]),
            node_key: NodeKey([last.wrapping_add(100); 32]),
            user: Some(UserId(user)),
            tags: vec![],
            given_name: format!("n{id}"),
            hostinfo: NodeHostinfo {
                hostname: format!("n{id}"),
                advertised_routes: routes.clone(),
                ..Default::default()
            },
            ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, last)),
            ipv6: None,
            expiry: None,
            register_method: RegisterMethod::Cli,
            auth_key: None,
            ephemeral: false,
            authorized: true,
            approved_routes: routes,
        }))
    }

    fn user(id: u64, name: &str) -> Event {
        Event::UserCreated {
            id: UserId(id),
            name: name.into(),
            display_name: String::new(),
            email: String::new(),
        }
    }

    fn peer_ids(map: &Value) -> Vec<u64> {
        map["Peers"]
            .as_array()
            .map(|peers| peers.iter().filter_map(|p| p["ID"].as_u64()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn without_a_policy_everyone_sees_everyone_and_no_presence_is_invented() {
        let s = state(vec![
            user(1, "alice"),
            node(1, 1, 1, &[]),
            node(2, 1, 2, &["10.0.0.0/24"]),
        ]);
        let map = netmap_at(&s, NodeId(1), &template(), at(10)).unwrap();
        assert_eq!(peer_ids(&map), vec![2]);
        assert_eq!(map["Node"]["ID"], 1);
        assert!(map["Node"].get("Online").is_none());
        assert!(map["Peers"][0].get("Online").is_none());
        assert_eq!(map["Domain"], "example.net");
        // The router carries its subnet, as if online.
        let allowed = map["Peers"][0]["AllowedIPs"].as_array().unwrap();
        assert!(allowed.iter().any(|ip| ip == "10.0.0.0/24"), "{allowed:?}");
    }

    #[test]
    fn a_policy_decides_the_peers_and_the_filter() {
        let policy = r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}]}"#;
        let s = state(vec![
            user(1, "alice"),
            user(2, "bob"),
            node(1, 1, 1, &[]),
            node(2, 1, 2, &[]),
            node(3, 2, 3, &[]),
            Event::PolicyReplaced {
                policy: policy.into(),
            },
        ]);
        let map = netmap_at(&s, NodeId(1), &template(), at(10)).unwrap();
        assert_eq!(peer_ids(&map), vec![2]);
        let bob = netmap_at(&s, NodeId(3), &template(), at(10)).unwrap();
        assert!(peer_ids(&bob).is_empty());
        assert_eq!(bob["PacketFilters"]["base"], serde_json::json!([]));
    }

    #[test]
    fn a_missing_viewer_says_whether_it_was_deleted_or_not_yet_there() {
        let s = state(vec![
            user(1, "alice"),
            node(1, 1, 1, &[]),
            node(2, 1, 2, &[]),
        ]);
        let mut gone = s.clone();
        gone.apply(&Envelope {
            seq: 4,
            at: at(4),
            actor: Actor::System,
            event: Event::NodeDeleted { id: NodeId(2) },
        });
        assert_eq!(
            netmap_at(&gone, NodeId(2), &template(), at(10)).unwrap_err(),
            Missing::Deleted
        );
        assert_eq!(
            netmap_at(&s, NodeId(3), &template(), at(10)).unwrap_err(),
            Missing::NotYetRegistered
        );
    }
}
