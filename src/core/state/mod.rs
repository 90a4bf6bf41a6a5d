//! The projection: users, keys, nodes, routes, policy and config folded from the log.
//! `apply` is total (never fails, never panics) and deterministic, so any prefix of the log
//! rebuilds exactly the state the server had at that point. Persistent maps (`imbl`) make a
//! clone O(1), which is how the engine publishes a new state after every batch.
//!
//! Here: the state's types, its lookups and `apply`, which routes each event to its
//! aggregate's arm (`users`, `keys`, `nodes`); `index` holds the derived lookups and
//! `bounded_map` the capped decoding of snapshot maps.

use super::event::{
    CoreConfig, Envelope, Event, ImportSummary, NodeHostinfo, RegisterMethod, SecretHash,
};
use super::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use super::intervals::Runs;
use super::keys::{Digest, MachineKey, NodeKey};
use super::policy::{Policy, Topology};
use super::roles::Role;
use super::time::Timestamp;
use imbl::OrdMap;
use ipnet::IpNet;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

mod bounded_map;
mod index;
mod keys;
mod nodes;
mod users;
mod webhooks;

pub use webhooks::{Webhook, Webhooks};

use index::{ids_of, parse_policy, Index, ALL_NODES};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub created_at: Timestamp,
    /// `pictureUrl` (set at creation, or by an identity provider later).
    #[serde(default)]
    pub picture_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAuthKey {
    pub id: PreAuthKeyId,
    pub user: Option<UserId>,
    pub prefix: String,
    pub secret_hash: Digest,
    pub reusable: bool,
    pub ephemeral: bool,
    pub pre_approved: bool,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
    pub expiration: Timestamp,
    /// A one-off key that registered a node.
    pub used: bool,
    /// The node a one-off key was spent on; that node may log in with it again.
    pub used_by: Option<NodeId>,
}

impl PreAuthKey {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiration <= now
    }

    /// Whether the key can still register a node at `now`.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        !self.is_expired(now) && (self.reusable || !self.used)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub prefix: String,
    pub secret_hash: Digest,
    pub created_at: Timestamp,
    pub expiration: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub machine_key: MachineKey,
    pub node_key: NodeKey,
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    pub given_name: String,
    pub given_name_by_admin: bool,
    pub hostinfo: NodeHostinfo,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub expiry: Option<Timestamp>,
    pub register_method: RegisterMethod,
    pub auth_key: Option<PreAuthKeyId>,
    pub ephemeral: bool,
    pub authorized: bool,
    pub approved_routes: Vec<IpNet>,
    pub created_at: Timestamp,
}

impl Node {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expiry.is_some_and(|e| e <= now)
    }

    /// Cut off from the tailnet (M3): its key has expired, or it awaits device approval. Its
    /// map shows only itself, and the DERP relay does not admit its key.
    pub fn is_revoked(&self, now: Timestamp) -> bool {
        !self.authorized || self.is_expired(now)
    }

    /// Routes announced and approved: what peers may route through this node.
    pub fn subnet_routes(&self) -> Vec<IpNet> {
        self.approved_routes
            .iter()
            .filter(|r| self.hostinfo.advertised_routes.contains(r))
            .copied()
            .collect()
    }
}

/// The policy document in force and when it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    pub text: String,
    pub updated_at: Timestamp,
}

/// The config recorded by the latest `ConfigApplied`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AppliedConfig {
    pub hash: Digest,
    pub core: CoreConfig,
    pub netmap_json: String,
}

/// Counters for ids: the next id handed out of each kind. Never decremented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextIds {
    pub user: u64,
    pub node: u64,
    pub pre_auth_key: u64,
    pub api_key: u64,
}

impl Default for NextIds {
    fn default() -> Self {
        NextIds {
            user: 1,
            node: 1,
            pre_auth_key: 1,
            api_key: 1,
        }
    }
}

/// Everything the log says, as of `last_seq`.
///
/// Change it only through `apply` (code that builds one by hand, as some tests and
/// benchmarks do, calls `rebuild_index` afterwards): `apply` keeps the derived lookups in
/// step with the maps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(from = "StateFields")]
pub struct State {
    /// The seq of the last applied event (0 for the empty log).
    pub last_seq: u64,
    /// The `at` of the last applied event; new events are never earlier.
    pub last_at: Timestamp,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    pub users: OrdMap<UserId, User>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    pub pre_auth_keys: OrdMap<PreAuthKeyId, PreAuthKey>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    pub api_keys: OrdMap<ApiKeyId, ApiKey>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    pub nodes: OrdMap<NodeId, Node>,
    pub policy: Option<PolicyDocument>,
    pub config: AppliedConfig,
    pub next_ids: NextIds,
    /// What only imports and OIDC logins record (bcrypt hashes, OIDC identities, ...).
    /// Left out of the readable form while empty, so states without an import keep their
    /// golden JSON; always present in the binary snapshot (bincode has no optional fields).
    pub extras: Extras,
    /// CLI/API-managed webhook endpoints; left out of the readable form while empty, like
    /// `extras`.
    pub webhooks: Webhooks,
    /// Users whose role is not `Member` (`UserRoleChanged`); left out of the readable form
    /// while empty, like `extras`. A snapshot written before this field existed does not
    /// decode (bincode has no optional fields) and the log is replayed instead.
    pub roles: OrdMap<UserId, Role>,
    /// Derived lookups by key, name and prefix: never serialised (the snapshot and golden
    /// shapes are the fields above), rebuilt on decode, kept up to date by `apply`.
    #[serde(skip)]
    index: Index,
}

/// A user's binding to an identity provider, as headscale recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `oidc` for users made by an OIDC login.
    pub provider: String,
    /// The issuer and subject headscale matched on login.
    pub provider_identifier: String,
}

/// Facts only imports and OIDC logins record, kept beside the main maps so that the shape of `User`,
/// `PreAuthKey`, `ApiKey` and `Node` (and every snapshot of a log without an import) is
/// unchanged. Entries go with the user, key or node they describe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Extras {
    /// OIDC identities of users (imported, or made by an OIDC login), so a later OIDC login
    /// finds the same user.
    pub identities: OrdMap<UserId, Identity>,
    /// Pre-auth keys whose secret is checked otherwise than by `secret_hash` (bcrypt).
    pub pre_auth_key_hashes: OrdMap<PreAuthKeyId, SecretHash>,
    /// API keys whose secret is checked otherwise than by `secret_hash` (bcrypt).
    pub api_key_hashes: OrdMap<ApiKeyId, SecretHash>,
    /// When an imported node was last seen by headscale (until it connects to us).
    pub node_last_seen: OrdMap<NodeId, Timestamp>,
    /// The import this log started from, if any.
    pub import: Option<ImportSummary>,
}

impl Extras {
    pub fn is_empty(&self) -> bool {
        self == &Extras::default()
    }
}

/// The SHA-256 an imported key keeps in its main record; a bcrypt hash goes to `keep_beside`
/// (the key's entry in `State.extras`) and leaves the main record's digest empty.
fn split_secret_hash(hash: &SecretHash, keep_beside: impl FnOnce(SecretHash)) -> Digest {
    match hash {
        SecretHash::Sha256(digest) => *digest,
        SecretHash::Bcrypt(_) => {
            keep_beside(hash.clone());
            Digest::default()
        }
    }
}

/// A key expiry of "never" (headscale's NULL expiration), far enough away that every
/// comparison treats it as the future, and still a valid RFC 3339 time.
pub const NEVER_EXPIRES: Timestamp = Timestamp(253_402_300_799_000);

/// Serialised as derived would, except that the readable form (JSON: golden snapshots,
/// `/api/v1/state`) leaves `extras` out while it is empty.
impl Serialize for State {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let with_extras = !serializer.is_human_readable() || !self.extras.is_empty();
        let with_webhooks = !serializer.is_human_readable() || !self.webhooks.is_empty();
        let with_roles = !serializer.is_human_readable() || !self.roles.is_empty();
        let mut fields = serializer.serialize_struct(
            "State",
            9 + usize::from(with_extras) + usize::from(with_webhooks) + usize::from(with_roles),
        )?;
        fields.serialize_field("last_seq", &self.last_seq)?;
        fields.serialize_field("last_at", &self.last_at)?;
        fields.serialize_field("users", &self.users)?;
        fields.serialize_field("pre_auth_keys", &self.pre_auth_keys)?;
        fields.serialize_field("api_keys", &self.api_keys)?;
        fields.serialize_field("nodes", &self.nodes)?;
        fields.serialize_field("policy", &self.policy)?;
        fields.serialize_field("config", &self.config)?;
        fields.serialize_field("next_ids", &self.next_ids)?;
        if with_extras {
            fields.serialize_field("extras", &self.extras)?;
        }
        if with_webhooks {
            fields.serialize_field("webhooks", &self.webhooks)?;
        }
        if with_roles {
            fields.serialize_field("roles", &self.roles)?;
        }
        fields.end()
    }
}

/// `State`'s serialised fields, in the same order: decoding goes through here so that the
/// derived index is rebuilt whatever decoded the state (a snapshot, `--at`, a test).
#[derive(Deserialize)]
struct StateFields {
    last_seq: u64,
    last_at: Timestamp,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    users: OrdMap<UserId, User>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    pre_auth_keys: OrdMap<PreAuthKeyId, PreAuthKey>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    api_keys: OrdMap<ApiKeyId, ApiKey>,
    #[serde(deserialize_with = "bounded_map::deserialize")]
    nodes: OrdMap<NodeId, Node>,
    policy: Option<PolicyDocument>,
    config: AppliedConfig,
    next_ids: NextIds,
    #[serde(default)]
    extras: Extras,
    #[serde(default)]
    webhooks: Webhooks,
    #[serde(default, deserialize_with = "bounded_map::deserialize")]
    roles: OrdMap<UserId, Role>,
}

impl From<StateFields> for State {
    fn from(fields: StateFields) -> State {
        let mut state = State {
            last_seq: fields.last_seq,
            last_at: fields.last_at,
            users: fields.users,
            pre_auth_keys: fields.pre_auth_keys,
            api_keys: fields.api_keys,
            nodes: fields.nodes,
            policy: fields.policy,
            config: fields.config,
            next_ids: fields.next_ids,
            extras: fields.extras,
            webhooks: fields.webhooks,
            roles: fields.roles,
            index: Index::default(),
        };
        state.rebuild_index();
        state
    }
}

impl State {
    /// Rebuilds the derived lookups from the maps (after changing them other than by
    /// `apply`).
    pub fn rebuild_index(&mut self) {
        self.index = Index::build(self);
    }

    /// Whether the derived lookups match the maps (a check for tests and verification).
    pub fn index_is_consistent(&self) -> bool {
        self.index.same_as(&Index::build(self))
    }

    /// The policy in force, parsed; `None` when none is set (or, should that ever happen,
    /// when the stored text no longer parses: it was checked when set). Parsed once by
    /// `apply`; a state whose policy was set by hand (tests, benchmarks) is parsed here.
    pub fn parsed_policy(&self) -> Option<Arc<Policy>> {
        let document = self.policy.as_ref()?;
        match &self.index.policy {
            Some(parsed) if parsed.text == document.text => Some(parsed.policy.clone()),
            _ => Policy::parse(&document.text).ok().map(Arc::new),
        }
    }

    /// The users as the policy's user tokens name them: `Topology::users_of(self)`, built
    /// once per change of users (registrations and route announcements resolve tokens).
    pub fn policy_users(&self) -> Arc<Topology> {
        self.index
            .policy_users
            .get_or_init(|| Arc::new(Topology::users_of(self)))
            .clone()
    }

    /// A user's role (`Member` unless an admin gave another).
    pub fn role_of(&self, user: UserId) -> Role {
        self.roles.get(&user).copied().unwrap_or_default()
    }

    /// The tailnet's Owner, if an admin named one.
    pub fn owner(&self) -> Option<UserId> {
        self.roles
            .iter()
            .find(|(_, role)| **role == Role::Owner)
            .map(|(id, _)| *id)
    }

    pub fn user_by_name(&self, name: &str) -> Option<&User> {
        let name = name.to_string();
        let id = ids_of(&self.index.user_names, &name, (UserId(0), UserId(u64::MAX))).next()?;
        self.users.get(&id)
    }

    /// The user bound to this identity-provider identity (`issuer/subject`), if any. A scan:
    /// it runs once per OIDC login.
    pub fn user_by_identity(&self, provider_identifier: &str) -> Option<&User> {
        self.extras
            .identities
            .iter()
            .find(|(_, identity)| identity.provider_identifier == provider_identifier)
            .and_then(|(id, _)| self.users.get(id))
    }

    /// The machine's node with the lowest id.
    pub fn node_by_machine_key(&self, key: &MachineKey) -> Option<&Node> {
        self.nodes_by_machine_key(key).next()
    }

    /// Every node of the machine, lowest id first.
    pub fn nodes_by_machine_key(
        &self,
        key: &MachineKey,
    ) -> impl DoubleEndedIterator<Item = &Node> + '_ {
        ids_of(&self.index.machine_keys, key, ALL_NODES).filter_map(|id| self.nodes.get(&id))
    }

    /// The node with this node key (at most one since M1; the lowest id in an older log).
    pub fn node_by_node_key(&self, key: &NodeKey) -> Option<&Node> {
        self.nodes_by_node_key(key).next()
    }

    /// Every node with this node key, lowest id first.
    pub fn nodes_by_node_key(&self, key: &NodeKey) -> impl DoubleEndedIterator<Item = &Node> + '_ {
        ids_of(&self.index.node_keys, key, ALL_NODES).filter_map(|id| self.nodes.get(&id))
    }

    /// Whether a node other than `except` has the given name `name`.
    pub fn given_name_taken(&self, name: &str, except: Option<NodeId>) -> bool {
        ids_of(&self.index.given_names, &name.to_string(), ALL_NODES).any(|id| Some(id) != except)
    }

    /// The lowest `n >= 1` such that no node is named `base-n`.
    pub fn free_name_suffix(&self, base: &str) -> u64 {
        let free = self
            .index
            .name_suffixes
            .get(base)
            .map_or(Some(1), |runs| runs.first_absent_from(1));
        free.and_then(|n| u64::try_from(n).ok()).unwrap_or(u64::MAX)
    }

    /// The IPv4 addresses in use (as `u32`s), for the allocator.
    pub fn used_ipv4(&self) -> &Runs {
        &self.index.ipv4_runs
    }

    /// The IPv6 addresses in use, for the allocator.
    pub fn used_ipv6(&self) -> &Runs {
        &self.index.ipv6_runs
    }

    pub fn nodes_of_user(&self, user: UserId) -> impl Iterator<Item = &Node> {
        self.nodes.values().filter(move |n| n.user == Some(user))
    }

    pub fn pre_auth_key_by_prefix(&self, prefix: &str) -> Option<&PreAuthKey> {
        let prefix = prefix.to_string();
        let id = ids_of(
            &self.index.pre_auth_key_prefixes,
            &prefix,
            (PreAuthKeyId(0), PreAuthKeyId(u64::MAX)),
        )
        .next()?;
        self.pre_auth_keys.get(&id)
    }

    pub fn api_key_by_prefix(&self, prefix: &str) -> Option<&ApiKey> {
        let prefix = prefix.to_string();
        let id = ids_of(
            &self.index.api_key_prefixes,
            &prefix,
            (ApiKeyId(0), ApiKeyId(u64::MAX)),
        )
        .next()?;
        self.api_keys.get(&id)
    }

    /// The state as canonical JSON (sorted maps, fixed field order): the golden `snapshots/`
    /// format and the `/api/v1/state` answer.
    pub fn canonical_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Folds one envelope in. Envelopes must come in seq order; the fold is total.
    pub fn apply(&mut self, envelope: &Envelope) {
        self.last_seq = envelope.seq;
        self.last_at = self.last_at.max(envelope.at);
        if matches!(
            envelope.event,
            Event::WebhookCreated { .. } | Event::WebhookDeleted { .. }
        ) {
            self.apply_webhooks_event(&envelope.event, envelope.seq, envelope.at);
        }
        self.apply_event(&envelope.event, envelope.at);
    }

    fn apply_event(&mut self, event: &Event, at: Timestamp) {
        if matches!(
            event,
            Event::UserCreated { .. }
                | Event::UserProfileChanged { .. }
                | Event::UserRenamed { .. }
                | Event::UserDeleted { .. }
                | Event::UserImported(_)
                | Event::UserIdentityLinked { .. }
                | Event::UserRoleChanged { .. }
        ) {
            self.index.policy_users = Arc::default();
        }
        match event {
            Event::ServerStarted { .. } => {}
            Event::UserCreated { .. }
            | Event::UserProfileChanged { .. }
            | Event::UserRenamed { .. }
            | Event::UserDeleted { .. }
            | Event::UserImported(_)
            | Event::UserIdentityLinked { .. } => {
                if let Event::UserDeleted { id } = event {
                    self.roles.remove(id);
                }
                self.apply_users_event(event, at)
            }
            Event::PreAuthKeyCreated { .. }
            | Event::PreAuthKeyUsed { .. }
            | Event::PreAuthKeyExpired { .. }
            | Event::PreAuthKeyDeleted { .. }
            | Event::PreAuthKeyImported(_)
            | Event::ApiKeyCreated { .. }
            | Event::ApiKeyExpired { .. }
            | Event::ApiKeyDeleted { .. }
            | Event::ApiKeyImported(_) => self.apply_keys_event(event, at),
            Event::NodeRegistered(_)
            | Event::NodeReauthenticated { .. }
            | Event::NodeKeyRotated { .. }
            | Event::NodeHostinfoChanged { .. }
            | Event::NodeRenamed { .. }
            | Event::NodeMoved { .. }
            | Event::NodeTagsSet { .. }
            | Event::NodeApproved { .. }
            | Event::NodeExpiryChanged { .. }
            | Event::NodeDeleted { .. }
            | Event::RoutesApproved { .. }
            | Event::NodeImported(_) => self.apply_nodes_event(event, at),
            Event::ConfigApplied {
                hash,
                core,
                netmap_json,
            } => {
                self.config = AppliedConfig {
                    hash: *hash,
                    core: core.clone(),
                    netmap_json: netmap_json.clone(),
                };
            }
            Event::PolicyReplaced { policy } if policy.trim().is_empty() => {
                self.policy = None;
                self.index.policy = None;
            }
            Event::PolicyReplaced { policy } => {
                self.policy = Some(PolicyDocument {
                    text: policy.clone(),
                    updated_at: at,
                });
                self.index.policy = parse_policy(self.policy.as_ref());
            }
            Event::Imported(summary) => {
                let next = &mut self.next_ids;
                next.user = next.user.max(summary.next_user);
                next.node = next.node.max(summary.next_node);
                next.pre_auth_key = next.pre_auth_key.max(summary.next_pre_auth_key);
                next.api_key = next.api_key.max(summary.next_api_key);
                self.extras.import = Some((**summary).clone());
            }
            Event::OidcLoginRefused { .. } => {}
            Event::UserRoleChanged { id, role } if *role == Role::Member => {
                self.roles.remove(id);
            }
            Event::UserRoleChanged { id, role } => {
                if self.users.contains_key(id) {
                    self.roles.insert(*id, *role);
                }
            }
            // Folded by `apply`, which knows the seq.
            Event::WebhookCreated { .. } | Event::WebhookDeleted { .. } => {}
        }
    }
}

impl State {
    fn insert_node(&mut self, node: Node) {
        self.index.add_node(&node);
        self.nodes.insert(node.id, node);
    }

    fn remove_node(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.remove(&id) {
            self.index.remove_node(&node);
        }
        self.extras.node_last_seen.remove(&id);
    }

    fn remove_pre_auth_key(&mut self, id: PreAuthKeyId) {
        if let Some(key) = self.pre_auth_keys.remove(&id) {
            self.index.pre_auth_key_prefixes.remove(&(key.prefix, id));
        }
        self.extras.pre_auth_key_hashes.remove(&id);
    }

    /// How the pre-auth key's secret is checked.
    pub fn pre_auth_key_hash(&self, key: &PreAuthKey) -> SecretHash {
        self.extras
            .pre_auth_key_hashes
            .get(&key.id)
            .cloned()
            .unwrap_or(SecretHash::Sha256(key.secret_hash))
    }

    /// How the API key's secret is checked.
    pub fn api_key_hash(&self, key: &ApiKey) -> SecretHash {
        self.extras
            .api_key_hashes
            .get(&key.id)
            .cloned()
            .unwrap_or(SecretHash::Sha256(key.secret_hash))
    }

    /// Every pre-auth key listed under `prefix`, lowest id first (headscale's legacy
    /// plaintext keys all have the empty prefix).
    pub fn pre_auth_keys_with_prefix<'a>(
        &'a self,
        prefix: &str,
    ) -> impl Iterator<Item = &'a PreAuthKey> + 'a {
        ids_of(
            &self.index.pre_auth_key_prefixes,
            &prefix.to_string(),
            (PreAuthKeyId(0), PreAuthKeyId(u64::MAX)),
        )
        .filter_map(|id| self.pre_auth_keys.get(&id))
    }
}

/// Folds envelopes onto a starting state (a snapshot or the empty state).
pub fn fold<'a>(mut state: State, envelopes: impl IntoIterator<Item = &'a Envelope>) -> State {
    for envelope in envelopes {
        state.apply(envelope);
    }
    state
}
