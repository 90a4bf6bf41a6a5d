//! `nodeAttrs[].ipPool`: where a new node's IPv4 address comes from. A node registered while
//! the policy names it (by user, group, tag, role, `autogroup:member`/`tagged`, `*`) in an
//! entry with `ipPool` gets its address from the first of those pools with room, in policy
//! order; others from `prefixes.v4`. Existing nodes keep their addresses when the policy
//! changes (as on Tailscale); the address chosen is recorded in the registration event, so
//! replay never asks again. Pools must lie inside `prefixes.v4` (checked when the policy is
//! set against the server's config), so the allocator and everything that assumes tailnet
//! addresses come from there stay right.

use super::auto_approve::{names, Candidate};
use super::{Policy, Topology};
use ipnet::Ipv4Net;

/// The pools, in policy order, of the `nodeAttrs` entries whose target names `node`. A new
/// node has no address yet, so address and host targets never name it.
pub fn pools_for(policy: &Policy, topology: &Topology, node: &Candidate) -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = Vec::new();
    for rule in &policy.node_attrs {
        if rule.ip_pool.is_empty() || !rule.target.iter().any(|t| names(policy, topology, t, node))
        {
            continue;
        }
        for pool in &rule.ip_pool {
            if !out.contains(pool) {
                out.push(*pool);
            }
        }
    }
    out
}

/// Every pool must lie inside the configured `prefixes.v4` (none configured: no pool can
/// be used). Our wording; Tailscale has no configurable prefix.
pub fn check_within(policy: &Policy, prefix_v4: Option<Ipv4Net>) -> Result<(), String> {
    for (i, rule) in policy.node_attrs.iter().enumerate() {
        for pool in &rule.ip_pool {
            match prefix_v4 {
                Some(prefix) if prefix.contains(pool) => {}
                Some(prefix) => {
                    return Err(format!(
                        "nodeAttrs[{i}]: ipPool {pool} is outside the configured prefixes.v4 ({prefix})"
                    ))
                }
                None => {
                    return Err(format!(
                        "nodeAttrs[{i}]: ipPool {pool} cannot be used: no prefixes.v4 is configured"
                    ))
                }
            }
        }
    }
    Ok(())
}
