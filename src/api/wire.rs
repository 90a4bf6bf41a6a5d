//! The `/api/v1` wire shapes: headscale 0.29's JSON (camelCase, ids as strings, RFC 3339
//! times, enum strings). Converted by hand from domain types so the domain never becomes an
//! accidental wire format.

use crate::core::event::RegisterMethod;
use crate::core::state::{ApiKey, Node, PreAuthKey, State, User};
use crate::core::{Envelope, Timestamp};
use serde::Serialize;

#[derive(Serialize, Clone, utoipa::ToSchema)]
#[schema(as = User)]
#[serde(rename_all = "camelCase")]
pub struct UserWire {
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub display_name: String,
    pub email: String,
    pub provider_id: String,
    pub provider: String,
    pub profile_pic_url: String,
}

/// A user as the API shows it; `provider`/`providerId` come from an imported headscale user's
/// OIDC identity (kept beside the user in `State.extras`).
pub fn user(state: &State, user: &User) -> UserWire {
    let identity = state.extras.identities.get(&user.id);
    UserWire {
        id: user.id.to_string(),
        name: user.name.clone(),
        created_at: user.created_at.to_rfc3339(),
        display_name: user.display_name.clone(),
        email: user.email.clone(),
        provider_id: identity
            .map(|i| i.provider_identifier.clone())
            .unwrap_or_default(),
        provider: identity.map(|i| i.provider.clone()).unwrap_or_default(),
        profile_pic_url: user.picture_url.clone(),
    }
}

/// headscale's stand-in owner for tagged nodes in node listings (its fixed id and names).
pub fn tagged_devices_user() -> UserWire {
    UserWire {
        id: "2147455555".into(),
        name: "tagged-devices".into(),
        created_at: ZERO_TIME.into(),
        display_name: "Tagged Devices".into(),
        email: String::new(),
        provider_id: String::new(),
        provider: String::new(),
        profile_pic_url: String::new(),
    }
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
#[schema(as = PreAuthKey)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyWire {
    pub user: Option<UserWire>,
    pub id: String,
    /// The full key right after creation; `hskey-auth-<prefix>-***` in listings.
    pub key: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub pre_approved: bool,
    #[schema(format = DateTime)]
    pub expiration: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub acl_tags: Vec<String>,
    /// Ours: `active`, `used` or `expired`, so listings say why a key no longer works.
    pub state: String,
}

pub fn pre_auth_key(
    state: &State,
    key: &PreAuthKey,
    now: Timestamp,
    full: Option<&str>,
) -> PreAuthKeyWire {
    let status = if key.is_expired(now) {
        "expired"
    } else if key.used && !key.reusable {
        "used"
    } else {
        "active"
    };
    PreAuthKeyWire {
        user: key
            .user
            .and_then(|id| state.users.get(&id))
            .map(|u| user(state, u)),
        id: key.id.to_string(),
        key: full
            .map(str::to_string)
            .unwrap_or_else(|| format!("hskey-auth-{}-***", key.prefix)),
        reusable: key.reusable,
        ephemeral: key.ephemeral,
        used: key.used,
        pre_approved: key.pre_approved,
        expiration: key.expiration.to_rfc3339(),
        created_at: key.created_at.to_rfc3339(),
        acl_tags: key.tags.clone(),
        state: status.into(),
    }
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
#[schema(as = ApiKey)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyWire {
    pub id: String,
    pub prefix: String,
    #[schema(format = DateTime)]
    pub expiration: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
}

pub fn api_key(key: &ApiKey) -> ApiKeyWire {
    ApiKeyWire {
        id: key.id.to_string(),
        prefix: format!("hskey-api-{}-***", key.prefix),
        expiration: key.expiration.to_rfc3339(),
        created_at: key.created_at.to_rfc3339(),
        last_seen: None,
    }
}

#[derive(Serialize, Clone, utoipa::ToSchema)]
#[schema(as = Node)]
#[serde(rename_all = "camelCase")]
pub struct NodeWire {
    pub id: String,
    pub machine_key: String,
    pub node_key: String,
    pub disco_key: String,
    pub ip_addresses: Vec<String>,
    pub name: String,
    pub user: Option<UserWire>,
    #[schema(format = DateTime)]
    pub last_seen: Option<String>,
    #[schema(format = DateTime)]
    pub expiry: Option<String>,
    pub pre_auth_key: Option<PreAuthKeyWire>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub register_method: String,
    pub given_name: String,
    pub online: bool,
    pub approved_routes: Vec<String>,
    pub available_routes: Vec<String>,
    pub subnet_routes: Vec<String>,
    pub tags: Vec<String>,
    /// Ours: false while device approval is pending.
    pub authorized: bool,
    pub ephemeral: bool,
    pub expired: bool,
}

pub fn register_method(method: RegisterMethod) -> &'static str {
    match method {
        RegisterMethod::AuthKey => "REGISTER_METHOD_AUTH_KEY",
        RegisterMethod::Cli => "REGISTER_METHOD_CLI",
        RegisterMethod::Oidc => "REGISTER_METHOD_OIDC",
    }
}

/// `presence` is the live online state (absent for a past state or without a daemon).
pub fn node(
    state: &State,
    node: &Node,
    now: Timestamp,
    presence: Option<&crate::core::netmap::NodePresence>,
) -> NodeWire {
    let strings = |routes: &[ipnet::IpNet]| routes.iter().map(|r| r.to_string()).collect();
    NodeWire {
        id: node.id.to_string(),
        machine_key: node.machine_key.to_string(),
        node_key: node.node_key.to_string(),
        disco_key: presence
            .and_then(|p| p.disco_key)
            .map(|k| k.to_string())
            .unwrap_or_else(|| format!("discokey:{}", "0".repeat(64))),
        ip_addresses: node
            .ipv4
            .map(|a| a.to_string())
            .into_iter()
            .chain(node.ipv6.map(|a| a.to_string()))
            .collect(),
        name: node.hostinfo.hostname.clone(),
        user: node
            .user
            .and_then(|id| state.users.get(&id))
            .map(|u| user(state, u)),
        // Never connected: the registration time, as headscale records it.
        last_seen: Some(
            presence
                .and_then(|p| if p.online { Some(now) } else { p.last_seen })
                .unwrap_or(node.created_at)
                .to_rfc3339(),
        ),
        expiry: node.expiry.map(Timestamp::to_rfc3339),
        pre_auth_key: node
            .auth_key
            .and_then(|id| state.pre_auth_keys.get(&id))
            .map(|k| pre_auth_key(state, k, now, None)),
        created_at: node.created_at.to_rfc3339(),
        register_method: register_method(node.register_method).into(),
        given_name: node.given_name.clone(),
        online: presence.is_some_and(|p| p.online),
        approved_routes: strings(&node.approved_routes),
        available_routes: strings(&node.hostinfo.advertised_routes),
        subnet_routes: strings(&node.subnet_routes()),
        tags: node.tags.clone(),
        authorized: node.authorized,
        ephemeral: node.ephemeral,
        expired: node.is_expired(now),
    }
}

/// The zero time headscale shows for unset times of a node that does not exist yet.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// headscale's echo of a `debug/node` request: the queued login as a not-yet-node (id 0).
pub fn pending_node(
    machine_key: crate::core::keys::MachineKey,
    node_key: crate::core::keys::NodeKey,
    name: &str,
    user: Option<UserWire>,
    routes: &[ipnet::IpNet],
) -> NodeWire {
    NodeWire {
        id: "0".into(),
        machine_key: machine_key.to_string(),
        node_key: node_key.to_string(),
        disco_key: format!("discokey:{}", "0".repeat(64)),
        ip_addresses: vec![],
        name: name.to_string(),
        user,
        last_seen: Some(ZERO_TIME.into()),
        expiry: Some(ZERO_TIME.into()),
        pre_auth_key: None,
        created_at: ZERO_TIME.into(),
        register_method: "REGISTER_METHOD_UNSPECIFIED".into(),
        given_name: String::new(),
        online: false,
        approved_routes: vec![],
        available_routes: routes.iter().map(|r| r.to_string()).collect(),
        subnet_routes: vec![],
        tags: vec![],
        authorized: false,
        ephemeral: false,
        expired: false,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
#[serde(rename_all = "camelCase")]
pub struct EventWire {
    pub seq: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub actor: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's own fields, as in the readable JSON-lines twin of the log.
    pub data: serde_json::Value,
}

pub fn event(envelope: &Envelope) -> EventWire {
    let data = match serde_json::to_value(&envelope.event) {
        Ok(serde_json::Value::Object(mut outer)) if outer.len() == 1 => outer
            .remove(envelope.event.kind())
            .unwrap_or(serde_json::Value::Null),
        Ok(other) => other,
        Err(_) => serde_json::Value::Null,
    };
    EventWire {
        seq: envelope.seq.to_string(),
        at: envelope.at.to_rfc3339(),
        actor: envelope.actor.to_string(),
        kind: envelope.event.kind().into(),
        data,
    }
}
