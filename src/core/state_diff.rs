//! What changed between two points of the log: two `State`s (at A and at B) → a structured
//! [`StateDiff`] of users, pre-auth keys, API keys, nodes (names, owners, tags, addresses,
//! expiry, approval, announced and approved routes), the core config and the policy (a
//! unified text diff), each change with the events of (A, B] that touched that entity
//! ([`Attribution`], fed one envelope at a time so the caller never holds the range).
//!
//! Entities are compared by their facts at A and at B, not by replaying what happened in
//! between: something changed and changed back does not appear. Pure: no I/O, no clock.

use crate::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use crate::core::state::{Node, State};
use crate::core::{Envelope, Event};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The thing an event is about, as the diff groups changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    User(UserId),
    PreAuthKey(PreAuthKeyId),
    ApiKey(ApiKeyId),
    Node(NodeId),
    Policy,
    Config,
}

/// What `event` changes (an event about a node that names its owner is about the node,
/// not the user: moving a node does not change the user).
pub fn subject(event: &Event) -> Option<Subject> {
    Some(match event {
        Event::UserCreated { id, .. }
        | Event::UserRenamed { id, .. }
        | Event::UserDeleted { id }
        | Event::UserProfileChanged { id, .. }
        | Event::UserIdentityLinked { id, .. }
        | Event::UserRoleChanged { id, .. } => Subject::User(*id),
        Event::UserImported(user) => Subject::User(user.id),
        Event::PreAuthKeyCreated { id, .. }
        | Event::PreAuthKeyUsed { id, .. }
        | Event::PreAuthKeyExpired { id, .. }
        | Event::PreAuthKeyDeleted { id } => Subject::PreAuthKey(*id),
        Event::PreAuthKeyImported(key) => Subject::PreAuthKey(key.id),
        Event::ApiKeyCreated { id, .. }
        | Event::ApiKeyExpired { id, .. }
        | Event::ApiKeyDeleted { id } => Subject::ApiKey(*id),
        Event::ApiKeyImported(key) => Subject::ApiKey(key.id),
        Event::PolicyReplaced { .. } => Subject::Policy,
        Event::ConfigApplied { .. } => Subject::Config,
        other => Subject::Node(other.node()?),
    })
}

/// One event responsible for a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRef {
    /// A decimal string, like every seq of the API.
    pub seq: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub actor: String,
    pub at: String,
}

/// The events of a range grouped by subject, fed in order.
#[derive(Debug, Default, Clone)]
pub struct Attribution {
    by_subject: BTreeMap<Subject, Vec<EventRef>>,
    count: u64,
}

impl Attribution {
    pub fn note(&mut self, envelope: &Envelope) {
        self.count += 1;
        if let Some(subject) = subject(&envelope.event) {
            self.by_subject.entry(subject).or_default().push(EventRef {
                seq: envelope.seq.to_string(),
                kind: envelope.event.kind().to_string(),
                actor: envelope.actor.to_string(),
                at: envelope.at.to_rfc3339(),
            });
        }
    }

    fn of(&self, subject: Subject) -> Vec<EventRef> {
        self.by_subject.get(&subject).cloned().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Change {
    Added,
    Removed,
    Changed,
}

/// One fact of an entity at A (`from`) and at B (`to`); `null` where it did not exist.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Value,
    pub to: Value,
}

/// One entity that differs between A and B.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EntityChange {
    pub change: Change,
    /// The entity's id (a decimal string).
    pub id: String,
    /// Its name (user, node) or prefix (keys), at B if it exists there, else at A.
    pub name: String,
    /// The facts that differ (for an added or removed entity: all of them).
    pub fields: Vec<FieldChange>,
    /// The events of (A, B] about it; empty when the range was too long to list them.
    pub events: Vec<EventRef>,
}

/// The policy document between A and B.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyChange {
    pub change: Change,
    /// A unified diff of the two texts (`--- seq A` / `+++ seq B`).
    pub unified: String,
    pub events: Vec<EventRef>,
}

/// Everything that differs between two points.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateDiff {
    pub from: String,
    pub to: String,
    pub from_at: String,
    pub to_at: String,
    /// Events in (A, B].
    pub event_count: u64,
    /// False when the range was too long to attribute changes to events.
    pub events_listed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub users: Vec<EntityChange>,
    pub pre_auth_keys: Vec<EntityChange>,
    pub api_keys: Vec<EntityChange>,
    pub nodes: Vec<EntityChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyChange>,
}

impl StateDiff {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.pre_auth_keys.is_empty()
            && self.api_keys.is_empty()
            && self.nodes.is_empty()
            && self.config.is_empty()
            && self.policy.is_none()
    }
}

type Facts = BTreeMap<&'static str, Value>;

/// A user as `state` names it, compared by id (a renamed owner is not a changed node).
fn owner(state: &State, user: Option<UserId>) -> Value {
    match user {
        Some(id) => json!({
            "id": id.0.to_string(),
            "name": state.users.get(&id).map(|u| u.name.clone()).unwrap_or_default(),
        }),
        None => Value::Null,
    }
}

fn node_facts(state: &State, node: &Node) -> (String, Facts) {
    let addresses: Vec<String> = node
        .ipv4
        .map(|a| a.to_string())
        .into_iter()
        .chain(node.ipv6.map(|a| a.to_string()))
        .collect();
    let facts = Facts::from([
        ("name", json!(node.given_name)),
        ("hostname", json!(node.hostinfo.hostname)),
        ("owner", owner(state, node.user)),
        ("tags", json!(node.tags)),
        ("addresses", json!(addresses)),
        ("nodeKey", json!(node.node_key.to_string())),
        ("expiry", json!(node.expiry.map(|t| t.to_rfc3339()))),
        ("approved", json!(node.authorized)),
        (
            "announcedRoutes",
            json!(node
                .hostinfo
                .advertised_routes
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()),
        ),
        (
            "approvedRoutes",
            json!(node
                .approved_routes
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()),
        ),
        ("ephemeral", json!(node.ephemeral)),
    ]);
    (node.given_name.clone(), facts)
}

/// Whether two facts are the same; owners by id only.
fn same(field: &str, a: &Value, b: &Value) -> bool {
    if field == "owner" || field == "user" {
        return a.get("id") == b.get("id");
    }
    a == b
}

/// The changes between two maps of entities (id → name and facts), each with its events.
fn compare<K: Ord + Copy>(
    from: BTreeMap<K, (String, Facts)>,
    mut to: BTreeMap<K, (String, Facts)>,
    id: impl Fn(K) -> u64,
    subject: impl Fn(K) -> Subject,
    events: Option<&Attribution>,
) -> Vec<EntityChange> {
    let mut out = Vec::new();
    let events_of = |key: K| events.map(|e| e.of(subject(key))).unwrap_or_default();
    for (key, (name_a, facts_a)) in from {
        let (change, name, fields) = match to.remove(&key) {
            Some((name_b, facts_b)) => {
                let fields: Vec<FieldChange> = facts_b
                    .iter()
                    .filter(|(field, value)| {
                        !same(field, facts_a.get(*field).unwrap_or(&Value::Null), value)
                    })
                    .map(|(field, value)| FieldChange {
                        field: field.to_string(),
                        from: facts_a.get(field).cloned().unwrap_or(Value::Null),
                        to: value.clone(),
                    })
                    .collect();
                if fields.is_empty() {
                    continue;
                }
                (Change::Changed, name_b, fields)
            }
            None => (
                Change::Removed,
                name_a,
                facts_a
                    .into_iter()
                    .map(|(field, value)| FieldChange {
                        field: field.to_string(),
                        from: value,
                        to: Value::Null,
                    })
                    .collect(),
            ),
        };
        out.push(EntityChange {
            change,
            id: id(key).to_string(),
            name,
            fields,
            events: events_of(key),
        });
    }
    for (key, (name, facts)) in to {
        out.push(EntityChange {
            change: Change::Added,
            id: id(key).to_string(),
            name,
            fields: facts
                .into_iter()
                .map(|(field, value)| FieldChange {
                    field: field.to_string(),
                    from: Value::Null,
                    to: value,
                })
                .collect(),
            events: events_of(key),
        });
    }
    out.sort_by_key(|change| change.id.parse::<u64>().unwrap_or(u64::MAX));
    out
}

fn users(state: &State) -> BTreeMap<UserId, (String, Facts)> {
    state
        .users
        .values()
        .map(|u| {
            let facts = Facts::from([
                ("name", json!(u.name)),
                ("displayName", json!(u.display_name)),
                ("email", json!(u.email)),
                ("pictureUrl", json!(u.picture_url)),
                ("role", json!(state.role_of(u.id).name())),
            ]);
            (u.id, (u.name.clone(), facts))
        })
        .collect()
}

fn pre_auth_keys(state: &State) -> BTreeMap<PreAuthKeyId, (String, Facts)> {
    state
        .pre_auth_keys
        .values()
        .map(|k| {
            let facts = Facts::from([
                ("user", owner(state, k.user)),
                ("reusable", json!(k.reusable)),
                ("ephemeral", json!(k.ephemeral)),
                ("preApproved", json!(k.pre_approved)),
                ("tags", json!(k.tags)),
                ("expiration", json!(k.expiration.to_rfc3339())),
                ("used", json!(k.used)),
            ]);
            (k.id, (k.prefix.clone(), facts))
        })
        .collect()
}

fn api_keys(state: &State) -> BTreeMap<ApiKeyId, (String, Facts)> {
    state
        .api_keys
        .values()
        .map(|k| {
            let facts = Facts::from([("expiration", json!(k.expiration.to_rfc3339()))]);
            (k.id, (k.prefix.clone(), facts))
        })
        .collect()
}

fn nodes(state: &State) -> BTreeMap<NodeId, (String, Facts)> {
    state
        .nodes
        .values()
        .map(|n| (n.id, node_facts(state, n)))
        .collect()
}

/// The core config's fields that differ (addresses, domain, expiry defaults, approval).
fn config(from: &State, to: &State) -> Vec<FieldChange> {
    let as_map = |state: &State| match serde_json::to_value(&state.config.core) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_map(from), as_map(to));
    let mut fields: Vec<FieldChange> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| FieldChange {
            field: k.clone(),
            from: a.get(k).cloned().unwrap_or(Value::Null),
            to: v.clone(),
        })
        .collect();
    if fields.is_empty() && from.config.netmap_json != to.config.netmap_json {
        fields.push(FieldChange {
            field: "netmap settings (DNS, DERP, ...)".into(),
            from: json!(from.config.hash.to_hex()),
            to: json!(to.config.hash.to_hex()),
        });
    }
    fields
}

fn policy(from: &State, to: &State, events: Option<&Attribution>) -> Option<PolicyChange> {
    let a = from.policy.as_ref().map(|p| p.text.as_str());
    let b = to.policy.as_ref().map(|p| p.text.as_str());
    let change = match (a, b) {
        (None, None) => return None,
        (Some(a), Some(b)) if a == b => return None,
        (None, Some(_)) => Change::Added,
        (Some(_), None) => Change::Removed,
        (Some(_), Some(_)) => Change::Changed,
    };
    let (a, b) = (a.unwrap_or(""), b.unwrap_or(""));
    let unified = similar::TextDiff::from_lines(a, b)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("policy at seq {}", from.last_seq),
            &format!("policy at seq {}", to.last_seq),
        )
        .to_string();
    Some(PolicyChange {
        change,
        unified,
        events: events.map(|e| e.of(Subject::Policy)).unwrap_or_default(),
    })
}

/// The diff from `from` (the state at A) to `to` (at B), with `events` (the envelopes of
/// (A, B], fed to an [`Attribution`]) when the caller could afford to read them.
pub fn diff(from: &State, to: &State, events: Option<&Attribution>) -> StateDiff {
    let mut config = config(from, to);
    if config.is_empty() && from.config.hash != to.config.hash {
        config.push(FieldChange {
            field: "hash".into(),
            from: json!(from.config.hash.to_hex()),
            to: json!(to.config.hash.to_hex()),
        });
    }
    StateDiff {
        from: from.last_seq.to_string(),
        to: to.last_seq.to_string(),
        from_at: from.last_at.to_rfc3339(),
        to_at: to.last_at.to_rfc3339(),
        event_count: to.last_seq.saturating_sub(from.last_seq),
        events_listed: events.is_some(),
        note: None,
        users: compare(users(from), users(to), |k| k.0, Subject::User, events),
        pre_auth_keys: compare(
            pre_auth_keys(from),
            pre_auth_keys(to),
            |k| k.0,
            Subject::PreAuthKey,
            events,
        ),
        api_keys: compare(
            api_keys(from),
            api_keys(to),
            |k| k.0,
            Subject::ApiKey,
            events,
        ),
        nodes: compare(nodes(from), nodes(to), |k| k.0, Subject::Node, events),
        config,
        policy: policy(from, to, events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{NodeHostinfo, NodeRegistration, RegisterMethod};
    use crate::core::keys::{MachineKey, NodeKey};
    use crate::core::{Actor, Timestamp};

    /// Folds `events` after `state`, noting each in `seen`.
    fn fold(state: &State, events: Vec<(Actor, Event)>, seen: &mut Attribution) -> State {
        let mut state = state.clone();
        for (actor, event) in events {
            let envelope = Envelope {
                seq: state.last_seq + 1,
                at: Timestamp::from_unix_ms((state.last_seq as i64 + 1) * 1000),
                actor,
                event,
            };
            state.apply(&envelope);
            seen.note(&envelope);
        }
        state
    }

    fn user(id: u64, name: &str) -> Event {
        Event::UserCreated {
            id: UserId(id),
            name: name.into(),
            display_name: String::new(),
            email: String::new(),
        }
    }

    fn node(id: u64, user: u64) -> Event {
        Event::NodeRegistered(Box::new(NodeRegistration {
            id: NodeId(id),
            machine_key: MachineKey([id as u8; 32]),
            node_key: NodeKey([id as u8 + 50; 32]),
            user: Some(UserId(user)),
            tags: vec![],
            given_name: format!("n{id}"),
            hostinfo: NodeHostinfo::default(),
            ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, id as u8)),
            ipv6: None,
            expiry: None,
            register_method: RegisterMethod::Cli,
            auth_key: None,
            ephemeral: false,
            authorized: true,
            approved_routes: vec![],
        }))
    }

    fn base() -> State {
        let mut ignored = Attribution::default();
        fold(
            &State::default(),
            vec![
                (Actor::LocalSocket, user(1, "alice")),
                (Actor::LocalSocket, user(2, "bob")),
                (Actor::LocalSocket, node(1, 1)),
                (Actor::LocalSocket, node(2, 1)),
                (
                    Actor::LocalSocket,
                    Event::PolicyReplaced {
                        policy: "{\n  \"acls\": []\n}\n".into(),
                    },
                ),
            ],
            &mut ignored,
        )
    }

    #[test]
    fn nothing_between_equal_points() {
        let a = base();
        let d = diff(&a, &a, Some(&Attribution::default()));
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(d.event_count, 0);
    }

    #[test]
    fn added_removed_and_changed_entities_carry_their_events() {
        let a = base();
        let mut seen = Attribution::default();
        let b = fold(
            &a,
            vec![
                (Actor::LocalSocket, user(3, "carol")),
                (Actor::LocalSocket, Event::NodeDeleted { id: NodeId(2) }),
                (
                    Actor::LocalSocket,
                    Event::NodeTagsSet {
                        id: NodeId(1),
                        tags: vec!["tag:web".into()],
                    },
                ),
                (
                    Actor::LocalSocket,
                    Event::NodeRenamed {
                        id: NodeId(1),
                        given_name: "web".into(),
                        by_admin: true,
                    },
                ),
                // A renamed owner is not a changed node.
                (
                    Actor::LocalSocket,
                    Event::UserRenamed {
                        id: UserId(1),
                        name: "alicia".into(),
                    },
                ),
            ],
            &mut seen,
        );
        let d = diff(&a, &b, Some(&seen));
        assert_eq!(d.event_count, 5);
        let users: Vec<(Change, &str)> = d
            .users
            .iter()
            .map(|u| (u.change, u.name.as_str()))
            .collect();
        assert_eq!(
            users,
            vec![(Change::Changed, "alicia"), (Change::Added, "carol")]
        );
        assert_eq!(d.users[0].events[0].kind, "UserRenamed");
        assert_eq!(d.users[0].events[0].actor, "admin (local socket)");

        assert_eq!(d.nodes.len(), 2);
        let web = &d.nodes[0];
        assert_eq!((web.change, web.name.as_str()), (Change::Changed, "web"));
        let fields: Vec<&str> = web.fields.iter().map(|f| f.field.as_str()).collect();
        // Tagging makes the tags its identity: the owner goes.
        assert_eq!(fields, vec!["name", "owner", "tags"]);
        assert_eq!(web.fields[1].to, Value::Null);
        let kinds: Vec<&str> = web.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, vec!["NodeTagsSet", "NodeRenamed"]);
        assert_eq!(web.events[0].seq, "8");
        let gone = &d.nodes[1];
        assert_eq!((gone.change, gone.id.as_str()), (Change::Removed, "2"));
        assert_eq!(gone.events[0].kind, "NodeDeleted");
        assert!(d.policy.is_none());
    }

    #[test]
    fn the_policy_is_a_unified_text_diff() {
        let a = base();
        let mut seen = Attribution::default();
        let b = fold(
            &a,
            vec![(
                Actor::ApiKey(ApiKeyId(4)),
                Event::PolicyReplaced {
                    policy: "{\n  \"acls\": [1]\n}\n".into(),
                },
            )],
            &mut seen,
        );
        let policy = diff(&a, &b, Some(&seen)).policy.unwrap();
        assert_eq!(policy.change, Change::Changed);
        assert!(
            policy.unified.contains("--- policy at seq 5"),
            "{}",
            policy.unified
        );
        assert!(
            policy.unified.contains("-  \"acls\": []\n"),
            "{}",
            policy.unified
        );
        assert!(
            policy.unified.contains("+  \"acls\": [1]\n"),
            "{}",
            policy.unified
        );
        assert_eq!(policy.events[0].actor, "admin (api key 4)");
    }

    #[test]
    fn without_events_the_diff_is_the_same_and_says_so() {
        let a = base();
        let mut seen = Attribution::default();
        let b = fold(&a, vec![(Actor::LocalSocket, user(3, "carol"))], &mut seen);
        let with = diff(&a, &b, Some(&seen));
        let without = diff(&a, &b, None);
        assert!(!without.events_listed);
        assert!(without.users[0].events.is_empty());
        assert_eq!(without.users[0].fields, with.users[0].fields);
    }

    #[test]
    fn every_event_kind_has_a_subject_or_is_tailnet_wide_on_purpose() {
        // Events about no entity: the server, import summaries and refused logins.
        let none = ["ServerStarted", "Imported", "OidcLoginRefused"];
        let started = Event::ServerStarted {
            version: "x".into(),
        };
        assert_eq!(subject(&started), None);
        assert!(none.iter().all(|k| Event::KINDS.contains(k)));
        assert_eq!(
            subject(&Event::NodeApproved { id: NodeId(7) }),
            Some(Subject::Node(NodeId(7)))
        );
        assert_eq!(
            subject(&Event::PreAuthKeyUsed {
                id: PreAuthKeyId(2),
                node: NodeId(7)
            }),
            Some(Subject::PreAuthKey(PreAuthKeyId(2)))
        );
    }
}
