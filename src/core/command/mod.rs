//! Commands and `decide`: what an admin or client asks for, checked against the current
//! state, turned into the events that record the outcome, or refused with a `Rejection`.
//! Pure: time, entropy and hashed secrets come in with the command.
//!
//! This module holds the vocabulary (`Command`, `Rejection`) and `decide`, which only routes
//! a command to the rules of its aggregate: `users`, `keys` (pre-auth and API keys),
//! `register`, `nodes`, `routes`, `policy`, `oidc` and `import`, each a submodule.

use super::event::{CoreConfig, Event, NodeHostinfo};
use super::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use super::keys::{Digest, MachineKey, NodeKey};
use super::naming;
use super::state::{Node, State};
use super::time::Timestamp;
use ipnet::IpNet;
use std::time::Duration;

mod import;
mod keys;
mod nodes;
mod oidc;
mod policy;
mod register;
mod routes;
mod user_roles;
mod users;
pub mod webhooks;

pub use routes::{normalize_hostinfo, normalize_routes};

/// Pre-auth keys live at most this long (the console's range is 1–90 days).
pub const PRE_AUTH_KEY_MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// How a node's expiry should change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryChange {
    /// Expire it now (the node must log in again).
    Now,
    /// Expire at this instant.
    At(Timestamp),
    /// Never expire.
    Never,
}

/// What vouches for a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterAuth {
    /// A pre-auth key whose secret the shell has already checked.
    PreAuthKey(PreAuthKeyId),
    /// An admin registered the node for this user (`nodes register`, `debug create-node`).
    Admin { user: UserId },
    /// The user logged in through the OIDC provider and confirmed this machine; `expiry` is
    /// the ID token's when `oidc.use_expiry_from_token` is on.
    Oidc {
        user: UserId,
        expiry: Option<Timestamp>,
    },
}

/// Something somebody wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    StartServer {
        version: String,
    },
    ApplyConfig {
        hash: Digest,
        core: CoreConfig,
        netmap_json: String,
    },
    CreateUser {
        name: String,
        display_name: String,
        email: String,
        /// Empty: none.
        picture_url: String,
    },
    RenameUser {
        id: UserId,
        new_name: String,
    },
    DeleteUser {
        id: UserId,
        /// Also delete the user's nodes.
        force: bool,
    },
    CreatePreAuthKey {
        user: Option<UserId>,
        reusable: bool,
        ephemeral: bool,
        pre_approved: bool,
        tags: Vec<String>,
        expiration: Timestamp,
        prefix: String,
        secret_hash: Digest,
    },
    ExpirePreAuthKey {
        id: PreAuthKeyId,
    },
    DeletePreAuthKey {
        id: PreAuthKeyId,
    },
    CreateApiKey {
        expiration: Timestamp,
        prefix: String,
        secret_hash: Digest,
    },
    ExpireApiKey {
        id: ApiKeyId,
    },
    DeleteApiKey {
        id: ApiKeyId,
    },
    RegisterNode {
        machine_key: MachineKey,
        node_key: NodeKey,
        hostinfo: NodeHostinfo,
        auth: RegisterAuth,
        /// Expiry the client asked for; wins over the configured default when sooner
        /// (capped at `now + node.expiry` when that is set).
        requested_expiry: Option<Timestamp>,
        /// The client asked to be ephemeral (`tailscaled --state=mem:`); an ephemeral key
        /// makes the node ephemeral either way.
        ephemeral: bool,
        /// Randomness for the `random` address allocation.
        entropy: u64,
    },
    DeleteNode {
        id: NodeId,
    },
    /// Someone the OIDC provider vouched for (verified ID token, merged userinfo) logs in:
    /// refused by the allow-lists, or their user is created or brought up to date.
    OidcLogin {
        claims: crate::core::oidc::Claims,
        rules: crate::core::oidc::LoginRules,
    },
    ExpireNode {
        id: NodeId,
        change: ExpiryChange,
    },
    /// The client logged out (`tailscale logout`): its key expires now, and an ephemeral
    /// node is deleted instead, as Tailscale does.
    LogoutNode {
        id: NodeId,
    },
    RenameNode {
        id: NodeId,
        new_name: String,
    },
    MoveNode {
        id: NodeId,
        user: UserId,
    },
    SetNodeTags {
        id: NodeId,
        tags: Vec<String>,
    },
    ApproveNode {
        id: NodeId,
    },
    ApproveRoutes {
        id: NodeId,
        routes: Vec<IpNet>,
    },
    /// Approve `route` on one node, or on every node that announces it.
    EnableRoute {
        route: IpNet,
        node: Option<NodeId>,
    },
    DisableRoute {
        route: IpNet,
        node: Option<NodeId>,
    },
    UpdateHostinfo {
        id: NodeId,
        hostinfo: NodeHostinfo,
    },
    /// The client replaced its node key (`OldNodeKey` in a registration).
    RotateNodeKey {
        id: NodeId,
        node_key: NodeKey,
    },
    ReplacePolicy {
        text: String,
    },
    /// Brings a headscale database over (`src/import/` turns its rows into these events):
    /// only into an empty log, only import events, and its policy must be valid here.
    Import {
        events: Vec<Event>,
    },
    /// Adds a webhook endpoint (the shell keeps its signing secret in a file).
    CreateWebhook {
        url: String,
        kinds: Vec<String>,
    },
    DeleteWebhook {
        id: u64,
    },
    /// Gives a user a role (`user_roles.rs` holds the rules: one Owner, transferred).
    SetUserRole {
        id: UserId,
        role: crate::core::roles::Role,
    },
}

/// Why a command was refused. Variants are part of the API contract: each maps to one HTTP
/// status and one readable line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("user {0} not found")]
    UserNotFound(String),
    #[error("a user named {0:?} already exists")]
    UserNameTaken(String),
    #[error("invalid user name {name:?}: {reason}")]
    InvalidUserName { name: String, reason: String },
    #[error("user {name:?} still owns {count} node(s); move or delete them first, or use --force")]
    UserHasNodes { name: String, count: usize },
    #[error("pre-auth key {0} not found")]
    PreAuthKeyNotFound(String),
    #[error("pre-auth key {0} has expired")]
    PreAuthKeyExpired(PreAuthKeyId),
    #[error("pre-auth key {0} has already been used")]
    PreAuthKeyUsed(PreAuthKeyId),
    #[error("a pre-auth key needs a user or at least one tag")]
    PreAuthKeyNeedsOwner,
    #[error("invalid tag: {0}")]
    InvalidTag(String),
    #[error("expiration {0} is in the past")]
    ExpirationInPast(Timestamp),
    #[error("expiration {0} is more than 90 days away")]
    ExpirationTooFar(Timestamp),
    #[error("api key {0} not found")]
    ApiKeyNotFound(String),
    #[error("node {0} not found")]
    NodeNotFound(NodeId),
    #[error("invalid node name {name:?}: {reason}")]
    InvalidNodeName { name: String, reason: String },
    #[error("node name {0:?} is already taken by another node")]
    NodeNameTaken(String),
    #[error("cannot set an empty tag list: a node needs an owner or tags")]
    EmptyTags,
    #[error("no free address left in {0}")]
    AddressSpaceExhausted(String),
    #[error("no IP prefixes are configured")]
    NoPrefixes,
    #[error("no node advertises route {0}")]
    RouteNotAdvertised(IpNet),
    #[error("node {node} does not advertise route {route}")]
    RouteNotAdvertisedByNode { node: NodeId, route: IpNet },
    #[error("invalid policy: {0}")]
    InvalidPolicy(String),
    /// Tags a client asks for that its user does not own, or tags an admin sets that the
    /// policy does not define (headscale's wording and status, 400).
    #[error("requested tags [{}] are invalid or not permitted", .0.join(" "))]
    RequestedTagsNotPermitted(Vec<String>),
    /// A node key identifies one node: another node already has this one.
    #[error("node key {} is already in use by another node; log out and log in again to get a new one", .0.short())]
    NodeKeyInUse(NodeKey),
    /// An import goes only into a log with nothing in it.
    #[error("the event log already holds {0} event(s): a second import into a non-empty log is refused (start from an empty data directory)")]
    LogNotEmpty(u64),
    #[error("invalid import: {0}")]
    InvalidImport(String),
    #[error("{0}")]
    InvalidWebhook(String),
    #[error("webhook {0} not found")]
    WebhookNotFound(String),
    #[error("at most {0} webhook endpoints can be managed through the CLI/API; delete one first")]
    TooManyWebhooks(usize),
    /// The tailnet keeps its Owner: the role moves only to another user.
    #[error("user {0:?} is the tailnet's Owner: make another user Owner first (ownership is transferred, never dropped)")]
    OwnerMustTransfer(String),
}

/// The kind of HTTP answer a rejection deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    NotFound,
    Conflict,
    Invalid,
    Forbidden,
}

impl Rejection {
    pub fn kind(&self) -> RejectionKind {
        use Rejection::*;
        match self {
            UserNotFound(_)
            | PreAuthKeyNotFound(_)
            | ApiKeyNotFound(_)
            | NodeNotFound(_)
            | WebhookNotFound(_) => RejectionKind::NotFound,
            UserNameTaken(_)
            | UserHasNodes { .. }
            | NodeNameTaken(_)
            | AddressSpaceExhausted(_)
            | NodeKeyInUse(_)
            | LogNotEmpty(_)
            | TooManyWebhooks(_)
            | OwnerMustTransfer(_) => RejectionKind::Conflict,
            PreAuthKeyExpired(_) | PreAuthKeyUsed(_) => RejectionKind::Forbidden,
            _ => RejectionKind::Invalid,
        }
    }
}

fn user(state: &State, id: UserId) -> Result<&super::state::User, Rejection> {
    state
        .users
        .get(&id)
        .ok_or_else(|| Rejection::UserNotFound(id.to_string()))
}

fn node(state: &State, id: NodeId) -> Result<&Node, Rejection> {
    state.nodes.get(&id).ok_or(Rejection::NodeNotFound(id))
}

/// A node key belongs to at most one node: refuses `key` for `node` (`None`: a new node) when
/// any other node has it.
fn node_key_free(state: &State, key: NodeKey, node: Option<NodeId>) -> Result<(), Rejection> {
    if state.nodes_by_node_key(&key).any(|n| Some(n.id) != node) {
        return Err(Rejection::NodeKeyInUse(key));
    }
    Ok(())
}

fn checked_tags(tags: &[String]) -> Result<Vec<String>, Rejection> {
    let tags = naming::normalize_tags(tags);
    for tag in &tags {
        naming::validate_tag(tag).map_err(Rejection::InvalidTag)?;
    }
    Ok(tags)
}

/// Decides what `command` means in `state` at `now`: each aggregate's rules are in its own
/// module; this only routes the command there.
pub fn decide(state: &State, command: &Command, now: Timestamp) -> Result<Vec<Event>, Rejection> {
    match command {
        Command::StartServer { version } => Ok(vec![Event::ServerStarted {
            version: version.clone(),
        }]),
        Command::ApplyConfig {
            hash,
            core,
            netmap_json,
        } => {
            // Recorded only when it changes, so restarts do not fill the log with copies.
            if state.config.hash == *hash && state.config.netmap_json == *netmap_json {
                return Ok(vec![]);
            }
            Ok(vec![Event::ConfigApplied {
                hash: *hash,
                core: core.clone(),
                netmap_json: netmap_json.clone(),
            }])
        }
        Command::CreateUser {
            name,
            display_name,
            email,
            picture_url,
        } => users::create(state, name, display_name, email, picture_url),
        Command::RenameUser { id, new_name } => users::rename(state, id, new_name),
        Command::DeleteUser { id, force } => users::delete(state, id, force),
        Command::CreatePreAuthKey {
            user: owner,
            reusable,
            ephemeral,
            pre_approved,
            tags,
            expiration,
            prefix,
            secret_hash,
        } => keys::create_pre_auth_key(
            state,
            now,
            owner,
            reusable,
            ephemeral,
            pre_approved,
            tags,
            expiration,
            prefix,
            secret_hash,
        ),
        Command::ExpirePreAuthKey { id } => keys::expire_pre_auth_key(state, id, now),
        Command::DeletePreAuthKey { id } => keys::delete_pre_auth_key(state, id),
        Command::CreateApiKey {
            expiration,
            prefix,
            secret_hash,
        } => keys::create_api_key(state, now, expiration, prefix, secret_hash),
        Command::ExpireApiKey { id } => keys::expire_api_key(state, id, now),
        Command::DeleteApiKey { id } => keys::delete_api_key(state, id),
        Command::RegisterNode {
            machine_key,
            node_key,
            hostinfo,
            auth,
            requested_expiry,
            ephemeral,
            entropy,
        } => register::decide(
            state,
            register::Registration {
                machine_key: *machine_key,
                node_key: *node_key,
                hostinfo: &normalize_hostinfo(hostinfo),
                auth,
                requested_expiry: *requested_expiry,
                ephemeral: *ephemeral,
                entropy: *entropy,
            },
            now,
        ),
        Command::OidcLogin { claims, rules } => Ok(oidc::login(state, claims, rules)),
        Command::DeleteNode { id } => nodes::delete(state, id),
        Command::ExpireNode { id, change } => nodes::expire(state, id, change, now),
        Command::LogoutNode { id } => nodes::logout(state, id, now),
        Command::RenameNode { id, new_name } => nodes::rename(state, id, new_name),
        Command::MoveNode { id, user: to } => nodes::move_to(state, id, to),
        Command::SetNodeTags { id, tags } => nodes::set_tags(state, id, tags),
        Command::ApproveNode { id } => nodes::approve(state, id),
        Command::ApproveRoutes { id, routes } => routes::approve_routes(state, id, routes),
        Command::EnableRoute {
            route,
            node: target,
        } => routes::change_route(state, *route, *target, true),
        Command::DisableRoute {
            route,
            node: target,
        } => routes::change_route(state, *route, *target, false),
        Command::UpdateHostinfo { id, hostinfo } => nodes::update_hostinfo(state, id, hostinfo),
        Command::RotateNodeKey { id, node_key } => nodes::rotate_key(state, id, node_key),
        Command::Import { events } => import::decide(state, events),
        Command::ReplacePolicy { text } => policy::replace(state, text),
        Command::CreateWebhook { url, kinds } => webhooks::create(state, url, kinds),
        Command::DeleteWebhook { id } => webhooks::delete(state, *id),
        Command::SetUserRole { id, role } => user_roles::set_role(state, *id, *role),
    }
}
