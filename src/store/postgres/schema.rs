//! Our tables in PostgreSQL, in a schema of their own (`headscale_rs`) so they sit beside
//! headscale's tables without touching them. Created on first open, idempotently, under a
//! transaction-scoped advisory lock so two processes opening an empty database at once do not
//! race; the `schema_version` row says which layout the tables have.
//!
//! - `events(seq, record)`: one row per event, `record` the exact `StoredRecord` bytes of the
//!   file log (so export, verify and replay are the same). `seq` is the primary key: a second
//!   writer appending the same seq fails instead of forking the chain.
//! - `snapshots(seq, bytes)`, `checkpoints(seq, bytes)`: as the embedded store keeps them.
//! - `meta(key, value)`: `schema_version`.

use crate::store::StoreError;
use tokio_postgres::Client;

/// The layout this build reads and writes.
pub const SCHEMA_VERSION: i32 = 1;

/// Serialises schema creation between processes (an arbitrary constant: "hsrs").
const CREATE_LOCK: i64 = 0x6873_7273;

const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS headscale_rs;
CREATE TABLE IF NOT EXISTS headscale_rs.meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS headscale_rs.events (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    record bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS headscale_rs.snapshots (
    seq bigint PRIMARY KEY,
    bytes bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS headscale_rs.checkpoints (
    seq bigint PRIMARY KEY,
    bytes bytea NOT NULL
);
";

/// Appends a batch in one statement (one round trip, one transaction): only while the log's
/// head is still `$3`, re-read by the database, never trusted from our cache alone. Two
/// instances racing for the same seq: the second blocks on the primary key and fails with a
/// unique violation once the first commits (or inserts nothing when it already sees the new
/// head), so seqs commit in order, without gaps. Answers the rows inserted; when there are
/// any, it also NOTIFYs `ha::EVENTS_CHANNEL` with the new head, delivered only at commit: a
/// hint for the other instances' tails.
pub const APPEND: &str = "
WITH inserted AS (
    INSERT INTO headscale_rs.events (seq, record)
    SELECT s, r FROM unnest($1::bigint[], $2::bytea[]) AS t(s, r)
    WHERE (SELECT coalesce(max(seq), 0) FROM headscale_rs.events) = $3
    RETURNING seq
), counted AS (
    SELECT count(*) AS n, max(seq) AS last FROM inserted
)
SELECT counted.n FROM counted LEFT JOIN LATERAL (
    SELECT pg_notify('headscale_rs_events', counted.last::text) WHERE counted.n > 0
) AS hint ON true";

pub const LAST: &str = "SELECT seq, record FROM headscale_rs.events ORDER BY seq DESC LIMIT 1";

/// Creates what is missing and checks the version; idempotent. Tables that exist are only
/// read, so a role without CREATE on the database works once they are made (by a first
/// start with more rights, or by an administrator running the same statements).
pub async fn ensure(client: &mut Client) -> Result<(), StoreError> {
    let sql = |e: tokio_postgres::Error| {
        StoreError::Io(format!(
            "cannot create the headscale_rs tables in PostgreSQL: {}",
            super::error_text(&e)
        ))
    };
    let made = client
        .query_one("SELECT to_regclass('headscale_rs.meta') IS NOT NULL", &[])
        .await
        .map_err(sql)?;
    if made.get::<_, bool>(0) {
        let row = client
            .query_opt(
                "SELECT value FROM headscale_rs.meta WHERE key = 'schema_version'",
                &[],
            )
            .await
            .map_err(sql)?;
        if let Some(row) = row {
            return check_version(&row.get::<_, String>(0));
        }
    }
    let tx = client.transaction().await.map_err(sql)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
        .await
        .map_err(sql)?;
    tx.batch_execute(CREATE).await.map_err(sql)?;
    tx.execute(
        "INSERT INTO headscale_rs.meta (key, value) VALUES ('schema_version', $1) \
         ON CONFLICT (key) DO NOTHING",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await
    .map_err(sql)?;
    let row = tx
        .query_one(
            "SELECT value FROM headscale_rs.meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(sql)?;
    tx.commit().await.map_err(sql)?;
    check_version(&row.get::<_, String>(0))
}

fn check_version(found: &str) -> Result<(), StoreError> {
    if found != SCHEMA_VERSION.to_string() {
        return Err(StoreError::Io(format!(
            "the headscale_rs tables in PostgreSQL have schema version {found}; this build \
             knows version {SCHEMA_VERSION} (was the database used by a newer headscale-rs?)"
        )));
    }
    Ok(())
}
