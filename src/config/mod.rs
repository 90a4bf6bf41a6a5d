//! Server configuration: the YAML file (headscale's keys and defaults), `HEADSCALE_*`
//! environment overrides, validation, and the netmap-relevant subset that is recorded in
//! `ConfigApplied` events. This module only reads and checks; it opens no sockets and no store.
//! Keys of headscale features we do not implement are accepted with a warning, never silently.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize};
use serde_yaml_ng::{Mapping, Value};
use sha2::{Digest, Sha256};

/// Where the config lives when neither `--config` nor `HEADSCALE_CONFIG` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/headscale/config.yaml";
/// Environment variable naming the config file (headscale's name).
pub const CONFIG_PATH_ENV: &str = "HEADSCALE_CONFIG";
/// Prefix of every per-key override, e.g. `HEADSCALE_DNS_BASE_DOMAIN`.
pub const ENV_PREFIX: &str = "HEADSCALE_";
/// Headscale refuses shorter ephemeral timeouts; we only warn so tests can use short ones.
const EPHEMERAL_TIMEOUT_MIN: Duration = Duration::from_secs(65);

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
    pub cli: CliConfig,
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

/// Storage of the event log. Only sled exists; other headscale types are refused clearly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// Must be `sled`; kept as text so `sqlite`/`postgres` get a helpful error, not a serde one.
    #[serde(rename = "type")]
    pub kind: String,
    pub sled: SledConfig,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EphemeralConfig {
    /// An ephemeral node offline this long is deleted.
    #[serde(with = "duration")]
    pub inactivity_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaildropConfig {
    /// When false the `file-sharing` capability is withheld from every node.
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
            cli: CliConfig::default(),
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
        }
    }
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            path: "/var/lib/headscale/db.sled".into(),
            cache_capacity_bytes: 64 * 1024 * 1024,
            snapshot_every_events: 100_000,
            snapshot_interval: Duration::from_secs(3600),
            checkpoint_every_events: 1000,
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

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// The process environment, for callers of [`load`] and [`resolve_path_with`] outside tests.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Config file to use: the `--config` flag, else `$HEADSCALE_CONFIG`, else the default path.
pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
    resolve_path_with(flag, &process_env)
}

/// [`resolve_path`] with the environment passed in, so tests never touch the process env.
pub fn resolve_path_with(flag: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(path) = flag {
        return path.to_path_buf();
    }
    match env(CONFIG_PATH_ENV) {
        Some(value) if !value.trim().is_empty() => PathBuf::from(value),
        _ => PathBuf::from(DEFAULT_CONFIG_PATH),
    }
}

/// Read, check, override from `env` and validate the config at `path`.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    load_str(&text, path, env)
}

/// [`load`] for text already in memory; `origin` names it in messages and `source_path`.
pub fn load_str(
    yaml: &str,
    origin: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let origin_text = origin.display().to_string();
    let document: Value = serde_yaml_ng::from_str(yaml).map_err(|e| ConfigError::Syntax {
        origin: origin_text.clone(),
        message: one_line(&e),
    })?;
    let mut tree = match document {
        Value::Mapping(mapping) => mapping,
        Value::Null => Mapping::new(),
        other => {
            return Err(ConfigError::Syntax {
                origin: origin_text,
                message: format!(
                    "the top level must be a mapping of keys, not {}",
                    kind(&other)
                ),
            })
        }
    };
    let schema = schema()?;
    let mut warnings = Vec::new();

    reject_removed_keys(&tree, &origin_text)?;
    move_deprecated_keys(&mut tree, &mut warnings);
    check_keys(&mut tree, &schema, "", &origin_text, &mut warnings)?;
    let from_env = apply_env(&mut tree, &schema, env, &origin_text)?;

    let mut config = deserialize(tree, &schema, &from_env, &origin_text)?;
    config.source_path = Some(origin.to_path_buf());
    config.normalize();
    warnings.extend(config.validate()?);
    Ok(Loaded { config, warnings })
}

/// Keys headscale removed: using them is fatal there, and here, with what replaces them.
const REMOVED_KEYS: &[(&str, &str)] = &[
    ("acl_policy_path", "use policy.path"),
    (
        "dns_config",
        "use the dns section (magic_dns, base_domain, nameservers.global, nameservers.split, \
         search_domains, extra_records)",
    ),
    (
        "dns.use_username_in_magic_dns",
        "MagicDNS names are always <hostname>.<dns.base_domain>",
    ),
    (
        "oidc.strip_email_domain",
        "usernames keep the full email address (and OIDC is not supported by this server)",
    ),
    (
        "oidc.map_legacy_users",
        "legacy user mapping is gone (and OIDC is not supported by this server)",
    ),
    (
        "randomize_client_port",
        "set \"randomizeClientPort\": true in the policy file",
    ),
    ("oidc.expiry", "use node.expiry"),
];

/// Headscale features we do not implement: their keys warn instead of counting as unknown.
/// A trailing `*` matches any top-level key with that prefix.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    (
        "grpc_listen_addr",
        "the gRPC API (use the REST API or the unix socket)",
    ),
    (
        "grpc_allow_insecure",
        "the gRPC API (use the REST API or the unix socket)",
    ),
    ("oidc", "OIDC login"),
    (
        "acme_*",
        "ACME certificates (use tls_cert_path and tls_key_path)",
    ),
    (
        "tls_letsencrypt_*",
        "Let's Encrypt certificates (use tls_cert_path and tls_key_path)",
    ),
    ("logtail", "logtail"),
    ("auto_update", "client auto-update"),
    ("tuning", "headscale's tuning knobs"),
    (
        "database.sqlite",
        "SQLite (this server stores its event log in sled)",
    ),
    (
        "database.postgres",
        "PostgreSQL (this server stores its event log in sled)",
    ),
    (
        "database.gorm",
        "GORM settings (this server stores its event log in sled)",
    ),
    ("database.debug", "database query logging"),
    ("preauth_keys", "revoked pre-auth key retention"),
    ("node.routes", "HA subnet-router health probing"),
];

/// The old top-level name of `node.ephemeral.inactivity_timeout`.
const DEPRECATED_EPHEMERAL_KEY: &str = "ephemeral_node_inactivity_timeout";

fn reject_removed_keys(tree: &Mapping, origin: &str) -> Result<(), ConfigError> {
    for (key, replacement) in REMOVED_KEYS {
        if lookup(tree, key).is_some() {
            return Err(ConfigError::RemovedKey {
                origin: origin.to_string(),
                key,
                replacement,
            });
        }
    }
    Ok(())
}

fn move_deprecated_keys(tree: &mut Mapping, warnings: &mut Vec<String>) {
    let Some(old) = tree.remove(DEPRECATED_EPHEMERAL_KEY) else {
        return;
    };
    let new_key = "node.ephemeral.inactivity_timeout";
    if old.is_null() {
        warnings.push(format!(
            "config key \"{DEPRECATED_EPHEMERAL_KEY}\" is deprecated; use {new_key}"
        ));
    } else if lookup(tree, new_key).is_some() {
        warnings.push(format!(
            "config key \"{DEPRECATED_EPHEMERAL_KEY}\" is deprecated and ignored because \
             {new_key} is also set"
        ));
    } else if insert_path(tree, new_key, old) {
        warnings.push(format!(
            "config key \"{DEPRECATED_EPHEMERAL_KEY}\" is deprecated; use {new_key} (value used)"
        ));
    } else {
        warnings.push(format!(
            "config key \"{DEPRECATED_EPHEMERAL_KEY}\" is deprecated and ignored; use {new_key}"
        ));
    }
}

fn unsupported_feature(path: &str) -> Option<&'static str> {
    UNSUPPORTED_KEYS.iter().find_map(|(pattern, feature)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => !path.contains('.') && path.starts_with(prefix),
            None => path == *pattern,
        };
        hit.then_some(*feature)
    })
}

/// Walk the user's keys against the schema (the serialized default config): drop unknown and
/// unsupported keys with a warning, treat `key:` (null) as unset, and turn scalars written
/// where text is expected (`expiry: 0`, `api_key: 1234`) into text.
fn check_keys(
    tree: &mut Mapping,
    schema: &Mapping,
    prefix: &str,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let keys: Vec<Value> = tree.keys().cloned().collect();
    for key in keys {
        let Some(name) = key.as_str() else {
            let shown = serde_yaml_ng::to_string(&key).unwrap_or_default();
            warnings.push(format!(
                "unknown config key {:?} (ignored)",
                join(prefix, shown.trim())
            ));
            tree.remove(&key);
            continue;
        };
        let path = join(prefix, name);
        if let Some(feature) = unsupported_feature(&path) {
            warnings.push(format!(
                "config key \"{path}\" is for {feature}, which this server does not support \
                 (ignored)"
            ));
            tree.remove(&key);
            continue;
        }
        let Some(expected) = schema.get(name) else {
            warnings.push(format!("unknown config key \"{path}\" (ignored)"));
            tree.remove(&key);
            continue;
        };
        let Some(value) = tree.get_mut(&key) else {
            continue;
        };
        if value.is_null() {
            tree.remove(&key);
            continue;
        }
        match expected {
            Value::Mapping(section) if is_section(expected) => match value {
                Value::Mapping(inner) => check_keys(inner, section, &path, origin, warnings)?,
                other => {
                    return Err(ConfigError::BadValue {
                        origin: origin.to_string(),
                        key: path,
                        from_env: None,
                        message: format!("expected a section of keys, found {}", kind(other)),
                    })
                }
            },
            Value::String(_) => {
                if let Some(text) = scalar_text(value) {
                    *value = Value::String(text);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Apply `HEADSCALE_<KEY>` overrides for every known leaf; returns key → variable used.
fn apply_env(
    tree: &mut Mapping,
    schema: &Mapping,
    env: &dyn Fn(&str) -> Option<String>,
    origin: &str,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut used = BTreeMap::new();
    for (path, expected) in leaves(schema, "") {
        let var = env_var_name(&path);
        let Some(raw) = env(&var) else { continue };
        let value = match expected {
            // Text keys take the value verbatim (so "0770" or "a#b" survive); quotes are optional.
            Value::String(_) | Value::Null => {
                if raw.starts_with('"') || raw.starts_with('\'') {
                    match serde_yaml_ng::from_str::<Value>(&raw) {
                        Ok(Value::String(text)) => Value::String(text),
                        _ => Value::String(raw),
                    }
                } else {
                    Value::String(raw)
                }
            }
            // Empty means unset for typed keys, as with viper.
            _ if raw.trim().is_empty() => continue,
            _ => serde_yaml_ng::from_str::<Value>(&raw).map_err(|e| ConfigError::BadValue {
                origin: origin.to_string(),
                key: path.clone(),
                from_env: Some(var.clone()),
                message: format!("not a valid YAML value: {}", one_line(&e)),
            })?,
        };
        if !insert_path(tree, &path, value) {
            continue;
        }
        used.insert(path, var);
    }
    Ok(used)
}

/// `dns.base_domain` → `HEADSCALE_DNS_BASE_DOMAIN`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Every settable key (dotted) with its environment variable, derived from the defaults.
pub fn known_keys() -> Vec<(String, String)> {
    match schema() {
        Ok(schema) => leaves(&schema, "")
            .into_iter()
            .map(|(path, _)| {
                let var = env_var_name(&path);
                (path, var)
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Deserialize; on failure, retry one user-set key at a time over the defaults to name the
/// key at fault (value deserialization carries no location of its own).
fn deserialize(
    tree: Mapping,
    schema: &Mapping,
    from_env: &BTreeMap<String, String>,
    origin: &str,
) -> Result<Config, ConfigError> {
    let whole = match serde_yaml_ng::from_value::<Config>(Value::Mapping(tree.clone())) {
        Ok(config) => return Ok(config),
        Err(e) => e,
    };
    let schema_leaves = leaves(schema, "");
    for (path, _) in &schema_leaves {
        let Some(value) = lookup(&tree, path) else {
            continue;
        };
        let mut probe = schema.clone();
        insert_path(&mut probe, path, value.clone());
        if let Err(e) = serde_yaml_ng::from_value::<Config>(Value::Mapping(probe)) {
            return Err(ConfigError::BadValue {
                origin: origin.to_string(),
                key: path.clone(),
                from_env: from_env.get(path).cloned(),
                message: one_line(&e),
            });
        }
    }
    Err(ConfigError::BadValue {
        origin: origin.to_string(),
        key: "(document)".into(),
        from_env: None,
        message: one_line(&whole),
    })
}

/// The default config as YAML: the single source of known keys and their kinds.
fn schema() -> Result<Mapping, ConfigError> {
    let internal = |message: String| ConfigError::Invalid {
        origin: "(built-in defaults)".into(),
        key: "(all)".into(),
        message,
    };
    match serde_yaml_ng::to_value(Config::default()) {
        Ok(Value::Mapping(mapping)) => Ok(mapping),
        Ok(_) => Err(internal("do not serialize to a mapping".into())),
        Err(e) => Err(internal(format!("do not serialize: {}", one_line(&e)))),
    }
}

/// A non-empty mapping in the schema is a section; an empty one (`split: {}`) is a value.
fn is_section(value: &Value) -> bool {
    matches!(value, Value::Mapping(m) if !m.is_empty())
}

/// Dotted paths of every settable value in a schema, in declaration order.
fn leaves(schema: &Mapping, prefix: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (key, value) in schema {
        let Some(name) = key.as_str() else { continue };
        let path = join(prefix, name);
        match value {
            Value::Mapping(section) if is_section(value) => out.extend(leaves(section, &path)),
            _ => out.push((path, value.clone())),
        }
    }
    out
}

fn lookup<'a>(tree: &'a Mapping, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = tree.get(parts.next()?)?;
    for part in parts {
        current = current.as_mapping()?.get(part)?;
    }
    Some(current)
}

/// Set `path` in `tree`, creating sections; false if a non-section value is in the way.
fn insert_path(tree: &mut Mapping, path: &str, value: Value) -> bool {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return false;
    };
    let mut current = tree;
    for part in parts {
        let slot = current
            .entry(Value::String(part.to_string()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if slot.is_null() {
            *slot = Value::Mapping(Mapping::new());
        }
        match slot {
            Value::Mapping(inner) => current = inner,
            _ => return false,
        }
    }
    current.insert(Value::String(last.to_string()), value);
    true
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn one_line(error: &dyn Display) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Name of the source for messages.
    fn origin(&self) -> String {
        match &self.source_path {
            Some(path) => path.display().to_string(),
            None => "(in memory)".into(),
        }
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Headscale's tidy-ups before validation (a trailing `/` on `server_url`).
    fn normalize(&mut self) {
        while self.server_url.ends_with('/') {
            self.server_url.pop();
        }
    }

    /// `unix_socket_permission` as a mode, e.g. `"0770"` → `0o770`.
    pub fn unix_socket_mode(&self) -> Result<u32, ConfigError> {
        let text = self.unix_socket_permission.trim();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
            _ => Err(self.invalid(
                "unix_socket_permission",
                format!("{text:?} must be an octal file mode such as 0770"),
            )),
        }
    }

    /// Check the rules headscale enforces (and a few of ours). Returns warnings for values
    /// that work but are unsupported or risky; the first hard problem is an error.
    pub fn validate(&self) -> Result<Vec<String>, ConfigError> {
        let mut warnings = Vec::new();

        // Server and listeners.
        let server = parse_server_url(&self.server_url).map_err(|problem| {
            self.invalid("server_url", format!("{:?} {problem}", self.server_url))
        })?;
        check_host_port(&self.listen_addr).map_err(|problem| {
            self.invalid("listen_addr", format!("{:?} {problem}", self.listen_addr))
        })?;
        if !self.metrics_listen_addr.is_empty() {
            check_host_port(&self.metrics_listen_addr).map_err(|problem| {
                self.invalid(
                    "metrics_listen_addr",
                    format!(
                        "{:?} {problem} (leave it empty to disable)",
                        self.metrics_listen_addr
                    ),
                )
            })?;
        }
        self.unix_socket_mode()?;
        match (&self.tls_cert_path, &self.tls_key_path) {
            (Some(_), None) => {
                return Err(self.invalid("tls_key_path", "must be set when tls_cert_path is set"))
            }
            (None, Some(_)) => {
                return Err(self.invalid("tls_cert_path", "must be set when tls_key_path is set"))
            }
            _ => {}
        }
        for proxy in &self.trusted_proxies {
            if proxy.parse::<IpNet>().is_err() && proxy.parse::<IpAddr>().is_err() {
                return Err(self.invalid(
                    "trusted_proxies",
                    format!("entry {proxy:?} must be a CIDR like 10.0.0.0/8 or an IP address"),
                ));
            }
        }
        if self.noise.private_key_path.as_os_str().is_empty() {
            return Err(self.invalid("noise.private_key_path", "must be set"));
        }

        // Storage.
        if self.database.kind != "sled" {
            return Err(self.invalid(
                "database.type",
                format!(
                    "{:?} is not supported: this server stores its event log in sled \
                     (set database.type: sled and database.sled.path)",
                    self.database.kind
                ),
            ));
        }
        if self.database.sled.path.as_os_str().is_empty() {
            return Err(self.invalid("database.sled.path", "must be set"));
        }

        // Addresses.
        if self.prefixes.v4.is_none() && self.prefixes.v6.is_none() {
            return Err(self.invalid("prefixes", "must set at least one of v4 and v6"));
        }
        if let Some(v4) = self.prefixes.v4 {
            if !tailscale_v4_range().contains(&v4) {
                warnings.push(format!(
                    "prefixes.v4 {v4} is outside {}: unsupported, clients may misbehave",
                    tailscale_v4_range()
                ));
            }
        }
        if let Some(v6) = self.prefixes.v6 {
            if !tailscale_v6_range().contains(&v6) {
                warnings.push(format!(
                    "prefixes.v6 {v6} is outside {}: unsupported, clients may misbehave",
                    tailscale_v6_range()
                ));
            }
        }

        // DNS.
        self.validate_dns(&server.host)?;

        // DERP.
        let derp = &self.derp.server;
        if derp.enabled {
            check_host_port(&derp.stun_listen_addr).map_err(|problem| {
                self.invalid(
                    "derp.server.stun_listen_addr",
                    format!(
                        "{:?} {problem} (required when derp.server.enabled)",
                        derp.stun_listen_addr
                    ),
                )
            })?;
            if derp.region_id == 0 {
                return Err(self.invalid("derp.server.region_id", "must not be 0"));
            }
            if derp.region_code.trim().is_empty() {
                return Err(self.invalid("derp.server.region_code", "must be set"));
            }
        }
        if let Some(ip) = &derp.ipv4 {
            if ip.parse::<Ipv4Addr>().is_err() {
                return Err(
                    self.invalid("derp.server.ipv4", format!("{ip:?} is not an IPv4 address"))
                );
            }
        }
        if let Some(ip) = &derp.ipv6 {
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(
                    self.invalid("derp.server.ipv6", format!("{ip:?} is not an IPv6 address"))
                );
            }
        }
        for url in &self.derp.urls {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(self.invalid(
                    "derp.urls",
                    format!("entry {url:?} must start with http:// or https://"),
                ));
            }
        }
        if self.derp.auto_update_enabled && self.derp.update_frequency.is_zero() {
            return Err(self.invalid(
                "derp.update_frequency",
                "must be more than 0 when derp.auto_update_enabled is true",
            ));
        }
        if !derp.enabled && self.derp.urls.is_empty() && self.derp.paths.is_empty() {
            warnings.push(
                "no DERP relays configured (derp.server.enabled is false and derp.urls and \
                 derp.paths are empty): nodes can only connect directly"
                    .into(),
            );
        }

        // Policy.
        match (self.policy.mode, &self.policy.path) {
            (PolicyMode::File, Some(path)) if !path.exists() => {
                return Err(self.invalid(
                    "policy.path",
                    format!(
                        "{:?} does not exist (policy.mode is file)",
                        path.display().to_string()
                    ),
                ));
            }
            (PolicyMode::Database, Some(path)) => warnings.push(format!(
                "policy.path {:?} is ignored because policy.mode is database",
                path.display().to_string()
            )),
            _ => {}
        }

        // Nodes and logging.
        let timeout = self.node.ephemeral.inactivity_timeout;
        if timeout < EPHEMERAL_TIMEOUT_MIN {
            warnings.push(format!(
                "node.ephemeral.inactivity_timeout {} is below {}: headscale refuses this; \
                 allowed here for tests",
                duration::format(timeout),
                duration::format(EPHEMERAL_TIMEOUT_MIN)
            ));
        }
        if self.log.level_name().is_none() {
            return Err(self.invalid(
                "log.level",
                format!(
                    "{:?} must be one of trace, debug, info, warn, error",
                    self.log.level
                ),
            ));
        }
        Ok(warnings)
    }

    fn validate_dns(&self, server_host: &str) -> Result<(), ConfigError> {
        let dns = &self.dns;
        let base = dns
            .base_domain
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if dns.magic_dns && base.is_empty() {
            return Err(self.invalid("dns.base_domain", "must be set when dns.magic_dns is true"));
        }
        if !base.is_empty() {
            // Clients take over base_domain, so the server must not live in it (headscale rule).
            let host = server_host.trim_end_matches('.').to_ascii_lowercase();
            if host == base {
                return Err(self.invalid(
                    "dns.base_domain",
                    format!(
                        "{:?} must not be the server_url host: clients resolve base_domain \
                         through MagicDNS and could no longer reach the server",
                        dns.base_domain
                    ),
                ));
            }
            if host.ends_with(&format!(".{base}")) {
                return Err(self.invalid(
                    "dns.base_domain",
                    format!(
                        "{:?} must not contain the server_url host {host:?}: clients resolve \
                         base_domain through MagicDNS and could no longer reach the server",
                        dns.base_domain
                    ),
                ));
            }
        }
        if dns.override_local_dns && dns.nameservers.global.is_empty() {
            return Err(self.invalid(
                "dns.override_local_dns",
                "is true but dns.nameservers.global is empty (add resolvers or set it to false)",
            ));
        }
        for server in &dns.nameservers.global {
            if !is_resolver(server) {
                return Err(self.invalid(
                    "dns.nameservers.global",
                    format!("entry {server:?} must be an IP address or an https:// DoH URL"),
                ));
            }
        }
        for (domain, servers) in &dns.nameservers.split {
            if let Some(bad) = servers.iter().find(|s| !is_resolver(s)) {
                return Err(self.invalid(
                    &format!("dns.nameservers.split.{domain}"),
                    format!("entry {bad:?} must be an IP address or an https:// DoH URL"),
                ));
            }
        }
        if !dns.extra_records.is_empty() && dns.extra_records_path.is_some() {
            return Err(self.invalid(
                "dns.extra_records",
                "and dns.extra_records_path are mutually exclusive (use one)",
            ));
        }
        for record in &dns.extra_records {
            let ok = match record.record_type {
                RecordType::A => record.value.parse::<Ipv4Addr>().is_ok(),
                RecordType::Aaaa => record.value.parse::<Ipv6Addr>().is_ok(),
            };
            if record.name.trim().is_empty() {
                return Err(self.invalid("dns.extra_records", "entry has an empty name"));
            }
            if !ok {
                return Err(self.invalid(
                    "dns.extra_records",
                    format!(
                        "entry {:?}: {:?} is not a valid {} record value",
                        record.name,
                        record.value,
                        record.record_type.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn is_resolver(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok() || text.starts_with("https://")
}

/// The parts of `server_url` validation needs.
struct ServerUrl {
    host: String,
}

fn parse_server_url(url: &str) -> Result<ServerUrl, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain user information".into());
    }
    let host = split_host_port(authority, false)?;
    if host.is_empty() {
        return Err("has no host".into());
    }
    Ok(ServerUrl { host })
}

/// Accepts `host:port`, `[v6]:port` and `:port`.
fn check_host_port(addr: &str) -> Result<(), String> {
    split_host_port(addr, true).map(|_| ())
}

/// Split off and check the port; returns the host (without IPv6 brackets).
fn split_host_port(authority: &str, port_required: bool) -> Result<String, String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (inside, after) = bracketed.split_once(']').ok_or("has an unclosed '['")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("has an invalid IPv6 address {inside:?}"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("has junk after ']'")?),
        };
        (inside.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("must put an IPv6 address in brackets, like [::1]:8080".into())
            }
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    match port {
        Some(port) => match port.parse::<u16>() {
            Ok(_) => {}
            Err(_) => return Err(format!("has an invalid port {port:?}")),
        },
        None if port_required => return Err("must be host:port, like 127.0.0.1:8080".into()),
        None => {}
    }
    let valid = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'));
    if !valid {
        return Err(format!("has an invalid host {host:?}"));
    }
    Ok(host)
}

// ---------------------------------------------------------------------------------------------
// Netmap-relevant subset and summary
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Canonical JSON (sorted keys, no whitespace) of exactly the settings that change what
    /// clients are told. Recorded in `ConfigApplied` so a past netmap can be rebuilt.
    pub fn netmap_relevant_json(&self) -> String {
        use serde_json::Value as J;
        let text = |s: &str| J::String(s.to_string());
        let path = |p: &Path| J::String(p.to_string_lossy().into_owned());
        let texts = |items: &[String]| J::Array(items.iter().map(|s| text(s)).collect());
        let opt = |value: Option<String>| value.map_or(J::Null, J::String);
        let obj = |pairs: Vec<(&str, J)>| {
            J::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        };

        let dns = &self.dns;
        let split = dns
            .nameservers
            .split
            .iter()
            .map(|(domain, servers)| (domain.clone(), texts(servers)))
            .collect();
        let records = dns
            .extra_records
            .iter()
            .map(|r| {
                obj(vec![
                    ("name", text(&r.name)),
                    ("type", text(r.record_type.as_str())),
                    ("value", text(&r.value)),
                ])
            })
            .collect();
        let derp = &self.derp.server;
        let document = obj(vec![
            ("server_url", text(&self.server_url)),
            (
                "prefixes",
                obj(vec![
                    ("v4", opt(self.prefixes.v4.map(|p| p.to_string()))),
                    ("v6", opt(self.prefixes.v6.map(|p| p.to_string()))),
                    ("allocation", text(self.prefixes.allocation.as_str())),
                ]),
            ),
            (
                "dns",
                obj(vec![
                    ("magic_dns", J::Bool(dns.magic_dns)),
                    ("base_domain", text(&dns.base_domain)),
                    ("override_local_dns", J::Bool(dns.override_local_dns)),
                    (
                        "nameservers",
                        obj(vec![
                            ("global", texts(&dns.nameservers.global)),
                            ("split", J::Object(split)),
                        ]),
                    ),
                    ("search_domains", texts(&dns.search_domains)),
                    ("extra_records", J::Array(records)),
                    (
                        "extra_records_path",
                        dns.extra_records_path.as_deref().map_or(J::Null, path),
                    ),
                ]),
            ),
            (
                "derp",
                obj(vec![
                    (
                        "server",
                        obj(vec![
                            ("enabled", J::Bool(derp.enabled)),
                            ("region_id", J::from(derp.region_id)),
                            ("region_code", text(&derp.region_code)),
                            ("region_name", text(&derp.region_name)),
                            ("stun_listen_addr", text(&derp.stun_listen_addr)),
                            (
                                "automatically_add_embedded_derp_region",
                                J::Bool(derp.automatically_add_embedded_derp_region),
                            ),
                            ("ipv4", opt(derp.ipv4.clone())),
                            ("ipv6", opt(derp.ipv6.clone())),
                        ]),
                    ),
                    ("urls", texts(&self.derp.urls)),
                    (
                        "paths",
                        J::Array(self.derp.paths.iter().map(|p| path(p)).collect()),
                    ),
                ]),
            ),
            (
                "node",
                obj(vec![
                    ("expiry", text(&duration::format(self.node.expiry))),
                    (
                        "ephemeral",
                        obj(vec![(
                            "inactivity_timeout",
                            text(&duration::format(self.node.ephemeral.inactivity_timeout)),
                        )]),
                    ),
                    ("require_approval", J::Bool(self.node.require_approval)),
                ]),
            ),
            (
                "taildrop",
                obj(vec![("enabled", J::Bool(self.taildrop.enabled))]),
            ),
            (
                "policy",
                obj(vec![("mode", text(self.policy.mode.as_str()))]),
            ),
        ]);
        let mut out = String::new();
        write_canonical(&document, &mut out);
        out
    }

    /// SHA-256 of [`Config::netmap_relevant_json`].
    pub fn netmap_relevant_hash(&self) -> [u8; 32] {
        Sha256::digest(self.netmap_relevant_json().as_bytes()).into()
    }

    /// Short human summary for `headscale configtest`.
    pub fn explain(&self) -> String {
        let metrics = match self.metrics_listen_addr.as_str() {
            "" => "off".to_string(),
            addr => addr.to_string(),
        };
        let tls = match &self.tls_cert_path {
            Some(cert) => format!(" (TLS: {})", cert.display()),
            None => String::new(),
        };
        let policy = match (&self.policy.mode, &self.policy.path) {
            (PolicyMode::File, Some(path)) => format!("file {}", path.display()),
            (PolicyMode::File, None) => "file (none set: all traffic allowed)".into(),
            (PolicyMode::Database, _) => "database (set through the API)".into(),
        };
        let derp = &self.derp.server;
        let embedded = if derp.enabled {
            format!(
                "embedded region {} {:?} on, STUN {}",
                derp.region_id, derp.region_code, derp.stun_listen_addr
            )
        } else {
            "embedded off".into()
        };
        let prefixes: Vec<String> = [
            self.prefixes.v4.map(|p| p.to_string()),
            self.prefixes.v6.map(|p| p.to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let dns = match self.dns.magic_dns {
            true => format!("MagicDNS on, base domain {}", self.dns.base_domain),
            false => "MagicDNS off".into(),
        };
        let lines = [
            ("config", self.origin()),
            ("server_url", self.server_url.clone()),
            (
                "listen",
                format!("{}{tls}, metrics {metrics}", self.listen_addr),
            ),
            (
                "data",
                format!(
                    "sled {} (cache {} MiB), noise key {}",
                    self.database.sled.path.display(),
                    self.database.sled.cache_capacity_bytes / (1024 * 1024),
                    self.noise.private_key_path.display()
                ),
            ),
            (
                "socket",
                format!(
                    "{} (mode {})",
                    self.unix_socket.display(),
                    self.unix_socket_permission
                ),
            ),
            ("policy", policy),
            (
                "derp",
                format!(
                    "{embedded}; {} url(s), {} file(s)",
                    self.derp.urls.len(),
                    self.derp.paths.len()
                ),
            ),
            (
                "prefixes",
                format!(
                    "{} ({})",
                    prefixes.join(", "),
                    self.prefixes.allocation.as_str()
                ),
            ),
            ("dns", dns),
            (
                "netmap hash",
                hex::encode(&self.netmap_relevant_hash()[..8]),
            ),
        ];
        lines
            .iter()
            .map(|(label, value)| format!("{label:<12} {value}\n"))
            .collect()
    }
}

/// JSON with object keys sorted and no whitespace, independent of serde_json's map feature.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match value {
        J::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&J::String(key.clone()).to_string());
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// serde helpers
// ---------------------------------------------------------------------------------------------

/// Optional values where `""` means unset (headscale's example writes `tls_cert_path: ""`),
/// accepting any YAML scalar as text and parsing it with `FromStr`.
fn opt_from_str<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: Display,
{
    let Some(ScalarText(text)) = Option::<ScalarText>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid value {text:?}: {e}")))
}

/// Any scalar, as text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ScalarText;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `std::time::Duration` written headscale-style: `"30m"`, `"24h"`, `"90d"`, `"1h30m"`,
/// `"120s"`, `"0"` or the integer `0`. Serialized back as e.g. `"90d"` or `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    const EXPECTED: &str = "a duration with a unit, like 120s, 30m, 24h or 90d (or 0)";

    /// Parse a duration; the error says what was expected.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let trimmed = text.trim();
        if trimmed == "0" {
            return Ok(Duration::ZERO);
        }
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bare_number(text));
        }
        humantime::parse_duration(trimmed)
            .map_err(|_| format!("invalid duration {text:?}, expected {EXPECTED}"))
    }

    fn bare_number(text: &str) -> String {
        format!("invalid duration {text:?} (a bare number needs a unit), expected {EXPECTED}")
    }

    /// Shortest exact form in days, hours, minutes, seconds and sub-seconds; `0s` for zero.
    pub fn format(value: Duration) -> String {
        if value.is_zero() {
            return "0s".into();
        }
        let secs = value.as_secs();
        let nanos = value.subsec_nanos();
        let parts = [
            (secs / 86_400, "d"),
            (secs / 3_600 % 24, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (u64::from(nanos / 1_000_000), "ms"),
            (u64::from(nanos / 1_000 % 1_000), "us"),
            (u64::from(nanos % 1_000), "ns"),
        ];
        parts
            .iter()
            .filter(|(amount, _)| *amount > 0)
            .map(|(amount, unit)| format!("{amount}{unit}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(Visitor)
    }

    struct Visitor;

    impl serde::de::Visitor<'_> for Visitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
            match v {
                0 => Ok(Duration::ZERO),
                _ => Err(E::custom(bare_number(&v.to_string()))),
            }
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
            match v {
                0 => Ok(Duration::ZERO),
                _ => Err(E::custom(bare_number(&v.to_string()))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const EXAMPLE: &str = include_str!("../../examples/config.yaml");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn origin() -> &'static Path {
        Path::new("/tmp/test.yaml")
    }

    /// Load YAML text with a fixed map standing in for the process environment.
    fn load_with(yaml: &str, vars: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_str(yaml, origin(), &move |name| map.get(name).cloned())
    }

    fn no_derp_warning() -> String {
        "no DERP relays configured (derp.server.enabled is false and derp.urls and \
         derp.paths are empty): nodes can only connect directly"
            .to_string()
    }

    fn error_text(yaml: &str) -> String {
        match load_with(yaml, &[]) {
            Ok(loaded) => panic!("expected an error, loaded {loaded:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Defaults survive YAML serialization and an empty file yields exactly the defaults.
    #[test]
    fn defaults_round_trip() {
        let default = Config::default();
        let yaml = serde_yaml_ng::to_string(&default).unwrap();
        let back: Config = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, default);

        let json = serde_json::to_string(&default).unwrap();
        let back: Config = serde_json::from_str(&json).unwrap();
        assert_eq!(back, default);

        let loaded = load_with("", &[]).unwrap();
        let expected = Config {
            source_path: Some(origin().to_path_buf()),
            ..Config::default()
        };
        assert_eq!(loaded.config, expected);
        // Defaults have no DERP relay at all (urls are empty on purpose): that is worth a warning.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].contains("no DERP relays"));

        // Loading the serialized defaults gives no unknown-key warnings.
        let loaded = load_with(&yaml, &[]).unwrap();
        assert_eq!(loaded.config, expected);
        assert_eq!(loaded.warnings.len(), 1);
    }

    #[test]
    fn default_values_match_headscale() {
        let c = Config::default();
        assert_eq!(c.unix_socket_mode().unwrap(), 0o770);
        assert_eq!(c.prefixes.v4.unwrap().to_string(), "100.64.0.0/10");
        assert_eq!(c.prefixes.v6.unwrap().to_string(), "fd7a:115c:a1e0::/48");
        assert_eq!(c.derp.update_frequency, Duration::from_secs(3 * 3600));
        assert_eq!(
            c.node.ephemeral.inactivity_timeout,
            Duration::from_secs(120)
        );
        assert_eq!(c.database.sled.cache_capacity_bytes, 64 << 20);
        assert_eq!(c.cli.timeout, Duration::from_secs(5));
        assert_eq!(c.log.level_name(), Some("info"));
    }

    /// The shipped example loads cleanly once its policy file exists.
    #[test]
    fn example_loads_without_warnings() {
        let policy = tempfile::NamedTempFile::new().unwrap();
        let policy_path = policy.path().to_str().unwrap().to_string();
        let loaded = load_with(EXAMPLE, &[("HEADSCALE_POLICY_PATH", &policy_path)]).unwrap();
        assert_eq!(loaded.warnings, Vec::<String>::new());
        let c = &loaded.config;
        assert_eq!(c.server_url, "http://127.0.0.1:8080");
        assert_eq!(c.database.sled.path, PathBuf::from("./data/db.sled"));
        assert_eq!(c.unix_socket, PathBuf::from("./data/headscale.sock"));
        assert_eq!(
            c.noise.private_key_path,
            PathBuf::from("./data/noise_private.key")
        );
        assert!(c.derp.server.enabled);
        assert_eq!(c.derp.server.stun_listen_addr, "127.0.0.1:3478");
        assert!(c.derp.urls.is_empty());
        assert_eq!(c.dns.base_domain, "tailnet.example");
        assert!(c.dns.nameservers.global.is_empty());
        assert!(!c.dns.override_local_dns);
        assert_eq!(c.node.expiry, Duration::ZERO);
        assert_eq!(
            c.node.ephemeral.inactivity_timeout,
            Duration::from_secs(1800)
        );
        assert_eq!(c.policy.path, Some(PathBuf::from(&policy_path)));

        let summary = c.explain();
        for needle in [
            "http://127.0.0.1:8080",
            "./data/db.sled",
            "embedded region 999",
            "100.64.0.0/10",
        ] {
            assert!(
                summary.contains(needle),
                "{needle} missing from:\n{summary}"
            );
        }
    }

    #[test]
    fn load_reads_files_and_names_missing_ones() {
        let missing = Path::new("/nonexistent/headscale/config.yaml");
        let err = load(missing, &no_env).unwrap_err();
        assert!(matches!(err, ConfigError::NotFound { .. }));
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/headscale/config.yaml not found \
             (pass --config or set HEADSCALE_CONFIG)"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "server_url: https://hs.example.org\n").unwrap();
        let loaded = load(&path, &no_env).unwrap();
        assert_eq!(loaded.config.server_url, "https://hs.example.org");
        assert_eq!(loaded.config.source_path.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn resolve_path_precedence() {
        let env = |name: &str| (name == "HEADSCALE_CONFIG").then(|| "/from/env.yaml".to_string());
        let flag = Path::new("/from/flag.yaml");
        assert_eq!(
            resolve_path_with(Some(flag), &env),
            PathBuf::from("/from/flag.yaml")
        );
        assert_eq!(
            resolve_path_with(None, &env),
            PathBuf::from("/from/env.yaml")
        );
        assert_eq!(
            resolve_path_with(None, &no_env),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
        let empty = |_: &str| Some(String::new());
        assert_eq!(
            resolve_path_with(None, &empty),
            PathBuf::from(DEFAULT_CONFIG_PATH)
        );
    }

    #[test]
    fn removed_keys_are_fatal_with_replacement() {
        let cases = [
            (
                "acl_policy_path: /x.hujson\n",
                "acl_policy_path",
                "policy.path",
            ),
            (
                "dns_config:\n  magic_dns: true\n",
                "dns_config",
                "dns section",
            ),
            (
                "dns:\n  use_username_in_magic_dns: true\n",
                "dns.use_username_in_magic_dns",
                "base_domain",
            ),
            (
                "oidc:\n  strip_email_domain: true\n",
                "oidc.strip_email_domain",
                "email",
            ),
            (
                "oidc:\n  map_legacy_users: true\n",
                "oidc.map_legacy_users",
                "legacy",
            ),
            (
                "randomize_client_port: true\n",
                "randomize_client_port",
                "randomizeClientPort",
            ),
            ("oidc:\n  expiry: 180d\n", "oidc.expiry", "node.expiry"),
        ];
        for (yaml, key, hint) in cases {
            let err = load_with(yaml, &[]).unwrap_err();
            assert!(
                matches!(err, ConfigError::RemovedKey { .. }),
                "{yaml}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(&format!(
                    "config /tmp/test.yaml: key \"{key}\" was removed; "
                )),
                "{text}"
            );
            assert!(text.contains(hint), "{text}");
            assert!(!text.contains('\n'));
        }
    }

    #[test]
    fn unknown_keys_warn_with_full_path() {
        let yaml = "dns:\n  basedomain: x.example\n  nameservers:\n    globl: []\nfoo: 1\n";
        let loaded = load_with(yaml, &[]).unwrap();
        for expected in [
            "unknown config key \"dns.basedomain\" (ignored)",
            "unknown config key \"dns.nameservers.globl\" (ignored)",
            "unknown config key \"foo\" (ignored)",
        ] {
            assert!(
                loaded.warnings.iter().any(|w| w == expected),
                "{expected} not in {:?}",
                loaded.warnings
            );
        }
        // Free-form maps are data, not keys.
        let yaml = "dns:\n  nameservers:\n    split:\n      corp.example: [10.0.0.53]\n";
        let loaded = load_with(yaml, &[]).unwrap();
        assert!(
            loaded.warnings.iter().all(|w| !w.contains("unknown")),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(
            loaded.config.dns.nameservers.split["corp.example"],
            vec!["10.0.0.53"]
        );
    }

    #[test]
    fn unsupported_features_warn_as_unsupported() {
        let yaml = "\
grpc_listen_addr: 127.0.0.1:50443
oidc:
  issuer: https://sso.example.com
acme_email: a@b.c
tls_letsencrypt_hostname: hs.example.com
logtail:
  enabled: false
database:
  type: sled
  sqlite:
    path: /var/lib/headscale/db.sqlite
  debug: false
node:
  routes:
    ha:
      probe_interval: 10s
tuning:
  batch_change_delay: 800ms
";
        let loaded = load_with(yaml, &[]).unwrap();
        for key in [
            "grpc_listen_addr",
            "oidc",
            "acme_email",
            "tls_letsencrypt_hostname",
            "logtail",
            "database.sqlite",
            "database.debug",
            "node.routes",
            "tuning",
        ] {
            let warning = loaded
                .warnings
                .iter()
                .find(|w| w.contains(&format!("\"{key}\"")))
                .unwrap_or_else(|| panic!("no warning for {key}: {:?}", loaded.warnings));
            assert!(warning.contains("does not support"), "{warning}");
            assert!(!warning.contains("unknown"), "{warning}");
        }
    }

    #[test]
    fn env_overrides_nested_bool_duration_and_list() {
        let vars = [
            ("HEADSCALE_DNS_BASE_DOMAIN", "corp.example"),
            ("HEADSCALE_DNS_MAGIC_DNS", "false"),
            ("HEADSCALE_NODE_EXPIRY", "90d"),
            ("HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT", "30m"),
            ("HEADSCALE_DERP_URLS", "[https://derp.example/map.json]"),
            ("HEADSCALE_DATABASE_SLED_PATH", "/srv/db.sled"),
            ("HEADSCALE_DERP_SERVER_REGION_ID", "901"),
            ("HEADSCALE_UNIX_SOCKET_PERMISSION", "0700"),
            ("HEADSCALE_SERVER_URL", "https://hs.example.org"),
        ];
        let yaml = "dns:\n  base_domain: file.example\n  magic_dns: true\n";
        let c = load_with(yaml, &vars).unwrap().config;
        assert_eq!(c.dns.base_domain, "corp.example");
        assert!(!c.dns.magic_dns);
        assert_eq!(c.node.expiry, Duration::from_secs(90 * 86_400));
        assert_eq!(
            c.node.ephemeral.inactivity_timeout,
            Duration::from_secs(1800)
        );
        assert_eq!(c.derp.urls, vec!["https://derp.example/map.json"]);
        assert_eq!(c.database.sled.path, PathBuf::from("/srv/db.sled"));
        assert_eq!(c.derp.server.region_id, 901);
        assert_eq!(c.unix_socket_mode().unwrap(), 0o700);
        assert_eq!(c.server_url, "https://hs.example.org");

        // Empty text disables metrics; an empty optional means unset.
        let vars = [
            ("HEADSCALE_METRICS_LISTEN_ADDR", ""),
            ("HEADSCALE_POLICY_PATH", ""),
        ];
        let c = load_with("", &vars).unwrap().config;
        assert_eq!(c.metrics_listen_addr, "");
        assert_eq!(c.policy.path, None);
    }

    #[test]
    fn env_var_names_are_unique_and_cover_leaves() {
        let keys = known_keys();
        let mut vars: Vec<&str> = keys.iter().map(|(_, v)| v.as_str()).collect();
        vars.sort_unstable();
        let before = vars.len();
        vars.dedup();
        assert_eq!(before, vars.len());
        for var in [
            "HEADSCALE_SERVER_URL",
            "HEADSCALE_DNS_BASE_DOMAIN",
            "HEADSCALE_DATABASE_SLED_PATH",
            "HEADSCALE_DNS_NAMESERVERS_SPLIT",
            "HEADSCALE_DERP_SERVER_IPV4",
            "HEADSCALE_CLI_API_KEY",
        ] {
            assert!(vars.contains(&var), "{var}");
        }
        assert!(!vars.contains(&"HEADSCALE_SOURCE_PATH"));
    }

    #[test]
    fn durations_parse_and_format() {
        for (text, secs) in [
            ("30m", 1800),
            ("1h", 3600),
            ("24h", 86_400),
            ("90d", 7_776_000),
            ("120s", 120),
            ("0", 0),
            ("1h30m", 5400),
        ] {
            assert_eq!(
                duration::parse(text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        for (secs, text) in [
            (0, "0s"),
            (7_776_000, "90d"),
            (5400, "1h 30m"),
            (120, "2m"),
            (10_800, "3h"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(duration::format(d), text);
            assert_eq!(duration::parse(&duration::format(d)).unwrap(), d);
        }
        let d = Duration::from_millis(1500);
        assert_eq!(duration::parse(&duration::format(d)).unwrap(), d);
        // Integer 0 in YAML.
        let c = load_with("node:\n  expiry: 0\n", &[]).unwrap().config;
        assert_eq!(c.node.expiry, Duration::ZERO);
    }

    #[test]
    fn bad_duration_names_key_and_expectation() {
        let err = error_text("node:\n  expiry: 5x\n");
        assert_eq!(
            err,
            "config /tmp/test.yaml: node.expiry: invalid duration \"5x\", expected a duration \
             with a unit, like 120s, 30m, 24h or 90d (or 0)"
        );
        let err = error_text("cli:\n  timeout: 30\n");
        assert!(
            err.contains("cli.timeout") && err.contains("needs a unit"),
            "{err}"
        );
        let err = load_with("", &[("HEADSCALE_DERP_UPDATE_FREQUENCY", "often")]).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("derp.update_frequency (from $HEADSCALE_DERP_UPDATE_FREQUENCY)"),
            "{err}"
        );
    }

    #[test]
    fn type_errors_name_key_and_expectation() {
        let err = error_text("dns:\n  magic_dns: [1]\n");
        assert!(
            err.starts_with("config /tmp/test.yaml: dns.magic_dns: "),
            "{err}"
        );
        assert!(err.contains("expected a boolean"), "{err}");
        let err = error_text("policy:\n  mode: db\n");
        assert!(
            err.contains("policy.mode") && err.contains("expected `file` or `database`"),
            "{err}"
        );
        let err = error_text("prefixes:\n  v4: 100.64.0.0/40\n");
        assert!(
            err.contains("prefixes.v4") && err.contains("100.64.0.0/40"),
            "{err}"
        );
        let err = error_text("dns: 5\n");
        assert!(
            err.contains("dns: expected a section of keys, found a number"),
            "{err}"
        );
        let err = error_text("server_url: [\n");
        assert!(
            err.starts_with("config /tmp/test.yaml: invalid YAML: "),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_server_url() {
        assert_eq!(
            error_text("server_url: ftp://x\n"),
            "config /tmp/test.yaml: server_url \"ftp://x\" must start with http:// or https://"
        );
        assert!(error_text("server_url: http://:8080\n").contains("has no host"));
        assert!(error_text("server_url: http://hs:port\n").contains("invalid port"));
        let c = load_with("server_url: https://[::1]:8443/\n", &[])
            .unwrap()
            .config;
        assert_eq!(c.server_url, "https://[::1]:8443");
    }

    #[test]
    fn base_domain_must_not_contain_server_url() {
        let same = "server_url: https://hs.example.com\ndns:\n  base_domain: hs.example.com\n";
        let err = error_text(same);
        assert!(
            err.starts_with(
                "config /tmp/test.yaml: dns.base_domain \"hs.example.com\" must not be"
            ),
            "{err}"
        );
        let parent = "server_url: https://hs.example.com:443\ndns:\n  base_domain: example.com\n";
        assert!(error_text(parent).contains("must not contain the server_url host"));
        let sibling = "server_url: https://hs.example.com\ndns:\n  base_domain: ts.example.com\n";
        assert!(load_with(sibling, &[]).is_ok());
        let suffix_only = "server_url: https://myexample.com\ndns:\n  base_domain: example.com\n";
        assert!(load_with(suffix_only, &[]).is_ok());
    }

    #[test]
    fn database_type_other_than_sled_is_an_error() {
        let err = error_text("database:\n  type: sqlite\n");
        assert_eq!(
            err,
            "config /tmp/test.yaml: database.type \"sqlite\" is not supported: this server \
             stores its event log in sled (set database.type: sled and database.sled.path)"
        );
        assert!(error_text("database:\n  type: postgres\n").contains("sled"));
    }

    #[test]
    fn deprecated_ephemeral_key_is_moved_with_warning() {
        let loaded = load_with("ephemeral_node_inactivity_timeout: 10m\n", &[]).unwrap();
        assert_eq!(
            loaded.config.node.ephemeral.inactivity_timeout,
            Duration::from_secs(600)
        );
        let expected = "config key \"ephemeral_node_inactivity_timeout\" is deprecated; \
                        use node.ephemeral.inactivity_timeout (value used)";
        assert_eq!(
            loaded.warnings,
            vec![expected.to_string(), no_derp_warning()]
        );

        let both = "ephemeral_node_inactivity_timeout: 10m\n\
                    node:\n  ephemeral:\n    inactivity_timeout: 5m\n";
        let loaded = load_with(both, &[]).unwrap();
        assert_eq!(
            loaded.config.node.ephemeral.inactivity_timeout,
            Duration::from_secs(300)
        );
        assert!(loaded.warnings.iter().any(|w| w.contains("ignored")));
    }

    #[test]
    fn validation_rules() {
        let cases = [
            (
                "tls_cert_path: /c.pem\n",
                "tls_key_path must be set when tls_cert_path is set",
            ),
            (
                "dns:\n  nameservers:\n    global: []\n",
                "dns.override_local_dns is true but dns.nameservers.global is empty",
            ),
            (
                "dns:\n  extra_records: [{name: a.example.com, type: A, value: 100.64.0.9}]\n  \
                 extra_records_path: /r.json\n",
                "mutually exclusive",
            ),
            (
                "dns:\n  extra_records: [{name: a, type: AAAA, value: 1.2.3.4}]\n",
                "not a valid AAAA record value",
            ),
            (
                "prefixes:\n  v4: \"\"\n  v6: \"\"\n",
                "prefixes must set at least one of v4 and v6",
            ),
            (
                "policy:\n  path: /nonexistent/policy.hujson\n",
                "policy.path \"/nonexistent/policy.hujson\" does not exist",
            ),
            ("log:\n  level: loud\n", "log.level \"loud\" must be one of"),
            (
                "unix_socket_permission: \"0999\"\n",
                "unix_socket_permission \"0999\" must be an octal file mode",
            ),
            (
                "trusted_proxies: [not-a-cidr]\n",
                "trusted_proxies entry \"not-a-cidr\"",
            ),
            (
                "listen_addr: localhost\n",
                "listen_addr \"localhost\" must be host:port",
            ),
            (
                "dns:\n  nameservers:\n    global: [dns.example]\n",
                "must be an IP address or an https:// DoH URL",
            ),
            (
                "dns:\n  magic_dns: true\n  base_domain: \"\"\n",
                "dns.base_domain must be set when dns.magic_dns is true",
            ),
        ];
        for (yaml, needle) in cases {
            let err = error_text(yaml);
            assert!(err.contains(needle), "{yaml}: {err}");
            assert!(err.starts_with("config /tmp/test.yaml: "), "{err}");
        }

        // Warnings, not errors.
        let yaml = "prefixes:\n  v4: 10.0.0.0/8\n\
                    node:\n  ephemeral:\n    inactivity_timeout: 5s\n\
                    log:\n  level: warning\n";
        let loaded = load_with(yaml, &[]).unwrap();
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.contains("prefixes.v4 10.0.0.0/8 is outside 100.64.0.0/10: unsupported")));
        assert!(loaded
            .warnings
            .iter()
            .any(|w| w.contains("inactivity_timeout 5s is below 1m 5s")));
        assert_eq!(loaded.config.log.level_name(), Some("warn"));
        let fatal = LogConfig {
            level: "fatal".into(),
            format: LogFormat::Json,
        };
        assert_eq!(fatal.level_name(), Some("error"));

        // headscale's example writes empty strings for unset paths.
        let yaml = "tls_cert_path: \"\"\ntls_key_path: \"\"\npolicy:\n  path: \"\"\n";
        let c = load_with(yaml, &[]).unwrap().config;
        assert_eq!(
            (c.tls_cert_path, c.tls_key_path, c.policy.path),
            (None, None, None)
        );
    }

    #[test]
    fn netmap_relevant_json_is_canonical_and_selective() {
        let a = Config::default();
        let b = Config::default();
        assert_eq!(a.netmap_relevant_json(), b.netmap_relevant_json());
        let json = a.netmap_relevant_json();
        assert!(!json.contains(": ") && !json.contains(", "), "{json}");
        assert!(!json.contains('\n'));
        assert!(
            json.starts_with("{\"derp\":{\"paths\":[],\"server\":{\"automatically_add"),
            "{json}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["node"]["ephemeral"]["inactivity_timeout"], "2m");
        assert_eq!(parsed["policy"]["mode"], "file");

        let mut unrelated = a.clone();
        unrelated.log.level = "debug".into();
        unrelated.listen_addr = "0.0.0.0:443".into();
        unrelated.database.sled.path = "/elsewhere".into();
        unrelated.cli.timeout = Duration::from_secs(60);
        unrelated.derp.server.private_key_path = "/other.key".into();
        assert_eq!(unrelated.netmap_relevant_hash(), a.netmap_relevant_hash());

        let mut renamed = a.clone();
        renamed.dns.base_domain = "other.example".into();
        assert_ne!(renamed.netmap_relevant_hash(), a.netmap_relevant_hash());
        let mut expiry = a.clone();
        expiry.node.expiry = Duration::from_secs(3600);
        assert_ne!(expiry.netmap_relevant_hash(), a.netmap_relevant_hash());
        assert_eq!(
            a.netmap_relevant_hash().to_vec(),
            Sha256::digest(a.netmap_relevant_json().as_bytes()).to_vec()
        );
    }
}
