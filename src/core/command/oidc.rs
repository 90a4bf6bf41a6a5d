//! OIDC logins: the provider vouched for someone; the allow-lists decide, then their user
//! is created (first login) or brought up to date.

use crate::core::event::Event;
use crate::core::ids::UserId;
use crate::core::state::State;

/// An OIDC login (the allow-lists, then the user's creation or update). A refusal is an
/// event too: the provider vouched for the person, so who was turned away is worth keeping.
pub(super) fn login(
    state: &State,
    claims: &crate::core::oidc::Claims,
    rules: &crate::core::oidc::LoginRules,
) -> Vec<Event> {
    use crate::core::oidc;
    let identity = claims.identifier();
    if let Err(refusal) = oidc::check(rules, claims) {
        return vec![Event::OidcLoginRefused {
            identity: oidc::cut(&identity, oidc::MAX_IDENTIFIER_BYTES),
            email: oidc::cut(&claims.email, oidc::MAX_IDENTIFIER_BYTES),
            reason: refusal.to_string(),
        }];
    }
    let profile = oidc::profile(rules, claims);
    let taken = |name: &str| state.user_by_name(name).is_some();
    let Some(existing) = state.user_by_identity(&identity) else {
        let id = UserId(state.next_ids.user);
        let mut events = vec![Event::UserCreated {
            id,
            name: oidc::fallback_name(&profile, &identity, taken),
            display_name: profile.display_name.clone(),
            email: profile.email.clone(),
        }];
        if !profile.picture_url.is_empty() {
            events.push(Event::UserProfileChanged {
                id,
                display_name: profile.display_name,
                email: profile.email,
                picture_url: profile.picture_url,
            });
        }
        events.push(Event::UserIdentityLinked {
            id,
            provider: "oidc".into(),
            provider_identifier: identity,
        });
        return events;
    };
    let mut events = Vec::new();
    // A new preferred username renames the user when it is free (headscale overwrites it;
    // names are unique here, so a taken one leaves the old name).
    if let Some(name) = profile.name.filter(|n| *n != existing.name && !taken(n)) {
        events.push(Event::UserRenamed {
            id: existing.id,
            name,
        });
    }
    // An email that cannot be trusted does not replace a known one (headscale's FromClaim).
    let email = if profile.email.is_empty() {
        existing.email.clone()
    } else {
        profile.email
    };
    if (
        &existing.display_name,
        &existing.email,
        &existing.picture_url,
    ) != (&profile.display_name, &email, &profile.picture_url)
    {
        events.push(Event::UserProfileChanged {
            id: existing.id,
            display_name: profile.display_name,
            email,
            picture_url: profile.picture_url,
        });
    }
    events
}
