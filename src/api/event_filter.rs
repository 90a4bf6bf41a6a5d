//! Which events a `/api/v1/events` query selects: by type, by the node or user they are
//! about, and by who did them (`actor`).

use super::history::EventsQuery;
use super::{ApiContext, ApiError};
use crate::core::event::Event;
use crate::core::ids::{ApiKeyId, NodeId, UserId};
use crate::core::Actor;

/// A query's selection; an event must pass every part that is set.
pub(super) struct EventFilter {
    kinds: Option<Vec<String>>,
    node: Option<NodeId>,
    user: Option<UserId>,
    actor: Option<ActorFilter>,
}

/// Who did it, as `--actor` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActorFilter {
    System,
    /// Any admin: the local socket or any API key.
    Admin,
    LocalSocket,
    ApiKey(ApiKeyId),
    Node(NodeId),
    /// A registering machine, by the start of its key's hex (`mkey:` optional).
    Machine(String),
    /// Anyone logged in through OIDC, or one `issuer/subject` identity.
    Oidc(Option<String>),
}

const ACTOR_FORMS: &str =
    "system, admin, socket, apikey:<id>, node:<id>, machine:<key prefix>, oidc or oidc:<issuer/subject>";

impl ActorFilter {
    /// Parses `--actor`; the error lists the accepted forms.
    pub fn parse(text: &str) -> Result<ActorFilter, String> {
        let text = text.trim();
        let (kind, rest) = match text.split_once(':') {
            Some((kind, rest)) => (kind, Some(rest.trim())),
            None => (text, None),
        };
        let id = |rest: Option<&str>| rest.and_then(|r| r.parse::<u64>().ok());
        let parsed = match (kind.to_ascii_lowercase().as_str(), rest) {
            ("system", None) => Some(ActorFilter::System),
            ("admin", None) => Some(ActorFilter::Admin),
            ("socket" | "local", None) => Some(ActorFilter::LocalSocket),
            ("apikey" | "api-key", r) => id(r).map(|i| ActorFilter::ApiKey(ApiKeyId(i))),
            ("node", r) => id(r).map(|i| ActorFilter::Node(NodeId(i))),
            ("machine", Some(r)) => {
                let hex = r.strip_prefix("mkey:").unwrap_or(r).to_ascii_lowercase();
                (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then_some(ActorFilter::Machine(hex))
            }
            ("oidc", None) => Some(ActorFilter::Oidc(None)),
            // The identity itself contains ':' (`https://issuer/subject`): keep all of it.
            ("oidc", Some(_)) => Some(ActorFilter::Oidc(Some(text[5..].trim().to_string())))
                .filter(|f| !matches!(f, ActorFilter::Oidc(Some(i)) if i.is_empty())),
            _ => None,
        };
        parsed.ok_or_else(|| format!("invalid actor {text:?}: expected {ACTOR_FORMS}"))
    }

    pub fn matches(&self, actor: &Actor) -> bool {
        match (self, actor) {
            (ActorFilter::System, Actor::System) => true,
            (ActorFilter::Admin, Actor::LocalSocket | Actor::ApiKey(_)) => true,
            (ActorFilter::LocalSocket, Actor::LocalSocket) => true,
            (ActorFilter::ApiKey(want), Actor::ApiKey(id)) => want == id,
            (ActorFilter::Node(want), Actor::Node(id)) => want == id,
            (ActorFilter::Machine(prefix), Actor::Machine(key)) => {
                hex::encode(key.0).starts_with(prefix.as_str())
            }
            (ActorFilter::Oidc(None), Actor::Oidc(_)) => true,
            (ActorFilter::Oidc(Some(want)), Actor::Oidc(identity)) => want == identity,
            _ => false,
        }
    }
}

impl EventFilter {
    pub(super) fn from_query(
        ctx: &ApiContext,
        query: &EventsQuery,
    ) -> Result<EventFilter, ApiError> {
        let kinds: Option<Vec<String>> = query.kind.as_deref().filter(|k| !k.is_empty()).map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        });
        if let Some(kinds) = &kinds {
            if let Some(bad) = kinds.iter().find(|k| !Event::KINDS.contains(&k.as_str())) {
                return Err(ApiError::BadRequest(format!(
                    "unknown event type {bad:?}; known types: {}",
                    Event::KINDS.join(", ")
                )));
            }
        }
        let user = match query.user.as_deref().filter(|u| !u.is_empty()) {
            // A deleted user can still be named by id: their history outlives them.
            Some(text) => match text.parse::<u64>() {
                Ok(id) => Some(UserId(id)),
                Err(_) => Some(super::nodes::find_user(&*ctx.state_at(None)?, text)?),
            },
            None => None,
        };
        let actor = query
            .actor
            .as_deref()
            .filter(|a| !a.trim().is_empty())
            .map(ActorFilter::parse)
            .transpose()
            .map_err(ApiError::BadRequest)?;
        Ok(EventFilter {
            kinds,
            node: query.node.map(NodeId),
            user,
            actor,
        })
    }

    /// Every set part passes.
    pub(super) fn matches(&self, actor: &Actor, event: &Event) -> bool {
        if self
            .kinds
            .as_ref()
            .is_some_and(|k| !k.iter().any(|k| k == event.kind()))
        {
            return false;
        }
        if self.node.is_some_and(|n| event.node() != Some(n)) {
            return false;
        }
        if self.actor.as_ref().is_some_and(|a| !a.matches(actor)) {
            return false;
        }
        self.user.is_none() || event.user() == self.user
    }

    /// Everything (tests).
    #[cfg(test)]
    pub(super) const ALL: EventFilter = EventFilter {
        kinds: None,
        node: None,
        user: None,
        actor: None,
    };

    /// Only by type (tests).
    #[cfg(test)]
    pub(super) fn only(kind: &str) -> EventFilter {
        EventFilter {
            kinds: Some(vec![kind.to_string()]),
            node: None,
            user: None,
            actor: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::MachineKey;

    #[test]
    fn actors_parse_in_every_documented_form() {
        assert_eq!(ActorFilter::parse("system"), Ok(ActorFilter::System));
        assert_eq!(ActorFilter::parse("Admin"), Ok(ActorFilter::Admin));
        assert_eq!(ActorFilter::parse("socket"), Ok(ActorFilter::LocalSocket));
        assert_eq!(
            ActorFilter::parse("apikey:3"),
            Ok(ActorFilter::ApiKey(ApiKeyId(3)))
        );
        assert_eq!(
            ActorFilter::parse("node:12"),
            Ok(ActorFilter::Node(NodeId(12)))
        );
        assert_eq!(
            ActorFilter::parse("machine:mkey:AB12"),
            Ok(ActorFilter::Machine("ab12".into()))
        );
        assert_eq!(ActorFilter::parse("oidc"), Ok(ActorFilter::Oidc(None)));
        assert_eq!(
            ActorFilter::parse("oidc:https://id.example/1234"),
            Ok(ActorFilter::Oidc(Some("https://id.example/1234".into())))
        );
        for bad in ["", "root", "node:x", "apikey", "machine:zz", "oidc:"] {
            let error = ActorFilter::parse(bad).unwrap_err();
            assert!(error.contains("apikey:<id>"), "{bad}: {error}");
        }
    }

    #[test]
    fn admin_matches_the_socket_and_every_api_key_but_nothing_else() {
        let admin = ActorFilter::Admin;
        assert!(admin.matches(&Actor::LocalSocket));
        assert!(admin.matches(&Actor::ApiKey(ApiKeyId(7))));
        assert!(!admin.matches(&Actor::System));
        assert!(!admin.matches(&Actor::Node(NodeId(1))));
        let machine = ActorFilter::Machine("0102".into());
        let mut key = [0u8; 32];
        key[0] = 1;
        key[1] = 2;
        assert!(machine.matches(&Actor::Machine(MachineKey(key))));
        assert!(!ActorFilter::Machine("03".into()).matches(&Actor::Machine(MachineKey(key))));
    }
}
