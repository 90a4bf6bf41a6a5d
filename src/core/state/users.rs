//! The projection of the user events: creation, profile, renames, deletion (a user's
//! pre-auth keys go with it), imports and identity links.
//! `State::apply_event` routes each of these events here (its match stays exhaustive); every
//! arm keeps the derived index in step with the maps.

use super::{Identity, State, User};
use crate::core::event::Event;
use crate::core::ids::PreAuthKeyId;
use crate::core::time::Timestamp;

impl State {
    /// Folds one of this aggregate's events in (`apply_event` routes only those here).
    pub(super) fn apply_users_event(&mut self, event: &Event, at: Timestamp) {
        match event {
            Event::UserCreated {
                id,
                name,
                display_name,
                email,
            } => {
                self.next_ids.user = self.next_ids.user.max(id.0.saturating_add(1));
                if let Some(old) = self.users.get(id) {
                    self.index.user_names.remove(&(old.name.clone(), *id));
                }
                self.index.user_names.insert((name.clone(), *id));
                self.users.insert(
                    *id,
                    User {
                        id: *id,
                        name: name.clone(),
                        display_name: display_name.clone(),
                        email: email.clone(),
                        created_at: at,
                        picture_url: String::new(),
                    },
                );
            }
            Event::UserProfileChanged {
                id,
                display_name,
                email,
                picture_url,
            } => {
                if let Some(user) = self.users.get_mut(id) {
                    user.display_name = display_name.clone();
                    user.email = email.clone();
                    user.picture_url = picture_url.clone();
                }
            }
            Event::UserRenamed { id, name } => {
                if let Some(user) = self.users.get_mut(id) {
                    self.index.user_names.remove(&(user.name.clone(), *id));
                    self.index.user_names.insert((name.clone(), *id));
                    user.name = name.clone();
                }
            }
            Event::UserDeleted { id } => {
                if let Some(user) = self.users.remove(id) {
                    self.index.user_names.remove(&(user.name, *id));
                }
                self.extras.identities.remove(id);
                // A deleted user's keys can never register anything again; they go with it.
                let owned: Vec<PreAuthKeyId> = self
                    .pre_auth_keys
                    .values()
                    .filter(|k| k.user == Some(*id))
                    .map(|k| k.id)
                    .collect();
                for key in owned {
                    self.remove_pre_auth_key(key);
                }
            }
            Event::UserImported(user) => self.apply_user_imported(user),
            Event::UserIdentityLinked {
                id,
                provider,
                provider_identifier,
            } if self.users.contains_key(id) => {
                self.extras.identities.insert(
                    *id,
                    Identity {
                        provider: provider.clone(),
                        provider_identifier: provider_identifier.clone(),
                    },
                );
            }
            // A link to a user that is gone links nothing; other events are not routed here.
            _ => {}
        }
    }

    pub(super) fn apply_user_imported(&mut self, user: &crate::core::event::ImportedUser) {
        let id = user.id;
        self.next_ids.user = self.next_ids.user.max(id.0.saturating_add(1));
        if let Some(old) = self.users.get(&id) {
            self.index.user_names.remove(&(old.name.clone(), id));
        }
        self.index.user_names.insert((user.name.clone(), id));
        self.users.insert(
            id,
            User {
                id,
                name: user.name.clone(),
                display_name: user.display_name.clone(),
                email: user.email.clone(),
                created_at: user.created_at,
                picture_url: user.picture_url.clone(),
            },
        );
        if user.provider.is_empty() && user.provider_identifier.is_empty() {
            self.extras.identities.remove(&id);
        } else {
            self.extras.identities.insert(
                id,
                Identity {
                    provider: user.provider.clone(),
                    provider_identifier: user.provider_identifier.clone(),
                },
            );
        }
    }
}
