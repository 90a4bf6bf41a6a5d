//! User roles (Tailscale's Owner, Admin, Network admin, IT admin, Billing admin, Auditor,
//! Member): what the policy's role autogroups name. The rules:
//! - the user must exist;
//! - giving a user the role they hold records nothing;
//! - making a user Owner while another user is Owner transfers ownership, as Tailscale's
//!   ownership transfer does: the old Owner becomes an Admin, then the new one Owner (two
//!   events, in that order, so no state ever has two Owners);
//! - once a tailnet has an Owner it keeps one ("a Tailscale organization must have an Owner"):
//!   the Owner's role changes only by a transfer, and the Owner is not deleted until the role
//!   has been transferred (`deletable`);
//! - every other change is free. A tailnet starts without an Owner (nothing here makes the
//!   first user one): roles are given by an admin, never implied.

use super::{user, Rejection};
use crate::core::event::Event;
use crate::core::ids::UserId;
use crate::core::roles::Role;
use crate::core::state::State;

pub(super) fn set_role(state: &State, id: UserId, role: Role) -> Result<Vec<Event>, Rejection> {
    let found = user(state, id)?;
    let current = state.role_of(id);
    if current == role {
        return Ok(vec![]);
    }
    if current == Role::Owner {
        return Err(Rejection::OwnerMustTransfer(found.name.clone()));
    }
    let mut events = Vec::new();
    if role == Role::Owner {
        if let Some(old) = state.owner() {
            events.push(Event::UserRoleChanged {
                id: old,
                role: Role::Admin,
            });
        }
    }
    events.push(Event::UserRoleChanged { id, role });
    Ok(events)
}

/// The Owner is deleted only after ownership went to another user.
pub(super) fn deletable(state: &State, id: UserId) -> Result<(), Rejection> {
    match state.users.get(&id) {
        Some(found) if state.role_of(id) == Role::Owner => {
            Err(Rejection::OwnerMustTransfer(found.name.clone()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::{decide, Command};
    use crate::core::event::Envelope;
    use crate::core::time::Timestamp;
    use crate::core::Actor;

    fn run(state: &mut State, command: Command) -> Result<Vec<Event>, Rejection> {
        let events = decide(state, &command, Timestamp(1_000))?;
        for event in &events {
            let envelope = Envelope {
                seq: state.last_seq + 1,
                at: Timestamp(1_000),
                actor: Actor::LocalSocket,
                event: event.clone(),
            };
            state.apply(&envelope);
        }
        Ok(events)
    }

    fn tailnet(names: &[&str]) -> State {
        let mut state = State::default();
        for name in names {
            run(
                &mut state,
                Command::CreateUser {
                    name: name.to_string(),
                    display_name: String::new(),
                    email: format!("{name}@example.com"),
                    picture_url: String::new(),
                },
            )
            .unwrap();
        }
        state
    }

    fn set(state: &mut State, id: u64, role: Role) -> Result<Vec<Event>, Rejection> {
        run(
            state,
            Command::SetUserRole {
                id: UserId(id),
                role,
            },
        )
    }

    #[test]
    fn the_user_must_exist() {
        let mut state = tailnet(&["alice"]);
        assert_eq!(
            set(&mut state, 9, Role::Admin),
            Err(Rejection::UserNotFound("9".into()))
        );
    }

    #[test]
    fn every_user_is_a_member_until_given_a_role() {
        let mut state = tailnet(&["alice"]);
        assert_eq!(state.role_of(UserId(1)), Role::Member);
        set(&mut state, 1, Role::Auditor).unwrap();
        assert_eq!(state.role_of(UserId(1)), Role::Auditor);
        set(&mut state, 1, Role::Member).unwrap();
        assert_eq!(state.role_of(UserId(1)), Role::Member);
        assert!(state.roles.is_empty(), "a Member is not stored");
    }

    #[test]
    fn the_same_role_again_records_nothing() {
        let mut state = tailnet(&["alice"]);
        set(&mut state, 1, Role::Admin).unwrap();
        assert_eq!(set(&mut state, 1, Role::Admin), Ok(vec![]));
    }

    #[test]
    fn a_new_owner_takes_over_and_the_old_one_becomes_an_admin() {
        let mut state = tailnet(&["alice", "bob"]);
        set(&mut state, 1, Role::Owner).unwrap();
        let events = set(&mut state, 2, Role::Owner).unwrap();
        assert_eq!(
            events,
            vec![
                Event::UserRoleChanged {
                    id: UserId(1),
                    role: Role::Admin
                },
                Event::UserRoleChanged {
                    id: UserId(2),
                    role: Role::Owner
                },
            ]
        );
        assert_eq!(state.owner(), Some(UserId(2)));
        assert_eq!(state.role_of(UserId(1)), Role::Admin);
    }

    #[test]
    fn the_owner_changes_role_only_by_a_transfer() {
        let mut state = tailnet(&["alice"]);
        set(&mut state, 1, Role::Owner).unwrap();
        assert_eq!(
            set(&mut state, 1, Role::Admin),
            Err(Rejection::OwnerMustTransfer("alice".into()))
        );
        assert_eq!(state.owner(), Some(UserId(1)));
    }

    #[test]
    fn the_owner_is_not_deleted_before_a_transfer() {
        let mut state = tailnet(&["alice", "bob"]);
        set(&mut state, 1, Role::Owner).unwrap();
        let delete = Command::DeleteUser {
            id: UserId(1),
            force: true,
        };
        assert_eq!(
            run(&mut state, delete.clone()),
            Err(Rejection::OwnerMustTransfer("alice".into()))
        );
        set(&mut state, 2, Role::Owner).unwrap();
        run(&mut state, delete).unwrap();
        assert_eq!(state.roles.len(), 1, "alice's role went with her");
    }
}
