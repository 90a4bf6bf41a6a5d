//! Reads a headscale SQLite database, read-only: opened with `mode=ro` (SQLite then never
//! writes the file; a WAL left by a crashed headscale is still read), every table selected
//! by column name, so column order and columns added by later headscale versions do not
//! matter.

use super::{Row, Source, TABLES};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// `file:` URI of `path` with everything but unreserved characters and `/` escaped.
fn uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                uri.push(char::from(*byte))
            }
            other => uri.push_str(&format!("%{other:02X}")),
        }
    }
    uri.push_str("?mode=ro");
    uri
}

fn value_text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn rows(connection: &Connection, table: &str) -> rusqlite::Result<Vec<Row>> {
    let mut statement = connection.prepare(&format!("SELECT * FROM \"{table}\""))?;
    let names: Vec<String> = statement
        .column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut found = statement.query([])?;
    let mut rows = Vec::new();
    while let Some(row) = found.next()? {
        let mut values = Row::new();
        for (i, name) in names.iter().enumerate() {
            values.insert(name.clone(), value_text(row.get_ref(i)?));
        }
        rows.push(values);
    }
    Ok(rows)
}

fn has_table(connection: &Connection, table: &str) -> rusqlite::Result<bool> {
    connection
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |row| row.get::<_, i64>(0),
        )
        .map(|n| n > 0)
}

/// Reads everything an import needs from the headscale SQLite file at `path`.
pub fn read(path: &Path) -> anyhow::Result<Source> {
    if !path.is_file() {
        anyhow::bail!("{}: no such file", path.display());
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(uri(path), flags)
        .map_err(|e| anyhow::anyhow!("cannot open {} read-only: {e}", path.display()))?;
    let context = |e: rusqlite::Error| anyhow::anyhow!("reading {}: {e}", path.display());
    // One read transaction: a consistent view even if something else writes meanwhile.
    connection.execute_batch("BEGIN").map_err(context)?;
    let mut source = Source {
        kind: "sqlite".into(),
        ..Source::default()
    };
    if !has_table(&connection, "migrations").map_err(context)? {
        anyhow::bail!(
            "{} is not a headscale database (no migrations table)",
            path.display()
        );
    }
    source.migrations = rows(&connection, "migrations")
        .map_err(context)?
        .into_iter()
        .filter_map(|row| row.get("id").cloned().flatten())
        .collect();
    for table in TABLES {
        if has_table(&connection, table).map_err(context)? {
            let found = rows(&connection, table).map_err(context)?;
            if let Some(slot) = source.table_mut(table) {
                *slot = found;
            }
        }
    }
    if has_table(&connection, "sqlite_sequence").map_err(context)? {
        for row in rows(&connection, "sqlite_sequence").map_err(context)? {
            let name = row.get("name").cloned().flatten().unwrap_or_default();
            let seq = row
                .get("seq")
                .cloned()
                .flatten()
                .and_then(|s| s.parse::<u64>().ok());
            if let Some(seq) = seq {
                source.sequences.insert(name, seq);
            }
        }
    }
    connection.execute_batch("COMMIT").map_err(context)?;
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_read_only_uris() {
        assert_eq!(
            uri(Path::new("/var/lib/headscale/db.sqlite")),
            "file:/var/lib/headscale/db.sqlite?mode=ro"
        );
        assert_eq!(
            uri(Path::new("/a b/c?#%.db")),
            "file:/a%20b/c%3F%23%25.db?mode=ro"
        );
    }
}
