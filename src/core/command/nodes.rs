//! A registered node's life: expiry and logout, renames (unique MagicDNS names), moves
//! between users, tags, device approval, reported hostinfo and node-key rotation.

use super::routes::{auto_approve, node_ips, normalize_hostinfo};
use super::{checked_tags, node, node_key_free, user, ExpiryChange, Rejection};
use crate::core::event::{Event, NodeHostinfo};
use crate::core::ids::{NodeId, UserId};
use crate::core::keys::NodeKey;
use crate::core::naming;
use crate::core::state::State;
use crate::core::time::Timestamp;

pub(super) fn delete(state: &State, id: &NodeId) -> Result<Vec<Event>, Rejection> {
    node(state, *id)?;
    Ok(vec![Event::NodeDeleted { id: *id }])
}

pub(super) fn expire(
    state: &State,
    id: &NodeId,
    change: &ExpiryChange,
    now: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    let expiry = match change {
        ExpiryChange::Now => Some(now),
        ExpiryChange::At(t) => Some(*t),
        ExpiryChange::Never => None,
    };
    if found.expiry == expiry {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeExpiryChanged { id: *id, expiry }])
}

pub(super) fn logout(state: &State, id: &NodeId, now: Timestamp) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    if found.ephemeral {
        return Ok(vec![Event::NodeDeleted { id: *id }]);
    }
    if found.expiry.is_some_and(|t| t <= now) {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeExpiryChanged {
        id: *id,
        expiry: Some(now),
    }])
}

/// An admin's name: a valid DNS label no other node has.
pub(super) fn rename(state: &State, id: &NodeId, new_name: &str) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    naming::validate_given_name(new_name, &state.config.core.base_domain).map_err(|reason| {
        Rejection::InvalidNodeName {
            name: new_name.to_string(),
            reason,
        }
    })?;
    if state.given_name_taken(new_name, Some(*id)) {
        return Err(Rejection::NodeNameTaken(new_name.to_string()));
    }
    if found.given_name == *new_name && found.given_name_by_admin {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeRenamed {
        id: *id,
        given_name: new_name.to_string(),
        by_admin: true,
    }])
}

pub(super) fn move_to(state: &State, id: &NodeId, to: &UserId) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    user(state, *to)?;
    if found.user == Some(*to) && !found.is_tagged() {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeMoved { id: *id, user: *to }])
}

pub(super) fn set_tags(
    state: &State,
    id: &NodeId,
    tags: &[String],
) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    let tags = checked_tags(tags)?;
    if tags.is_empty() {
        return Err(Rejection::EmptyTags);
    }
    // As headscale: under a policy that defines tags (`tagOwners`), only those may be
    // set. A policy that defines none leaves tag names to the admin, as no policy
    // does (headscale then refuses every tag; the frozen v0 golden log tags a node
    // under such a policy). A stored policy that no longer parses restricts nothing
    // (it was checked when set).
    let defining = state
        .parsed_policy()
        .filter(|policy| !policy.tag_owners.is_empty());
    if let Some(policy) = defining {
        let undefined: Vec<String> = tags
            .iter()
            .filter(|tag| !policy.tag_owners.contains_key(*tag))
            .cloned()
            .collect();
        if !undefined.is_empty() {
            return Err(Rejection::RequestedTagsNotPermitted(undefined));
        }
    }
    if found.tags == tags {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeTagsSet { id: *id, tags }])
}

pub(super) fn approve(state: &State, id: &NodeId) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    if found.authorized {
        return Ok(vec![]);
    }
    Ok(vec![Event::NodeApproved { id: *id }])
}

/// Recorded only when it changes; newly announced routes may be auto-approved.
pub(super) fn update_hostinfo(
    state: &State,
    id: &NodeId,
    hostinfo: &NodeHostinfo,
) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    let hostinfo = &normalize_hostinfo(hostinfo);
    if found.hostinfo == *hostinfo {
        return Ok(vec![]);
    }
    let mut events = vec![Event::NodeHostinfoChanged {
        id: *id,
        hostinfo: hostinfo.clone(),
    }];
    // Newly announced routes may be auto-approved.
    if found.hostinfo.advertised_routes != hostinfo.advertised_routes {
        let owner = if found.is_tagged() { None } else { found.user };
        if let Some(routes) = auto_approve(
            state,
            None,
            (owner, &found.tags, node_ips(found)),
            &hostinfo.advertised_routes,
            &found.approved_routes,
        ) {
            events.push(Event::RoutesApproved { id: *id, routes });
        }
    }
    Ok(events)
}

pub(super) fn rotate_key(
    state: &State,
    id: &NodeId,
    node_key: &NodeKey,
) -> Result<Vec<Event>, Rejection> {
    let found = node(state, *id)?;
    if found.node_key == *node_key {
        return Ok(vec![]);
    }
    node_key_free(state, *node_key, Some(*id))?;
    Ok(vec![Event::NodeKeyRotated {
        id: *id,
        node_key: *node_key,
    }])
}
