//! Commands and `decide`: what an admin or client asks for, checked against the current
//! state, turned into the events that record the outcome, or refused with a `Rejection`.
//! Pure: time, entropy and hashed secrets come in with the command.

use super::event::{
    Actor, CoreConfig, Envelope, Event, NodeHostinfo, NodeRegistration, RegisterMethod,
};
use super::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use super::ipalloc::{allocate_v4, allocate_v6};
use super::keys::{Digest, MachineKey, NodeKey};
use super::naming;
use super::state::{Node, State};
use super::time::Timestamp;
use ipnet::IpNet;
use std::time::Duration;

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
            UserNotFound(_) | PreAuthKeyNotFound(_) | ApiKeyNotFound(_) | NodeNotFound(_) => {
                RejectionKind::NotFound
            }
            UserNameTaken(_)
            | UserHasNodes { .. }
            | NodeNameTaken(_)
            | AddressSpaceExhausted(_)
            | NodeKeyInUse(_)
            | LogNotEmpty(_) => RejectionKind::Conflict,
            PreAuthKeyExpired(_) | PreAuthKeyUsed(_) => RejectionKind::Forbidden,
            _ => RejectionKind::Invalid,
        }
    }
}

/// Routes that always travel together: approving either exit route approves both.
const EXIT_ROUTES: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn exit_routes() -> [IpNet; 2] {
    EXIT_ROUTES.map(|r| r.parse().expect("valid constant route"))
}

/// Routes truncated to their network, sorted and deduplicated (so `10.1.2.3/8` and
/// `10.0.0.0/8` are one route everywhere).
fn canonical_routes(routes: impl IntoIterator<Item = IpNet>) -> Vec<IpNet> {
    let mut routes: Vec<IpNet> = routes.into_iter().map(|r| r.trunc()).collect();
    routes.sort();
    routes.dedup();
    routes
}

/// The hostinfo as recorded: canonical advertised routes and tags.
pub fn normalize_hostinfo(hostinfo: &NodeHostinfo) -> NodeHostinfo {
    NodeHostinfo {
        advertised_routes: canonical_routes(hostinfo.advertised_routes.iter().copied()),
        requested_tags: naming::normalize_tags(&hostinfo.requested_tags),
        ..hostinfo.clone()
    }
}

/// Approved routes as recorded: canonical, with the exit pair completed.
pub fn normalize_routes(routes: &[IpNet]) -> Vec<IpNet> {
    let exits = exit_routes();
    let has_exit = routes.iter().any(|r| exits.contains(&r.trunc()));
    let completion = if has_exit { exits.to_vec() } else { Vec::new() };
    canonical_routes(routes.iter().copied().chain(completion))
}

/// The approved-route list after `autoApprovers` (of the state's policy, or `policy`) have
/// approved what they cover of `announced`; `None` when nothing new is approved.
fn auto_approve(
    state: &State,
    policy: Option<&crate::core::policy::Policy>,
    identity: (Option<UserId>, &[String], Vec<std::net::IpAddr>),
    announced: &[IpNet],
    approved: &[IpNet],
) -> Option<Vec<IpNet>> {
    if announced.is_empty() {
        return None;
    }
    let stored;
    let policy = match policy {
        Some(p) => p,
        None => {
            stored = state.parsed_policy()?;
            &*stored
        }
    };
    if policy.auto_routes.is_empty() && policy.auto_exit.is_empty() {
        return None;
    }
    let topology = state.policy_users();
    let (user, tags, ips) = identity;
    let candidate = crate::core::policy::auto_approve::Candidate {
        user: user.map(|u| u.0),
        tags,
        ips,
    };
    let extra =
        crate::core::policy::auto_approve::approved(policy, &topology, &candidate, announced);
    let merged = normalize_routes(
        &approved
            .iter()
            .chain(extra.iter())
            .copied()
            .collect::<Vec<_>>(),
    );
    (merged != normalize_routes(approved)).then_some(merged)
}

fn node_ips(node: &super::state::Node) -> Vec<std::net::IpAddr> {
    node.ipv4
        .map(std::net::IpAddr::V4)
        .into_iter()
        .chain(node.ipv6.map(std::net::IpAddr::V6))
        .collect()
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

/// Decides what `command` means in `state` at `now`.
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
        } => {
            naming::validate_user_name(name).map_err(|reason| Rejection::InvalidUserName {
                name: name.clone(),
                reason,
            })?;
            if state.user_by_name(name).is_some() {
                return Err(Rejection::UserNameTaken(name.clone()));
            }
            let id = UserId(state.next_ids.user);
            let mut events = vec![Event::UserCreated {
                id,
                name: name.clone(),
                display_name: display_name.clone(),
                email: email.clone(),
            }];
            // The picture came later than the first schema: its own event, only when given.
            if !picture_url.is_empty() {
                events.push(Event::UserProfileChanged {
                    id,
                    display_name: display_name.clone(),
                    email: email.clone(),
                    picture_url: picture_url.clone(),
                });
            }
            Ok(events)
        }
        Command::RenameUser { id, new_name } => {
            let current = user(state, *id)?;
            naming::validate_user_name(new_name).map_err(|reason| Rejection::InvalidUserName {
                name: new_name.clone(),
                reason,
            })?;
            if current.name == *new_name {
                return Ok(vec![]);
            }
            if state.user_by_name(new_name).is_some() {
                return Err(Rejection::UserNameTaken(new_name.clone()));
            }
            Ok(vec![Event::UserRenamed {
                id: *id,
                name: new_name.clone(),
            }])
        }
        Command::DeleteUser { id, force } => {
            let found = user(state, *id)?;
            let owned: Vec<NodeId> = state.nodes_of_user(*id).map(|n| n.id).collect();
            if !owned.is_empty() && !force {
                return Err(Rejection::UserHasNodes {
                    name: found.name.clone(),
                    count: owned.len(),
                });
            }
            let mut events: Vec<Event> = owned
                .into_iter()
                .map(|id| Event::NodeDeleted { id })
                .collect();
            events.push(Event::UserDeleted { id: *id });
            Ok(events)
        }
        Command::CreatePreAuthKey {
            user: owner,
            reusable,
            ephemeral,
            pre_approved,
            tags,
            expiration,
            prefix,
            secret_hash,
        } => {
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
                prefix: prefix.clone(),
                secret_hash: *secret_hash,
                reusable: *reusable,
                ephemeral: *ephemeral,
                pre_approved: *pre_approved,
                tags,
                expiration: *expiration,
            }])
        }
        Command::ExpirePreAuthKey { id } => {
            let key = state
                .pre_auth_keys
                .get(id)
                .ok_or_else(|| Rejection::PreAuthKeyNotFound(id.to_string()))?;
            if key.is_expired(now) {
                return Ok(vec![]);
            }
            Ok(vec![Event::PreAuthKeyExpired { id: *id, at: now }])
        }
        Command::DeletePreAuthKey { id } => {
            if !state.pre_auth_keys.contains_key(id) {
                return Err(Rejection::PreAuthKeyNotFound(id.to_string()));
            }
            Ok(vec![Event::PreAuthKeyDeleted { id: *id }])
        }
        Command::CreateApiKey {
            expiration,
            prefix,
            secret_hash,
        } => {
            if *expiration <= now {
                return Err(Rejection::ExpirationInPast(*expiration));
            }
            Ok(vec![Event::ApiKeyCreated {
                id: ApiKeyId(state.next_ids.api_key),
                prefix: prefix.clone(),
                secret_hash: *secret_hash,
                expiration: *expiration,
            }])
        }
        Command::ExpireApiKey { id } => {
            let key = state
                .api_keys
                .get(id)
                .ok_or_else(|| Rejection::ApiKeyNotFound(id.to_string()))?;
            if key.expiration <= now {
                return Ok(vec![]);
            }
            Ok(vec![Event::ApiKeyExpired { id: *id, at: now }])
        }
        Command::DeleteApiKey { id } => {
            if !state.api_keys.contains_key(id) {
                return Err(Rejection::ApiKeyNotFound(id.to_string()));
            }
            Ok(vec![Event::ApiKeyDeleted { id: *id }])
        }
        Command::RegisterNode {
            machine_key,
            node_key,
            hostinfo,
            auth,
            requested_expiry,
            ephemeral,
            entropy,
        } => decide_register(
            state,
            Registration {
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
        Command::OidcLogin { claims, rules } => Ok(decide_oidc_login(state, claims, rules)),
        Command::DeleteNode { id } => {
            node(state, *id)?;
            Ok(vec![Event::NodeDeleted { id: *id }])
        }
        Command::ExpireNode { id, change } => {
            let found = node(state, *id)?;
            let expiry = match change {
                ExpiryChange::Now => Some(now),
                ExpiryChange::At(t) => Some(*t),
                ExpiryChange::Never => None,
            };
            if found.expiry == expiry {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeExpiryChanged { id: *id, expiry }])
        }
        Command::LogoutNode { id } => {
            let found = node(state, *id)?;
            if found.ephemeral {
                return Ok(vec![Event::NodeDeleted { id: *id }]);
            }
            if found.expiry.is_some_and(|t| t <= now) {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeExpiryChanged {
                id: *id,
                expiry: Some(now),
            }])
        }
        Command::RenameNode { id, new_name } => {
            let found = node(state, *id)?;
            naming::validate_given_name(new_name, &state.config.core.base_domain).map_err(
                |reason| Rejection::InvalidNodeName {
                    name: new_name.clone(),
                    reason,
                },
            )?;
            if state.given_name_taken(new_name, Some(*id)) {
                return Err(Rejection::NodeNameTaken(new_name.clone()));
            }
            if found.given_name == *new_name && found.given_name_by_admin {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeRenamed {
                id: *id,
                given_name: new_name.clone(),
                by_admin: true,
            }])
        }
        Command::MoveNode { id, user: to } => {
            let found = node(state, *id)?;
            user(state, *to)?;
            if found.user == Some(*to) && !found.is_tagged() {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeMoved { id: *id, user: *to }])
        }
        Command::SetNodeTags { id, tags } => {
            let found = node(state, *id)?;
            let tags = checked_tags(tags)?;
            if tags.is_empty() {
                return Err(Rejection::EmptyTags);
            }
            // As headscale: under a policy that defines tags (`tagOwners`), only those may be
            // set. A policy that defines none leaves tag names to the admin, as no policy
            // does (headscale then refuses every tag; the frozen v0 golden log tags a node
            // under such a policy). A stored policy that no longer parses restricts nothing
            // (it was checked when set).
            let defining = state
                .parsed_policy()
                .filter(|policy| !policy.tag_owners.is_empty());
            if let Some(policy) = defining {
                let undefined: Vec<String> = tags
                    .iter()
                    .filter(|tag| !policy.tag_owners.contains_key(*tag))
                    .cloned()
                    .collect();
                if !undefined.is_empty() {
                    return Err(Rejection::RequestedTagsNotPermitted(undefined));
                }
            }
            if found.tags == tags {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeTagsSet { id: *id, tags }])
        }
        Command::ApproveNode { id } => {
            let found = node(state, *id)?;
            if found.authorized {
                return Ok(vec![]);
            }
            Ok(vec![Event::NodeApproved { id: *id }])
        }
        Command::ApproveRoutes { id, routes } => {
            let found = node(state, *id)?;
            let routes = normalize_routes(routes);
            if found.approved_routes == routes {
                return Ok(vec![]);
            }
            Ok(vec![Event::RoutesApproved { id: *id, routes }])
        }
        Command::EnableRoute {
            route,
            node: target,
        } => change_route(state, *route, *target, true),
        Command::DisableRoute {
            route,
            node: target,
        } => change_route(state, *route, *target, false),
        Command::UpdateHostinfo { id, hostinfo } => {
            let found = node(state, *id)?;
            let hostinfo = &normalize_hostinfo(hostinfo);
            if found.hostinfo == *hostinfo {
                return Ok(vec![]);
            }
            let mut events = vec![Event::NodeHostinfoChanged {
                id: *id,
                hostinfo: hostinfo.clone(),
            }];
            // Newly announced routes may be auto-approved.
            if found.hostinfo.advertised_routes != hostinfo.advertised_routes {
                let owner = if found.is_tagged() { None } else { found.user };
                if let Some(routes) = auto_approve(
                    state,
                    None,
                    (owner, &found.tags, node_ips(found)),
                    &hostinfo.advertised_routes,
                    &found.approved_routes,
                ) {
                    events.push(Event::RoutesApproved { id: *id, routes });
                }
            }
            Ok(events)
        }
        Command::RotateNodeKey { id, node_key } => {
            let found = node(state, *id)?;
            if found.node_key == *node_key {
                return Ok(vec![]);
            }
            node_key_free(state, *node_key, Some(*id))?;
            Ok(vec![Event::NodeKeyRotated {
                id: *id,
                node_key: *node_key,
            }])
        }
        Command::Import { events } => decide_import(state, events),
        Command::ReplacePolicy { text } => {
            if state.policy.as_ref().is_some_and(|p| p.text == *text) {
                return Ok(vec![]);
            }
            // An empty policy clears it (headscale 0.29: none set, every node may reach
            // every other); how the Terraform provider deletes a policy.
            if text.trim().is_empty() {
                return Ok(match state.policy {
                    Some(_) => vec![Event::PolicyReplaced {
                        policy: String::new(),
                    }],
                    None => vec![],
                });
            }
            // A policy that does not parse, names undefined things or fails its own tests
            // is refused; the one in force stays.
            let policy = crate::core::policy::check_for_state(text, state)
                .map_err(Rejection::InvalidPolicy)?;
            let mut events = vec![Event::PolicyReplaced {
                policy: text.clone(),
            }];
            // Its autoApprovers apply to what nodes already announce.
            for node in state.nodes.values() {
                let owner = if node.is_tagged() { None } else { node.user };
                if let Some(routes) = auto_approve(
                    state,
                    Some(&policy),
                    (owner, &node.tags, node_ips(node)),
                    &node.hostinfo.advertised_routes,
                    &node.approved_routes,
                ) {
                    events.push(Event::RoutesApproved {
                        id: node.id,
                        routes,
                    });
                }
            }
            Ok(events)
        }
    }
}

/// Approves or unapproves one route (and its exit twin) on the targeted nodes.
fn change_route(
    state: &State,
    route: IpNet,
    target: Option<NodeId>,
    approve: bool,
) -> Result<Vec<Event>, Rejection> {
    let route = route.trunc();
    let group: Vec<IpNet> = if exit_routes().contains(&route) {
        exit_routes().to_vec()
    } else {
        vec![route]
    };
    let advertises = |n: &Node| {
        n.hostinfo
            .advertised_routes
            .iter()
            .any(|r| group.contains(&r.trunc()))
    };
    let targets: Vec<&Node> = match target {
        Some(id) => {
            let found = node(state, id)?;
            if approve && !advertises(found) {
                return Err(Rejection::RouteNotAdvertisedByNode { node: id, route });
            }
            vec![found]
        }
        None => {
            let all: Vec<&Node> = state
                .nodes
                .values()
                .filter(|n| advertises(n) || n.approved_routes.iter().any(|r| group.contains(r)))
                .collect();
            if all.is_empty() {
                return Err(Rejection::RouteNotAdvertised(route));
            }
            all
        }
    };
    let mut events = Vec::new();
    for found in targets {
        let mut routes: Vec<IpNet> = found
            .approved_routes
            .iter()
            .filter(|r| !group.contains(r))
            .copied()
            .collect();
        if approve {
            routes.extend(group.iter().copied());
        }
        let routes = normalize_routes(&routes);
        if routes != found.approved_routes {
            events.push(Event::RoutesApproved {
                id: found.id,
                routes,
            });
        }
    }
    Ok(events)
}

/// An OIDC login (the allow-lists, then the user's creation or update). A refusal is an
/// event too: the provider vouched for the person, so who was turned away is worth keeping.
fn decide_oidc_login(
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

struct Registration<'a> {
    machine_key: MachineKey,
    node_key: NodeKey,
    hostinfo: &'a NodeHostinfo,
    auth: &'a RegisterAuth,
    requested_expiry: Option<Timestamp>,
    ephemeral: bool,
    entropy: u64,
}

/// Registration: who owns the node, whether it is a re-login of a known machine, and what it
/// starts with (addresses, name, expiry, approval).
fn decide_register(
    state: &State,
    reg: Registration<'_>,
    now: Timestamp,
) -> Result<Vec<Event>, Rejection> {
    let core = &state.config.core;
    let (owner, tags, auth_key, method, ephemeral, pre_approved) = match reg.auth {
        RegisterAuth::PreAuthKey(id) => {
            let key = state
                .pre_auth_keys
                .get(id)
                .ok_or_else(|| Rejection::PreAuthKeyNotFound(id.to_string()))?;
            if key.is_expired(now) {
                return Err(Rejection::PreAuthKeyExpired(*id));
            }
            let (owner, tags) = if key.tags.is_empty() {
                (key.user, vec![])
            } else {
                (None, key.tags.clone())
            };
            (
                owner,
                tags,
                Some(key),
                RegisterMethod::AuthKey,
                key.ephemeral || reg.ephemeral,
                key.pre_approved,
            )
        }
        RegisterAuth::Admin { user: id } => {
            user(state, *id)?;
            (
                Some(*id),
                vec![],
                None,
                RegisterMethod::Cli,
                reg.ephemeral,
                true,
            )
        }
        // The user approved their own machine: device approval, when on, still waits for
        // an admin.
        RegisterAuth::Oidc { user: id, .. } => {
            user(state, *id)?;
            (
                Some(*id),
                vec![],
                None,
                RegisterMethod::Oidc,
                reg.ephemeral,
                false,
            )
        }
    };
    // Tags the client asks for itself (`--advertise-tags`) make a user's node a tagged one,
    // if the policy lets that user own every one of them.
    let (owner, tags) = match owner {
        Some(user_id) if tags.is_empty() && !reg.hostinfo.requested_tags.is_empty() => {
            let mut wanted = reg.hostinfo.requested_tags.clone();
            wanted.sort();
            wanted.dedup();
            let permitted = state.parsed_policy().map(|policy| {
                let topology = state.policy_users();
                wanted.iter().all(|tag| {
                    crate::core::policy::tag_owners::user_owns_tag(
                        &policy, &topology, user_id.0, tag,
                    )
                })
            });
            if permitted != Some(true) {
                return Err(Rejection::RequestedTagsNotPermitted(wanted));
            }
            (None, wanted)
        }
        _ => (owner, tags),
    };
    let spend_key = |node: NodeId| -> Vec<Event> {
        match auth_key {
            Some(key) if !key.reusable && !key.used => {
                vec![Event::PreAuthKeyUsed { id: key.id, node }]
            }
            _ => vec![],
        }
    };
    // The client may ask for a shorter life than `node.expiry`, never a longer one (M4:
    // tailcfg's "the server policy may override").
    let limit =
        (core.node_expiry_secs > 0).then(|| now.plus(Duration::from_secs(core.node_expiry_secs)));
    let token_expiry = match reg.auth {
        RegisterAuth::Oidc { expiry, .. } => *expiry,
        _ => None,
    };
    let expiry = if !tags.is_empty() {
        None
    } else if token_expiry.is_some() {
        // `use_expiry_from_token`: the node lives as long as the login (headscale).
        token_expiry
    } else {
        match (reg.requested_expiry.filter(|t| *t > now), limit) {
            (Some(requested), Some(limit)) => Some(requested.min(limit)),
            (requested, limit) => requested.or(limit),
        }
    };

    // A known machine logging in again as the same owner keeps its node, id and addresses.
    let known = state
        .nodes_by_machine_key(&reg.machine_key)
        .rev()
        .find(|n| n.user == owner && n.tags == tags);
    if let Some(existing) = known {
        // Re-login with a key that was already spent on this very node is fine.
        if let Some(key) = auth_key {
            if key.used && !key.reusable && key.used_by != Some(existing.id) {
                return Err(Rejection::PreAuthKeyUsed(key.id));
            }
        }
        node_key_free(state, reg.node_key, Some(existing.id))?;
        let mut events = vec![Event::NodeReauthenticated {
            id: existing.id,
            node_key: reg.node_key,
            expiry,
            auth_key: auth_key.map(|k| k.id),
            register_method: method,
        }];
        if existing.hostinfo != *reg.hostinfo {
            events.push(Event::NodeHostinfoChanged {
                id: existing.id,
                hostinfo: reg.hostinfo.clone(),
            });
        }
        events.extend(spend_key(existing.id));
        return Ok(events);
    }
    if let Some(key) = auth_key {
        if key.used && !key.reusable {
            return Err(Rejection::PreAuthKeyUsed(key.id));
        }
    }
    node_key_free(state, reg.node_key, None)?;

    let id = NodeId(state.next_ids.node);
    let (ipv4, ipv6) = allocate_addresses(state, core, reg.entropy)?;
    let given_name = naming::unique_name_indexed(
        &naming::sanitize_hostname(&reg.hostinfo.hostname),
        |name| state.given_name_taken(name, None),
        |base| state.free_name_suffix(base),
    );
    let approved_routes = auto_approve(
        state,
        None,
        (
            owner,
            &tags,
            ipv4.map(std::net::IpAddr::V4)
                .into_iter()
                .chain(ipv6.map(std::net::IpAddr::V6))
                .collect(),
        ),
        &reg.hostinfo.advertised_routes,
        &[],
    )
    .unwrap_or_default();
    let mut events = vec![Event::NodeRegistered(Box::new(NodeRegistration {
        id,
        machine_key: reg.machine_key,
        node_key: reg.node_key,
        user: owner,
        tags,
        given_name,
        hostinfo: reg.hostinfo.clone(),
        ipv4,
        ipv6,
        expiry,
        register_method: method,
        auth_key: auth_key.map(|k| k.id),
        ephemeral,
        authorized: !core.require_approval || pre_approved,
        approved_routes,
    }))];
    events.extend(spend_key(id));
    Ok(events)
}

fn allocate_addresses(
    state: &State,
    core: &CoreConfig,
    entropy: u64,
) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>), Rejection> {
    if core.prefix_v4.is_none() && core.prefix_v6.is_none() {
        return Err(Rejection::NoPrefixes);
    }
    let ipv4 = match &core.prefix_v4 {
        Some(prefix) => Some(
            allocate_v4(prefix, state.used_ipv4(), core.allocation, entropy)
                .ok_or_else(|| Rejection::AddressSpaceExhausted(prefix.to_string()))?,
        ),
        None => None,
    };
    let ipv6 = match &core.prefix_v6 {
        Some(prefix) => Some(
            allocate_v6(
                prefix,
                state.used_ipv6(),
                core.allocation,
                entropy.rotate_left(17),
            )
            .ok_or_else(|| Rejection::AddressSpaceExhausted(prefix.to_string()))?,
        ),
        None => None,
    };
    Ok((ipv4, ipv6))
}

/// `Command::Import`: the events as given, into an empty log only; anything but import events
/// is refused, and so is a policy that would not be accepted here (the policy in force is
/// always valid).
fn decide_import(state: &State, events: &[Event]) -> Result<Vec<Event>, Rejection> {
    if state.last_seq != 0 {
        return Err(Rejection::LogNotEmpty(state.last_seq));
    }
    let mut imported = state.clone();
    for event in events {
        match event {
            Event::UserImported(_)
            | Event::PreAuthKeyImported(_)
            | Event::ApiKeyImported(_)
            | Event::NodeImported(_)
            | Event::PolicyReplaced { .. }
            | Event::Imported(_) => {}
            other => {
                return Err(Rejection::InvalidImport(format!(
                    "{} is not an import event",
                    other.kind()
                )))
            }
        }
        imported.apply(&Envelope {
            seq: 0,
            at: Timestamp::EPOCH,
            actor: Actor::System,
            event: event.clone(),
        });
    }
    if let Some(policy) = &imported.policy {
        crate::core::policy::check_for_state(&policy.text, &imported).map_err(|e| {
            Rejection::InvalidImport(format!("headscale's policy is not valid here: {e}"))
        })?;
    }
    Ok(events.to_vec())
}
