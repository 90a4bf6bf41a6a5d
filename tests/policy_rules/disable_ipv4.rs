//! `disable-ipv4` (a `nodeAttrs` attribute) and the top-level `disableIPv4`: see
//! `src/core/policy/RULES.md`. Checked against the netmap a client is given (the pure
//! rendering live streams and `nodes netmap --at` share, `netmap::at_point::netmap_at`), on
//! [`tailnet`] turned into a log.

use crate::support::*;
use headscale::core::event::{NodeHostinfo, NodeRegistration, RegisterMethod};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{MachineKey, NodeKey};
use headscale::core::netmap::{at_point::netmap_at, Access, NetmapContext};
use headscale::core::{Actor, Envelope, Event, State, Timestamp};
use headscale::tailcfg::SharedJson;
use serde_json::Value;
use std::sync::Arc;

/// [`tailnet`] as a log (every route approved), then `policy` when there is one.
fn state(policy: Option<&str>) -> State {
    let topology = tailnet();
    let mut events: Vec<Event> = topology
        .users
        .iter()
        .map(|u| Event::UserCreated {
            id: UserId(u.id),
            name: u.name.clone(),
            display_name: String::new(),
            email: u.email.clone(),
        })
        .collect();
    for node in &topology.nodes {
        let last = node.id as u8;
        events.push(Event::NodeRegistered(Box::new(NodeRegistration {
            id: NodeId(node.id),
            machine_key: MachineKey([last; 32]),
            node_key: NodeKey([last + 100; 32]),
            user: node.user.map(UserId),
            tags: node.tags.clone(),
            given_name: node.name.clone(),
            hostinfo: NodeHostinfo {
                hostname: node.name.clone(),
                advertised_routes: node.routes.clone(),
                ..Default::default()
            },
            ipv4: node.ipv4,
            ipv6: node.ipv6,
            expiry: None,
            register_method: RegisterMethod::Cli,
            auth_key: None,
            ephemeral: false,
            authorized: true,
            approved_routes: node.routes.clone(),
        })));
    }
    if let Some(policy) = policy {
        events.push(Event::PolicyReplaced {
            policy: policy.into(),
        });
    }
    let mut state = State::default();
    for (i, event) in events.into_iter().enumerate() {
        state.apply(&Envelope {
            seq: i as u64 + 1,
            at: Timestamp::from_unix_ms(1000 * (i as i64 + 1)),
            actor: Actor::System,
            event,
        });
    }
    state
}

/// The full map `name` is given.
fn netmap(state: &State, name: &str) -> Value {
    let template = NetmapContext {
        derp_map: SharedJson::new(&serde_json::json!({})).unwrap(),
        dns_config: SharedJson::new(&serde_json::json!({})).unwrap(),
        access: Arc::new(Access::new(
            &State::default(),
            None,
            "https://hs.example.com",
        )),
        domain: "example.com".into(),
        self_caps: Default::default(),
        log_tail: false,
        ranking: Arc::default(),
    };
    let id = tailnet().nodes[index(&tailnet(), name)].id;
    netmap_at(
        state,
        NodeId(id),
        &template,
        Timestamp::from_unix_ms(1_000_000),
    )
    .unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// `field` of the peer called `name` in `map`.
fn peer(map: &Value, name: &str, field: &str) -> Vec<String> {
    let peer = map["Peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["Name"].as_str().unwrap().starts_with(&format!("{name}.")))
        .unwrap_or_else(|| panic!("no peer {name}"));
    strings(&peer[field])
}

fn v4(id: u8) -> String {
    format!("100.64.0.{id}/32")
}

fn v6(id: u8) -> String {
    format!("fd7a:115c:a1e0::{id}/128")
}

const SERVER_IPV6_ONLY: &str =
    r#""nodeAttrs": [{"target": ["tag:server"], "attr": ["disable-ipv4"]}]"#;
const ROUTER_IPV6_ONLY: &str =
    r#""nodeAttrs": [{"target": ["tag:router"], "attr": ["disable-ipv4"]}]"#;
const ODIN_IPV6_ONLY: &str =
    r#""nodeAttrs": [{"target": ["odin@example.com"], "attr": ["disable-ipv4"]}]"#;

#[test]
fn disable_ipv4_node_has_ipv6_only_self_addresses() {
    // "disable-ipv4": the node's own IPv4 CGNAT address leaves its Addresses and AllowedIPs
    // (captures nodeattrs-attr-c15/c16); it keeps the attribute in its CapMap.
    let state = state(Some(&with_tags(SERVER_IPV6_ONLY)));
    let map = netmap(&state, "server");
    assert_eq!(strings(&map["Node"]["Addresses"]), [v6(4)]);
    assert_eq!(strings(&map["Node"]["AllowedIPs"]), [v6(4)]);
    assert!(map["Node"]["CapMap"].get("disable-ipv4").is_some(), "{map}");
    // The address stays allocated: only what clients are shown changes.
    assert!(state.nodes[&NodeId(4)].ipv4.is_some());
}

#[test]
fn disable_ipv4_node_keeps_its_routes_in_allowed_ips() {
    // c16: the router is shown ["fd7a:115c:a1e0::d/128", "10.33.0.0/16"], PrimaryRoutes
    // ["10.33.0.0/16"], to itself and to every peer.
    let state = state(Some(&with_tags(ROUTER_IPV6_ONLY)));
    let own = netmap(&state, "router");
    assert_eq!(strings(&own["Node"]["Addresses"]), [v6(5)]);
    assert_eq!(
        strings(&own["Node"]["AllowedIPs"]),
        [v6(5), "10.33.0.0/16".into()]
    );
    let odin = netmap(&state, "odin-laptop");
    assert_eq!(peer(&odin, "router", "Addresses"), [v6(5)]);
    assert_eq!(
        peer(&odin, "router", "AllowedIPs"),
        [v6(5), "10.33.0.0/16".into()]
    );
    assert_eq!(peer(&odin, "router", "PrimaryRoutes"), ["10.33.0.0/16"]);
}

#[test]
fn peers_see_a_disable_ipv4_node_without_ipv4() {
    // Every other node is shown the disabled node IPv6-only; the others as before.
    let state = state(Some(&with_tags(SERVER_IPV6_ONLY)));
    for viewer in ["odin-laptop", "thor-laptop", "freya-phone", "router"] {
        let map = netmap(&state, viewer);
        assert_eq!(peer(&map, "server", "Addresses"), [v6(4)], "{viewer}");
        assert_eq!(peer(&map, "server", "AllowedIPs"), [v6(4)], "{viewer}");
        let other = if viewer == "odin-laptop" {
            "thor-laptop"
        } else {
            "odin-laptop"
        };
        let id = if other == "odin-laptop" { 1 } else { 2 };
        assert_eq!(peer(&map, other, "Addresses"), [v4(id), v6(id)], "{viewer}");
        assert_eq!(strings(&map["Node"]["Addresses"]).len(), 2, "{viewer}");
    }
}

#[test]
fn a_disable_ipv4_viewer_sees_peers_without_ipv4() {
    // c15 `client`, c16 `router`: the disabled node is shown every peer IPv6-only; a peer's
    // subnet routes stay (only its own /32 goes).
    let state = state(Some(&with_tags(ODIN_IPV6_ONLY)));
    let map = netmap(&state, "odin-laptop");
    for (name, id) in [
        ("thor-laptop", 2),
        ("freya-phone", 3),
        ("server", 4),
        ("router", 5),
    ] {
        assert_eq!(peer(&map, name, "Addresses"), [v6(id)], "{name}");
    }
    assert_eq!(peer(&map, "thor-laptop", "AllowedIPs"), [v6(2)]);
    assert_eq!(
        peer(&map, "router", "AllowedIPs"),
        [v6(5), "10.33.0.0/16".into()]
    );
    assert_eq!(peer(&map, "router", "PrimaryRoutes"), ["10.33.0.0/16"]);
    // Thor, not disabled, still sees freya's IPv4 (and odin without his).
    let thor = netmap(&state, "thor-laptop");
    assert_eq!(peer(&thor, "freya-phone", "Addresses"), [v4(3), v6(3)]);
    assert_eq!(peer(&thor, "odin-laptop", "Addresses"), [v6(1)]);
}

#[test]
fn disable_ipv4_leaves_packet_filters_unchanged() {
    // c16: SrcIPs still list the CGNAT ranges, for every node including the disabled one.
    let acls = r#""acls": [{"action": "accept", "src": ["autogroup:member", "tag:router"],
        "dst": ["*:*"]}]"#;
    let plain = state(Some(&with_tags(acls)));
    let disabled = state(Some(&with_tags(&format!("{acls}, {ROUTER_IPV6_ONLY}"))));
    let top_level = state(Some(&with_tags(&format!(r#"{acls}, "disableIPv4": true"#))));
    for node in &tailnet().nodes {
        let want = netmap(&plain, &node.name)["PacketFilters"].clone();
        assert!(want.to_string().contains("100.64.0.5"), "{want}");
        assert_eq!(netmap(&disabled, &node.name)["PacketFilters"], want);
        assert_eq!(netmap(&top_level, &node.name)["PacketFilters"], want);
    }
}

#[test]
fn top_level_disable_ipv4_applies_to_every_node() {
    // The policy's `disableIPv4: true`: every node as if it had `disable-ipv4`.
    let state = state(Some(&with_tags(r#""disableIPv4": true"#)));
    for node in &tailnet().nodes {
        let map = netmap(&state, &node.name);
        let id = node.id as u8;
        assert_eq!(
            strings(&map["Node"]["Addresses"]),
            [v6(id)],
            "{}",
            node.name
        );
        for peer in map["Peers"].as_array().unwrap() {
            let addresses = strings(&peer["Addresses"]);
            assert!(
                addresses.len() == 1 && addresses[0].starts_with("fd7a:"),
                "{}: {peer}",
                node.name
            );
        }
    }
    let router = netmap(&state, "odin-laptop");
    assert_eq!(
        peer(&router, "router", "AllowedIPs"),
        [v6(5), "10.33.0.0/16".into()]
    );
}

#[test]
fn without_disable_ipv4_every_node_keeps_its_ipv4() {
    // No attribute, no top-level flag: both addresses, for itself and for every peer.
    let state = state(Some(&with_tags("")));
    let map = netmap(&state, "odin-laptop");
    assert_eq!(strings(&map["Node"]["Addresses"]), [v4(1), v6(1)]);
    assert_eq!(peer(&map, "server", "Addresses"), [v4(4), v6(4)]);
}
