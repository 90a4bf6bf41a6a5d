//! Reading a config: the file or text, removed keys (fatal), deprecated, unknown and
//! unsupported keys (warned about, never dropped silently), `HEADSCALE_*` environment
//! overrides, the key schema derived from the defaults (`known_keys`, `env_var_name`), and
//! the files a server config points at that are read at load (`oidc.client_secret_path`).

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use super::{Config, ConfigError, Loaded, CONFIG_PATH_ENV, DEFAULT_CONFIG_PATH, ENV_PREFIX};

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
    load_str(&read(path)?, path, env)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| {
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
    })
}

/// [`load`] for text already in memory; `origin` names it in messages and `source_path`.
pub fn load_str(
    yaml: &str,
    origin: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let mut loaded = load_str_unvalidated(yaml, origin, env)?;
    resolve_oidc_secret(&mut loaded.config, env)?;
    loaded.warnings.extend(loaded.config.validate()?);
    Ok(loaded)
}

/// headscale reads the OIDC client secret file when it loads a server config; a client of
/// the server ([`load_client`]) never needs the secret, so it never reads the file.
fn resolve_oidc_secret(
    config: &mut Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    config
        .oidc
        .resolve_client_secret(env)
        .map_err(|(key, message)| config.invalid(key, message))
}

/// [`load`] for a CLI that only talks to a server (its socket or `cli.address`): read,
/// checked key by key and overridden from `env`, but not validated as a server config, so a
/// config only a server could refuse (headscale's `database.type: sqlite`, …) still serves
/// the client. Whoever then opens the store itself calls [`Config::validate`] first.
pub fn load_client(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    load_str_unvalidated(&read(path)?, path, env)
}

/// [`load_str`] without [`Config::validate`].
pub fn load_str_unvalidated(
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

    let mut config = deserialize(tree, &from_env, &origin_text)?;
    config.source_path = Some(origin.to_path_buf());
    config.normalize();
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
        "removed in headscale 0.26: usernames keep the full email address",
    ),
    (
        "oidc.map_legacy_users",
        "removed in headscale 0.26: legacy users are no longer mapped to OIDC identities",
    ),
    (
        "randomize_client_port",
        "as in headscale 0.29, set \"randomizeClientPort\": true at the top level of the \
         policy, or give nodes the randomize-client-port attribute in its nodeAttrs",
    ),
    ("oidc.expiry", "use node.expiry"),
];

/// Headscale features we do not implement: their keys warn instead of counting as unknown,
/// unless their value leaves the feature off (`""`, `false`, `0`, empty: the example's
/// placeholders), which says nothing worth a warning. A trailing `*` matches any top-level
/// key with that prefix.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    ("database.debug", "database query logging"),
    ("preauth_keys", "revoked pre-auth key retention"),
    (
        "tuning.register_cache_max_entries",
        "a configurable pending-login cap (fixed here: 1024 logins, 16 per source)",
    ),
    (
        "tuning.register_cache_expiration",
        "a configurable pending-login lifetime (fixed here: 15m)",
    ),
];

/// Values of unsupported keys that are what this server does anyway: silent.
const UNSUPPORTED_DEFAULTS: &[(&str, &str)] = &[
    ("tuning.register_cache_max_entries", "1024"),
    ("tuning.register_cache_expiration", "15m"),
];

/// headscale keys that tune only headscale's own internals (its ORM, its node store and
/// notifier workers): whatever their value, nothing here changes, so they are accepted
/// without a word.
const IGNORED_KEYS: &[&str] = &[
    "database.gorm",
    "tuning.node_store_batch_size",
    "tuning.node_store_batch_timeout",
    "tuning.batcher_workers",
    "tuning.notifier_send_timeout",
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

/// Whether a value leaves a feature off: nothing, `false`, `0`, `""`, an empty list or
/// mapping, or a mapping of only such values.
fn leaves_feature_off(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.trim().is_empty(),
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(entries) => entries.values().all(leaves_feature_off),
        Value::Tagged(tagged) => leaves_feature_off(&tagged.value),
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
        if IGNORED_KEYS.contains(&path.as_str()) {
            tree.remove(&key);
            continue;
        }
        if let Some(feature) = unsupported_feature(&path) {
            let value = tree.get(&key);
            let as_here = value
                .and_then(scalar_or_text)
                .is_some_and(|text| UNSUPPORTED_DEFAULTS.contains(&(path.as_str(), text.as_str())));
            let off = as_here || value.is_none_or(leaves_feature_off);
            if !off {
                warnings.push(format!(
                    "config key \"{path}\" is for {feature}, which this server does not support \
                     (ignored)"
                ));
            }
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
            // viper's GetStringSlice splits a variable on white space
            // (`HEADSCALE_OIDC_SCOPE="openid profile email"`); `[a, b]` is read as YAML.
            Value::Sequence(_) if !raw.trim_start().starts_with('[') => Value::Sequence(
                raw.split_whitespace()
                    .map(|item| Value::String(item.to_string()))
                    .collect(),
            ),
            // viper reads booleans with Go's strconv.ParseBool: `HEADSCALE_CLI_INSECURE=1`.
            Value::Bool(_) if go_bool(&raw).is_some() => Value::Bool(go_bool(&raw) == Some(true)),
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

/// Go's `strconv.ParseBool`.
fn go_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
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

/// Deserialize, naming the key at fault on failure (`serde_path_to_error`; a value's own
/// error carries no location).
fn deserialize(
    tree: Mapping,
    from_env: &BTreeMap<String, String>,
    origin: &str,
) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(Value::Mapping(tree)).map_err(|error| {
        let path = error.path().to_string();
        let key = match path.as_str() {
            "" | "." => "(document)".to_string(),
            path => path.to_string(),
        };
        // `derp.urls[2]` came from the variable of `derp.urls`, if any.
        let leaf = key.split('[').next().unwrap_or_default();
        ConfigError::BadValue {
            origin: origin.to_string(),
            from_env: from_env.get(leaf).cloned(),
            key,
            message: one_line(error.inner()),
        }
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

fn scalar_or_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_string()),
        other => scalar_text(other),
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
