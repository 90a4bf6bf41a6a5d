//! Importing a headscale database: its users, keys, nodes and policy become events, so a
//! headscale user's clients keep working against us without logging in again. Two readers
//! (`sqlite.rs`, `postgres.rs`) only read, and both produce the same plain rows ([`Source`]);
//! [`convert`] turns rows into events, a pure function (no I/O, no clock) tested on its own.
//! The events go into an empty log in one batch (`Command::Import`).

pub mod convert;
pub mod postgres;
pub mod run;
pub mod sqlite;

use std::collections::BTreeMap;

pub use convert::{convert, Converted, ImportError, Report};

/// One table row by column name: every value as text (`None` for NULL), whatever the
/// database's column order or types. Blobs (bcrypt hashes) are read as text too.
pub type Row = BTreeMap<String, Option<String>>;

/// Everything an import reads from a headscale database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Source {
    /// `sqlite` or `postgres`.
    pub kind: String,
    /// The ids in headscale's `migrations` table.
    pub migrations: Vec<String>,
    pub users: Vec<Row>,
    pub pre_auth_keys: Vec<Row>,
    pub api_keys: Vec<Row>,
    pub nodes: Vec<Row>,
    pub policies: Vec<Row>,
    /// The highest id each table ever handed out (`sqlite_sequence`, or the PostgreSQL
    /// sequences), so ids of deleted rows are not handed out again.
    pub sequences: BTreeMap<String, u64>,
}

/// The tables an import reads, by name.
pub const TABLES: [&str; 5] = ["users", "pre_auth_keys", "api_keys", "nodes", "policies"];

impl Source {
    fn table_mut(&mut self, name: &str) -> Option<&mut Vec<Row>> {
        match name {
            "users" => Some(&mut self.users),
            "pre_auth_keys" => Some(&mut self.pre_auth_keys),
            "api_keys" => Some(&mut self.api_keys),
            "nodes" => Some(&mut self.nodes),
            "policies" => Some(&mut self.policies),
            _ => None,
        }
    }
}

/// Where to read from: a SQLite file path, or a PostgreSQL connection string / URL.
pub fn describe_source(text: &str) -> &'static str {
    if text.starts_with("postgres://")
        || text.starts_with("postgresql://")
        || text.contains("host=")
        || text.contains("dbname=")
    {
        "postgres"
    } else {
        "sqlite"
    }
}
