//! `headscale events export` / `events import`: the log moved between stores as a file
//! (`store::export`'s form: the records' exact bytes, so the hash chain — and every hash an
//! auditor noted — survives the trip). Both run offline on the configured store: export reads
//! it (the embedded store must not be in use; PostgreSQL may be), import writes only into an
//! empty one, after checking the whole file's chain first, so a damaged file writes nothing.
//! Moving sled → PostgreSQL: export with the sled config, import with the postgres one
//! (and back the same way).

use super::output::Format;
use crate::config::Config;
use crate::store::export::{write_header, write_record, LogReader};
use crate::store::replay::check_link;
use crate::store::{Checkpoint, EventStore, StoredRecord};
use anyhow::{bail, Context};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Records appended per batch on import (one transaction each on PostgreSQL).
const IMPORT_BATCH: usize = 1024;

/// What was moved, as `-o json` prints it.
#[derive(serde::Serialize)]
struct Moved {
    file: String,
    events: u64,
    head_seq: u64,
    head_hash: String,
    log: String,
}

fn print(format: Format, moved: &Moved, message: &str) -> anyhow::Result<()> {
    if format == Format::Human {
        println!("{}", super::output::escape(message));
        Ok(())
    } else {
        super::output::print_machine(format, &serde_json::to_value(moved)?)
    }
}

fn open(config: &Config) -> anyhow::Result<std::sync::Arc<dyn EventStore>> {
    crate::server::open_store(config).with_context(|| {
        format!(
            "cannot open the event log ({})",
            crate::server::log_location(config)
        )
    })
}

/// Writes the whole log to `file` (through a temporary file beside it, mode 0600: the log
/// holds hashed secrets and names).
pub fn export(config: &Config, format: Format, file: &Path) -> anyhow::Result<()> {
    let store = open(config)?;
    let head = store.head();
    let partial = file.with_extension("partial");
    let mut out = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?,
    );
    write_header(&mut out)?;
    let mut prev = crate::core::keys::Digest::default();
    let mut expected = 1;
    for record in store.read_range(1, head.seq) {
        let record = record?;
        check_link(&record, expected, &prev)?;
        write_record(&mut out, &record)?;
        prev = record.hash();
        expected += 1;
    }
    if expected != head.seq + 1 || prev != head.hash {
        bail!(
            "the log ends at record {} but its head is {}",
            expected - 1,
            head.seq
        );
    }
    out.flush()?;
    out.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), file.display()))?;
    let moved = Moved {
        file: file.display().to_string(),
        events: head.seq,
        head_seq: head.seq,
        head_hash: head.hash.to_hex(),
        log: crate::server::log_location(config),
    };
    let message = format!(
        "exported {} events from {} to {} (head {}, chain hash {})",
        head.seq, moved.log, moved.file, head.seq, moved.head_hash
    );
    print(format, &moved, &message)
}

/// Checks the whole file's chain, then appends it to the configured store, which must be
/// empty, and signs a checkpoint at its head with this server's key.
pub fn import(config: &Config, format: Format, file: &Path) -> anyhow::Result<()> {
    let reader = || -> anyhow::Result<_> {
        let input =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(LogReader::new(std::io::BufReader::new(input)))
    };
    // First pass: the chain is whole from record 1, so nothing partial is ever written.
    let mut prev = crate::core::keys::Digest::default();
    let mut count = 0u64;
    let mut last_at = crate::core::Timestamp(0);
    for record in reader()? {
        let record = record
            .with_context(|| format!("{}: record {} is unreadable", file.display(), count + 1))?;
        let envelope = check_link(&record, count + 1, &prev)
            .with_context(|| format!("{}: the chain breaks", file.display()))?;
        last_at = envelope.at;
        prev = record.hash();
        count += 1;
    }
    if count == 0 {
        bail!("{} holds no events", file.display());
    }
    let store = open(config)?;
    let existing = store.head().seq;
    if existing != 0 {
        bail!(
            "the event log ({}) already holds {existing} events; import needs an empty one",
            crate::server::log_location(config)
        );
    }
    let mut batch: Vec<StoredRecord> = Vec::with_capacity(IMPORT_BATCH);
    for record in reader()? {
        batch.push(record?);
        if batch.len() == IMPORT_BATCH {
            store.append(&batch)?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append(&batch)?;
    }
    let head = store.head();
    if head.seq != count || head.hash != prev {
        bail!(
            "after the import the log's head is {} but the file ends at {count}",
            head.seq
        );
    }
    let key = crate::keyfile::load_or_create(
        &crate::server::checkpoint_key_path(config),
        crate::server::CHECKPOINT_KEY_KIND,
        crate::keyfile::random_key,
    )?;
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    store.put_checkpoint(&Checkpoint::sign(&key, head.seq, head.hash, last_at))?;
    let moved = Moved {
        file: file.display().to_string(),
        events: count,
        head_seq: head.seq,
        head_hash: head.hash.to_hex(),
        log: crate::server::log_location(config),
    };
    let message = format!(
        "imported {count} events from {} into {} (head {}, chain hash {}); checkpoint signed",
        moved.file, moved.log, head.seq, moved.head_hash
    );
    print(format, &moved, &message)
}
