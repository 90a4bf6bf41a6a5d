//! Subnet and exit routes: their canonical form, approval by an admin (one node or every
//! node announcing a route; the two exit routes always together) and by the policy's
//! `autoApprovers`.

use super::{node, Rejection};
use crate::core::event::{Event, NodeHostinfo};
use crate::core::ids::{NodeId, UserId};
use crate::core::naming;
use crate::core::state::{Node, State};
use ipnet::IpNet;

/// Routes that always travel together: approving either exit route approves both.
const EXIT_ROUTES: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn exit_routes() -> [IpNet; 2] {
    EXIT_ROUTES.map(|r| r.parse().expect("valid constant route"))
}

/// Routes truncated to their network, sorted and deduplicated (so `10.1.2.3/8` and
/// `10.0.0.0/8` are one route everywhere).
fn canonical_routes(routes: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut routes: Vec<IpNet> = routes.into_iter().map(|r| r.trunc()).collect();
    routes.sort();
    routes.dedup();
    routes
}

/// The hostinfo as recorded: canonical advertised routes and tags.
pub fn normalize_hostinfo(hostinfo: &NodeHostinfo) -> NodeHostinfo {
    NodeHostinfo {
        advertised_routes: canonical_routes(hostinfo.advertised_routes.iter().copied()),
        requested_tags: naming::normalize_tags(&hostinfo.requested_tags),
        ..hostinfo.clone()
    }
}

/// Approved routes as recorded: canonical, with the exit pair completed.
pub fn normalize_routes(routes: &[IpNet]) -> Vec<IpNet> {
    let exits = exit_routes();
    let has_exit = routes.iter().any(|r| exits.contains(&r.trunc()));
    let completion = if has_exit { exits.to_vec() } else { Vec::new() };
    canonical_routes(routes.iter().copied().chain(completion))
}

/// The approved-route list after `autoApprovers` (of the state's policy, or `policy`) have
/// approved what they cover of `announced`; `None` when nothing new is approved.
pub(super) fn auto_approve(
    state: &State,
    policy: Option<&crate::core::policy::Policy>,
    identity: (Option<UserId>, &[String], Vec<std::net::IpAddr>),
    announced: &[IpNet],
    approved: &[IpNet],
) -> Option<Vec<IpNet>> {
    if announced.is_empty() {
        return None;
    }
    let stored;
    let policy = match policy {
        Some(p) => p,
        None => {
            stored = state.parsed_policy()?;
            &*stored
        }
    };
    if policy.auto_routes.is_empty() && policy.auto_exit.is_empty() {
        return None;
    }
    let topology = state.policy_users();
    let (user, tags, ips) = identity;
    let candidate = crate::core::policy::auto_approve::Candidate {
        user: user.map(|u| u.0),
        tags,
        ips,
    };
    let extra =
        crate::core::policy::auto_approve::approved(policy, &topology, &candidate, announced);
    let merged = normalize_routes(
        &approved
            .iter()
            .chain(extra.iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    (merged != normalize_routes(approved)).then_some(merged)
}

pub(super) fn node_ips(node: &Node) -> Vec<std::net::IpAddr> {
    node.ipv4
        .map(std::net::IpAddr::V4)
        .into_iter()
        .chain(node.ipv6.map(std::net::IpAddr::V6))
        .collect()
}

pub(super) fn approve_routes(
    state: &State,
    id: &NodeId,
    routes: &[IpNet],
) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    let routes = normalize_routes(routes);
    if found.approved_routes == routes {
        return Ok(vec![]);
    }
    Ok(vec![Event::RoutesApproved { id: *id, routes }])
}

/// Approves or unapproves one route (and its exit twin) on the targeted nodes.
pub(super) fn change_route(
    state: &State,
    route: IpNet,
    target: Option<NodeId>,
    approve: bool,
) -> Result<Vec<Event>, Rejection> {
    let route = route.trunc();
    let group: Vec<IpNet> = if exit_routes().contains(&route) {
        exit_routes().to_vec()
    } else {
        vec![route]
    };
    let advertises = |n: &Node| {
        n.hostinfo
            .advertised_routes
            .iter()
            .any(|r| group.contains(&r.trunc()))
    };
    let targets: Vec<&Node> = match target {
        Some(id) => {
            let found = node(state, id)?;
            if approve && !advertises(found) {
                return Err(Rejection::RouteNotAdvertisedByNode { node: id, route });
            }
            vec![found]
        }
        None => {
            let all: Vec<&Node> = state
                .nodes
                .values()
                .filter(|n| advertises(n) || n.approved_routes.iter().any(|r| group.contains(r)))
                .collect();
            if all.is_empty() {
                return Err(Rejection::RouteNotAdvertised(route));
            }
            all
        }
    };
    let mut events = Vec::new();
    for found in targets {
        let mut routes: Vec<IpNet> = found
            .approved_routes
            .iter()
            .filter(|r| !group.contains(r))
            .copied()
            .collect();
        if approve {
            routes.extend(group.iter().copied());
        }
        let routes = normalize_routes(&routes);
        if routes != found.approved_routes {
            events.push(Event::RoutesApproved {
                id: found.id,
                routes,
            });
        }
    }
    Ok(events)
}
