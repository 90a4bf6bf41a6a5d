//! `Command::Import`: a headscale database brought over, into an empty log only.

use super::Rejection;
use crate::core::event::{Actor, Envelope, Event};
use crate::core::state::State;
use crate::core::time::Timestamp;

/// `Command::Import`: the events as given, into an empty log only; anything but import events
/// is refused, and so is a policy that would not be accepted here (the policy in force is
/// always valid).
pub(super) fn decide(state: &State, events: &[Event]) -> Result<Vec<Event>, Rejection> {
    if state.last_seq != 0 {
        return Err(Rejection::LogNotEmpty(state.last_seq));
    }
    let mut imported = state.clone();
    for event in events {
        match event {
            Event::UserImported(_)
            | Event::PreAuthKeyImported(_)
            | Event::ApiKeyImported(_)
            | Event::NodeImported(_)
            | Event::PolicyReplaced { .. }
            | Event::Imported(_) => {}
            other => {
                return Err(Rejection::InvalidImport(format!(
                    "{} is not an import event",
                    other.kind()
                )))
            }
        }
        imported.apply(&Envelope {
            seq: 0,
            at: Timestamp::EPOCH,
            actor: Actor::System,
            event: event.clone(),
        });
    }
    if let Some(policy) = &imported.policy {
        crate::core::policy::check_for_state(&policy.text, &imported).map_err(|e| {
            Rejection::InvalidImport(format!("headscale's policy is not valid here: {e}"))
        })?;
    }
    Ok(events.to_vec())
}
