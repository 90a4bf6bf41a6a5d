//! What a webhook receiver is sent (pure): the log envelope → webhook events mapping and the
//! request body. Tailscale's shape: a JSON array of `{timestamp, version, type, tailnet,
//! message, data}`; we add `id` (stable across redeliveries: `<seq>`, or `<seq>-<n>` for the
//! n-th event made from one log record, n ≥ 1) and `seq`, so a receiver can de-duplicate
//! and order. Only facts in the event itself are sent (ids, names the event carries, the
//! actor): a receiver that wants more asks the API.

use crate::core::command::webhooks::wants;
use crate::core::event::{Envelope, Event};
use crate::core::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Tailscale's payload version.
pub const PAYLOAD_VERSION: u32 = 1;

/// One event as a receiver gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// When the fact was recorded (RFC 3339).
    pub timestamp: String,
    pub version: u32,
    #[serde(rename = "type")]
    pub kind: String,
    pub tailnet: String,
    pub message: String,
    pub data: Value,
    /// Stable de-duplication id: the same for every redelivery of this event.
    pub id: String,
    /// The log position it comes from (0 for `test`).
    pub seq: u64,
}

/// The webhook events one log record makes, in order (most make none or one).
pub fn events_of(envelope: &Envelope, tailnet: &str) -> Vec<WebhookEvent> {
    let actor = envelope.actor.to_string();
    let mut made: Vec<(String, String, Value)> = Vec::new();
    let mut push = |kind: &str, message: String, data: Value| {
        made.push((kind.to_string(), message, data));
    };
    match &envelope.event {
        Event::NodeRegistered(reg) => {
            let data = json!({"nodeID": reg.id.to_string(), "deviceName": reg.given_name,
                "user": reg.user.map(|u| u.to_string()), "tags": reg.tags, "actor": actor});
            push(
                "nodeCreated",
                format!("Node {} created", reg.given_name),
                data.clone(),
            );
            if !reg.authorized {
                push(
                    "nodeNeedsApproval",
                    format!("Node {} needs approval", reg.given_name),
                    data,
                );
            }
        }
        Event::NodeImported(node) => {
            let reg = &node.registration;
            push(
                "nodeCreated",
                format!("Node {} imported", reg.given_name),
                json!({"nodeID": reg.id.to_string(), "deviceName": reg.given_name,
                    "user": reg.user.map(|u| u.to_string()), "tags": reg.tags, "actor": actor}),
            );
        }
        Event::NodeApproved { id } => push(
            "nodeApproved",
            format!("Node {id} approved"),
            json!({"nodeID": id.to_string(), "actor": actor}),
        ),
        Event::NodeDeleted { id } => push(
            "nodeDeleted",
            format!("Node {id} deleted"),
            json!({"nodeID": id.to_string(), "actor": actor}),
        ),
        // The admin's change; the key's expiry itself (now or later) is sent by
        // `expiries_between` when its time comes, so it is sent once whatever caused it.
        Event::NodeExpiryChanged { id, expiry } => push(
            "nodeKeyExpiryChanged",
            format!("Node {id} key expiry changed"),
            json!({"nodeID": id.to_string(),
                "expiry": expiry.map(Timestamp::to_rfc3339), "actor": actor}),
        ),
        Event::NodeRenamed { id, given_name, .. } => push(
            "nodeRenamed",
            format!("Node {id} renamed to {given_name}"),
            json!({"nodeID": id.to_string(), "deviceName": given_name, "actor": actor}),
        ),
        Event::NodeTagsSet { id, tags } => push(
            "nodeTagsUpdated",
            format!("Node {id} tags set to [{}]", tags.join(", ")),
            json!({"nodeID": id.to_string(), "tags": tags, "actor": actor}),
        ),
        Event::NodeMoved { id, user } => push(
            "nodeUserChanged",
            format!("Node {id} moved to user {user}"),
            json!({"nodeID": id.to_string(), "user": user.to_string(), "actor": actor}),
        ),
        Event::RoutesApproved { id, routes } => {
            let routes: Vec<String> = routes.iter().map(ToString::to_string).collect();
            push(
                "nodeRoutesApproved",
                format!("Node {id} approved routes [{}]", routes.join(", ")),
                json!({"nodeID": id.to_string(), "routes": routes, "actor": actor}),
            );
        }
        Event::NodeReauthenticated { id, expiry, .. } => push(
            "nodeReauthenticated",
            format!("Node {id} logged in again"),
            json!({"nodeID": id.to_string(),
                "expiry": expiry.map(Timestamp::to_rfc3339), "actor": actor}),
        ),
        Event::PolicyReplaced { .. } => push(
            "policyUpdate",
            "Tailnet policy file updated".into(),
            json!({"actor": actor}),
        ),
        Event::UserCreated {
            id, name, email, ..
        } => push(
            "userCreated",
            format!("User {name} created"),
            json!({"userID": id.to_string(), "user": name, "email": email, "actor": actor}),
        ),
        Event::UserImported(user) => push(
            "userCreated",
            format!("User {} imported", user.name),
            json!({"userID": user.id.to_string(), "user": user.name, "email": user.email,
                "actor": actor}),
        ),
        Event::UserDeleted { id } => push(
            "userDeleted",
            format!("User {id} deleted"),
            json!({"userID": id.to_string(), "actor": actor}),
        ),
        Event::UserRenamed { id, name } => push(
            "userRenamed",
            format!("User {id} renamed to {name}"),
            json!({"userID": id.to_string(), "user": name, "actor": actor}),
        ),
        Event::PreAuthKeyCreated {
            id,
            user,
            prefix,
            reusable,
            ephemeral,
            tags,
            expiration,
            ..
        } => push(
            "preAuthKeyCreated",
            format!("Pre-auth key {id} created"),
            json!({"keyID": id.to_string(), "prefix": prefix,
                "user": user.map(|u| u.to_string()), "reusable": reusable,
                "ephemeral": ephemeral, "tags": tags,
                "expiration": expiration.to_rfc3339(), "actor": actor}),
        ),
        Event::PreAuthKeyExpired { id, .. } => push(
            "preAuthKeyExpired",
            format!("Pre-auth key {id} expired"),
            json!({"keyID": id.to_string(), "actor": actor}),
        ),
        Event::PreAuthKeyDeleted { id } => push(
            "preAuthKeyDeleted",
            format!("Pre-auth key {id} deleted"),
            json!({"keyID": id.to_string(), "actor": actor}),
        ),
        Event::ApiKeyCreated {
            id,
            prefix,
            expiration,
            ..
        } => push(
            "apiKeyCreated",
            format!("API key {id} created"),
            json!({"keyID": id.to_string(), "prefix": prefix,
                "expiration": expiration.to_rfc3339(), "actor": actor}),
        ),
        Event::ApiKeyExpired { id, .. } => push(
            "apiKeyExpired",
            format!("API key {id} expired"),
            json!({"keyID": id.to_string(), "actor": actor}),
        ),
        Event::ApiKeyDeleted { id } => push(
            "apiKeyDeleted",
            format!("API key {id} deleted"),
            json!({"keyID": id.to_string(), "actor": actor}),
        ),
        Event::ConfigApplied { hash, .. } => push(
            "configChanged",
            "Server configuration changed".into(),
            json!({"hash": hash.to_string(), "actor": actor}),
        ),
        Event::OidcLoginRefused {
            identity,
            email,
            reason,
        } => push(
            "oidcLoginRefused",
            format!("OIDC login refused: {reason}"),
            json!({"identity": identity, "email": email, "reason": reason}),
        ),
        Event::WebhookCreated { id, url, kinds } => push(
            "webhookCreated",
            format!("Webhook {id} created"),
            json!({"webhookID": id.to_string(), "url": url, "events": kinds, "actor": actor}),
        ),
        Event::WebhookDeleted { id } => push(
            "webhookDeleted",
            format!("Webhook {id} deleted"),
            json!({"webhookID": id.to_string(), "actor": actor}),
        ),
        Event::UserRoleChanged { id, role } => push(
            "userRoleUpdated",
            format!("User {id} is now {role}"),
            json!({"userID": id.to_string(), "role": role.name(), "actor": actor}),
        ),
        // Start-ups, client-reported facts, key rotations and spent keys are not sent.
        Event::ServerStarted { .. }
        | Event::NodeHostinfoChanged { .. }
        | Event::NodeKeyRotated { .. }
        | Event::PreAuthKeyUsed { .. }
        | Event::PreAuthKeyImported(_)
        | Event::ApiKeyImported(_)
        | Event::Imported(_)
        | Event::UserProfileChanged { .. }
        | Event::UserIdentityLinked { .. } => {}
    }
    let many = made.len() > 1;
    made.into_iter()
        .enumerate()
        .map(|(n, (kind, message, data))| WebhookEvent {
            timestamp: envelope.at.to_rfc3339(),
            version: PAYLOAD_VERSION,
            kind,
            tailnet: tailnet.to_string(),
            message,
            data,
            id: if many && n > 0 {
                format!("{}-{n}", envelope.seq)
            } else {
                envelope.seq.to_string()
            },
            seq: envelope.seq,
        })
        .collect()
}

/// How long before a key expires `nodeKeyExpiringInOneDay` is sent (Tailscale's name).
pub const EXPIRING_NOTICE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The events that time alone makes between `after` (excluded) and `upto` (included), for
/// the nodes of `state` as they are then: `nodeKeyExpired` when a key's expiry passes and
/// `nodeKeyExpiringInOneDay` a day before (unless it has already expired by `upto`). No log
/// record says "this key expired now", so the delivery worker asks this with a durable
/// time watermark. Ids are the node and the expiry time, stable across redeliveries; `seq`
/// is the state's, the point of the log the answer was read at. Oldest first.
pub fn expiries_between(
    state: &crate::core::state::State,
    after: Timestamp,
    upto: Timestamp,
    tailnet: &str,
    kinds: &[String],
) -> Vec<WebhookEvent> {
    let mut events: Vec<(Timestamp, WebhookEvent)> = Vec::new();
    for node in state.nodes.values() {
        let Some(expiry) = node.expiry else { continue };
        let data = json!({"nodeID": node.id.to_string(), "deviceName": node.given_name,
            "expiry": expiry.to_rfc3339()});
        let mut push = |at: Timestamp, kind: &str, message: String, id: String| {
            if wants(kinds, kind) {
                events.push((
                    at,
                    WebhookEvent {
                        timestamp: at.to_rfc3339(),
                        version: PAYLOAD_VERSION,
                        kind: kind.to_string(),
                        tailnet: tailnet.to_string(),
                        message,
                        data: data.clone(),
                        id,
                        seq: state.last_seq,
                    },
                ));
            }
        };
        if after < expiry && expiry <= upto {
            push(
                expiry,
                "nodeKeyExpired",
                format!("Node {} key expired", node.given_name),
                format!("expired-{}-{}", node.id, expiry.unix_ms()),
            );
        }
        let notice = expiry.minus(EXPIRING_NOTICE);
        if after < notice && notice <= upto && expiry > upto {
            push(
                notice,
                "nodeKeyExpiringInOneDay",
                format!("Node {} key expires in one day", node.given_name),
                format!("expiring-{}-{}", node.id, expiry.unix_ms()),
            );
        }
    }
    events.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    events.into_iter().map(|(_, event)| event).collect()
}

/// The events of `envelope` an endpoint subscribed to `kinds` receives.
pub fn events_for(envelope: &Envelope, tailnet: &str, kinds: &[String]) -> Vec<WebhookEvent> {
    let mut events = events_of(envelope, tailnet);
    events.retain(|e| wants(kinds, &e.kind));
    events
}

/// The `test` event `webhooks test` sends (never from the log).
pub fn test_event(now: Timestamp, tailnet: &str, nonce: &str) -> WebhookEvent {
    WebhookEvent {
        timestamp: now.to_rfc3339(),
        version: PAYLOAD_VERSION,
        kind: "test".into(),
        tailnet: tailnet.to_string(),
        message: "This is a test event".into(),
        data: json!({}),
        id: format!("test-{nonce}"),
        seq: 0,
    }
}

/// The request body: a JSON array of events.
pub fn body(events: &[WebhookEvent]) -> Vec<u8> {
    serde_json::to_vec(events).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::command::webhooks::WEBHOOK_KINDS;
    use crate::core::ids::{NodeId, UserId};
    use crate::core::Actor;

    fn envelope(seq: u64, event: Event) -> Envelope {
        Envelope {
            seq,
            at: Timestamp(1_767_225_600_000),
            actor: Actor::LocalSocket,
            event,
        }
    }

    /// A tailnet with one user and nodes 1 and 2 whose keys expire at `expiries`.
    fn expiring(expiries: [Option<Timestamp>; 2]) -> crate::core::state::State {
        use crate::core::event::{NodeRegistration, RegisterMethod};
        use crate::core::keys::{MachineKey, NodeKey};
        let mut state = crate::core::state::State::default();
        let mut events = vec![Event::UserCreated {
            id: UserId(1),
            name: "alice".into(),
            display_name: String::new(),
            email: String::new(),
        }];
        for (i, expiry) in expiries.into_iter().enumerate() {
            let n = i as u8 + 1;
            events.push(Event::NodeRegistered(Box::new(NodeRegistration {
                id: NodeId(u64::from(n)),
                machine_key: MachineKey([n; 32]),
                node_key: NodeKey([n + 100; 32]),
                user: Some(UserId(1)),
                tags: vec![],
                given_name: format!("n{n}"),
                hostinfo: Default::default(),
                ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, n)),
                ipv6: None,
                expiry,
                register_method: RegisterMethod::Cli,
                auth_key: None,
                ephemeral: false,
                authorized: true,
                approved_routes: vec![],
            })));
        }
        for (i, event) in events.into_iter().enumerate() {
            state.apply(&envelope(i as u64 + 1, event));
        }
        state
    }

    #[test]
    fn a_key_expiry_is_sent_once_when_its_time_passes_and_a_day_before() {
        let hour = std::time::Duration::from_secs(3600);
        let t0 = Timestamp(1_767_225_600_000);
        let all = vec!["*".to_string()];
        let state = expiring([Some(t0.plus(hour * 2)), Some(t0.plus(hour * 30))]);
        // Nothing is due before either time.
        assert!(expiries_between(&state, t0, t0.plus(hour), "t", &all).is_empty());
        // Node 1's key expires at +2 h; node 2's notice comes at +6 h (30 h − 24 h).
        let made = expiries_between(&state, t0, t0.plus(hour * 7), "t", &all);
        let kinds: Vec<(&str, &str)> = made
            .iter()
            .map(|e| (e.kind.as_str(), e.id.as_str()))
            .collect();
        let ms = |h: u32| t0.plus(hour * h).unix_ms();
        assert_eq!(
            kinds,
            [
                ("nodeKeyExpired", format!("expired-1-{}", ms(2)).as_str()),
                (
                    "nodeKeyExpiringInOneDay",
                    format!("expiring-2-{}", ms(30)).as_str()
                ),
            ]
        );
        assert_eq!(made[0].timestamp, t0.plus(hour * 2).to_rfc3339());
        // Windows that follow each other send each event once; the ids are the same on a
        // redelivery of the same window.
        let first = expiries_between(&state, t0, t0.plus(hour * 3), "t", &all);
        let second = expiries_between(&state, t0.plus(hour * 3), t0.plus(hour * 7), "t", &all);
        assert_eq!(first.len() + second.len(), 2);
        assert_eq!(
            first,
            expiries_between(&state, t0, t0.plus(hour * 3), "t", &all)
        );
        // A key that expires within the window gets no "in one day" notice for it.
        let late = expiries_between(&state, t0.plus(hour * 5), t0.plus(hour * 31), "t", &all);
        let kinds: Vec<&str> = late.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["nodeKeyExpired"]);
        // Only what the endpoint subscribed to; no expiry, no event.
        let only = vec!["nodeKeyExpiringInOneDay".to_string()];
        assert_eq!(
            expiries_between(&state, t0, t0.plus(hour * 7), "t", &only).len(),
            1
        );
        let never = expiring([None, None]);
        assert!(expiries_between(&never, t0, t0.plus(hour * 100), "t", &all).is_empty());
    }

    #[test]
    fn an_admin_expiry_change_is_its_own_event_not_the_expiry() {
        let changed = envelope(
            9,
            Event::NodeExpiryChanged {
                id: NodeId(1),
                expiry: Some(Timestamp(1)),
            },
        );
        let made = events_of(&changed, "t");
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].kind, "nodeKeyExpiryChanged");
    }

    #[test]
    fn ids_are_stable_and_types_are_in_the_catalog() {
        let made = events_of(&envelope(7, Event::NodeDeleted { id: NodeId(3) }), "t");
        assert_eq!(made.len(), 1);
        assert_eq!((made[0].id.as_str(), made[0].seq), ("7", 7));
        assert_eq!(made[0].kind, "nodeDeleted");
        let user = envelope(
            8,
            Event::UserCreated {
                id: UserId(1),
                name: "alice".into(),
                display_name: String::new(),
                email: String::new(),
            },
        );
        assert_eq!(events_of(&user, "t"), events_of(&user, "t"));
        for e in [made, events_of(&user, "t")].concat() {
            assert!(WEBHOOK_KINDS.contains(&e.kind.as_str()), "{}", e.kind);
        }
        let only_nodes = vec!["nodeCreated".to_string()];
        assert!(events_for(&user, "t", &only_nodes).is_empty());
    }

    #[test]
    fn the_body_is_an_array_in_tailscales_shape() {
        let made = events_of(
            &envelope(
                9,
                Event::PolicyReplaced {
                    policy: "{}".into(),
                },
            ),
            "example.com",
        );
        let value: Value = serde_json::from_slice(&body(&made)).unwrap();
        let first = &value[0];
        assert_eq!(first["type"], "policyUpdate");
        assert_eq!(first["version"], 1);
        assert_eq!(first["tailnet"], "example.com");
        assert_eq!(first["id"], "9");
        assert!(first["timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-01-01T"));
    }
}
