//! Server configuration: the `Config` structs with headscale's keys and defaults, and the
//! public API for loading (`load`), validation and the netmap-relevant subset recorded in
//! `ConfigApplied` events, implemented in the submodules. This module only reads and checks;
//! it opens no sockets and no store.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

mod acme;
pub mod duration;
pub mod extra_records;
mod load;
mod netmap;
mod oidc;
#[cfg(test)]
mod oidc_tests;
mod scalar;
#[cfg(test)]
mod tests;
mod validate;
mod webhooks;

pub use acme::{split_listen, AcmeChallenge, LETS_ENCRYPT_DIRECTORY};
pub use load::{
    env_var_name, known_keys, load, load_client, load_str, load_str_unvalidated, process_env,
    resolve_path, resolve_path_with,
};
pub use oidc::{expand_env, OidcConfig, PkceConfig, PkceMethod, MAX_CLIENT_SECRET_FILE_BYTES};
use scalar::opt_from_str;
pub use webhooks::{WebhookConfig, MAX_CONFIG_WEBHOOKS};

/// Where the config lives when neither `--config` nor `HEADSCALE_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/headscale/config.yaml";
/// Environment variable naming the config file (headscale's name).
pub const CONFIG_PATH_ENV: &str = "HEADSCALE_CONFIG";
/// Prefix of every per-key override, e.g. `HEADSCALE_DNS_BASE_DOMAIN`.
pub const ENV_PREFIX: &str = "HEADSCALE_";

/// The whole server configuration. Every key is optional and defaults to headscale's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// URL clients use to reach us; also the DERP and OIDC-free login base.
    pub server_url: String,
    /// Main listener: control protocol, REST API and web pages.
    pub listen_addr: String,
    /// `/metrics` and `/debug/*`; empty disables the listener.
    pub metrics_listen_addr: String,
    /// Local admin API for the CLI (no API key needed; guarded by file mode).
    pub unix_socket: PathBuf,
    /// Octal file mode of `unix_socket`, text as in headscale; see [`Config::unix_socket_mode`].
    pub unix_socket_permission: String,
    /// Static TLS certificate; TLS is on when both cert and key are set.
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_cert_path: Option<PathBuf>,
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_key_path: Option<PathBuf>,
    /// Built-in ACME (`src/acme/`): the name to get a certificate for; unset = no ACME.
    #[serde(deserialize_with = "opt_from_str")]
    pub tls_letsencrypt_hostname: Option<String>,
    /// Account key and certificates, in golang.org/x/crypto/acme/autocert's layout.
    pub tls_letsencrypt_cache_dir: PathBuf,
    /// `HTTP-01` or `TLS-ALPN-01`.
    pub tls_letsencrypt_challenge_type: String,
    /// The HTTP-01 listener (Go address syntax, `:http` = every address, port 80).
    pub tls_letsencrypt_listen: String,
    /// The ACME directory; empty = Let's Encrypt.
    pub acme_url: String,
    /// Contact address given to the ACME server; empty = none.
    pub acme_email: String,
    /// The gRPC admin API for remote `headscale` CLIs (`HEADSCALE_CLI_ADDRESS`); started when
    /// TLS is configured or `grpc_allow_insecure` is set, as in headscale.
    pub grpc_listen_addr: String,
    /// Serve `grpc_listen_addr` as plaintext HTTP/2 when TLS is not configured.
    pub grpc_allow_insecure: bool,
    /// CIDRs (or single IPs) whose forwarding headers we believe for the client address.
    pub trusted_proxies: Vec<String>,
    /// Accepted for compatibility; we never phone home anyway.
    pub disable_check_updates: bool,
    pub noise: NoiseConfig,
    pub prefixes: PrefixesConfig,
    pub database: DatabaseConfig,
    pub derp: DerpConfig,
    pub dns: DnsConfig,
    pub policy: PolicyConfig,
    pub log: LogConfig,
    pub node: NodeConfig,
    pub taildrop: TaildropConfig,
    pub logtail: LogtailConfig,
    pub auto_update: AutoUpdateConfig,
    pub cli: CliConfig,
    pub tuning: TuningConfig,
    pub api: ApiConfig,
    /// Logins through an OpenID Connect provider (headscale's `oidc:` section).
    pub oidc: OidcConfig,
    /// Several instances on one PostgreSQL log (`database.type: postgres`; ours, not
    /// headscale's): how each names itself and how fast it notices the others.
    pub ha: HaConfig,
    /// Webhook endpoints (ours, not headscale's; `src/webhooks/`).
    pub webhooks: Vec<WebhookConfig>,
    /// File this config was loaded from, for messages and `configtest`; never a config key.
    #[serde(skip)]
    pub source_path: Option<PathBuf>,
}

/// TS2021 Noise identity of the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NoiseConfig {
    /// Created on first start if missing; losing it makes every client re-register.
    pub private_key_path: PathBuf,
}

/// Address ranges nodes are numbered from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PrefixesConfig {
    /// `""` disables IPv4 addressing.
    #[serde(deserialize_with = "opt_from_str")]
    pub v4: Option<Ipv4Net>,
    /// `""` disables IPv6 addressing.
    #[serde(deserialize_with = "opt_from_str")]
    pub v6: Option<Ipv6Net>,
    pub allocation: IpAllocation,
}

/// How the next free address is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpAllocation {
    #[default]
    Sequential,
    Random,
}

/// Storage of the event log, as headscale's `database` section.
/// - `sled` (our default): the log lives in the embedded store at `database.sled.path`.
/// - `sqlite`: `database.sqlite.path` is a headscale database. It is only ever read, to import
///   it into an empty log on first start; our log lives in the embedded store beside it.
/// - `postgres`: our log, snapshots and checkpoints live in that PostgreSQL database, in tables
///   of our own; headscale's tables there are imported into an empty log on first start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Kept as text so an unknown type gets a helpful error, not a serde one.
    #[serde(rename = "type")]
    pub kind: String,
    pub sled: SledConfig,
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
}

/// Which store the log lives in, resolved from `database.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sled,
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    /// The resolved type; `None` for a type we do not know (refused by validation).
    pub fn backend(&self) -> Option<DatabaseKind> {
        match self.kind.as_str() {
            "sled" => Some(DatabaseKind::Sled),
            "sqlite" | "sqlite3" => Some(DatabaseKind::Sqlite),
            "postgres" | "postgresql" => Some(DatabaseKind::Postgres),
            _ => None,
        }
    }

    /// Where the embedded store lives: `database.sled.path` when set; with `type: sqlite` and
    /// no sled path, beside the headscale file (`db.sqlite` → `db.sled`), so a headscale
    /// data directory keeps everything in one place.
    pub fn sled_path(&self) -> PathBuf {
        if !self.sled.path.as_os_str().is_empty() {
            return self.sled.path.clone();
        }
        match self.backend() {
            Some(DatabaseKind::Sqlite) if !self.sqlite.path.as_os_str().is_empty() => {
                let beside = self.sqlite.path.with_extension("sled");
                if beside == self.sqlite.path {
                    self.sqlite.path.with_extension("events.sled")
                } else {
                    beside
                }
            }
            _ => PathBuf::from(DEFAULT_SLED_PATH),
        }
    }

    /// One line for `configtest`: where the log lives and what is imported from where.
    pub fn describe(&self) -> String {
        let sled = format!(
            "sled {} (cache {} MiB)",
            self.sled_path().display(),
            self.sled.cache_capacity_bytes / (1024 * 1024)
        );
        match self.backend() {
            Some(DatabaseKind::Sqlite) => format!(
                "{sled}, importing headscale's {} on first start",
                self.sqlite.path.display()
            ),
            Some(DatabaseKind::Postgres) => format!(
                "postgres {}@{}:{}/{}",
                self.postgres.user, self.postgres.host, self.postgres.port, self.postgres.name
            ),
            _ => sled,
        }
    }

    /// The headscale database to import on first start, if the type names one.
    pub fn import_source(&self) -> Option<ImportSource> {
        match self.backend()? {
            DatabaseKind::Sled => None,
            DatabaseKind::Sqlite => Some(ImportSource::Sqlite(self.sqlite.path.clone())),
            DatabaseKind::Postgres => Some(ImportSource::Postgres(self.postgres.clone())),
        }
    }
}

/// A headscale database to read users, keys, nodes and policy from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportSource {
    Sqlite(PathBuf),
    Postgres(PostgresConfig),
}

/// Where the embedded store lives unless the config says otherwise (headscale's data dir).
pub const DEFAULT_SLED_PATH: &str = "/var/lib/headscale/db.sled";

/// headscale's `database.sqlite`: the file we import from. Its other keys
/// (`write_ahead_log`, `wal_autocheckpoint`) tune headscale's own writes; we never write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub write_ahead_log: bool,
    pub wal_autocheckpoint: i64,
}

/// headscale's `database.postgres` keys, read the same way. `pass_file` is ours (a secret
/// kept out of the config file); `ssl` takes headscale's forms (`false`/`true` or a libpq
/// `sslmode` such as `require`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub pass: String,
    pub pass_file: PathBuf,
    #[serde(deserialize_with = "scalar::text")]
    pub ssl: String,
    pub max_open_conns: u32,
    pub max_idle_conns: u32,
    pub conn_max_idle_time_secs: u64,
}

/// Never prints the password.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("name", &self.name)
            .field("user", &self.user)
            .field(
                "pass",
                &if self.pass.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("pass_file", &self.pass_file)
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SledConfig {
    pub path: PathBuf,
    /// Set explicitly because sled's own default cache is large.
    pub cache_capacity_bytes: u64,
    /// A state snapshot is written after this many events (and at clean shutdown), so
    /// start-up replays at most this many.
    pub snapshot_every_events: u64,
    /// ... or after this long, if anything happened.
    #[serde(with = "duration")]
    pub snapshot_interval: Duration,
    /// The chain head is signed after this many events (and at clean shutdown).
    pub checkpoint_every_events: u64,
}

/// DERP relays: the embedded server and the maps handed to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpConfig {
    pub server: DerpServerConfig,
    /// DERP maps fetched over HTTP(S). Empty by default: we never reach outside unless asked.
    pub urls: Vec<String>,
    /// Local YAML DERP map files.
    pub paths: Vec<PathBuf>,
    pub auto_update_enabled: bool,
    #[serde(with = "duration")]
    pub update_frequency: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DerpServerConfig {
    pub enabled: bool,
    pub region_id: u32,
    pub region_code: String,
    pub region_name: String,
    /// Only nodes of this tailnet may relay through the embedded server.
    pub verify_clients: bool,
    /// UDP STUN; mandatory when the embedded server is on.
    pub stun_listen_addr: String,
    pub private_key_path: PathBuf,
    pub automatically_add_embedded_derp_region: bool,
    /// Public addresses advertised in the DERP map, when DNS alone is not enough.
    #[serde(deserialize_with = "opt_from_str")]
    pub ipv4: Option<String>,
    #[serde(deserialize_with = "opt_from_str")]
    pub ipv6: Option<String>,
}

/// What clients are told about DNS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsConfig {
    pub magic_dns: bool,
    /// Node FQDN is `<given_name>.<base_domain>`.
    pub base_domain: String,
    /// Make clients use our resolvers instead of their own; needs `nameservers.global`.
    pub override_local_dns: bool,
    pub nameservers: NameserversConfig,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
    /// JSON file of extra records, watched at runtime; exclusive with `extra_records`.
    #[serde(deserialize_with = "opt_from_str")]
    pub extra_records_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NameserversConfig {
    /// IP addresses or DoH (`https://`) URLs.
    pub global: Vec<String>,
    /// Domain → resolvers for that domain only.
    pub split: BTreeMap<String, Vec<String>>,
}

/// One static DNS record served through MagicDNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: RecordType,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordType {
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
}

/// Where the ACL policy comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// HuJSON file (file mode). Unset means no policy: everything is allowed.
    #[serde(deserialize_with = "opt_from_str")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// Read from `policy.path`, reloaded on SIGHUP; the API cannot change it.
    #[default]
    File,
    /// Stored as events, set through the API.
    Database,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Text so headscale's aliases (`warning`, `fatal`, `panic`) load;
    /// see [`LogConfig::level_name`].
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Defaults applied to nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Default key expiry for untagged nodes; zero means never.
    #[serde(with = "duration")]
    pub expiry: Duration,
    pub ephemeral: EphemeralConfig,
    /// New nodes wait for an admin before they get a netmap.
    pub require_approval: bool,
    pub routes: NodeRoutesConfig,
}

/// headscale's `node.routes`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRoutesConfig {
    pub ha: HaRoutesConfig,
}

/// headscale's HA subnet-router health probing (`node.routes.ha`). Accepted, not done: a
/// primary router fails over when its map stream drops (after `tuning.node_offline_grace`),
/// not when it stops answering pings. Values other than headscale's defaults are warned about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaRoutesConfig {
    /// Zero disables probing (in headscale).
    #[serde(with = "duration")]
    pub probe_interval: Duration,
    #[serde(with = "duration")]
    pub probe_timeout: Duration,
}

impl Default for HaRoutesConfig {
    fn default() -> Self {
        HaRoutesConfig {
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EphemeralConfig {
    /// An ephemeral node offline this long is deleted.
    #[serde(with = "duration")]
    pub inactivity_timeout: Duration,
}

/// Several instances on one PostgreSQL event log (`src/ha/`). Only read with
/// `database.type: postgres`; one instance needs none of it changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HaConfig {
    /// This instance's name in the shared presence table and in logs; empty = the host
    /// name and the process id. Must differ between instances.
    pub instance_name: String,
    /// How often the instance reads the log's head when no notification woke it (the
    /// safety net behind LISTEN/NOTIFY, which can lose hints).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How often the instance renews its row in the shared presence table.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// An instance not heard from this long is dead: its nodes go offline (unless they
    /// reconnected elsewhere).
    #[serde(with = "duration")]
    pub presence_ttl: Duration,
    /// Cut off from PostgreSQL this long, the instance fails closed: `/health` says so, its
    /// map streams end and new ones are refused, so clients move to a healthy instance.
    #[serde(with = "duration")]
    pub max_staleness: Duration,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            instance_name: String::new(),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(10),
            max_staleness: Duration::from_secs(10),
        }
    }
}

/// Timers and queue sizes of the map streams. headscale's names where it has them; every
/// timer is configurable so tests can run in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuningConfig {
    /// The batching window: changes are sent at most this often (a change after a quiet
    /// spell goes out at once; later ones within the window wait for its end, together).
    #[serde(with = "duration")]
    pub batch_change_delay: Duration,
    /// Frames queued per map session before it is served coalesced deltas instead.
    pub node_mapsession_buffered_chan_size: usize,
    /// Keep-alive period on idle map streams (the client gives up after 120 s of silence).
    #[serde(with = "duration")]
    pub map_keepalive_interval: Duration,
    /// A node whose stream dropped stays online this long, so a quick reconnect does not flap.
    #[serde(with = "duration")]
    pub node_offline_grace: Duration,
    /// Connections at once on the main listener (plain or TLS, upgraded `/ts2021` and
    /// `/derp` included); lowered at start to fit `RLIMIT_NOFILE`.
    pub max_connections: usize,
    /// Connections at once from one source address (IPv6: one /64).
    pub max_connections_per_ip: usize,
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            batch_change_delay: Duration::from_millis(100),
            node_mapsession_buffered_chan_size: 30,
            map_keepalive_interval: Duration::from_secs(50),
            node_offline_grace: Duration::from_secs(10),
            max_connections: crate::conn_limits::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: crate::conn_limits::DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaildropConfig {
    /// When false the `file-sharing` capability is withheld from every node.
    pub enabled: bool,
}

/// headscale's `logtail`: whether clients may upload their logs to Tailscale's log service.
/// Off (the default) sends every client `Debug.DisableLogTail`, as headscale does.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogtailConfig {
    pub enabled: bool,
}

/// headscale's `auto_update`: the tailnet's default for client auto-updates, sent to every
/// node as the `default-auto-update` capability (`[true]` or `[false]`, always present, as
/// headscale sends it). Clients keep a choice made locally.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AutoUpdateConfig {
    pub enabled: bool,
}

/// Client-side settings of the `headscale` CLI when it talks to a remote server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CliConfig {
    #[serde(deserialize_with = "opt_from_str")]
    pub address: Option<String>,
    #[serde(deserialize_with = "opt_from_str")]
    pub api_key: Option<String>,
    #[serde(with = "duration")]
    pub timeout: Duration,
    pub insecure: bool,
}

/// The admin API on the TCP listener (ours; headscale has no such section).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    pub cors: CorsConfig,
}

/// CORS for browser admin UIs (Headplane, headscale-ui) served from another origin.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct CorsConfig {
    /// Origins (`https://admin.example.com`) whose pages may call `/api/v1`; empty (the
    /// default) sends no CORS headers; `["*"]` allows every origin.
    pub allowed_origins: Vec<String>,
}

/// A validated config plus everything worth telling the operator about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    /// Unknown, unsupported and deprecated keys, and risky-but-allowed values.
    pub warnings: Vec<String>,
}

/// Why a config could not be used. Every message is one line naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {} not found (pass --config or set HEADSCALE_CONFIG)", .path.display())]
    NotFound { path: PathBuf },
    #[error("config {}: cannot read: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: invalid YAML: {message}")]
    Syntax { origin: String, message: String },
    #[error("config {origin}: key \"{key}\" was removed; {replacement}")]
    RemovedKey {
        origin: String,
        key: &'static str,
        replacement: &'static str,
    },
    /// A value of the wrong type or format, from the file or from an environment variable.
    #[error("config {origin}: {key}{}: {message}", env_note(.from_env))]
    BadValue {
        origin: String,
        key: String,
        from_env: Option<String>,
        message: String,
    },
    /// A well-typed value that breaks a rule.
    #[error("config {origin}: {key} {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

fn env_note(from_env: &Option<String>) -> String {
    match from_env {
        Some(var) => format!(" (from ${var})"),
        None => String::new(),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_url: "http://127.0.0.1:8080".into(),
            listen_addr: "127.0.0.1:8080".into(),
            metrics_listen_addr: "127.0.0.1:9090".into(),
            unix_socket: "/var/run/headscale/headscale.sock".into(),
            unix_socket_permission: "0770".into(),
            tls_cert_path: None,
            tls_key_path: None,
            tls_letsencrypt_hostname: None,
            tls_letsencrypt_cache_dir: "/var/www/.cache".into(),
            tls_letsencrypt_challenge_type: "HTTP-01".into(),
            tls_letsencrypt_listen: ":http".into(),
            acme_url: acme::LETS_ENCRYPT_DIRECTORY.into(),
            acme_email: String::new(),
            grpc_listen_addr: "127.0.0.1:50443".into(),
            grpc_allow_insecure: false,
            trusted_proxies: Vec::new(),
            disable_check_updates: false,
            noise: NoiseConfig::default(),
            prefixes: PrefixesConfig::default(),
            database: DatabaseConfig::default(),
            derp: DerpConfig::default(),
            dns: DnsConfig::default(),
            policy: PolicyConfig::default(),
            log: LogConfig::default(),
            node: NodeConfig::default(),
            taildrop: TaildropConfig::default(),
            logtail: LogtailConfig::default(),
            auto_update: AutoUpdateConfig::default(),
            cli: CliConfig::default(),
            tuning: TuningConfig::default(),
            api: ApiConfig::default(),
            oidc: OidcConfig::default(),
            ha: HaConfig::default(),
            webhooks: Vec::new(),
            source_path: None,
        }
    }
}

impl Default for NoiseConfig {
    fn default() -> Self {
        NoiseConfig {
            private_key_path: "/var/lib/headscale/noise_private.key".into(),
        }
    }
}

impl Default for PrefixesConfig {
    fn default() -> Self {
        PrefixesConfig {
            v4: Some(tailscale_v4_range()),
            v6: Some(tailscale_v6_range()),
            allocation: IpAllocation::Sequential,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            kind: "sled".into(),
            sled: SledConfig::default(),
            sqlite: SqliteConfig::default(),
            postgres: PostgresConfig::default(),
        }
    }
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            // Empty: resolved by `DatabaseConfig::sled_path` (beside a headscale sqlite file,
            // or DEFAULT_SLED_PATH).
            path: PathBuf::new(),
            cache_capacity_bytes: 64 * 1024 * 1024,
            snapshot_every_events: 100_000,
            snapshot_interval: Duration::from_secs(3600),
            checkpoint_every_events: 1000,
        }
    }
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            path: "/var/lib/headscale/db.sqlite".into(),
            write_ahead_log: true,
            wal_autocheckpoint: 1000,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            host: "localhost".into(),
            port: 5432,
            name: "headscale".into(),
            user: "headscale".into(),
            pass: String::new(),
            pass_file: PathBuf::new(),
            ssl: "false".into(),
            max_open_conns: 10,
            max_idle_conns: 10,
            conn_max_idle_time_secs: 3600,
        }
    }
}

impl Default for DerpConfig {
    fn default() -> Self {
        DerpConfig {
            server: DerpServerConfig::default(),
            urls: Vec::new(),
            paths: Vec::new(),
            auto_update_enabled: false,
            update_frequency: Duration::from_secs(3 * 3600),
        }
    }
}

impl Default for DerpServerConfig {
    fn default() -> Self {
        DerpServerConfig {
            enabled: false,
            region_id: 999,
            region_code: "headscale".into(),
            region_name: "Headscale Embedded DERP".into(),
            verify_clients: true,
            stun_listen_addr: "0.0.0.0:3478".into(),
            private_key_path: "/var/lib/headscale/derp_server_private.key".into(),
            automatically_add_embedded_derp_region: true,
            ipv4: None,
            ipv6: None,
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            magic_dns: true,
            base_domain: "example.com".into(),
            override_local_dns: true,
            nameservers: NameserversConfig::default(),
            search_domains: Vec::new(),
            extra_records: Vec::new(),
            extra_records_path: None,
        }
    }
}

impl Default for NameserversConfig {
    fn default() -> Self {
        NameserversConfig {
            global: [
                "1.1.1.1",
                "1.0.0.1",
                "2606:4700:4700::1111",
                "2606:4700:4700::1001",
            ]
            .map(String::from)
            .to_vec(),
            split: BTreeMap::new(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: PolicyMode::File,
            path: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            expiry: Duration::ZERO,
            ephemeral: EphemeralConfig::default(),
            require_approval: false,
            routes: NodeRoutesConfig::default(),
        }
    }
}

impl Default for EphemeralConfig {
    fn default() -> Self {
        EphemeralConfig {
            inactivity_timeout: Duration::from_secs(120),
        }
    }
}

impl Default for TaildropConfig {
    fn default() -> Self {
        TaildropConfig { enabled: true }
    }
}

impl Default for CliConfig {
    fn default() -> Self {
        CliConfig {
            address: None,
            api_key: None,
            timeout: Duration::from_secs(5),
            insecure: false,
        }
    }
}

/// Tailscale's CGNAT range; clients treat other v4 ranges as foreign.
fn tailscale_v4_range() -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10)
}

/// Tailscale's ULA range.
fn tailscale_v6_range() -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48)
}

impl IpAllocation {
    pub fn as_str(self) -> &'static str {
        match self {
            IpAllocation::Sequential => "sequential",
            IpAllocation::Random => "random",
        }
    }
}

impl RecordType {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        }
    }
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::File => "file",
            PolicyMode::Database => "database",
        }
    }
}

impl LogConfig {
    /// The tracing level for `level`, mapping headscale's zerolog-only names
    /// (`warning` → warn, `fatal`/`panic` → error); `None` if unrecognised.
    pub fn level_name(&self) -> Option<&'static str> {
        match self.level.trim().to_ascii_lowercase().as_str() {
            "trace" => Some("trace"),
            "debug" => Some("debug"),
            "info" => Some("info"),
            "warn" | "warning" => Some("warn"),
            "error" | "fatal" | "panic" => Some("error"),
            _ => None,
        }
    }
}
