//! `POST /machine/register` inside the Noise channel: pre-auth key logins, re-login of a
//! known node (every tailscaled start), node-key rotation and logout. Failures the user
//! should see go back in the response's `Error` field (the client prints it); only malformed
//! requests get a 400. Without a key, an unknown node gets an AuthURL and its follow-up waits
//! for the admin (`pending.rs`).

use super::map_stream::MachineContext;
use super::pending::{Origin, Outcome, PendingLogin};
use super::upgrade::Peer;
use crate::core::event::NodeHostinfo;
use crate::core::ids::{NodeId, PreAuthKeyId};
use crate::core::keys::NodeKey;
use crate::core::limits;
use crate::core::netmap::TAGGED_DEVICES_USER_ID;
use crate::core::state::{Node, State as TailnetState};
use crate::core::{Actor, Command, Event, RegisterAuth, Timestamp};
use crate::engine::{Clock, EngineError, SystemClock};
use crate::secrets;
use crate::tailcfg::{self, RegisterRequest, RegisterResponse};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rand::RngCore;
use std::time::Duration;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix milliseconds: "no expiry requested".
const GO_ZERO_TIME_MS: i64 = -62_135_596_800_000;
/// The oldest client we talk to: capability version 113 (Tailscale 1.80).
pub const MIN_CAPABILITY_VERSION: u16 = 113;

fn refuse(message: impl Into<String>) -> Response {
    Json(RegisterResponse {
        error: message.into(),
        ..Default::default()
    })
    .into_response()
}

/// A registration's Hostinfo, within the named limits; over one, the reason to refuse
/// (`core::limits`, `Mode::Refuse`).
fn registered_hostinfo(request: &RegisterRequest) -> Result<NodeHostinfo, limits::OverLimit> {
    limits::normalise_hostinfo(request.hostinfo.as_ref(), limits::Mode::Refuse).map(|n| n.hostinfo)
}

/// The pre-auth key an `hskey-auth-…` text (or headscale's legacy plaintext key) names, if
/// its secret matches; bcrypt-hashed imported keys are checked off the runtime workers.
async fn find_pre_auth_key(state: &TailnetState, text: &str) -> Option<PreAuthKeyId> {
    match secrets::parse_auth_key(text)? {
        secrets::PresentedAuthKey::Prefixed { prefix, secret } => {
            let key = state.pre_auth_key_by_prefix(prefix);
            let hash = key.map(|k| state.pre_auth_key_hash(k));
            let key_ref = secrets::KeyRef::PreAuth(key.map_or(0, |k| k.id.0));
            let matches = secrets::verifier()
                .matches(key_ref, secret, hash.as_ref())
                .await;
            key.filter(|_| matches).map(|k| k.id)
        }
        // Legacy keys are stored as the SHA-256 of the whole text under the empty prefix.
        secrets::PresentedAuthKey::Legacy(whole) => state
            .pre_auth_keys_with_prefix("")
            .find(|k| secrets::secret_matches(whole, Some(&k.secret_hash)))
            .map(|k| k.id),
    }
}

fn success(state: &TailnetState, node: &Node, now: Timestamp) -> Response {
    let (user, login) = match node.user.and_then(|id| state.users.get(&id)) {
        Some(user) if !node.is_tagged() => {
            let display = if user.display_name.is_empty() {
                user.name.clone()
            } else {
                user.display_name.clone()
            };
            (
                tailcfg::User {
                    id: user.id.0,
                    display_name: display.clone(),
                    profile_pic_url: String::new(),
                    created: user.created_at.to_rfc3339(),
                },
                tailcfg::Login {
                    id: user.id.0,
                    provider: String::new(),
                    login_name: if user.email.is_empty() {
                        user.name.clone()
                    } else {
                        user.email.clone()
                    },
                    display_name: display,
                    profile_pic_url: String::new(),
                },
            )
        }
        _ => (
            tailcfg::User {
                id: TAGGED_DEVICES_USER_ID,
                display_name: "tagged-devices".into(),
                ..Default::default()
            },
            tailcfg::Login {
                id: TAGGED_DEVICES_USER_ID,
                login_name: "tagged-devices".into(),
                display_name: "tagged-devices".into(),
                ..Default::default()
            },
        ),
    };
    Json(RegisterResponse {
        user,
        login,
        node_key_expired: node.is_expired(now),
        machine_authorized: node.authorized,
        ..Default::default()
    })
    .into_response()
}

fn registered_node(events: &[crate::core::Envelope]) -> Option<NodeId> {
    events.iter().find_map(|e| match &e.event {
        Event::NodeRegistered(reg) => Some(reg.id),
        Event::NodeReauthenticated { id, .. } => Some(*id),
        _ => None,
    })
}

/// A follow-up waits this long for the admin, then gets the same AuthURL again (the client
/// backs off and asks again).
const FOLLOWUP_WAIT: Duration = Duration::from_secs(300);

/// The registration id at the end of an AuthURL (`…/register/<id>`).
fn registration_id(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// The node `machine_key` registered under `node_key`, once the log (tailed from the other
/// instances) has it: with several instances, a registration decided elsewhere reaches this
/// one through the log even if its outcome row could not be written (`ha::logins`).
async fn registered_in_log(
    engine: &crate::engine::EngineHandle,
    machine_key: crate::core::keys::MachineKey,
    node_key: NodeKey,
) -> Outcome {
    let mut published = engine.subscribe();
    loop {
        let found = published
            .borrow_and_update()
            .state
            .node_by_node_key(&node_key)
            .filter(|n| n.machine_key == machine_key)
            .map(|n| n.id);
        if let Some(id) = found {
            return Outcome::Registered(id);
        }
        if published.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A follow-up request: waits for the admin's decision on the pending login.
/// Only the machine that started the login is answered (L9): anyone else holding the URL
/// learns nothing from it.
async fn follow_up(
    context: &MachineContext,
    peer: &Peer,
    url: &str,
    node_key: NodeKey,
) -> Response {
    let Some(mut outcome) = context
        .pending
        .watch(registration_id(url), &peer.machine_key)
        .await
    else {
        return refuse("this login has expired or is unknown: run `tailscale up` again");
    };
    let engine = &context.engine;
    let decided = tokio::time::timeout(FOLLOWUP_WAIT, async {
        if !engine.is_shared() {
            return outcome.wait_for(Option::is_some).await.map(|d| d.clone());
        }
        tokio::select! {
            decided = outcome.wait_for(Option::is_some) => decided.map(|d| d.clone()),
            registered = registered_in_log(engine, peer.machine_key, node_key) => Ok(Some(registered)),
        }
    })
    .await;
    let decision = match decided {
        Ok(Ok(decision)) => decision,
        // Still waiting: the same URL again; the client asks again after a pause.
        Err(_) => {
            return Json(RegisterResponse {
                auth_url: url.to_string(),
                ..Default::default()
            })
            .into_response()
        }
        Ok(Err(_)) => None,
    };
    match decision {
        Some(Outcome::Registered(id)) => {
            // Decided on another instance a moment ago: read the log up to its head.
            let state = context
                .engine
                .state_where(|state| state.nodes.contains_key(&id))
                .await;
            match state.nodes.get(&id) {
                Some(node) => success(&state, node, SystemClock.now()),
                None => refuse("node not found"),
            }
        }
        Some(Outcome::Rejected(reason)) => refuse(reason),
        None => refuse("this login has expired: run `tailscale up` again"),
    }
}

pub async fn register(
    State(context): State<MachineContext>,
    Extension(peer): Extension<Peer>,
    body: Bytes,
) -> Response {
    let engine = context.engine.clone();
    if peer.capability_version < MIN_CAPABILITY_VERSION {
        return refuse(format!(
            "this Tailscale client is too old (capability version {}); this server needs Tailscale 1.80 or newer (capability version {MIN_CAPABILITY_VERSION})",
            peer.capability_version
        ));
    }
    let request: RegisterRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("invalid RegisterRequest: {error}\n"),
            )
                .into_response()
        }
    };
    let Ok(node_key) = NodeKey::parse(&request.node_key, false) else {
        return (StatusCode::BAD_REQUEST, "invalid NodeKey\n").into_response();
    };
    let hostinfo = match registered_hostinfo(&request) {
        Ok(hostinfo) => hostinfo,
        Err(over) => {
            tracing::debug!(machine = %peer.machine_key.short(), %over, "registration refused");
            return refuse(format!("registration refused: {over}"));
        }
    };
    let now = SystemClock.now();
    let requested_expiry = request
        .expiry
        .as_deref()
        .and_then(Timestamp::parse_rfc3339)
        .filter(|t| t.unix_ms() > GO_ZERO_TIME_MS);
    let actor = Actor::Machine(peer.machine_key);
    if engine.is_shared() {
        // Several instances: the auth key or the node may be a moment-old write elsewhere.
        let _ = engine.catch_up().await;
    }
    let state = engine.state();
    let own = |key: &NodeKey| {
        state
            .node_by_node_key(key)
            .filter(|n| n.machine_key == peer.machine_key)
            .map(|n| n.id)
    };

    // Logout: an expiry in the past.
    if requested_expiry.is_some_and(|t| t <= now) {
        let Some(id) = own(&node_key) else {
            return refuse("node not found");
        };
        if let Err(error) = engine.execute(actor, Command::LogoutNode { id }).await {
            return refuse(error.to_string());
        }
        let state = engine.state();
        return match state.nodes.get(&id) {
            Some(node) => success(&state, node, SystemClock.now()),
            None => Json(RegisterResponse {
                node_key_expired: true,
                ..Default::default()
            })
            .into_response(),
        };
    }

    let auth_key = request
        .auth
        .as_ref()
        .map(|a| a.auth_key.trim())
        .filter(|k| !k.is_empty());
    let node_id = if let Some(text) = auth_key {
        let Some(key) = find_pre_auth_key(&state, text).await else {
            return refuse("invalid or unknown auth key");
        };
        let entropy = rand::thread_rng().next_u64();
        let command = Command::RegisterNode {
            machine_key: peer.machine_key,
            node_key,
            hostinfo: hostinfo.clone(),
            auth: RegisterAuth::PreAuthKey(key),
            requested_expiry,
            ephemeral: request.ephemeral,
            entropy,
        };
        match engine.execute(actor, command).await {
            Ok(events) => match registered_node(&events) {
                Some(id) => id,
                None => return refuse("registration recorded nothing"),
            },
            Err(EngineError::Rejected(rejection)) => return refuse(rejection.to_string()),
            Err(error) => {
                return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
            }
        }
    } else if let Some(id) = NodeKey::parse(&request.old_node_key, false)
        .ok()
        .filter(|old| old.0 != [0; 32])
        .and_then(|old| own(&old))
    {
        if let Err(error) = engine
            .execute(actor, Command::RotateNodeKey { id, node_key })
            .await
        {
            return refuse(error.to_string());
        }
        id
    } else if let Some(id) = own(&node_key) {
        id
    } else if state.node_by_node_key(&node_key).is_some() {
        return refuse("this node key belongs to another machine");
    } else if !request.followup.is_empty() {
        return follow_up(&context, &peer, &request.followup, node_key).await;
    } else {
        let login = PendingLogin {
            machine_key: peer.machine_key,
            node_key,
            hostinfo: hostinfo.clone(),
            ephemeral: request.ephemeral,
            requested_expiry,
        };
        let origin = Origin {
            source: peer.remote.map(|a| a.ip()),
            started: Some(now),
        };
        let id = match context.pending.start(login, origin).await {
            Ok(id) => id,
            Err(refused) => {
                tracing::debug!(machine = %peer.machine_key.short(), %refused, "interactive login refused");
                return refuse(refused.to_string());
            }
        };
        // Debug: anyone can start one (L5); the admin sees them on the page and in the API.
        tracing::debug!(machine = %peer.machine_key.short(), %id, "interactive login waiting for an admin");
        return Json(RegisterResponse {
            auth_url: format!("{}/register/{id}", context.server_url),
            ..Default::default()
        })
        .into_response();
    };
    let state = engine.state();
    match state.nodes.get(&node_id) {
        Some(node) => success(&state, node, SystemClock.now()),
        None => refuse("node not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::event::{Envelope, ImportedPreAuthKey, SecretHash};
    use crate::store::record::sha256;

    fn imported(state: &mut TailnetState, id: u64, prefix: &str, hash: SecretHash) {
        state.apply(&Envelope {
            seq: state.last_seq + 1,
            at: Timestamp(1),
            actor: Actor::System,
            event: Event::PreAuthKeyImported(Box::new(ImportedPreAuthKey {
                id: PreAuthKeyId(id),
                user: None,
                prefix: prefix.into(),
                hash,
                reusable: true,
                ephemeral: false,
                used: false,
                used_by: None,
                tags: vec!["tag:x".into()],
                created_at: Timestamp(1),
                expiration: None,
            })),
        });
    }

    #[tokio::test]
    async fn headscale_pre_auth_keys_are_found_in_every_form() {
        let mut state = TailnetState::default();
        let secret = "s".repeat(64);
        let bcrypt = SecretHash::Bcrypt(bcrypt::hash(&secret, 4).unwrap());
        imported(&mut state, 1, "-bCdEf_hIjK1", bcrypt);
        let legacy = "0123456789abcdef0123456789abcdef0123456789abcdef";
        imported(
            &mut state,
            2,
            "",
            SecretHash::Sha256(sha256(legacy.as_bytes())),
        );
        let key = format!("hskey-auth--bCdEf_hIjK1-{secret}");
        assert_eq!(find_pre_auth_key(&state, &key).await, Some(PreAuthKeyId(1)));
        let wrong = format!("hskey-auth--bCdEf_hIjK1-{}", "t".repeat(64));
        assert_eq!(find_pre_auth_key(&state, &wrong).await, None);
        assert_eq!(
            find_pre_auth_key(&state, legacy).await,
            Some(PreAuthKeyId(2))
        );
        assert_eq!(
            find_pre_auth_key(&state, &legacy.replace('0', "1")).await,
            None
        );
    }
}
