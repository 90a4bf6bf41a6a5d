//! Replacing the access policy: refused unless it parses, names only defined things and
//! passes its own tests against this tailnet; its `autoApprovers` then apply to the routes
//! nodes already announce.

use super::routes::{auto_approve, node_ips};
use super::Rejection;
use crate::core::event::Event;
use crate::core::state::State;

pub(super) fn replace(state: &State, text: &str) -> Result<Vec<Event>, Rejection> {
    if state.policy.as_ref().is_some_and(|p| p.text == *text) {
        return Ok(vec![]);
    }
    // An empty policy clears it (headscale 0.29: none set, every node may reach
    // every other); how the Terraform provider deletes a policy.
    if text.trim().is_empty() {
        return Ok(match state.policy {
            Some(_) => vec![Event::PolicyReplaced {
                policy: String::new(),
            }],
            None => vec![],
        });
    }
    // A policy that does not parse, names undefined things or fails its own tests
    // is refused; the one in force stays.
    let policy =
        crate::core::policy::check_for_state(text, state).map_err(Rejection::InvalidPolicy)?;
    let mut events = vec![Event::PolicyReplaced {
        policy: text.to_string(),
    }];
    // Its autoApprovers apply to what nodes already announce.
    for node in state.nodes.values() {
        let owner = if node.is_tagged() { None } else { node.user };
        if let Some(routes) = auto_approve(
            state,
            Some(&policy),
            (owner, &node.tags, node_ips(node)),
            &node.hostinfo.advertised_routes,
            &node.approved_routes,
        ) {
            events.push(Event::RoutesApproved {
                id: node.id,
                routes,
            });
        }
    }
    Ok(events)
}
