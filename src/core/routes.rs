//! High-availability subnet routers: of the nodes that serve the same subnet (announced and
//! approved), exactly one — the primary — carries it. The election is pure; presence
//! (who is online) comes from the shell. A primary keeps its role while it is online, so a
//! recovered router never takes the subnet back (no flap-back); when it goes offline the
//! lowest-id online router takes over; with none online the subnet has no primary.

use crate::core::ids::NodeId;
use crate::core::State;
use ipnet::IpNet;
use std::collections::BTreeMap;

/// Subnet → its primary router.
pub type Primaries = BTreeMap<IpNet, NodeId>;

/// Elects a primary for every subnet served in `state`, keeping `previous` winners that are
/// still online and still serve it.
pub fn elect(state: &State, online: &dyn Fn(NodeId) -> bool, previous: &Primaries) -> Primaries {
    let mut candidates: BTreeMap<IpNet, Vec<NodeId>> = BTreeMap::new();
    for node in state.nodes.values().filter(|n| n.authorized) {
        for route in node.subnet_routes() {
            if route.prefix_len() != 0 {
                candidates.entry(route).or_default().push(node.id);
            }
        }
    }
    let mut out = Primaries::new();
    for (route, mut routers) in candidates {
        routers.sort();
        let kept = previous
            .get(&route)
            .filter(|id| routers.contains(id) && online(**id));
        let winner = kept
            .copied()
            .or_else(|| routers.iter().copied().find(|id| online(*id)));
        if let Some(winner) = winner {
            out.insert(route, winner);
        }
    }
    out
}

/// The subnets `node` is primary for.
pub fn primary_routes_of(primaries: &Primaries, node: NodeId) -> Vec<IpNet> {
    primaries
        .iter()
        .filter(|(_, id)| **id == node)
        .map(|(route, _)| *route)
        .collect()
}

/// Subnet → the routers that can carry it now: its primary first, then the other online
/// routers serving it, by id. A viewer whose grants steer a subnet through `via` routers
/// gets it on the first of them here (the primary when it is one).
pub type Ranking = BTreeMap<IpNet, Vec<NodeId>>;

/// Ranks the routers of every subnet that has a primary.
pub fn rank(state: &State, online: &dyn Fn(NodeId) -> bool, primaries: &Primaries) -> Ranking {
    let mut ranking: Ranking = primaries
        .iter()
        .map(|(route, primary)| (*route, vec![*primary]))
        .collect();
    for node in state
        .nodes
        .values()
        .filter(|n| n.authorized && online(n.id))
    {
        for route in node.subnet_routes() {
            if let Some(ranked) = ranking.get_mut(&route) {
                if !ranked.contains(&node.id) {
                    ranked.push(node.id);
                }
            }
        }
    }
    ranking
}
