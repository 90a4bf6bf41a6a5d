//! The fact log's vocabulary: one `Event` variant per decision, past tense, plus the
//! `Envelope` that orders and attributes it. Events carry no secrets (only hashes and display
//! prefixes) and no wire types: client-reported data is normalised into small structs first.
//! Schema v0 is unstable until the first release; after it, variants are only ever added.

use super::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use super::keys::{Digest, MachineKey, NodeKey};
use super::roles::Role;
use super::time::Timestamp;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The schema version written in front of every stored record.
pub const SCHEMA_VERSION: u8 = 0;

/// One appended fact with its position, time and author.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Gap-free position in the log, from 1.
    pub seq: u64,
    /// When it was appended; never earlier than the previous event's `at`.
    pub at: Timestamp,
    pub actor: Actor,
    pub event: Event,
}

/// Who caused an event. Audit answers "who did this" from here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// An admin on the local unix socket (trusted by file permissions).
    LocalSocket,
    /// An admin authenticated with this API key.
    ApiKey(ApiKeyId),
    /// A Tailscale client acting for its own node (registration, hostinfo, logout).
    Node(NodeId),
    /// A client that is not a node yet, registering with a machine key.
    Machine(MachineKey),
    /// The server itself: start-up, config, timers (expiry, ephemeral clean-up).
    System,
    /// A person logged in through the OIDC provider: their `issuer/subject` identity.
    Oidc(String),
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::LocalSocket => f.write_str("admin (local socket)"),
            Actor::ApiKey(id) => write!(f, "admin (api key {id})"),
            Actor::Node(id) => write!(f, "node {id}"),
            Actor::Machine(key) => write!(f, "machine {}", key.short()),
            Actor::System => f.write_str("system"),
            Actor::Oidc(identity) => write!(f, "oidc {identity}"),
        }
    }
}

/// How a node came to be authorised; mirrors headscale's `registerMethod` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterMethod {
    AuthKey,
    Cli,
    Oidc,
}

/// How new addresses are picked from the prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Allocation {
    #[default]
    Sequential,
    Random,
}

/// The part of the configuration the pure core needs to decide (addresses, expiry defaults,
/// approval). The full netmap-relevant config travels beside it as canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CoreConfig {
    pub prefix_v4: Option<Ipv4Net>,
    pub prefix_v6: Option<Ipv6Net>,
    pub allocation: Allocation,
    pub base_domain: String,
    /// Default node key expiry for user-owned nodes; 0 means never.
    pub node_expiry_secs: u64,
    pub ephemeral_inactivity_secs: u64,
    /// Nodes registered without a pre-approved key wait for `nodes approve`.
    pub require_approval: bool,
}

/// The client-reported facts about a node that matter to others, normalised. Only a change of
/// these is recorded, never every MapRequest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeHostinfo {
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub client_version: String,
    /// Routes the node announces (`--advertise-routes`, exit routes).
    pub advertised_routes: Vec<IpNet>,
    /// Tags the node asks for (`--advertise-tags`).
    pub requested_tags: Vec<String>,
    pub ssh_host_keys: Vec<String>,
}

/// Everything a new node starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRegistration {
    pub id: NodeId,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    /// Owner; `None` for a tagged node (tags are its identity).
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    pub given_name: String,
    pub hostinfo: NodeHostinfo,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub expiry: Option<Timestamp>,
    pub register_method: RegisterMethod,
    pub auth_key: Option<PreAuthKeyId>,
    pub ephemeral: bool,
    /// False while device approval is pending.
    pub authorized: bool,
    pub approved_routes: Vec<IpNet>,
}

/// Every fact the server records. Past tense; `apply` never fails on any of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    ServerStarted {
        version: String,
    },
    ConfigApplied {
        hash: Digest,
        core: CoreConfig,
        /// Canonical JSON of every netmap-relevant setting (DNS, DERP, prefixes, ...).
        netmap_json: String,
    },
    UserCreated {
        id: UserId,
        name: String,
        display_name: String,
        email: String,
    },
    UserRenamed {
        id: UserId,
        name: String,
    },
    UserDeleted {
        id: UserId,
    },
    PreAuthKeyCreated {
        id: PreAuthKeyId,
        user: Option<UserId>,
        /// Public part of the key, shown in listings.
        prefix: String,
        secret_hash: Digest,
        reusable: bool,
        ephemeral: bool,
        pre_approved: bool,
        tags: Vec<String>,
        expiration: Timestamp,
    },
    /// A one-off key was spent (reusable keys are never marked used).
    PreAuthKeyUsed {
        id: PreAuthKeyId,
        node: NodeId,
    },
    PreAuthKeyExpired {
        id: PreAuthKeyId,
        at: Timestamp,
    },
    PreAuthKeyDeleted {
        id: PreAuthKeyId,
    },
    ApiKeyCreated {
        id: ApiKeyId,
        prefix: String,
        secret_hash: Digest,
        expiration: Timestamp,
    },
    ApiKeyExpired {
        id: ApiKeyId,
        at: Timestamp,
    },
    ApiKeyDeleted {
        id: ApiKeyId,
    },
    NodeRegistered(Box<NodeRegistration>),
    /// A known machine logged in again (same owner): keeps id and addresses.
    NodeReauthenticated {
        id: NodeId,
        node_key: NodeKey,
        expiry: Option<Timestamp>,
        auth_key: Option<PreAuthKeyId>,
        register_method: RegisterMethod,
    },
    NodeKeyRotated {
        id: NodeId,
        node_key: NodeKey,
    },
    NodeHostinfoChanged {
        id: NodeId,
        hostinfo: NodeHostinfo,
    },
    NodeRenamed {
        id: NodeId,
        given_name: String,
        /// True when an admin chose the name; client hostname changes then leave it alone.
        by_admin: bool,
    },
    NodeMoved {
        id: NodeId,
        user: UserId,
    },
    NodeTagsSet {
        id: NodeId,
        tags: Vec<String>,
    },
    NodeApproved {
        id: NodeId,
    },
    NodeExpiryChanged {
        id: NodeId,
        expiry: Option<Timestamp>,
    },
    NodeDeleted {
        id: NodeId,
    },
    RoutesApproved {
        id: NodeId,
        routes: Vec<IpNet>,
    },
    PolicyReplaced {
        policy: String,
    },
    /// A user's profile as shown to admins and in netmaps (display name, email, picture).
    /// New variants go at the end: older logs keep decoding.
    UserProfileChanged {
        id: UserId,
        display_name: String,
        email: String,
        picture_url: String,
    },
    /// A user brought over from a headscale database, with its original creation time and
    /// identity-provider binding (so OIDC logins find the same user again).
    UserImported(Box<ImportedUser>),
    /// A pre-auth key brought over from headscale: its hash may be bcrypt, its expiry may be
    /// absent, and it may already be spent.
    PreAuthKeyImported(Box<ImportedPreAuthKey>),
    /// An API key brought over from headscale (bcrypt hash; optional expiry).
    ApiKeyImported(Box<ImportedApiKey>),
    /// A node brought over from headscale with its original id, keys, addresses and times.
    NodeImported(Box<ImportedNode>),
    /// Marks the end of an import batch: where it came from, what it held, and where the id
    /// counters continue (after the highest id the source ever handed out, deleted rows too).
    Imported(Box<ImportSummary>),
    /// A user is bound to an identity-provider identity (made by their first OIDC login), so
    /// later logins find the same user.
    UserIdentityLinked {
        id: UserId,
        /// `oidc`.
        provider: String,
        /// headscale's `provider_identifier`: the issuer and subject.
        provider_identifier: String,
    },
    /// An OIDC login the provider vouched for was refused by the allow-lists.
    OidcLoginRefused {
        /// The identity that tried (issuer and subject).
        identity: String,
        email: String,
        /// headscale's wording: "unauthorised domain", "unverified email", ...
        reason: String,
    },
    /// A webhook endpoint was added through the CLI or API. Its signing secret is never
    /// here: the server keeps it in a 0600 file under the data directory
    /// (`webhooks/<id>.secret`). Delivery starts after this event's seq.
    WebhookCreated {
        id: u64,
        url: String,
        /// The webhook event types it receives (`nodeCreated`, ...; see
        /// `core::command::webhooks::WEBHOOK_KINDS`).
        kinds: Vec<String>,
    },
    WebhookDeleted {
        id: u64,
    },
    /// A user's role changed (`users role`); `Member` is every user's role until then. An
    /// ownership transfer is two of these: the old Owner becomes an Admin, then the new Owner.
    UserRoleChanged {
        id: UserId,
        role: Role,
    },
}

/// How a key's secret is checked. Our own keys store SHA-256 (the secrets are 64 random
/// characters, so a fast hash is enough); keys imported from headscale keep its bcrypt hash,
/// which cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SecretHash {
    Sha256(Digest),
    /// A modular-crypt bcrypt string (`$2a$10$…`).
    Bcrypt(String),
}

/// `UserImported`'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedUser {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub picture_url: String,
    pub created_at: Timestamp,
    /// headscale's `provider` (`oidc`, or empty for CLI-made users).
    pub provider: String,
    /// headscale's `provider_identifier` (the OIDC issuer + subject), empty when none.
    pub provider_identifier: String,
}

/// `PreAuthKeyImported`'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedPreAuthKey {
    pub id: PreAuthKeyId,
    pub user: Option<UserId>,
    /// Empty for headscale's legacy plaintext keys (looked up by hash instead).
    pub prefix: String,
    pub hash: SecretHash,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    /// The node a spent one-off key registered, when the source says.
    pub used_by: Option<NodeId>,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    /// `None`: never expires.
    pub expiration: Option<Timestamp>,
}

/// `ApiKeyImported`'s fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedApiKey {
    pub id: ApiKeyId,
    /// 12 characters (`hskey-api-` keys) or 7 (legacy `prefix.secret` keys); mixed case.
    pub prefix: String,
    pub hash: SecretHash,
    pub created_at: Timestamp,
    /// `None`: never expires.
    pub expiration: Option<Timestamp>,
}

/// `NodeImported`'s fields: the registration plus what only an import knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedNode {
    pub registration: NodeRegistration,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    /// The given name differs from the one the hostname would give (an admin renamed it).
    pub given_name_by_admin: bool,
}

/// Counters of one import and where ids continue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// `sqlite` or `postgres`.
    pub source: String,
    /// The newest headscale migration id the source database records.
    pub schema: String,
    pub users: u64,
    pub nodes: u64,
    pub pre_auth_keys: u64,
    pub api_keys: u64,
    pub policy: bool,
    /// Rows left out (soft-deleted or unparsable), as shown in the import's report.
    pub skipped: u64,
    pub next_user: u64,
    pub next_node: u64,
    pub next_pre_auth_key: u64,
    pub next_api_key: u64,
}

impl Event {
    /// The variant name, as used by `events list --type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ServerStarted { .. } => "ServerStarted",
            Event::ConfigApplied { .. } => "ConfigApplied",
            Event::UserCreated { .. } => "UserCreated",
            Event::UserRenamed { .. } => "UserRenamed",
            Event::UserDeleted { .. } => "UserDeleted",
            Event::PreAuthKeyCreated { .. } => "PreAuthKeyCreated",
            Event::PreAuthKeyUsed { .. } => "PreAuthKeyUsed",
            Event::PreAuthKeyExpired { .. } => "PreAuthKeyExpired",
            Event::PreAuthKeyDeleted { .. } => "PreAuthKeyDeleted",
            Event::ApiKeyCreated { .. } => "ApiKeyCreated",
            Event::ApiKeyExpired { .. } => "ApiKeyExpired",
            Event::ApiKeyDeleted { .. } => "ApiKeyDeleted",
            Event::NodeRegistered(_) => "NodeRegistered",
            Event::NodeReauthenticated { .. } => "NodeReauthenticated",
            Event::NodeKeyRotated { .. } => "NodeKeyRotated",
            Event::NodeHostinfoChanged { .. } => "NodeHostinfoChanged",
            Event::NodeRenamed { .. } => "NodeRenamed",
            Event::NodeMoved { .. } => "NodeMoved",
            Event::NodeTagsSet { .. } => "NodeTagsSet",
            Event::NodeApproved { .. } => "NodeApproved",
            Event::NodeExpiryChanged { .. } => "NodeExpiryChanged",
            Event::NodeDeleted { .. } => "NodeDeleted",
            Event::RoutesApproved { .. } => "RoutesApproved",
            Event::PolicyReplaced { .. } => "PolicyReplaced",
            Event::UserProfileChanged { .. } => "UserProfileChanged",
            Event::UserImported(_) => "UserImported",
            Event::PreAuthKeyImported(_) => "PreAuthKeyImported",
            Event::ApiKeyImported(_) => "ApiKeyImported",
            Event::NodeImported(_) => "NodeImported",
            Event::Imported(_) => "Imported",
            Event::UserIdentityLinked { .. } => "UserIdentityLinked",
            Event::OidcLoginRefused { .. } => "OidcLoginRefused",
            Event::WebhookCreated { .. } => "WebhookCreated",
            Event::WebhookDeleted { .. } => "WebhookDeleted",
            Event::UserRoleChanged { .. } => "UserRoleChanged",
        }
    }

    /// Every variant name, for validating `--type` filters.
    pub const KINDS: &'static [&'static str] = &[
        "ServerStarted",
        "ConfigApplied",
        "UserCreated",
        "UserRenamed",
        "UserDeleted",
        "PreAuthKeyCreated",
        "PreAuthKeyUsed",
        "PreAuthKeyExpired",
        "PreAuthKeyDeleted",
        "ApiKeyCreated",
        "ApiKeyExpired",
        "ApiKeyDeleted",
        "NodeRegistered",
        "NodeReauthenticated",
        "NodeKeyRotated",
        "NodeHostinfoChanged",
        "NodeRenamed",
        "NodeMoved",
        "NodeTagsSet",
        "NodeApproved",
        "NodeExpiryChanged",
        "NodeDeleted",
        "RoutesApproved",
        "PolicyReplaced",
        "UserProfileChanged",
        "UserImported",
        "PreAuthKeyImported",
        "ApiKeyImported",
        "NodeImported",
        "Imported",
        "UserIdentityLinked",
        "OidcLoginRefused",
        "WebhookCreated",
        "WebhookDeleted",
        "UserRoleChanged",
    ];

    /// The node this event is about, if any (for `events list --node`).
    pub fn node(&self) -> Option<NodeId> {
        match self {
            Event::NodeRegistered(reg) => Some(reg.id),
            Event::NodeImported(node) => Some(node.registration.id),
            Event::PreAuthKeyUsed { node, .. } => Some(*node),
            Event::NodeReauthenticated { id, .. }
            | Event::NodeKeyRotated { id, .. }
            | Event::NodeHostinfoChanged { id, .. }
            | Event::NodeRenamed { id, .. }
            | Event::NodeMoved { id, .. }
            | Event::NodeTagsSet { id, .. }
            | Event::NodeApproved { id }
            | Event::NodeExpiryChanged { id, .. }
            | Event::NodeDeleted { id }
            | Event::RoutesApproved { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// The user this event names directly, if any (for `events list --user`).
    pub fn user(&self) -> Option<UserId> {
        match self {
            Event::UserCreated { id, .. }
            | Event::UserProfileChanged { id, .. }
            | Event::UserRenamed { id, .. }
            | Event::UserDeleted { id }
            | Event::UserIdentityLinked { id, .. }
            | Event::UserRoleChanged { id, .. } => Some(*id),
            Event::PreAuthKeyCreated { user, .. } => *user,
            Event::NodeRegistered(reg) => reg.user,
            Event::UserImported(user) => Some(user.id),
            Event::PreAuthKeyImported(key) => key.user,
            Event::NodeImported(node) => node.registration.user,
            Event::NodeMoved { user, .. } => Some(*user),
            _ => None,
        }
    }
}
