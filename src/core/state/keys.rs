//! The projection of the pre-auth key and API key events: creation, use, expiry,
//! deletion and imports.
//! `State::apply_event` routes each of these events here (its match stays exhaustive); every
//! arm keeps the derived index in step with the maps.

use super::{split_secret_hash, ApiKey, PreAuthKey, State, NEVER_EXPIRES};
use crate::core::event::Event;
use crate::core::time::Timestamp;

impl State {
    /// Folds one of this aggregate's events in (`apply_event` routes only those here).
    pub(super) fn apply_keys_event(&mut self, event: &Event, at: Timestamp) {
        match event {
            Event::PreAuthKeyCreated {
                id,
                user,
                prefix,
                secret_hash,
                reusable,
                ephemeral,
                pre_approved,
                tags,
                expiration,
            } => {
                self.next_ids.pre_auth_key = self.next_ids.pre_auth_key.max(id.0.saturating_add(1));
                self.remove_pre_auth_key(*id);
                self.index
                    .pre_auth_key_prefixes
                    .insert((prefix.clone(), *id));
                self.pre_auth_keys.insert(
                    *id,
                    PreAuthKey {
                        id: *id,
                        user: *user,
                        prefix: prefix.clone(),
                        secret_hash: *secret_hash,
                        reusable: *reusable,
                        ephemeral: *ephemeral,
                        pre_approved: *pre_approved,
                        tags: tags.clone(),
                        created_at: at,
                        expiration: *expiration,
                        used: false,
                        used_by: None,
                    },
                );
            }
            Event::PreAuthKeyUsed { id, node } => {
                if let Some(key) = self.pre_auth_keys.get_mut(id) {
                    key.used = true;
                    key.used_by = Some(*node);
                }
            }
            Event::PreAuthKeyExpired { id, at } => {
                if let Some(key) = self.pre_auth_keys.get_mut(id) {
                    key.expiration = key.expiration.min(*at);
                }
            }
            Event::PreAuthKeyDeleted { id } => {
                self.remove_pre_auth_key(*id);
            }
            Event::ApiKeyCreated {
                id,
                prefix,
                secret_hash,
                expiration,
            } => {
                self.next_ids.api_key = self.next_ids.api_key.max(id.0.saturating_add(1));
                if let Some(old) = self.api_keys.remove(id) {
                    self.index.api_key_prefixes.remove(&(old.prefix, *id));
                }
                self.extras.api_key_hashes.remove(id);
                self.index.api_key_prefixes.insert((prefix.clone(), *id));
                self.api_keys.insert(
                    *id,
                    ApiKey {
                        id: *id,
                        prefix: prefix.clone(),
                        secret_hash: *secret_hash,
                        created_at: at,
                        expiration: *expiration,
                    },
                );
            }
            Event::ApiKeyExpired { id, at } => {
                if let Some(key) = self.api_keys.get_mut(id) {
                    key.expiration = key.expiration.min(*at);
                }
            }
            Event::ApiKeyDeleted { id } => {
                if let Some(old) = self.api_keys.remove(id) {
                    self.index.api_key_prefixes.remove(&(old.prefix, *id));
                }
                self.extras.api_key_hashes.remove(id);
            }
            Event::PreAuthKeyImported(key) => self.apply_pre_auth_key_imported(key),
            Event::ApiKeyImported(key) => self.apply_api_key_imported(key),
            // Other events are not routed here (`State::apply_event`).
            _ => {}
        }
    }

    pub(super) fn apply_pre_auth_key_imported(
        &mut self,
        key: &crate::core::event::ImportedPreAuthKey,
    ) {
        let id = key.id;
        self.next_ids.pre_auth_key = self.next_ids.pre_auth_key.max(id.0.saturating_add(1));
        self.remove_pre_auth_key(id);
        self.index
            .pre_auth_key_prefixes
            .insert((key.prefix.clone(), id));
        let secret_hash = split_secret_hash(&key.hash, |bcrypt| {
            self.extras.pre_auth_key_hashes.insert(id, bcrypt);
        });
        self.pre_auth_keys.insert(
            id,
            PreAuthKey {
                id,
                user: key.user,
                prefix: key.prefix.clone(),
                secret_hash,
                reusable: key.reusable,
                ephemeral: key.ephemeral,
                // headscale's keys need no approval step: they register authorised nodes.
                pre_approved: true,
                tags: key.tags.clone(),
                created_at: key.created_at,
                expiration: key.expiration.unwrap_or(NEVER_EXPIRES),
                used: key.used,
                used_by: key.used_by,
            },
        );
    }

    pub(super) fn apply_api_key_imported(&mut self, key: &crate::core::event::ImportedApiKey) {
        let id = key.id;
        self.next_ids.api_key = self.next_ids.api_key.max(id.0.saturating_add(1));
        if let Some(old) = self.api_keys.remove(&id) {
            self.index.api_key_prefixes.remove(&(old.prefix, id));
        }
        self.extras.api_key_hashes.remove(&id);
        self.index.api_key_prefixes.insert((key.prefix.clone(), id));
        let secret_hash = split_secret_hash(&key.hash, |bcrypt| {
            self.extras.api_key_hashes.insert(id, bcrypt);
        });
        self.api_keys.insert(
            id,
            ApiKey {
                id,
                prefix: key.prefix.clone(),
                secret_hash,
                created_at: key.created_at,
                expiration: key.expiration.unwrap_or(NEVER_EXPIRES),
            },
        );
    }
}
