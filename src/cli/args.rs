//! The command line, as clap definitions: the seed's command tree with headscale's flags and
//! the newer spellings as aliases, plus our `events` group and `--at` on read commands.

use super::output::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "headscale",
    version,
    about = "An event-sourced, self-hosted Tailscale control server"
)]
pub struct Cli {
    /// Config file (default: $HEADSCALE_CONFIG, else /etc/headscale/config.yaml).
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long = "output", global = true, value_enum, default_value_t = Format::Human)]
    pub output: Format,
    /// Skip confirmation prompts.
    #[arg(long, global = true)]
    pub force: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Print the version.
    Version,
    /// Load and validate the config, then explain it.
    Configtest,
    /// Ask the server whether it is healthy.
    Health,
    /// Generate keys.
    #[command(visible_alias = "gen", subcommand)]
    Generate(GenerateCommand),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Manage users.
    #[command(visible_aliases = ["user", "namespaces", "namespace"], subcommand)]
    Users(UsersCommand),
    /// Manage pre-auth keys.
    #[command(name = "preauthkeys", visible_aliases = ["preauthkey", "authkeys", "authkey", "pre"], subcommand)]
    PreAuthKeys(PreAuthKeysCommand),
    /// Manage API keys.
    #[command(name = "apikeys", visible_aliases = ["apikey", "api"], subcommand)]
    ApiKeys(ApiKeysCommand),
    /// Manage nodes.
    #[command(visible_aliases = ["node", "machines", "machine"], subcommand)]
    Nodes(NodesCommand),
    /// Manage subnet and exit routes.
    #[command(visible_alias = "route", subcommand)]
    Routes(RoutesCommand),
    /// Show or set the access policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Read the audit log.
    #[command(visible_alias = "event", subcommand)]
    Events(EventsCommand),
    /// Complete, approve or reject interactive logins (headscale 0.29's form).
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Debugging aids.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Bring another server's database into an empty event log (offline).
    #[command(subcommand)]
    Import(super::import::ImportCommand),
    /// The whole state at a point, and what changed between two points.
    #[command(subcommand)]
    State(StateCommand),
    /// Webhook endpoints and their delivery (ours).
    #[command(visible_alias = "webhook", subcommand)]
    Webhooks(super::webhooks::WebhooksCommand),
}

#[derive(Subcommand, Debug)]
pub enum StateCommand {
    /// What changed between two points (users, keys, nodes, routes, tags, approvals, config,
    /// policy), with the events responsible.
    Diff {
        /// The earlier point: a seq, an RFC 3339 time or a duration ago (2h, 3d).
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        from: String,
        /// The later point (default: now).
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        to: Option<String>,
    },
    /// The whole state, now or at a point.
    Show {
        #[command(flatten)]
        at: AtArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Register the machine waiting under an AuthURL's id for a user.
    Register {
        #[arg(long = "auth-id")]
        auth_id: String,
        #[arg(short = 'u', long)]
        user: String,
    },
    /// Approve a waiting re-login of a known machine (for its current owner).
    Approve {
        #[arg(long = "auth-id")]
        auth_id: String,
    },
    /// Refuse a waiting login; the client is told so.
    Reject {
        #[arg(long = "auth-id")]
        auth_id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum GenerateCommand {
    /// Print a new private key (for noise.private_key_path).
    PrivateKey,
}

/// `--at <seq|RFC3339|duration>`: show the state as it was at that point of the log.
#[derive(Args, Debug, Clone, Default)]
pub struct AtArg {
    /// A seq number, an RFC 3339 time, or a duration ago (2h, 3d).
    #[arg(long, value_name = "SEQ|TIME|AGO")]
    pub at: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        #[arg(short = 'd', long)]
        display_name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
        #[arg(short = 'p', long)]
        picture_url: Option<String>,
    },
    /// List users.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
        #[command(flatten)]
        at: AtArg,
    },
    /// Rename a user.
    #[command(visible_alias = "mv")]
    Rename {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'r', long)]
        new_name: String,
    },
    /// Delete a user (with --force also the nodes they own).
    #[command(visible_alias = "delete")]
    Destroy {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// Give a user a role (ours); naming a new Owner transfers ownership, the old Owner
    /// becoming an Admin.
    Role {
        #[arg(short = 'i', long = "identifier")]
        id: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// owner, admin, network-admin, it-admin, billing-admin, auditor or member.
        #[arg(short = 'r', long)]
        role: String,
    },
    /// List every user's role (ours).
    Roles {
        #[command(flatten)]
        at: AtArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum PreAuthKeysCommand {
    /// Create a pre-auth key; the key is printed once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Owner (name or id); optional for tag-only keys.
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[arg(long)]
        reusable: bool,
        #[arg(long)]
        ephemeral: bool,
        /// Lifetime (30m, 24h, 90d) or an RFC 3339 time; at most 90 days.
        #[arg(short = 'e', long, default_value = "1h")]
        expiration: String,
        /// Tags the node gets (tag:a,tag:b); the node is then owned by its tags.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        /// Nodes registered with it skip device approval.
        #[arg(long)]
        pre_approved: bool,
    },
    /// List pre-auth keys (expired and used ones too).
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[command(flatten)]
        at: AtArg,
    },
    /// Expire (revoke) a key; nodes it registered stay authorised.
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[arg(short = 'i', long)]
        id: u64,
    },
    /// Delete a key.
    #[command(visible_aliases = ["del", "rm", "d"])]
    Delete {
        #[arg(short = 'i', long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
pub enum ApiKeysCommand {
    /// Create an API key; the key is printed once.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        #[arg(short = 'e', long, default_value = "90d")]
        expiration: String,
    },
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[command(flatten)]
        at: AtArg,
    },
    #[command(visible_aliases = ["revoke", "exp", "e"])]
    Expire {
        #[arg(short = 'p', long)]
        prefix: Option<String>,
        #[arg(short = 'i', long)]
        id: Option<u64>,
    },
    #[command(visible_aliases = ["remove", "del"])]
    Delete {
        #[arg(short = 'p', long)]
        prefix: Option<String>,
        #[arg(short = 'i', long)]
        id: Option<u64>,
    },
}

/// `-i/--identifier` (headscale) or `--id`.
#[derive(Args, Debug, Clone)]
pub struct NodeIdArg {
    #[arg(short = 'i', long = "identifier", visible_alias = "id")]
    pub id: u64,
}

#[derive(Subcommand, Debug)]
pub enum NodesCommand {
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'u', long)]
        user: Option<String>,
        #[command(flatten)]
        at: AtArg,
    },
    /// Complete an interactive login shown by `tailscale up`.
    Register {
        #[arg(short = 'u', long)]
        user: String,
        #[arg(short = 'k', long)]
        key: String,
    },
    #[command(visible_alias = "del")]
    Delete {
        #[command(flatten)]
        node: NodeIdArg,
    },
    /// Give every node an address of each configured family it lacks (asks first).
    Backfillips,
    /// Expire a node now, at a time, or never (--disable).
    #[command(visible_aliases = ["logout", "exp", "e"])]
    Expire {
        #[command(flatten)]
        node: NodeIdArg,
        #[arg(short = 'e', long)]
        expiry: Option<String>,
        #[arg(short = 'd', long)]
        disable: bool,
    },
    Rename {
        #[command(flatten)]
        node: NodeIdArg,
        new_name: String,
    },
    /// Give a node to another user.
    #[command(visible_alias = "mv")]
    Move {
        #[command(flatten)]
        node: NodeIdArg,
        #[arg(short = 'u', long)]
        user: String,
    },
    #[command(visible_aliases = ["tags", "t"])]
    Tag {
        #[command(flatten)]
        node: NodeIdArg,
        #[arg(short = 't', long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
    },
    /// Authorise a node waiting for device approval.
    Approve {
        #[command(flatten)]
        node: NodeIdArg,
    },
    #[command(visible_aliases = ["lsr", "routes"])]
    ListRoutes {
        #[arg(short = 'i', long = "identifier", visible_alias = "id")]
        id: Option<u64>,
        #[command(flatten)]
        at: AtArg,
    },
    /// Set a node's approved routes (an empty value clears them).
    ApproveRoutes {
        #[command(flatten)]
        node: NodeIdArg,
        #[arg(short = 'r', long, value_delimiter = ',', num_args = 0..)]
        routes: Vec<String>,
    },
    /// What a node's client was (or would have been) given at a point of the log: peers,
    /// packet filter, SSH policy, DNS, capabilities.
    Netmap {
        /// The node's id or name.
        #[arg(short = 'n', long)]
        node: String,
        #[command(flatten)]
        at: AtArg,
    },
}

#[derive(Subcommand, Debug)]
pub enum RoutesCommand {
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'i', long = "identifier", visible_alias = "id")]
        id: Option<u64>,
        #[command(flatten)]
        at: AtArg,
    },
    /// Approve a route on one node, or on every node that announces it.
    Enable(RouteChange),
    /// Withdraw a route's approval on one node, or on every node that has it.
    Disable(RouteChange),
}

/// `--route CIDR [--id N]` for `routes enable|disable`.
#[derive(Args, Debug, Clone)]
pub struct RouteChange {
    #[arg(short = 'r', long)]
    pub route: String,
    #[arg(short = 'i', long = "identifier", visible_alias = "id")]
    pub id: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    #[command(visible_aliases = ["show", "view", "fetch"])]
    Get {
        #[command(flatten)]
        at: AtArg,
    },
    #[command(visible_aliases = ["put", "update"])]
    Set {
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Check a policy file: parsed and checked here (no daemon needed); its tests and user
    /// references also against the tailnet when a daemon or the store is at hand.
    Check {
        /// Path to a policy file in HuJSON format.
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Who can reach a node or an address, and by which rule; with --since/--until, when
    /// that access was gained or lost.
    WhoCanReach {
        /// A node (id or name), or ip, ip:port, ip:port/proto ([v6]:port for IPv6).
        dest: String,
        #[command(flatten)]
        points: super::access_review::ReviewPoints,
    },
    /// What a node can reach (nodes, routed prefixes, ports, capabilities), and by which
    /// rule; with --since/--until, when that changed.
    WhatCan {
        /// The node (id or name).
        node: String,
        #[command(flatten)]
        points: super::access_review::ReviewPoints,
    },
}

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// List events, oldest first.
    #[command(visible_alias = "ls")]
    List {
        /// Only events after this point: a seq, an RFC 3339 time or a duration ago (2h).
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        since: Option<String>,
        /// Only events up to this point: a seq, an RFC 3339 time or a duration ago.
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        until: Option<String>,
        /// Only these event types (comma-separated).
        #[arg(long = "type", value_delimiter = ',')]
        kinds: Vec<String>,
        /// Only events about this node id.
        #[arg(long)]
        node: Option<u64>,
        /// Only events naming this user (name or id).
        #[arg(long)]
        user: Option<String>,
        /// Only events done by: system, admin, socket, apikey:<id>, node:<id>,
        /// machine:<key prefix>, oidc or oidc:<issuer/subject>.
        #[arg(long)]
        actor: Option<String>,
        /// Keep printing new events as they are appended (needs a running daemon).
        #[arg(short = 'f', long, conflicts_with = "until")]
        follow: bool,
    },
    /// Show one event with its chain hashes.
    Show { seq: u64 },
    /// Walk the whole hash chain and check every signed checkpoint: the server's log, or
    /// with --file an export, offline (no server, config or data dir needed).
    Verify {
        /// An export (`events export`) to check instead of the server's log.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
        /// The server's checkpoint public key (64 hex digits, or a file holding them) the
        /// file's checkpoints must be signed with; without it, the key named in the file.
        #[arg(long, requires = "file", value_name = "PUBKEY")]
        key: Option<String>,
    },
    /// Offline repair of a damaged event log (stop the server first): says what would be
    /// kept (the last good seq) and cut (bytes); with --write, cuts the log after its last
    /// good record, keeping the cut bytes and the original file beside it.
    Salvage {
        /// Write the new log (otherwise only report).
        #[arg(long)]
        write: bool,
    },
    /// Write the log (or a range of it) as verifiable JSON lines: each record with its
    /// stored bytes and chain hash, the signed checkpoints and the checkpoint key. Works
    /// beside a running server and without one; `events verify --file` checks the result
    /// anywhere, `events import` loads it into an empty store.
    Export {
        /// Only the records after this point: a seq, an RFC 3339 time or a duration ago.
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        since: Option<String>,
        /// Only the records up to this point (default: the head).
        #[arg(long, value_name = "SEQ|TIME|AGO")]
        until: Option<String>,
        /// The file to write (mode 0600); standard output without it.
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Load a whole export (`events export`, or the older binary form) into an empty store:
    /// the configured one, or with --data-dir the embedded store there (no config needed).
    /// The whole file is verified before anything is written.
    Import {
        /// The file to read.
        #[arg(value_name = "FILE", required_unless_present = "file")]
        path: Option<std::path::PathBuf>,
        /// The file to read (the older spelling of FILE).
        #[arg(long, conflicts_with = "path")]
        file: Option<std::path::PathBuf>,
        /// A data directory: import into its embedded store (`db.sled`) and sign with its
        /// checkpoint key, as `serve` lays them out; created if absent.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Register a made-up node for a user (no client needed).
    CreateNode {
        #[arg(long)]
        name: String,
        #[arg(short = 'u', long)]
        user: String,
        /// Node key (nodekey:<hex>); random if absent.
        #[arg(short = 'k', long)]
        key: Option<String>,
        #[arg(short = 'r', long = "route")]
        routes: Vec<String>,
    },
}
