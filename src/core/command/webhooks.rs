//! Webhook endpoints managed through the CLI/API: the rules for adding and removing one (a
//! valid http(s) URL, known event types, at most `MAX_WEBHOOKS`), and the catalog of webhook
//! event types. Tailscale's names are used where Tailscale has the event (`nodeCreated`,
//! `nodeNeedsApproval`, `nodeApproved`, `nodeKeyExpired`, `nodeKeyExpiringInOneDay`, `nodeDeleted`, `policyUpdate`,
//! `userCreated`, `userDeleted`); the rest are ours, in the same style. The signing secret
//! never reaches the core: the shell keeps it in a file.

use super::Rejection;
use crate::core::event::Event;
use crate::core::state::State;

/// At most this many CLI/API-managed endpoints (each has a delivery worker and a cursor).
pub const MAX_WEBHOOKS: usize = 20;
/// The longest endpoint URL accepted.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// Accepted as the only type: every type in [`WEBHOOK_KINDS`].
pub const ALL_KINDS: &str = "*";

/// Every webhook event type we send. The first ones are Tailscale's names and meanings;
/// `test` is only sent by `webhooks test` and cannot be subscribed to.
pub const WEBHOOK_KINDS: &[&str] = &[
    // Tailscale's.
    "nodeCreated",
    "nodeNeedsApproval",
    "nodeApproved",
    "nodeKeyExpired",
    "nodeKeyExpiringInOneDay",
    "nodeDeleted",
    "policyUpdate",
    "userCreated",
    "userDeleted",
    "userRoleUpdated",
    // Ours.
    "nodeRenamed",
    "nodeTagsUpdated",
    "nodeUserChanged",
    "nodeRoutesApproved",
    "nodeReauthenticated",
    "nodeKeyExpiryChanged",
    "userRenamed",
    "preAuthKeyCreated",
    "preAuthKeyExpired",
    "preAuthKeyDeleted",
    "apiKeyCreated",
    "apiKeyExpired",
    "apiKeyDeleted",
    "configChanged",
    "oidcLoginRefused",
    "webhookCreated",
    "webhookDeleted",
];

/// Checks a list of event types: each known (or `*` alone), at least one, no duplicates
/// kept. Returns them in the order given, de-duplicated.
pub fn check_kinds(kinds: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for kind in kinds {
        let kind = kind.trim();
        if kind.is_empty() {
            continue;
        }
        if kind != ALL_KINDS && !WEBHOOK_KINDS.contains(&kind) {
            return Err(format!(
                "unknown webhook event type {kind:?}; known types: {} (or {ALL_KINDS} for all)",
                WEBHOOK_KINDS.join(", ")
            ));
        }
        if !out.iter().any(|k| k == kind) {
            out.push(kind.to_string());
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no webhook event types given; known types: {} (or {ALL_KINDS} for all)",
            WEBHOOK_KINDS.join(", ")
        ));
    }
    if out.len() > 1 && out.iter().any(|k| k == ALL_KINDS) {
        return Err(format!("{ALL_KINDS} means every type: give it alone"));
    }
    Ok(out)
}

/// Whether an endpoint subscribed to `kinds` receives events of type `kind`.
pub fn wants(kinds: &[String], kind: &str) -> bool {
    kinds.iter().any(|k| k == ALL_KINDS || k == kind)
}

/// Checks an endpoint URL: `http://` or `https://`, a host, no spaces or control
/// characters, at most [`MAX_WEBHOOK_URL_LEN`] bytes.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_WEBHOOK_URL_LEN {
        return Err(format!(
            "webhook URL is {} bytes long; at most {MAX_WEBHOOK_URL_LEN} are accepted",
            url.len()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "webhook URL {:?} contains spaces or control characters",
            url.escape_debug().to_string()
        ));
    }
    let lower = url.to_ascii_lowercase();
    let rest = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .ok_or_else(|| format!("webhook URL {url:?} must start with http:// or https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("webhook URL {url:?} has no host"));
    }
    Ok(())
}

pub(super) fn create(state: &State, url: &str, kinds: &[String]) -> Result<Vec<Event>, Rejection> {
    let url = url.trim();
    check_url(url).map_err(Rejection::InvalidWebhook)?;
    let kinds = check_kinds(kinds).map_err(Rejection::InvalidWebhook)?;
    if state.webhooks.endpoints.len() >= MAX_WEBHOOKS {
        return Err(Rejection::TooManyWebhooks(MAX_WEBHOOKS));
    }
    Ok(vec![Event::WebhookCreated {
        id: state.webhooks.next_id,
        url: url.to_string(),
        kinds,
    }])
}

pub(super) fn delete(state: &State, id: u64) -> Result<Vec<Event>, Rejection> {
    if !state.webhooks.endpoints.contains_key(&id) {
        return Err(Rejection::WebhookNotFound(id.to_string()));
    }
    Ok(vec![Event::WebhookDeleted { id }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::{decide, Command};
    use crate::core::event::Envelope;
    use crate::core::time::Timestamp;
    use crate::core::Actor;

    fn kinds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(check_url("https://example.com/hook").is_ok());
        assert!(check_url("http://127.0.0.1:8080").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("https://a b").is_err());
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(3000))).is_err());
    }

    #[test]
    fn unknown_types_are_named_with_the_known_ones() {
        let err = check_kinds(&kinds(&["nodeCreated", "nodeExploded"])).unwrap_err();
        assert!(
            err.contains("\"nodeExploded\"") && err.contains("policyUpdate"),
            "{err}"
        );
        assert_eq!(
            check_kinds(&kinds(&["nodeCreated", "nodeCreated"])).unwrap(),
            kinds(&["nodeCreated"])
        );
        assert!(check_kinds(&[]).is_err());
        assert!(check_kinds(&kinds(&["*", "nodeCreated"])).is_err());
        assert!(wants(&kinds(&["*"]), "userCreated"));
        assert!(!wants(&kinds(&["nodeCreated"]), "userCreated"));
    }

    #[test]
    fn create_and_delete_fold_into_the_state_with_a_limit() {
        let mut state = State::default();
        let now = Timestamp(1_000);
        for i in 0..MAX_WEBHOOKS {
            let command = Command::CreateWebhook {
                url: format!("https://example.com/{i}"),
                kinds: kinds(&["*"]),
            };
            for event in decide(&state, &command, now).unwrap() {
                let seq = state.last_seq + 1;
                state.apply(&Envelope {
                    seq,
                    at: now,
                    actor: Actor::LocalSocket,
                    event,
                });
            }
        }
        assert_eq!(state.webhooks.endpoints.len(), MAX_WEBHOOKS);
        let more = Command::CreateWebhook {
            url: "https://example.com/x".into(),
            kinds: kinds(&["*"]),
        };
        assert_eq!(
            decide(&state, &more, now),
            Err(Rejection::TooManyWebhooks(MAX_WEBHOOKS))
        );
        let events = decide(&state, &Command::DeleteWebhook { id: 1 }, now).unwrap();
        let seq = state.last_seq + 1;
        state.apply(&Envelope {
            seq,
            at: now,
            actor: Actor::LocalSocket,
            event: events[0].clone(),
        });
        assert!(!state.webhooks.endpoints.contains_key(&1));
        assert!(matches!(
            decide(&state, &Command::DeleteWebhook { id: 1 }, now),
            Err(Rejection::WebhookNotFound(_))
        ));
        // Ids are never reused.
        let events = decide(&state, &more, now).unwrap();
        assert!(
            matches!(events[0], Event::WebhookCreated { id, .. } if id == MAX_WEBHOOKS as u64 + 1)
        );
    }
}
