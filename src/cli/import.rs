//! `headscale import headscale --db <sqlite path | postgres DSN> [--noise-key PATH]`: brings a
//! headscale database into our (empty) event log, offline, in one batch with actor `system`,
//! and prints what it did. The headscale database is only read.

use super::output::{print_machine, Format};
use crate::config::Config;
use crate::import::run::{import, Origin};
use crate::server;
use anyhow::{bail, Context as _};
use clap::Subcommand;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Import a headscale 0.29 database: users, keys, nodes (same ids, keys and addresses)
    /// and the policy. Run it with the server stopped, into an empty data directory.
    Headscale {
        /// headscale's SQLite file, or a PostgreSQL connection string
        /// (`postgres://user@host/db`, or `host=/run/postgresql dbname=headscale`).
        #[arg(long)]
        db: String,
        /// headscale's Noise private key (`noise.private_key_path` of its config): copied to
        /// ours so clients keep trusting the server.
        #[arg(long = "noise-key")]
        noise_key: Option<std::path::PathBuf>,
    },
}

/// Copies headscale's Noise key to `noise.private_key_path` (0600). An existing, different
/// key there is refused: replacing it would make our own clients re-register.
fn copy_noise_key(from: &Path, to: &Path) -> anyhow::Result<&'static str> {
    let key = crate::keyfile::read(from, "privkey")
        .with_context(|| format!("reading the Noise key {}", from.display()))?
        .with_context(|| format!("{}: no such file", from.display()))?;
    if from.canonicalize().ok() == to.canonicalize().ok() && to.exists() {
        return Ok("already in place");
    }
    match crate::keyfile::read(to, "privkey") {
        Ok(Some(existing)) if existing == key => return Ok("already in place"),
        Ok(Some(_)) => bail!(
            "{} already holds a different Noise key; remove it first if headscale's key should replace it",
            to.display()
        ),
        _ => {}
    }
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = format!("privkey:{}", hex::encode(key));
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", to.display()))?;
    Ok("copied")
}

pub async fn run(config: &Config, format: Format, command: &ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::Headscale { db, noise_key } = command;
    if tokio::net::UnixStream::connect(&config.unix_socket)
        .await
        .is_ok()
    {
        bail!(
            "a server is running (it answers on {}): stop it before importing",
            config.unix_socket.display()
        );
    }
    let origin = Origin::from_flag(db)?;
    let engine = server::open_engine(config, server::engine_options(config))
        .context("opening our event log (is a server still running?)")?;
    let result = import(&engine, &origin).await;
    engine.shutdown().await;
    let report = result.with_context(|| format!("importing {}", origin.describe()))?;
    let noise = match noise_key {
        Some(path) => Some(copy_noise_key(path, &config.noise.private_key_path)?),
        None => None,
    };
    let log = server::log_location(config);
    match format {
        Format::Human => {
            println!("imported {} into {log}: {report}", origin.describe());
            for line in &report.skipped {
                println!("  skipped {line}");
            }
            for line in &report.renamed {
                println!("  renamed {line}");
            }
            if let Some(noise) = noise {
                println!(
                    "Noise key {noise}: {}",
                    config.noise.private_key_path.display()
                );
            }
        }
        format => print_machine(
            format,
            &serde_json::json!({
                "source": origin.describe(),
                "log": log,
                "users": report.users,
                "nodes": report.nodes,
                "preAuthKeys": report.pre_auth_keys,
                "apiKeys": report.api_keys,
                "policy": report.policy,
                "skipped": report.skipped,
                "renamed": report.renamed,
                "noiseKey": noise,
            }),
        )?,
    }
    Ok(())
}
