//! Who may give a node a tag: `tagOwners` names users, groups, `autogroup:member` and other
//! tags (whose owners then own this one too). Used when a client asks for tags itself
//! (`tailscale up --advertise-tags`).

use super::alias::{Alias, AutoGroup};
use super::{Policy, Topology};

/// Whether `user` owns `tag` under `policy`.
pub fn user_owns_tag(policy: &Policy, topology: &Topology, user: u64, tag: &str) -> bool {
    owns(policy, topology, user, tag, 0)
}

/// Tags owning tags form chains; they are followed a few levels deep (a cycle ends there).
const MAX_DEPTH: usize = 8;

fn owns(policy: &Policy, topology: &Topology, user: u64, tag: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    let Some(owners) = policy.tag_owners.get(tag) else {
        return false;
    };
    owners.iter().any(|owner| match owner {
        Alias::User(token) => topology.users_named(token).contains(&user),
        Alias::Group(group) => policy
            .groups
            .get(group)
            .into_iter()
            .flatten()
            .any(|member| topology.users_named(member).contains(&user)),
        Alias::Auto(AutoGroup::Member) => true,
        Alias::Auto(AutoGroup::Role(role)) => topology.user_holds(user, *role),
        Alias::Tag(other) => owns(policy, topology, user, other, depth + 1),
        _ => false,
    })
}
