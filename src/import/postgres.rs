//! Reads a headscale PostgreSQL database inside one read-only transaction (`BEGIN READ
//! ONLY`: the server refuses any write). Each row comes back as `row_to_json`, so columns are
//! taken by name and every type arrives as text, the same plain rows the SQLite reader gives.

use super::{Row, Source, TABLES};
use crate::config::PostgresConfig;
use crate::store::postgres::connect::{self, Target};

/// Connection settings from a DSN (`postgres://…` or `host=… dbname=…`).
pub fn config_from_dsn(dsn: &str) -> anyhow::Result<tokio_postgres::Config> {
    dsn.parse::<tokio_postgres::Config>()
        .map_err(|e| anyhow::anyhow!("invalid PostgreSQL connection string: {e}"))
}

/// Connection settings from headscale's `database.postgres` keys: the same target (password
/// file, `ssl` with rustls, timeouts) our PostgreSQL store connects with.
pub fn target_from(postgres: &PostgresConfig) -> anyhow::Result<Target> {
    connect::target(postgres).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A DSN's settings, without TLS (as libpq's default for a local socket).
pub fn target_from_dsn(dsn: &str) -> anyhow::Result<Target> {
    let config = config_from_dsn(dsn)?;
    let describe = format!(
        "{}@{}/{}",
        config.get_user().unwrap_or("?"),
        hosts(&config).join(","),
        config.get_dbname().unwrap_or("?")
    );
    Ok(Target {
        config,
        tls: connect::Tls::None,
        describe,
    })
}

/// The hosts of a connection config, for messages (sockets as their directory).
pub fn hosts(config: &tokio_postgres::Config) -> Vec<String> {
    config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect()
}

/// A JSON value of `row_to_json` as text: strings as they are (`bytea` arrives as `\x…` hex
/// and is decoded), numbers and booleans as written, NULL as `None`.
fn json_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => match s.strip_prefix("\\x").map(hex::decode) {
            Some(Ok(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            _ => Some(s.clone()),
        },
        other => Some(other.to_string()),
    }
}

async fn rows(
    transaction: &tokio_postgres::Transaction<'_>,
    table: &str,
) -> anyhow::Result<Vec<Row>> {
    let found = transaction
        .query(
            &format!("SELECT row_to_json(t)::text FROM \"{table}\" t"),
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading {table}: {e}"))?;
    let mut rows = Vec::with_capacity(found.len());
    for row in found {
        let text: String = row.get(0);
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("reading {table}: {e}"))?;
        rows.push(
            object
                .iter()
                .map(|(k, v)| (k.clone(), json_text(v)))
                .collect(),
        );
    }
    Ok(rows)
}

/// Reads everything an import needs; the connection is closed afterwards.
pub async fn read(target: &Target) -> anyhow::Result<Source> {
    let mut client = connect::connect(target)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    read_with(&mut client).await
}

async fn read_with(client: &mut tokio_postgres::Client) -> anyhow::Result<Source> {
    let transaction = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("cannot start a read-only transaction: {e}"))?;
    let existing: Vec<String> = transaction
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !existing.iter().any(|t| t == "migrations") {
        return Err(NoHeadscaleTables.into());
    }
    let mut source = Source {
        kind: "postgres".into(),
        ..Source::default()
    };
    source.migrations = rows(&transaction, "migrations")
        .await?
        .into_iter()
        .filter_map(|row| row.get("id").cloned().flatten())
        .collect();
    for table in TABLES {
        if existing.iter().any(|t| t == table) {
            let found = rows(&transaction, table).await?;
            if let Some(slot) = source.table_mut(table) {
                *slot = found;
            }
        }
    }
    let sequences = transaction
        .query(
            "SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = current_schema()",
            &[],
        )
        .await?;
    for row in sequences {
        let name: String = row.get(0);
        let last: Option<i64> = row.get(1);
        if let (Some(table), Some(last)) = (name.strip_suffix("_id_seq"), last) {
            source
                .sequences
                .insert(table.to_string(), u64::try_from(last).unwrap_or(0));
        }
    }
    transaction.commit().await?;
    Ok(source)
}

/// The database holds no headscale tables: a fresh database for our own log, where the first
/// start has nothing to import (an explicit `headscale import` still refuses it).
#[derive(Debug, thiserror::Error)]
#[error("not a headscale database (no migrations table)")]
pub struct NoHeadscaleTables;
