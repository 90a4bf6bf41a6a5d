//! Which routes a viewer may use, and through which routers. A router's subnet (or exit)
//! routes reach a viewer's `AllowedIPs` only when the policy allows traffic between the
//! viewer and the route, either way; a grant with `via` steers the viewer's traffic to its
//! destinations through the routers carrying one of its tags (Tailscale's "route filtering
//! with via"), so for that viewer the route sits on the first such router instead of on
//! the tailnet's primary.

use super::compile::{overlaps, Compiled, DstKind, Resolved};
use fixedbitset::FixedBitSet;
use ipnet::IpNet;

/// How a viewer may reach a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAccess {
    /// Not at all: the route is on none of its peers.
    Denied,
    /// Through the router that carries it for everyone (a subnet's HA primary; any exit
    /// node for the exit routes).
    Any,
    /// Only through these routers (node indices): the viewer's grants to the route all
    /// name `via` tags.
    Via(FixedBitSet),
}

impl Compiled {
    /// How node `i` may reach `route`. A grant without `via` (or traffic from the route to
    /// the node) opens it through any router, and wins over `via` grants; the routers of
    /// several `via` grants add up. A router may always use the subnets it serves itself
    /// (an HA standby sees the primary's route).
    pub fn route_access(&self, i: usize, route: &IpNet) -> RouteAccess {
        let exit = route.prefix_len() == 0;
        if self.policy.allow_all || (!exit && self.node(i).subnet_routes().any(|r| r == route)) {
            return RouteAccess::Any;
        }
        let to_route = |dst: &DstKind| match dst {
            DstKind::Wildcard => true,
            DstKind::Prefix(prefix) => !exit && overlaps(prefix, route),
            DstKind::Internet => exit,
            DstKind::Nodes(_) | DstKind::SelfNodes => false,
        };
        let from_route = |src: &Resolved| {
            src.danger_all
                || (!exit && src.wildcard)
                || src.prefixes.iter().any(|p| overlaps(p, route))
        };
        let mut via_routers: Option<FixedBitSet> = None;
        let grants = self
            .rules
            .iter()
            .map(|rule| {
                let forward =
                    rule.src.members.contains(i) && rule.dsts.iter().any(|d| to_route(&d.kind));
                let back = from_route(&rule.src) && rule.dst_members.contains(i);
                (forward, back, rule.via.as_ref())
            })
            .chain(self.apps.iter().map(|app| {
                let forward = app.src.members.contains(i) && app.dst.iter().any(to_route);
                let back = from_route(&app.src) && app.dst_members.contains(i);
                (forward, back, app.via.as_ref())
            }));
        for (forward, back, via) in grants {
            match (forward, via) {
                (true, None) => return RouteAccess::Any,
                (true, Some(routers)) => via_routers
                    .get_or_insert_with(|| FixedBitSet::with_capacity(routers.len()))
                    .union_with(routers),
                (false, _) => {}
            }
            if back {
                return RouteAccess::Any;
            }
        }
        match via_routers {
            Some(routers) => RouteAccess::Via(routers),
            None => RouteAccess::Denied,
        }
    }

    /// Whether node `i` gets `route` on router `router`'s entry. `ranked` are the route's
    /// routers that can carry it now, the primary first (then standbys, by preference); it
    /// only matters for a subnet, since every exit node carries the exit routes.
    pub fn shows_route(&self, i: usize, router: usize, route: &IpNet, ranked: &[usize]) -> bool {
        let access = self.route_access(i, route);
        if route.prefix_len() == 0 {
            return match access {
                RouteAccess::Denied => false,
                RouteAccess::Any => true,
                RouteAccess::Via(routers) => routers.contains(router),
            };
        }
        carrier(&access, ranked) == Some(router)
    }
}

/// The router that carries a subnet for a viewer with `access`, of the subnet's `ranked`
/// routers (primary first): the primary, unless `via` names others, then the first of
/// those (the primary still, when it is one of them).
pub fn carrier(access: &RouteAccess, ranked: &[usize]) -> Option<usize> {
    match access {
        RouteAccess::Denied => None,
        RouteAccess::Any => ranked.first().copied(),
        RouteAccess::Via(routers) => ranked.iter().copied().find(|&r| routers.contains(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::{Policy, Topology, TopologyNode};
    use std::sync::Arc;

    const SUBNET: &str = "10.44.0.0/16";

    /// Two routers of one subnet (HA: `r1` primary, `r2` standby), two exit nodes, two
    /// clients; node `k` has address 100.64.0.k.
    fn topology() -> Topology {
        let node = |k: u64, name: &str, tag: &str, routes: &[&str]| TopologyNode {
            id: k,
            name: name.into(),
            user: None,
            tags: vec![tag.into()],
            ipv4: Some(format!("100.64.0.{k}").parse().unwrap()),
            ipv6: None,
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        };
        Topology {
            users: Vec::new(),
            nodes: vec![
                node(1, "r1", "tag:ra", &[SUBNET]),
                node(2, "r2", "tag:rb", &[SUBNET]),
                node(3, "ca", "tag:ca", &[]),
                node(4, "cb", "tag:cb", &[]),
                node(5, "e1", "tag:ea", &["0.0.0.0/0", "::/0"]),
                node(6, "e2", "tag:eb", &["0.0.0.0/0", "::/0"]),
            ],
        }
    }

    const R1: usize = 0;
    const R2: usize = 1;
    const CA: usize = 2;
    const CB: usize = 3;
    const E1: usize = 4;
    const E2: usize = 5;
    /// Routers of the subnet, primary first.
    const RANKED: [usize; 2] = [R1, R2];

    fn compile(grants: &str) -> Compiled {
        let owners = ["ra", "rb", "ca", "cb", "ea", "eb"]
            .map(|t| format!("\"tag:{t}\": []"))
            .join(", ");
        let text = format!(r#"{{"tagOwners": {{{owners}}}, "grants": [{grants}]}}"#);
        let policy = Policy::parse(&text).unwrap();
        Compiled::new(Arc::new(policy), Arc::new(topology()))
    }

    fn subnet() -> IpNet {
        SUBNET.parse().unwrap()
    }

    fn filter_sources(compiled: &Compiled, i: usize, dst: &str) -> Vec<String> {
        compiled
            .filter(i)
            .into_iter()
            .filter(|rule| rule.dst_ports.iter().any(|d| d.ip == dst))
            .flat_map(|rule| rule.src_ips)
            .collect()
    }

    #[test]
    fn via_steers_a_subnet_to_the_via_router_for_its_sources_only() {
        let compiled = compile(
            r#"{"src": ["tag:ca"], "dst": ["10.44.0.0/16"], "ip": ["*"], "via": ["tag:rb"]},
               {"src": ["tag:cb"], "dst": ["10.44.0.0/16"], "ip": ["*"]}"#,
        );
        let mut rb = FixedBitSet::with_capacity(6);
        rb.insert(R2);
        assert_eq!(compiled.route_access(CA, &subnet()), RouteAccess::Via(rb));
        assert_eq!(compiled.route_access(CB, &subnet()), RouteAccess::Any);
        // `ca` gets the subnet on the standby it is steered to, `cb` on the primary.
        assert!(compiled.shows_route(CA, R2, &subnet(), &RANKED));
        assert!(!compiled.shows_route(CA, R1, &subnet(), &RANKED));
        assert!(compiled.shows_route(CB, R1, &subnet(), &RANKED));
        assert!(!compiled.shows_route(CB, R2, &subnet(), &RANKED));
        // With the via router offline, `ca` has no way to the subnet.
        assert!(!compiled.shows_route(CA, R1, &subnet(), &[R1]));
        // The via grant is enforced on the via router only; `ca` does not see `r1` at all.
        assert_eq!(filter_sources(&compiled, R1, SUBNET), ["100.64.0.4"]);
        let mut on_r2 = filter_sources(&compiled, R2, SUBNET);
        on_r2.sort();
        assert_eq!(on_r2, ["100.64.0.3", "100.64.0.4"]);
        assert_eq!(compiled.peers(CA), [R2]);
        assert_eq!(compiled.peers(CB), [R1, R2]);
    }

    #[test]
    fn the_primary_carries_via_traffic_when_it_has_a_via_tag() {
        let compiled = compile(
            r#"{"src": ["tag:ca"], "dst": ["10.44.0.0/16"], "ip": ["*"], "via": ["tag:ra", "tag:rb"]}"#,
        );
        assert!(compiled.shows_route(CA, R1, &subnet(), &RANKED));
        assert!(!compiled.shows_route(CA, R2, &subnet(), &RANKED));
        assert!(compiled.shows_route(CA, R2, &subnet(), &[R2, R1]));
    }

    #[test]
    fn a_grant_without_via_wins_over_via() {
        let compiled = compile(
            r#"{"src": ["tag:ca"], "dst": ["10.44.0.0/16"], "ip": ["*"], "via": ["tag:rb"]},
               {"src": ["tag:ca"], "dst": ["10.44.0.0/16"], "ip": ["tcp:22"]}"#,
        );
        assert_eq!(compiled.route_access(CA, &subnet()), RouteAccess::Any);
        assert!(compiled.shows_route(CA, R1, &subnet(), &RANKED));
        assert!(!compiled.shows_route(CA, R2, &subnet(), &RANKED));
    }

    #[test]
    fn a_standby_router_uses_the_subnet_it_serves() {
        let compiled = compile(r#"{"src": ["tag:ra"], "dst": ["tag:rb"], "ip": ["*"]}"#);
        assert_eq!(compiled.route_access(R2, &subnet()), RouteAccess::Any);
        assert!(compiled.shows_route(R2, R1, &subnet(), &RANKED));
        assert_eq!(compiled.route_access(CA, &subnet()), RouteAccess::Denied);
    }

    #[test]
    fn via_picks_exit_nodes() {
        let compiled = compile(
            r#"{"src": ["tag:ca"], "dst": ["autogroup:internet"], "ip": ["*"], "via": ["tag:ea"]}"#,
        );
        let exit: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(compiled.shows_route(CA, E1, &exit, &[]));
        assert!(!compiled.shows_route(CA, E2, &exit, &[]));
        assert!(!compiled.shows_route(CB, E1, &exit, &[]));
        assert_eq!(
            filter_sources(&compiled, E1, "0.0.0.0-9.255.255.255"),
            ["100.64.0.3"]
        );
        assert!(filter_sources(&compiled, E2, "0.0.0.0-9.255.255.255").is_empty());
        assert_eq!(compiled.peers(CA), [E1]);
    }

    #[test]
    fn an_app_grant_with_via_steers_routes_without_a_capability() {
        let compiled = compile(
            r#"{"src": ["tag:ca"], "dst": ["10.44.0.0/16"], "app": {"example.com/cap/x": [{}]}, "via": ["tag:rb"]}"#,
        );
        assert!(compiled.filter(R2).is_empty());
        assert!(compiled.shows_route(CA, R2, &subnet(), &RANKED));
        assert_eq!(compiled.peers(CA), [R2]);
    }

    #[test]
    fn randomize_client_port_stamps_every_node() {
        let on = Compiled::new(
            Arc::new(Policy::parse(r#"{"randomizeClientPort": true}"#).unwrap()),
            Arc::new(topology()),
        );
        let off = Compiled::new(Arc::new(Policy::parse("{}").unwrap()), Arc::new(topology()));
        for i in [R1, R2, CA, CB, E1, E2] {
            assert_eq!(
                on.node_caps(i).get("randomize-client-port"),
                Some(&Vec::new())
            );
            assert!(!off.node_caps(i).contains_key("randomize-client-port"));
        }
    }
}
