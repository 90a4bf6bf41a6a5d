//! Users: creation (names are unique and valid), renames, and deletion, which takes the
//! user's nodes along only when forced.

use super::{user, Rejection};
use crate::core::event::Event;
use crate::core::ids::{NodeId, UserId};
use crate::core::naming;
use crate::core::state::State;

/// A new user; a picture URL is its own event (it came later than the first schema).
pub(super) fn create(
    state: &State,
    name: &str,
    display_name: &str,
    email: &str,
    picture_url: &str,
) -> Result<Vec<Event>, Rejection> {
    naming::validate_user_name(name).map_err(|reason| Rejection::InvalidUserName {
        name: name.to_string(),
        reason,
    })?;
    if state.user_by_name(name).is_some() {
        return Err(Rejection::UserNameTaken(name.to_string()));
    }
    let id = UserId(state.next_ids.user);
    let mut events = vec![Event::UserCreated {
        id,
        name: name.to_string(),
        display_name: display_name.to_string(),
        email: email.to_string(),
    }];
    // The picture came later than the first schema: its own event, only when given.
    if !picture_url.is_empty() {
        events.push(Event::UserProfileChanged {
            id,
            display_name: display_name.to_string(),
            email: email.to_string(),
            picture_url: picture_url.to_string(),
        });
    }
    Ok(events)
}

pub(super) fn rename(state: &State, id: &UserId, new_name: &str) -> Result<Vec<Event>, Rejection> {
    let current = user(state, *id)?;
    naming::validate_user_name(new_name).map_err(|reason| Rejection::InvalidUserName {
        name: new_name.to_string(),
        reason,
    })?;
    if current.name == *new_name {
        return Ok(vec![]);
    }
    if state.user_by_name(new_name).is_some() {
        return Err(Rejection::UserNameTaken(new_name.to_string()));
    }
    Ok(vec![Event::UserRenamed {
        id: *id,
        name: new_name.to_string(),
    }])
}

/// Refused while the user owns nodes, unless `force` deletes them first.
pub(super) fn delete(state: &State, id: &UserId, force: &bool) -> Result<Vec<Event>, Rejection> {
    let found = user(state, *id)?;
    super::user_roles::deletable(state, *id)?;
    let owned: Vec<NodeId> = state.nodes_of_user(*id).map(|n| n.id).collect();
    if !owned.is_empty() && !force {
        return Err(Rejection::UserHasNodes {
            name: found.name.clone(),
            count: owned.len(),
        });
    }
    let mut events: Vec<Event> = owned
        .into_iter()
        .map(|id| Event::NodeDeleted { id })
        .collect();
    events.push(Event::UserDeleted { id: *id });
    Ok(events)
}
