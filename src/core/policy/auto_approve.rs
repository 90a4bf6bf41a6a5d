//! `autoApprovers`: routes a node announces are approved without an admin when the policy
//! names the node (by user, group, tag or autogroup) as an approver of a prefix covering
//! them; exit routes through `exitNode`. Applied on registration, on announcement and when
//! the policy changes; never withdraws an approval.

use super::alias::{Alias, AutoGroup};
use super::{Policy, Topology};
use ipnet::IpNet;
use std::net::IpAddr;

/// The identity of a node, as approvers name it.
pub struct Candidate<'a> {
    pub user: Option<u64>,
    pub tags: &'a [String],
    pub ips: Vec<IpAddr>,
}

/// Whether `alias` names `node` by its identity (also what `ipPool` targets go by).
pub fn names(policy: &Policy, topology: &Topology, alias: &Alias, node: &Candidate) -> bool {
    let untagged_user = if node.tags.is_empty() {
        node.user
    } else {
        None
    };
    match alias {
        Alias::Wildcard => true,
        Alias::User(token) => {
            untagged_user.is_some_and(|u| topology.users_named(token).contains(&u))
        }
        Alias::Group(group) => untagged_user.is_some_and(|u| {
            policy
                .groups
                .get(group)
                .into_iter()
                .flatten()
                .any(|m| topology.users_named(m).contains(&u))
        }),
        Alias::Tag(tag) => node.tags.contains(tag),
        Alias::Auto(AutoGroup::Member) => untagged_user.is_some(),
        Alias::Auto(AutoGroup::Tagged) => !node.tags.is_empty(),
        Alias::Auto(AutoGroup::Role(role)) => {
            untagged_user.is_some_and(|u| topology.user_holds(u, *role))
        }
        Alias::Prefix(p) | Alias::Host(_, p) => node.ips.iter().any(|ip| p.contains(ip)),
        _ => false,
    }
}

/// Of the `announced` routes, those the policy approves for `node`.
pub fn approved(
    policy: &Policy,
    topology: &Topology,
    node: &Candidate,
    announced: &[IpNet],
) -> Vec<IpNet> {
    let mut out = Vec::new();
    for route in announced {
        let ok = if route.prefix_len() == 0 {
            policy
                .auto_exit
                .iter()
                .any(|a| names(policy, topology, a, node))
        } else {
            policy.auto_routes.iter().any(|(prefix, approvers)| {
                prefix.contains(route) && approvers.iter().any(|a| names(policy, topology, a, node))
            })
        };
        if ok {
            out.push(*route);
        }
    }
    out
}
