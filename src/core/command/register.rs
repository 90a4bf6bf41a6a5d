//! Registration: who owns a new node (a pre-auth key, an admin, an OIDC login; tags the
//! client asks for), whether it is a known machine logging in again, and what a new node
//! starts with: addresses (`ipalloc`, from the state's index of addresses in use; IPv4 from
//! the policy's `ipPool` when a `nodeAttrs` entry targets the node), a unique MagicDNS name,
//! an expiry, approval and auto-approved routes.

use super::routes::auto_approve;
use super::{node_key_free, user, RegisterAuth, Rejection};
use crate::core::event::{CoreConfig, Event, NodeHostinfo, NodeRegistration, RegisterMethod};
use crate::core::ids::{NodeId, UserId};
use crate::core::ipalloc::{allocate_v4, allocate_v4_outside, allocate_v6};
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::naming;
use crate::core::state::State;
use crate::core::time::Timestamp;
use std::time::Duration;

pub(super) struct Registration<'a> {
    pub(super) machine_key: MachineKey,
    pub(super) node_key: NodeKey,
    pub(super) hostinfo: &'a NodeHostinfo,
    pub(super) auth: &'a RegisterAuth,
    pub(super) requested_expiry: Option<Timestamp>,
    pub(super) ephemeral: bool,
    pub(super) entropy: u64,
}

/// Registration: who owns the node, whether it is a re-login of a known machine, and what it
/// starts with (addresses, name, expiry, approval).
pub(super) fn decide(
    state: &State,
    reg: Registration<'_>,
    now: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    let core = &state.config.core;
    let (owner, tags, auth_key, method, ephemeral, pre_approved) = match reg.auth {
        RegisterAuth::PreAuthKey(id) => {
            let key = state
                .pre_auth_keys
                .get(id)
                .ok_or_else(|| Rejection::PreAuthKeyNotFound(id.to_string()))?;
            if key.is_expired(now) {
                return Err(Rejection::PreAuthKeyExpired(*id));
            }
            let (owner, tags) = if key.tags.is_empty() {
                (key.user, vec![])
            } else {
                (None, key.tags.clone())
            };
            (
                owner,
                tags,
                Some(key),
                RegisterMethod::AuthKey,
                key.ephemeral || reg.ephemeral,
                key.pre_approved,
            )
        }
        RegisterAuth::Admin { user: id } => {
            user(state, *id)?;
            (
                Some(*id),
                vec![],
                None,
                RegisterMethod::Cli,
                reg.ephemeral,
                true,
            )
        }
        // The user approved their own machine: device approval, when on, still waits for
        // an admin.
        RegisterAuth::Oidc { user: id, .. } => {
            user(state, *id)?;
            (
                Some(*id),
                vec![],
                None,
                RegisterMethod::Oidc,
                reg.ephemeral,
                false,
            )
        }
    };
    // Tags the client asks for itself (`--advertise-tags`) make a user's node a tagged one,
    // if the policy lets that user own every one of them.
    let (owner, tags) = match owner {
        Some(user_id) if tags.is_empty() && !reg.hostinfo.requested_tags.is_empty() => {
            let mut wanted = reg.hostinfo.requested_tags.clone();
            wanted.sort();
            wanted.dedup();
            let permitted = state.parsed_policy().map(|policy| {
                let topology = state.policy_users();
                wanted.iter().all(|tag| {
                    crate::core::policy::tag_owners::user_owns_tag(
                        &policy, &topology, user_id.0, tag,
                    )
                })
            });
            if permitted != Some(true) {
                return Err(Rejection::RequestedTagsNotPermitted(wanted));
            }
            (None, wanted)
        }
        _ => (owner, tags),
    };
    let spend_key = |node: NodeId| -> Vec<Event> {
        match auth_key {
            Some(key) if !key.reusable && !key.used => {
                vec![Event::PreAuthKeyUsed { id: key.id, node }]
            }
            _ => vec![],
        }
    };
    // The client may ask for a shorter life than `node.expiry`, never a longer one (M4:
    // tailcfg's "the server policy may override").
    let limit =
        (core.node_expiry_secs > 0).then(|| now.plus(Duration::from_secs(core.node_expiry_secs)));
    let token_expiry = match reg.auth {
        RegisterAuth::Oidc { expiry, .. } => *expiry,
        _ => None,
    };
    let expiry = if !tags.is_empty() {
        None
    } else if token_expiry.is_some() {
        // `use_expiry_from_token`: the node lives as long as the login (headscale).
        token_expiry
    } else {
        match (reg.requested_expiry.filter(|t| *t > now), limit) {
            (Some(requested), Some(limit)) => Some(requested.min(limit)),
            (requested, limit) => requested.or(limit),
        }
    };

    // A known machine logging in again as the same owner keeps its node, id and addresses.
    let known = state
        .nodes_by_machine_key(&reg.machine_key)
        .rev()
        .find(|n| n.user == owner && n.tags == tags);
    if let Some(existing) = known {
        // Re-login with a key that was already spent on this very node is fine.
        if let Some(key) = auth_key {
            if key.used && !key.reusable && key.used_by != Some(existing.id) {
                return Err(Rejection::PreAuthKeyUsed(key.id));
            }
        }
        node_key_free(state, reg.node_key, Some(existing.id))?;
        let mut events = vec![Event::NodeReauthenticated {
            id: existing.id,
            node_key: reg.node_key,
            expiry,
            auth_key: auth_key.map(|k| k.id),
            register_method: method,
        }];
        if existing.hostinfo != *reg.hostinfo {
            events.push(Event::NodeHostinfoChanged {
                id: existing.id,
                hostinfo: reg.hostinfo.clone(),
            });
        }
        events.extend(spend_key(existing.id));
        return Ok(events);
    }
    if let Some(key) = auth_key {
        if key.used && !key.reusable {
            return Err(Rejection::PreAuthKeyUsed(key.id));
        }
    }
    node_key_free(state, reg.node_key, None)?;

    let id = NodeId(state.next_ids.node);
    let (ipv4, ipv6) = allocate_addresses(state, core, (owner, &tags), reg.entropy)?;
    let given_name = naming::unique_name_indexed(
        &naming::sanitize_hostname(&reg.hostinfo.hostname),
        |name| state.given_name_taken(name, None),
        |base| state.free_name_suffix(base),
    );
    let approved_routes = auto_approve(
        state,
        None,
        (
            owner,
            &tags,
            ipv4.map(std::net::IpAddr::V4)
                .into_iter()
                .chain(ipv6.map(std::net::IpAddr::V6))
                .collect(),
        ),
        &reg.hostinfo.advertised_routes,
        &[],
    )
    .unwrap_or_default();
    let mut events = vec![Event::NodeRegistered(Box::new(NodeRegistration {
        id,
        machine_key: reg.machine_key,
        node_key: reg.node_key,
        user: owner,
        tags,
        given_name,
        hostinfo: reg.hostinfo.clone(),
        ipv4,
        ipv6,
        expiry,
        register_method: method,
        auth_key: auth_key.map(|k| k.id),
        ephemeral,
        authorized: !core.require_approval || pre_approved,
        approved_routes,
    }))];
    events.extend(spend_key(id));
    Ok(events)
}

/// A new node's addresses. Its IPv4 comes from the `ipPool`s of the `nodeAttrs` entries
/// that target it (`identity`: owner and tags), the first with room in policy order, and
/// from `prefixes.v4` when none targets it. A full pool refuses the registration rather than
/// falling back: the admin asked for the pool.
fn allocate_addresses(
    state: &State,
    core: &CoreConfig,
    identity: (Option<UserId>, &[String]),
    entropy: u64,
) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>), Rejection> {
    if core.prefix_v4.is_none() && core.prefix_v6.is_none() {
        return Err(Rejection::NoPrefixes);
    }
    let ipv4 = match &core.prefix_v4 {
        Some(prefix) => {
            let (pools, all_pools) = pools_for(state, identity);
            if pools.is_empty() {
                // Outside every pool: a pool's range is kept for its targets.
                Some(
                    allocate_v4_outside(
                        prefix,
                        state.used_ipv4(),
                        core.allocation,
                        entropy,
                        &all_pools,
                    )
                    .ok_or_else(|| Rejection::AddressSpaceExhausted(prefix.to_string()))?,
                )
            } else {
                let found = pools.iter().find_map(|pool| {
                    // Only the part inside `prefixes.v4` (all of it, unless the config
                    // changed after the policy was set).
                    let within = if prefix.contains(pool) {
                        *pool
                    } else if pool.contains(prefix) {
                        *prefix
                    } else {
                        return None;
                    };
                    allocate_v4(&within, state.used_ipv4(), core.allocation, entropy)
                });
                let names: Vec<String> = pools.iter().map(ToString::to_string).collect();
                Some(found.ok_or_else(|| Rejection::AddressSpaceExhausted(names.join(", ")))?)
            }
        }
        None => None,
    };
    let ipv6 = match &core.prefix_v6 {
        Some(prefix) => Some(
            allocate_v6(
                prefix,
                state.used_ipv6(),
                core.allocation,
                entropy.rotate_left(17),
            )
            .ok_or_else(|| Rejection::AddressSpaceExhausted(prefix.to_string()))?,
        ),
        None => None,
    };
    Ok((ipv4, ipv6))
}

/// The `ipPool`s that target a new node with this owner and these tags, in policy order,
/// and every pool of the policy.
type Pools = (Vec<ipnet::Ipv4Net>, Vec<ipnet::Ipv4Net>);

fn pools_for(state: &State, (owner, tags): (Option<UserId>, &[String])) -> Pools {
    let Some(policy) = state.parsed_policy() else {
        return Pools::default();
    };
    let all: Vec<ipnet::Ipv4Net> = policy
        .node_attrs
        .iter()
        .flat_map(|rule| rule.ip_pool.iter().copied())
        .collect();
    if all.is_empty() {
        return Pools::default();
    }
    let candidate = crate::core::policy::auto_approve::Candidate {
        user: owner.map(|u| u.0),
        tags,
        ips: Vec::new(),
    };
    let mine = crate::core::policy::ip_pool::pools_for(&policy, &state.policy_users(), &candidate);
    (mine, all)
}
