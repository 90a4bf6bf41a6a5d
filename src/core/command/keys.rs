//! Pre-auth keys and API keys: creation (with their lifetime rules), expiry and deletion.
//! Secrets arrive hashed; the events carry only the hash and the display prefix.

use super::{checked_tags, user, Rejection, PRE_AUTH_KEY_MAX_LIFETIME};
use crate::core::event::Event;
use crate::core::ids::{ApiKeyId, PreAuthKeyId, UserId};
use crate::core::keys::Digest;
use crate::core::state::State;
use crate::core::time::Timestamp;

/// A key needs an owner or tags, and lives between now and 90 days from now.
/// The arguments are `Command::CreatePreAuthKey`'s fields.
#[allow(clippy::too_many_arguments)]
pub(super) fn create_pre_auth_key(
    state: &State,
    now: Timestamp,
    owner: &Option<UserId>,
    reusable: &bool,
    ephemeral: &bool,
    pre_approved: &bool,
    tags: &[String],
    expiration: &Timestamp,
    prefix: &str,
    secret_hash: &Digest,
) -> Result<Vec<Event>, Rejection> {
    if let Some(owner) = owner {
        user(state, *owner)?;
    }
    let tags = checked_tags(tags)?;
    if owner.is_none() && tags.is_empty() {
        return Err(Rejection::PreAuthKeyNeedsOwner);
    }
    if *expiration <= now {
        return Err(Rejection::ExpirationInPast(*expiration));
    }
    if *expiration > now.plus(PRE_AUTH_KEY_MAX_LIFETIME) {
        return Err(Rejection::ExpirationTooFar(*expiration));
    }
    Ok(vec![Event::PreAuthKeyCreated {
        id: PreAuthKeyId(state.next_ids.pre_auth_key),
        user: *owner,
        prefix: prefix.to_string(),
        secret_hash: *secret_hash,
        reusable: *reusable,
        ephemeral: *ephemeral,
        pre_approved: *pre_approved,
        tags,
        expiration: *expiration,
    }])
}

pub(super) fn expire_pre_auth_key(
    state: &State,
    id: &PreAuthKeyId,
    now: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    let key = state
        .pre_auth_keys
        .get(id)
        .ok_or_else(|| Rejection::PreAuthKeyNotFound(id.to_string()))?;
    if key.is_expired(now) {
        return Ok(vec![]);
    }
    Ok(vec![Event::PreAuthKeyExpired { id: *id, at: now }])
}

pub(super) fn delete_pre_auth_key(
    state: &State,
    id: &PreAuthKeyId,
) -> Result<Vec<Event>, Rejection> {
    if !state.pre_auth_keys.contains_key(id) {
        return Err(Rejection::PreAuthKeyNotFound(id.to_string()));
    }
    Ok(vec![Event::PreAuthKeyDeleted { id: *id }])
}

pub(super) fn create_api_key(
    state: &State,
    now: Timestamp,
    expiration: &Timestamp,
    prefix: &str,
    secret_hash: &Digest,
) -> Result<Vec<Event>, Rejection> {
    if *expiration <= now {
        return Err(Rejection::ExpirationInPast(*expiration));
    }
    Ok(vec![Event::ApiKeyCreated {
        id: ApiKeyId(state.next_ids.api_key),
        prefix: prefix.to_string(),
        secret_hash: *secret_hash,
        expiration: *expiration,
    }])
}

pub(super) fn expire_api_key(
    state: &State,
    id: &ApiKeyId,
    now: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    let key = state
        .api_keys
        .get(id)
        .ok_or_else(|| Rejection::ApiKeyNotFound(id.to_string()))?;
    if key.expiration <= now {
        return Ok(vec![]);
    }
    Ok(vec![Event::ApiKeyExpired { id: *id, at: now }])
}

pub(super) fn delete_api_key(state: &State, id: &ApiKeyId) -> Result<Vec<Event>, Rejection> {
    if !state.api_keys.contains_key(id) {
        return Err(Rejection::ApiKeyNotFound(id.to_string()));
    }
    Ok(vec![Event::ApiKeyDeleted { id: *id }])
}
