//! The imperative half of an import: read the source database (off the runtime for SQLite),
//! convert the rows (pure) and append them as one `Command::Import` batch with actor
//! `system`. Shared by `headscale import headscale` and `serve`'s first start.

use super::{convert, describe_source, postgres, sqlite, Report, Source};
use crate::config::ImportSource;
use crate::core::{Actor, Command};
use crate::engine::{Clock, EngineHandle, SystemClock};
use crate::store::postgres::connect::Target;
use std::path::PathBuf;

/// A headscale database to read.
#[derive(Clone)]
pub enum Origin {
    Sqlite(PathBuf),
    Postgres(Box<Target>),
}

impl Origin {
    /// From `--db`: a PostgreSQL DSN or URL, else a SQLite path.
    pub fn from_flag(text: &str) -> anyhow::Result<Origin> {
        Ok(match describe_source(text) {
            "postgres" => Origin::Postgres(Box::new(postgres::target_from_dsn(text)?)),
            _ => Origin::Sqlite(PathBuf::from(text)),
        })
    }

    /// From the config's `database.type` (sqlite/postgres) keys.
    pub fn from_config(source: &ImportSource) -> anyhow::Result<Origin> {
        Ok(match source {
            ImportSource::Sqlite(path) => Origin::Sqlite(path.clone()),
            ImportSource::Postgres(config) => {
                Origin::Postgres(Box::new(postgres::target_from(config)?))
            }
        })
    }

    /// For messages: the file, or host/database (never a password).
    pub fn describe(&self) -> String {
        match self {
            Origin::Sqlite(path) => format!("SQLite {}", path.display()),
            Origin::Postgres(target) => format!(
                "PostgreSQL {} database {}",
                postgres::hosts(&target.config).join(","),
                target.config.get_dbname().unwrap_or("?")
            ),
        }
    }

    /// Whether there is anything to import: a SQLite file that exists (a fresh install with
    /// `database.type: sqlite` has none yet); PostgreSQL is always asked.
    pub fn exists(&self) -> bool {
        match self {
            Origin::Sqlite(path) => path.is_file(),
            Origin::Postgres(_) => true,
        }
    }

    pub async fn read(&self) -> anyhow::Result<Source> {
        match self {
            Origin::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || sqlite::read(&path)).await?
            }
            Origin::Postgres(config) => postgres::read(config).await,
        }
    }
}

/// For messages, without connecting or reading a password file.
pub fn describe(source: &ImportSource) -> String {
    match source {
        ImportSource::Sqlite(path) => format!("SQLite {}", path.display()),
        ImportSource::Postgres(config) => format!(
            "PostgreSQL {}:{} database {}",
            config.host, config.port, config.name
        ),
    }
}

/// Reads `origin` and appends it to the (empty) log behind `engine`.
pub async fn import(engine: &EngineHandle, origin: &Origin) -> anyhow::Result<Report> {
    let last_seq = engine.state().last_seq;
    if last_seq != 0 {
        return Err(crate::core::Rejection::LogNotEmpty(last_seq).into());
    }
    let source = origin.read().await?;
    let converted = convert(&source, SystemClock.now())?;
    engine
        .execute(
            Actor::System,
            Command::Import {
                events: converted.events,
            },
        )
        .await?;
    Ok(converted.report)
}
