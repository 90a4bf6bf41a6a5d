//! Rows → events, pure: the same rows always give the same events, whatever read them.
//! Soft-deleted rows (`deleted_at` set) and rows that do not parse are left out and listed in
//! the [`Report`]; ids, keys, addresses and times are kept as headscale had them.

use super::{Row, Source};
use crate::core::event::{
    Event, ImportSummary, ImportedApiKey, ImportedNode, ImportedPreAuthKey, ImportedUser,
    NodeRegistration, RegisterMethod, SecretHash,
};
use crate::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::limits;
use crate::core::naming;
use crate::core::Timestamp;
use crate::store::record::sha256;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The headscale migration a database must have run: the last one of headscale 0.29.2, the
/// schema this importer reads (and was tested against).
pub const REQUIRED_MIGRATION: &str = "202606181200-recover-null-tags-node-user-id";
/// The headscale release to upgrade to (and start once) before importing an older database.
pub const REQUIRED_VERSION: &str = "0.29.2";
/// headscale's "no time" is Go's zero time; anything before this counts as none.
const EARLIEST_REAL_TIME: Timestamp = Timestamp(-2_208_988_800_000); // 1900-01-01

/// Why an import cannot go ahead at all (row problems are skipped and reported instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("this headscale database has not run migration {REQUIRED_MIGRATION:?}: upgrade headscale to {REQUIRED_VERSION} (or newer 0.29.x), start it once so it migrates the database, stop it, then import")]
    SchemaTooOld,
    #[error("this does not look like a headscale database: {0}")]
    NotHeadscale(String),
}

/// What an import did, for the summary the CLI prints and the server logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub users: u64,
    pub nodes: u64,
    pub pre_auth_keys: u64,
    pub api_keys: u64,
    pub policy: bool,
    /// One line per row left out: table, id and why.
    pub skipped: Vec<String>,
    /// One line per node imported under another given name than headscale's.
    pub renamed: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} user(s), {} node(s), {} pre-auth key(s), {} API key(s), {}, {} row(s) skipped",
            self.users,
            self.nodes,
            self.pre_auth_keys,
            self.api_keys,
            if self.policy { "a policy" } else { "no policy" },
            self.skipped.len()
        )
    }
}

/// The events to append and the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub events: Vec<Event>,
    pub report: Report,
}

fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_deref()).unwrap_or("")
}

fn id_of(row: &Row) -> Option<u64> {
    text(row, "id")
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
}

fn optional_id(row: &Row, column: &str) -> Option<u64> {
    text(row, column)
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
}

fn flag(row: &Row, column: &str) -> bool {
    matches!(
        text(row, column).trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "t"
    )
}

/// A time as SQLite (`2026-12-06 15:20:24.25905271+00:00`) or PostgreSQL (`…+00`) write it,
/// or RFC 3339; `None` when empty, unparsable, or before 1900 (Go's zero time).
pub fn parse_time(value: &str) -> Option<Timestamp> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    let parsed = chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .or_else(|| chrono::DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
        .map(|t| t.timestamp_millis())
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .map(|t| t.and_utc().timestamp_millis())
        })?;
    Some(Timestamp(parsed)).filter(|t| *t >= EARLIEST_REAL_TIME)
}

/// A JSON list column (`tags`, `approved_routes`): NULL, `''`, `'null'` and `'[]'` are empty.
fn json_list(row: &Row, column: &str) -> Result<Vec<String>, String> {
    let value = text(row, column).trim();
    if value.is_empty() || value == "null" {
        return Ok(Vec::new());
    }
    serde_json::from_str::<Option<Vec<String>>>(value)
        .map(Option::unwrap_or_default)
        .map_err(|e| format!("{column} is not a JSON list of strings: {e}"))
}

fn deleted(row: &Row) -> bool {
    !text(row, "deleted_at").trim().is_empty()
}

fn method(value: &str) -> RegisterMethod {
    match value.trim().to_ascii_lowercase().as_str() {
        "authkey" => RegisterMethod::AuthKey,
        "oidc" => RegisterMethod::Oidc,
        _ => RegisterMethod::Cli,
    }
}

/// A key hash as headscale stores it: a bcrypt string (`$2a$…`).
fn bcrypt_hash(row: &Row) -> Option<SecretHash> {
    let hash = text(row, "hash").trim();
    hash.starts_with("$2")
        .then(|| SecretHash::Bcrypt(hash.to_string()))
}

struct Skips<'a>(&'a mut Vec<String>);

impl Skips<'_> {
    fn add(&mut self, table: &str, row: &Row, why: impl std::fmt::Display) {
        let id = text(row, "id");
        self.0.push(format!("{table} id {id}: {why}"));
    }
}

/// Turns the rows of a headscale database into import events (ending with `Imported`).
/// `now` is only the fallback creation time of rows that have none.
pub fn convert(source: &Source, now: Timestamp) -> Result<Converted, ImportError> {
    if source.migrations.is_empty() {
        return Err(ImportError::NotHeadscale(
            "its migrations table is empty or missing".into(),
        ));
    }
    if !source.migrations.iter().any(|m| m == REQUIRED_MIGRATION) {
        return Err(ImportError::SchemaTooOld);
    }
    let mut report = Report::default();
    let mut skipped = Vec::new();
    let mut skips = Skips(&mut skipped);
    let mut events = Vec::new();
    let time_or_now = |row: &Row, column: &str| parse_time(text(row, column)).unwrap_or(now);

    // Users.
    let mut users = BTreeSet::new();
    for row in &source.users {
        let Some(id) = id_of(row) else {
            skips.add("users", row, "no valid id");
            continue;
        };
        if deleted(row) {
            skips.add("users", row, "deleted");
            continue;
        }
        let name = text(row, "name").to_string();
        if name.is_empty() {
            skips.add("users", row, "no name");
            continue;
        }
        users.insert(id);
        events.push(Event::UserImported(Box::new(ImportedUser {
            id: UserId(id),
            name,
            display_name: text(row, "display_name").to_string(),
            email: text(row, "email").to_string(),
            picture_url: text(row, "profile_pic_url").to_string(),
            created_at: time_or_now(row, "created_at"),
            provider: text(row, "provider").to_string(),
            provider_identifier: text(row, "provider_identifier").to_string(),
        })));
    }
    report.users = users.len() as u64;

    // Which node a key registered (for one-off keys: that node may log in with it again).
    let mut key_users: BTreeMap<u64, u64> = BTreeMap::new();
    for node in source.nodes.iter().filter(|n| !deleted(n)) {
        if let (Some(node_id), Some(key_id)) = (id_of(node), optional_id(node, "auth_key_id")) {
            key_users.entry(key_id).or_insert(node_id);
        }
    }

    // Pre-auth keys.
    let mut keys: BTreeMap<u64, bool> = BTreeMap::new(); // id → ephemeral
    for row in &source.pre_auth_keys {
        let Some(id) = id_of(row) else {
            skips.add("pre_auth_keys", row, "no valid id");
            continue;
        };
        if deleted(row) {
            skips.add("pre_auth_keys", row, "deleted");
            continue;
        }
        let tags = match json_list(row, "tags") {
            Ok(tags) => tags,
            Err(why) => {
                skips.add("pre_auth_keys", row, why);
                continue;
            }
        };
        let user = optional_id(row, "user_id").filter(|u| users.contains(u));
        if user.is_none() && tags.is_empty() {
            skips.add("pre_auth_keys", row, "its user is gone and it has no tags");
            continue;
        }
        let prefix = text(row, "prefix").trim().to_string();
        let (prefix, hash) = match (prefix.is_empty(), bcrypt_hash(row)) {
            (false, Some(hash)) => (prefix, hash),
            _ => {
                // Legacy plaintext key: stored as the SHA-256 of the whole key.
                let legacy = text(row, "key").trim();
                if legacy.is_empty() {
                    skips.add(
                        "pre_auth_keys",
                        row,
                        "neither a bcrypt hash nor a legacy key",
                    );
                    continue;
                }
                (String::new(), SecretHash::Sha256(sha256(legacy.as_bytes())))
            }
        };
        let reusable = flag(row, "reusable");
        let used = flag(row, "used");
        let ephemeral = flag(row, "ephemeral");
        keys.insert(id, ephemeral);
        events.push(Event::PreAuthKeyImported(Box::new(ImportedPreAuthKey {
            id: PreAuthKeyId(id),
            user: if tags.is_empty() {
                user.map(UserId)
            } else {
                None
            },
            prefix,
            hash,
            reusable,
            ephemeral,
            used,
            used_by: (used && !reusable)
                .then(|| key_users.get(&id).copied().map(NodeId))
                .flatten(),
            tags,
            created_at: time_or_now(row, "created_at"),
            expiration: parse_time(text(row, "expiration")),
        })));
    }
    report.pre_auth_keys = keys.len() as u64;

    // API keys.
    for row in &source.api_keys {
        let Some(id) = id_of(row) else {
            skips.add("api_keys", row, "no valid id");
            continue;
        };
        let prefix = text(row, "prefix").trim().to_string();
        let Some(hash) = bcrypt_hash(row).filter(|_| !prefix.is_empty()) else {
            skips.add("api_keys", row, "no prefix or no bcrypt hash");
            continue;
        };
        report.api_keys += 1;
        events.push(Event::ApiKeyImported(Box::new(ImportedApiKey {
            id: ApiKeyId(id),
            prefix,
            hash,
            created_at: time_or_now(row, "created_at"),
            expiration: parse_time(text(row, "expiration")),
        })));
    }

    // Nodes.
    let mut node_keys = HashSet::new();
    let mut addresses = HashSet::new();
    let mut names = HashSet::new();
    for row in &source.nodes {
        let Some(id) = id_of(row) else {
            skips.add("nodes", row, "no valid id");
            continue;
        };
        if deleted(row) {
            skips.add("nodes", row, "deleted");
            continue;
        }
        match node(row, id, &users, &keys) {
            Ok(mut node) => {
                let reg = &node.registration;
                if node_keys.contains(&reg.node_key) {
                    skips.add("nodes", row, "its node key is another node's");
                    continue;
                }
                let ips: Vec<std::net::IpAddr> = reg
                    .ipv4
                    .map(std::net::IpAddr::V4)
                    .into_iter()
                    .chain(reg.ipv6.map(std::net::IpAddr::V6))
                    .collect();
                if ips.iter().any(|ip| addresses.contains(ip)) {
                    skips.add("nodes", row, "its address is another node's");
                    continue;
                }
                node_keys.insert(reg.node_key);
                addresses.extend(ips);
                // Given names are unique here (they are DNS names); a clash is resolved the
                // way a new node's name is, never by leaving the node behind.
                if names.contains(&reg.given_name) {
                    let taken: HashSet<&str> = names.iter().map(String::as_str).collect();
                    let unique = naming::unique_name(&reg.given_name, &taken);
                    report.renamed.push(format!(
                        "nodes id {id}: given name {:?} is another node's; imported as {unique:?}",
                        reg.given_name
                    ));
                    node.registration.given_name = unique;
                    node.given_name_by_admin = true;
                }
                names.insert(node.registration.given_name.clone());
                report.nodes += 1;
                events.push(Event::NodeImported(Box::new(node)));
            }
            Err(why) => skips.add("nodes", row, why),
        }
    }

    // Policy: the newest row that is not deleted (what headscale reads in database mode).
    let policy = source
        .policies
        .iter()
        .filter(|row| !deleted(row))
        .filter_map(|row| Some((id_of(row)?, text(row, "data"))))
        .max_by_key(|(id, _)| *id)
        .map(|(_, data)| data.to_string())
        .filter(|data| !data.trim().is_empty());
    if let Some(policy) = policy {
        report.policy = true;
        events.push(Event::PolicyReplaced { policy });
    }

    // Counters continue after the highest id ever handed out.
    let next = |table: &str, rows: &[Row]| {
        let highest = rows.iter().filter_map(id_of).max().unwrap_or(0);
        let sequence = source.sequences.get(table).copied().unwrap_or(0);
        highest.max(sequence).saturating_add(1)
    };
    skipped.sort();
    report.skipped = skipped;
    events.push(Event::Imported(Box::new(ImportSummary {
        source: source.kind.clone(),
        // Migration ids are timestamps (`202606181200-…`); `SCHEMA_INIT` is not one.
        schema: source
            .migrations
            .iter()
            .filter(|m| m.starts_with(|c: char| c.is_ascii_digit()))
            .max()
            .cloned()
            .unwrap_or_default(),
        users: report.users,
        nodes: report.nodes,
        pre_auth_keys: report.pre_auth_keys,
        api_keys: report.api_keys,
        policy: report.policy,
        skipped: report.skipped.len() as u64,
        next_user: next("users", &source.users),
        next_node: next("nodes", &source.nodes),
        next_pre_auth_key: next("pre_auth_keys", &source.pre_auth_keys),
        next_api_key: next("api_keys", &source.api_keys),
    })));
    Ok(Converted { events, report })
}

/// One `nodes` row; the reason when it cannot be imported.
fn node(
    row: &Row,
    id: u64,
    users: &BTreeSet<u64>,
    keys: &BTreeMap<u64, bool>,
) -> Result<ImportedNode, String> {
    let machine_key = MachineKey::parse(text(row, "machine_key"), false)
        .map_err(|e| format!("machine_key: {e}"))?;
    let node_key =
        NodeKey::parse(text(row, "node_key"), false).map_err(|e| format!("node_key: {e}"))?;
    let ipv4 = match text(row, "ipv4").trim() {
        "" => None,
        ip => Some(ip.parse::<Ipv4Addr>().map_err(|e| format!("ipv4: {e}"))?),
    };
    let ipv6 = match text(row, "ipv6").trim() {
        "" => None,
        ip => Some(ip.parse::<Ipv6Addr>().map_err(|e| format!("ipv6: {e}"))?),
    };
    let tags = naming::normalize_tags(&json_list(row, "tags")?);
    let user = optional_id(row, "user_id");
    let user = if tags.is_empty() {
        match user {
            Some(user) if users.contains(&user) => Some(UserId(user)),
            Some(_) => return Err("its user is gone".into()),
            None => return Err("neither an owner nor tags".into()),
        }
    } else {
        None
    };
    let raw = text(row, "host_info").trim();
    let reported: Option<crate::tailcfg::Hostinfo> = match raw {
        "" | "null" => None,
        raw => Some(serde_json::from_str(raw).map_err(|e| format!("host_info: {e}"))?),
    };
    let mut hostinfo = limits::normalise_hostinfo(reported.as_ref(), limits::Mode::Truncate)
        .map(|n| n.hostinfo)
        .map_err(|e| format!("host_info: {e}"))?;
    if hostinfo.hostname.is_empty() {
        hostinfo.hostname =
            limits::truncate(text(row, "hostname"), limits::MAX_HOSTNAME_BYTES).to_string();
    }
    let derived = naming::sanitize_hostname(&hostinfo.hostname);
    let given_name = match text(row, "given_name").trim() {
        "" => derived.clone(),
        name => name.to_string(),
    };
    let approved_routes = json_list(row, "approved_routes")?
        .iter()
        .map(|r| {
            r.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|e| format!("approved_routes: {r:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let auth_key = optional_id(row, "auth_key_id").filter(|k| keys.contains_key(k));
    let ephemeral = auth_key
        .and_then(|k| keys.get(&k).copied())
        .unwrap_or(false);
    Ok(ImportedNode {
        given_name_by_admin: given_name != derived,
        registration: NodeRegistration {
            id: NodeId(id),
            machine_key,
            node_key,
            user,
            tags,
            given_name,
            hostinfo,
            ipv4,
            ipv6,
            expiry: parse_time(text(row, "expiry")),
            register_method: method(text(row, "register_method")),
            auth_key: auth_key.map(PreAuthKeyId),
            ephemeral,
            authorized: true,
            approved_routes,
        },
        created_at: parse_time(text(row, "created_at")).unwrap_or(Timestamp::EPOCH),
        last_seen: parse_time(text(row, "last_seen")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::state::{fold, State};
    use crate::core::{decide, Actor, Command, Envelope};
    use proptest::prelude::*;

    fn row(pairs: &[(&str, &str)]) -> Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (*v != "NULL").then(|| v.to_string())))
            .collect()
    }

    fn node_row(id: u64, user: &str, ip: &str, extra: &[(&str, &str)]) -> Row {
        let mut r = row(&[
            ("id", &id.to_string()),
            ("machine_key", &format!("mkey:{:064x}", id)),
            ("node_key", &format!("nodekey:{:064x}", id + 1000)),
            ("ipv4", ip),
            ("ipv6", "NULL"),
            ("hostname", &format!("host{id}")),
            ("given_name", &format!("host{id}")),
            ("user_id", user),
            ("register_method", "authkey"),
            ("tags", "NULL"),
            (
                "host_info",
                r#"{"Hostname":"h","OS":"linux","RoutableIPs":["10.0.0.0/24"]}"#,
            ),
            ("expiry", "0001-01-01 00:00:00+00:00"),
            ("created_at", "2026-12-06 15:20:24.25905271+00:00"),
            ("deleted_at", "NULL"),
        ]);
        for (k, v) in extra {
            r.insert(k.to_string(), (*v != "NULL").then(|| v.to_string()));
        }
        r
    }

    fn source() -> Source {
        Source {
            kind: "sqlite".into(),
            migrations: vec!["SCHEMA_INIT".into(), REQUIRED_MIGRATION.into()],
            users: vec![
                row(&[
                    ("id", "1"),
                    ("name", "alice"),
                    ("provider", "oidc"),
                    ("provider_identifier", "https://idp/1"),
                ]),
                row(&[
                    ("id", "3"),
                    ("name", "gone"),
                    ("deleted_at", "2026-12-01 00:00:00+00:00"),
                ]),
            ],
            pre_auth_keys: vec![row(&[
                ("id", "2"),
                ("prefix", "Ab-d_EF-h1k2"),
                (
                    "hash",
                    "$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyzABCDE",
                ),
                ("user_id", "1"),
                ("reusable", "0"),
                ("used", "1"),
                ("ephemeral", "1"),
                ("expiration", "NULL"),
            ])],
            api_keys: vec![],
            nodes: vec![
                node_row(5, "1", "100.64.0.5", &[("auth_key_id", "2")]),
                node_row(
                    6,
                    "NULL",
                    "100.64.0.6",
                    &[("tags", r#"["tag:server"]"#), ("given_name", "renamed")],
                ),
                node_row(7, "3", "100.64.0.7", &[]),
                node_row(
                    8,
                    "1",
                    "100.64.0.8",
                    &[("deleted_at", "2026-12-02 00:00:00+00:00")],
                ),
            ],
            policies: vec![
                row(&[("id", "1"), ("data", "{\"acls\":[]}")]),
                row(&[
                    ("id", "2"),
                    (
                        "data",
                        "{\"acls\":[{\"action\":\"accept\",\"src\":[\"*\"],\"dst\":[\"*:*\"]}]}",
                    ),
                ]),
            ],
            sequences: [("nodes".to_string(), 9), ("users".to_string(), 4)].into(),
        }
    }

    fn imported(events: Vec<Event>) -> State {
        let now = Timestamp(1_800_000_000_000);
        let events = decide(&State::default(), &Command::Import { events }, now).unwrap();
        let envelopes: Vec<Envelope> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Envelope {
                seq: i as u64 + 1,
                at: now,
                actor: Actor::System,
                event,
            })
            .collect();
        fold(State::default(), &envelopes)
    }

    #[test]
    fn a_headscale_database_imports_with_its_ids_keys_and_times() {
        let converted = convert(&source(), Timestamp(1)).unwrap();
        let report = &converted.report;
        assert_eq!(
            (report.users, report.nodes, report.pre_auth_keys),
            (1, 2, 1)
        );
        assert!(report.policy);
        assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
        let state = imported(converted.events);
        let laptop = &state.nodes[&NodeId(5)];
        assert_eq!(laptop.ipv4, Some("100.64.0.5".parse().unwrap()));
        assert_eq!(laptop.expiry, None, "Go's zero time is no expiry");
        assert!(laptop.ephemeral, "ephemeral comes from the key");
        assert_eq!(laptop.auth_key, Some(PreAuthKeyId(2)));
        assert!(laptop.authorized);
        assert_eq!(laptop.register_method, RegisterMethod::AuthKey);
        assert_eq!(
            laptop.created_at,
            parse_time("2026-12-06 15:20:24.259+00:00").unwrap()
        );
        let tagged = &state.nodes[&NodeId(6)];
        assert_eq!(
            (tagged.user, tagged.tags.clone()),
            (None, vec!["tag:server".to_string()])
        );
        assert!(tagged.given_name_by_admin);
        let key = &state.pre_auth_keys[&PreAuthKeyId(2)];
        assert_eq!(key.used_by, Some(NodeId(5)));
        assert!(matches!(
            state.pre_auth_key_hash(key),
            SecretHash::Bcrypt(_)
        ));
        assert_eq!(
            state.pre_auth_key_by_prefix("Ab-d_EF-h1k2").map(|k| k.id),
            Some(key.id)
        );
        assert_eq!(state.extras.identities[&UserId(1)].provider, "oidc");
        let import = state.extras.import.as_ref().unwrap();
        assert_eq!(import.schema, REQUIRED_MIGRATION);
        assert!(state.policy.as_ref().unwrap().text.contains("accept"));
        // Counters continue after the highest id ever handed out (sequence 9 for nodes).
        assert_eq!(state.next_ids.node, 10);
        assert_eq!(state.next_ids.user, 5);
        assert!(state.index_is_consistent());
        // The binary snapshot keeps what only an import records.
        let bytes = crate::store::record::encode_snapshot(&state).unwrap();
        let decoded = crate::store::record::decode_snapshot(&bytes).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.extras, state.extras);
        assert!(!decoded.extras.is_empty());
    }

    #[test]
    fn old_schemas_and_second_imports_are_refused() {
        let mut old = source();
        old.migrations = vec!["202501221827-migrate-something".into()];
        assert_eq!(convert(&old, Timestamp(1)), Err(ImportError::SchemaTooOld));
        let converted = convert(&source(), Timestamp(1)).unwrap();
        let state = imported(converted.events.clone());
        let again = decide(
            &state,
            &Command::Import {
                events: converted.events,
            },
            Timestamp(2),
        );
        assert!(matches!(again, Err(crate::core::Rejection::LogNotEmpty(_))));
    }

    #[test]
    fn a_given_name_clash_renames_the_node_instead_of_leaving_it_behind() {
        let mut source = source();
        source.nodes = vec![
            node_row(5, "1", "100.64.0.5", &[("given_name", "twin")]),
            node_row(9, "1", "100.64.0.9", &[("given_name", "twin")]),
        ];
        let converted = convert(&source, Timestamp(1)).unwrap();
        assert_eq!(converted.report.nodes, 2);
        assert_eq!(converted.report.renamed.len(), 1, "{:?}", converted.report);
        let state = imported(converted.events);
        assert_eq!(state.nodes[&NodeId(5)].given_name, "twin");
        assert_eq!(state.nodes[&NodeId(9)].given_name, "twin-1");
    }

    #[test]
    fn times_in_every_form_headscale_writes() {
        let t = parse_time("2026-12-06 15:20:24.25905271+00:00").unwrap();
        assert_eq!(parse_time("2026-12-06T15:20:24.259053+00:00"), Some(t));
        assert_eq!(parse_time("2026-12-06 15:20:24.259+00"), Some(t));
        assert_eq!(parse_time("2026-12-06 16:20:24.259+01:00"), Some(t));
        assert_eq!(parse_time("0001-01-01 00:00:00+00:00"), None);
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("soon"), None);
    }

    proptest! {
        /// Any set of valid nodes imports whole: ids and addresses kept, and a node
        /// registered afterwards gets a new id and an address nobody has.
        #[test]
        fn any_valid_node_set_imports_and_counters_continue(
            ids in proptest::collection::btree_set(1u64..5000, 1..40),
            extra_sequence in 0u64..100,
        ) {
            let mut source = source();
            source.nodes = ids
                .iter()
                .map(|id| {
                    let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + *id as u32);
                    node_row(*id, "1", &ip.to_string(), &[])
                })
                .collect();
            let highest = *ids.iter().max().unwrap();
            source.sequences.insert("nodes".into(), highest + extra_sequence);
            let converted = convert(&source, Timestamp(1)).unwrap();
            prop_assert_eq!(converted.report.nodes, ids.len() as u64);
            let mut state = imported(converted.events);
            for id in &ids {
                let node = &state.nodes[&NodeId(*id)];
                let ip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(100, 64, 0, 0)) + *id as u32);
                prop_assert_eq!(node.ipv4, Some(ip));
            }
            prop_assert_eq!(state.next_ids.node, highest + extra_sequence + 1);
            // Register one more node through the ordinary rules.
            state.config.core.prefix_v4 = Some("100.64.0.0/10".parse().unwrap());
            let events = decide(
                &state,
                &Command::RegisterNode {
                    machine_key: MachineKey([0xee; 32]),
                    node_key: NodeKey([0xee; 32]),
                    hostinfo: Default::default(),
                    auth: crate::core::RegisterAuth::Admin { user: UserId(1) },
                    requested_expiry: None,
                    ephemeral: false,
                    entropy: 1,
                },
                Timestamp(2),
            ).unwrap();
            let reg = events
                .iter()
                .find_map(|e| match e {
                    Event::NodeRegistered(reg) => Some(reg),
                    _ => None,
                })
                .expect("the registration event");
            prop_assert_eq!(reg.id, NodeId(highest + extra_sequence + 1));
            prop_assert!(state.nodes.values().all(|n| n.ipv4 != reg.ipv4));
        }
    }
}
