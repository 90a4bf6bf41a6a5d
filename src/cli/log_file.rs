//! `headscale events export` / `events verify --file` / `events import`: the log as a
//! portable, verifiable file (`store::jsonl_export`'s JSON lines: every record's exact stored
//! payload and chain hash, the signed checkpoints and the checkpoint key, so the chain — and
//! every hash an auditor noted — survives the trip).
//!
//! - export goes through the API (`GET /api/v1/events/export`), so it works beside a running
//!   daemon and, without one, in-process on the store; the CLI verifies the stream as it
//!   writes it, so a file it finishes always verifies;
//! - verify checks a file offline with nothing but the file (no server, config or data dir);
//! - import checks the whole file first, then writes it into an empty store (the configured
//!   one, or the embedded store of `--data-dir` without a config), so a damaged, partial or
//!   gapped file writes nothing. It still reads the older binary form (`store::export`,
//!   `HSEVLOG1`), so files made before stay importable.
//!
//! Moving sled → PostgreSQL: export with the sled config, import with the postgres one (and
//! back the same way).

use super::args::EventsCommand;
use super::output::Format;
use super::transport::Transport;
use crate::config::Config;
use crate::core::keys::Digest;
use crate::store::export::LogReader;
use crate::store::jsonl_export::{self, Item, KeySource, Summary, Verifier, MAX_LINE_LEN};
use crate::store::replay::check_link;
use crate::store::{Checkpoint, EventStore, StoredRecord};
use anyhow::{anyhow, bail, Context};
use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Records appended per batch on import (one transaction each on PostgreSQL).
const IMPORT_BATCH: usize = 1024;

/// The older binary form's magic (`store::export`).
const BINARY_MAGIC: &[u8] = b"HSEVLOG1";

/// The data directory's store and checkpoint key, as `serve` lays them out by default.
const SLED_DIR: &str = "db.sled";
const CHECKPOINT_KEY_FILE: &str = "checkpoint_signing.key";

fn print(format: Format, value: &serde_json::Value, message: &str) -> anyhow::Result<()> {
    if format == Format::Human {
        println!("{}", super::output::escape(message));
        Ok(())
    } else {
        super::output::print_machine(format, value)
    }
}

/// The commands that need nothing but their arguments: `verify --file` and
/// `import --data-dir` run before (and without) any config is read.
pub fn needs_no_config(command: &EventsCommand) -> bool {
    matches!(
        command,
        EventsCommand::Verify { file: Some(_), .. }
            | EventsCommand::Import {
                data_dir: Some(_),
                ..
            }
    )
}

/// Runs a command for which [`needs_no_config`] holds.
pub fn run_without_config(command: &EventsCommand, format: Format) -> anyhow::Result<()> {
    match command {
        EventsCommand::Verify {
            file: Some(file),
            key,
        } => verify_file(format, file, key.as_deref()),
        EventsCommand::Import {
            data_dir: Some(dir),
            ..
        } => import_into_data_dir(format, import_file(command)?, dir),
        _ => bail!("this events command needs a config"),
    }
}

/// The file `events import` reads: `FILE` or `--file FILE`.
pub fn import_file(command: &EventsCommand) -> anyhow::Result<&Path> {
    match command {
        EventsCommand::Import {
            path: Some(file), ..
        }
        | EventsCommand::Import {
            file: Some(file), ..
        } => Ok(file),
        _ => bail!("give the file to import"),
    }
}

/// Where an export is written: the file through a private temporary beside it, or stdout.
enum Sink {
    File {
        file: std::io::BufWriter<std::fs::File>,
        partial: PathBuf,
        path: PathBuf,
    },
    Stdout(std::io::Stdout),
}

impl Sink {
    fn open(path: Option<&Path>) -> anyhow::Result<Sink> {
        let Some(path) = path else {
            return Ok(Sink::Stdout(std::io::stdout()));
        };
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial = PathBuf::from(partial);
        // Mode 0600: the log holds names, addresses and hashed secrets.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        Ok(Sink::File {
            file: std::io::BufWriter::new(file),
            partial,
            path: path.to_path_buf(),
        })
    }

    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        let out: &mut dyn Write = match self {
            Sink::File { file, .. } => file,
            Sink::Stdout(out) => out,
        };
        out.write_all(line)?;
        out.write_all(b"\n")
    }

    /// Makes the file durable and gives it its name.
    fn commit(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut out) => Ok(out.flush()?),
            Sink::File {
                file,
                partial,
                path,
            } => {
                file.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .with_context(|| format!("cannot write {}", partial.display()))?;
                std::fs::rename(&partial, &path).with_context(|| {
                    format!("cannot rename {} to {}", partial.display(), path.display())
                })
            }
        }
    }

    fn abandon(self) {
        if let Sink::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Splits a byte stream into lines (each at most `MAX_LINE_LEN`), verifies each and writes
/// it on.
struct Relay {
    pending: Vec<u8>,
    verifier: Verifier,
    sink: Sink,
}

impl Relay {
    fn take(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|b| *b == b'\n') {
            let line = &self.pending[start..start + end];
            self.verifier
                .line(line)
                .map_err(|e| anyhow!("the server's export does not verify: {e}"))?;
            self.sink.write_line(line)?;
            start += end + 1;
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE_LEN {
            bail!(
                "line {} of the server's export is longer than the {MAX_LINE_LEN}-byte limit",
                self.verifier.line_number() + 1
            );
        }
        Ok(())
    }
}

/// `events export [--since A] [--until B] [--file F]`.
pub async fn export(
    api: &Transport,
    format: Format,
    since: Option<&str>,
    until: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let mut parts = Vec::new();
    if let Some(since) = since {
        parts.push(format!("since={}", super::urlencode(since)));
    }
    if let Some(until) = until {
        parts.push(format!("until={}", super::urlencode(until)));
    }
    let path = format!("/api/v1/events/export{}", super::query(&parts));
    let mut relay = Relay {
        pending: Vec::new(),
        verifier: Verifier::new(None),
        sink: Sink::open(file)?,
    };
    let streamed = api.stream(&path, |bytes| relay.take(bytes)).await;
    let Relay {
        pending,
        verifier,
        sink,
    } = relay;
    let finished = streamed.and_then(|()| {
        if !pending.is_empty() {
            bail!("the server's export ended in the middle of a line");
        }
        verifier
            .finish()
            .map_err(|e| anyhow!("the server's export does not verify: {e}"))
    });
    let summary = match finished {
        Ok(summary) => summary,
        Err(error) => {
            sink.abandon();
            return Err(error);
        }
    };
    sink.commit()?;
    let target = file.map_or("standard output".to_string(), |f| f.display().to_string());
    let value = json!({
        "file": file.map(|f| f.display().to_string()),
        "events": summary.records,
        "since": summary.header.since,
        "until": summary.header.until,
        "head_seq": summary.header.until,
        "head_hash": summary.head_hash.to_hex(),
        "checkpoints": summary.checkpoints,
        "public_key": summary.key.map(hex::encode),
    });
    let message = format!(
        "exported {} to {target}; head hash {}; {}",
        describe_range(&summary),
        summary.head_hash,
        match summary.key {
            Some(key) => format!(
                "{} signed checkpoint(s), checkpoint key {}",
                summary.checkpoints,
                hex::encode(key)
            ),
            None => "no checkpoint key".into(),
        }
    );
    match file {
        Some(_) => print(format, &value, &message),
        // Standard output holds the export itself.
        None => {
            if format == Format::Human {
                eprintln!("{}", super::output::escape(&message));
            }
            Ok(())
        }
    }
}

fn describe_range(summary: &Summary) -> String {
    let header = &summary.header;
    if summary.records == 0 {
        format!("no events (the empty range after seq {})", header.since)
    } else {
        format!(
            "{} events (seq {}..={})",
            summary.records,
            header.since + 1,
            header.until
        )
    }
}

/// `--key`: 64 hex digits, or a file holding them.
fn pinned_key(text: &str) -> anyhow::Result<ed25519_dalek::VerifyingKey> {
    if let Ok(key) = jsonl_export::parse_public_key(text) {
        return Ok(key);
    }
    if Path::new(text).is_file() {
        let content = std::fs::read_to_string(text)
            .with_context(|| format!("cannot read the key file {text}"))?;
        return jsonl_export::parse_public_key(&content)
            .map_err(|e| anyhow!("the key file {text}: {e}"));
    }
    jsonl_export::parse_public_key(text).map_err(|e| anyhow!("--key {text:?}: {e}"))
}

/// An opened file and which form it is in (told by its first bytes, which are read once
/// and handed on, so a pipe such as `/dev/stdin` works too).
struct Input {
    binary: bool,
    reader: Box<dyn std::io::BufRead>,
}

fn open_input(file: &Path) -> anyhow::Result<Input> {
    let mut input =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut start = Vec::new();
    (&mut input)
        .take(BINARY_MAGIC.len() as u64)
        .read_to_end(&mut start)
        .with_context(|| format!("cannot read {}", file.display()))?;
    Ok(Input {
        binary: start == BINARY_MAGIC,
        reader: Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            std::io::Cursor::new(start).chain(input),
        )),
    })
}

/// `events verify --file F [--key PUB]`: the file alone, offline.
pub fn verify_file(format: Format, file: &Path, key: Option<&str>) -> anyhow::Result<()> {
    let pinned = key.map(pinned_key).transpose()?;
    let input = open_input(file)?;
    if input.binary {
        if pinned.is_some() {
            bail!(
                "{} is in the older binary form, which carries no checkpoints to check a key \
                 against",
                file.display()
            );
        }
        let checked = first_pass_binary(file, input.reader)?;
        let (count, head) = (checked.count, checked.head);
        let message = format!(
            "ok: {count} events (seq 1..={count}), head hash {head}; the older binary form \
             carries no checkpoints: only the chain was checked"
        );
        let value = json!({
            "ok": true, "file": file.display().to_string(), "format": "binary",
            "records": count, "since": 0, "until": count, "headHash": head.to_hex(),
            "checkpointsVerified": 0,
        });
        return print(format, &value, &message);
    }
    let summary = jsonl_export::verify(input.reader, pinned)
        .map_err(|e| anyhow!("{} does not verify: {e}", file.display()))?;
    let key = summary.key.map(hex::encode);
    let key_note = match summary.key_source {
        KeySource::Pinned => "with the pinned key".to_string(),
        KeySource::File => format!(
            "with the key in the file ({}; not pinned: pass --key to check it is the server's)",
            key.as_deref().unwrap_or_default()
        ),
        KeySource::None => "no checkpoint key in the file and none given".into(),
    };
    let checkpoints = match summary.last_signed_seq {
        None => format!("no signed checkpoints in the range; {key_note}"),
        Some(last) => format!(
            "{} checkpoint(s) verified, signed through seq {last}, {key_note}",
            summary.checkpoints
        ),
    };
    let message = format!(
        "ok: {}, head hash {}; {checkpoints}",
        describe_range(&summary),
        summary.head_hash
    );
    let value = json!({
        "ok": true,
        "file": file.display().to_string(),
        "format": "jsonl",
        "records": summary.records,
        "since": summary.header.since,
        "until": summary.header.until,
        "headHash": summary.head_hash.to_hex(),
        "checkpointsVerified": summary.checkpoints,
        "lastSignedSeq": summary.last_signed_seq,
        "publicKey": key,
        "keySource": summary.key_source,
        "tool": summary.header.tool,
        "exportedAt": summary.header.exported_at.to_rfc3339(),
    });
    print(format, &value, &message)
}

/// `events import F` into the configured store.
pub fn import(config: &Config, format: Format, file: &Path) -> anyhow::Result<()> {
    let location = crate::server::log_location(config);
    let target = Target {
        location: location.clone(),
        key_path: crate::server::checkpoint_key_path(config),
        open: Box::new(move || {
            crate::server::open_store(config)
                .with_context(|| format!("cannot open the event log ({location})"))
        }),
    };
    import_into(format, file, target)
}

/// `events import F --data-dir D`: the embedded store in `D/db.sled`, signed with
/// `D/checkpoint_signing.key` (created if absent), as `serve` lays out its data directory.
pub fn import_into_data_dir(format: Format, file: &Path, dir: &Path) -> anyhow::Result<()> {
    let sled = dir.join(SLED_DIR);
    let location = sled.display().to_string();
    let target = Target {
        location: location.clone(),
        key_path: dir.join(CHECKPOINT_KEY_FILE),
        open: Box::new(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(sled.parent().unwrap_or(Path::new(".")))
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let capacity = Config::default().database.sled.cache_capacity_bytes;
            let store = crate::store::disk_store::DiskStore::open(&sled, capacity)
                .with_context(|| format!("cannot open the event log ({location})"))?;
            Ok(Arc::new(store) as Arc<dyn EventStore>)
        }),
    };
    import_into(format, file, target)
}

/// The store an import writes into.
struct Target<'a> {
    location: String,
    key_path: PathBuf,
    open: Box<dyn FnOnce() -> anyhow::Result<Arc<dyn EventStore>> + 'a>,
}

/// What the first pass over a file found.
struct Checked {
    count: u64,
    head: Digest,
    last_at: crate::core::Timestamp,
    format: &'static str,
}

/// Checks the whole file (nothing is written unless all of it is good), then appends it to
/// the target store, which must be empty, keeps the file's checkpoints signed with this
/// server's key, and signs a checkpoint at the head.
fn import_into(format: Format, file: &Path, target: Target) -> anyhow::Result<()> {
    let input = open_input(file)?;
    let binary = input.binary;
    let checked = if binary {
        first_pass_binary(file, input.reader)?
    } else {
        first_pass_jsonl(file, input.reader)?
    };
    if checked.count == 0 {
        bail!("{} holds no events", file.display());
    }
    let store = (target.open)()?;
    let existing = store.head().seq;
    if existing != 0 {
        bail!(
            "the event log ({}) already holds {existing} events; import needs an empty one",
            target.location
        );
    }
    let key = crate::keyfile::load_or_create(
        &target.key_path,
        crate::server::CHECKPOINT_KEY_KIND,
        crate::keyfile::random_key,
    )?;
    let key = ed25519_dalek::SigningKey::from_bytes(&key);
    let own_key = key.verifying_key().to_bytes();
    let mut kept = Vec::new();
    let mut batch: Vec<StoredRecord> = Vec::with_capacity(IMPORT_BATCH);
    let mut append = |record: StoredRecord| -> anyhow::Result<()> {
        batch.push(record);
        if batch.len() == IMPORT_BATCH {
            store.append(&batch)?;
            batch.clear();
        }
        Ok(())
    };
    // The second pass checks every record again: the file may have changed since.
    let second = open_input(file)?.reader;
    if binary {
        for record in LogReader::new(second) {
            append(record?)?;
        }
    } else {
        jsonl_export::verify_with(second, None, |item| match item {
            Item::Record(record, _) => append(record).map_err(|e| e.to_string()),
            Item::Checkpoint(checkpoint) if checkpoint.public_key == own_key => {
                kept.push(checkpoint);
                Ok(())
            }
            _ => Ok(()),
        })
        .map_err(|e| anyhow!("{} does not verify: {e}", file.display()))?;
    }
    if !batch.is_empty() {
        store.append(&batch)?;
    }
    let head = store.head();
    if head.seq != checked.count || head.hash != checked.head {
        bail!(
            "after the import the log's head is {} but the file ends at {}",
            head.seq,
            checked.count
        );
    }
    for checkpoint in &kept {
        store.put_checkpoint(checkpoint)?;
    }
    store.put_checkpoint(&Checkpoint::sign(
        &key,
        head.seq,
        head.hash,
        checked.last_at,
    ))?;
    let value = json!({
        "file": file.display().to_string(),
        "format": checked.format,
        "events": checked.count,
        "head_seq": head.seq,
        "head_hash": head.hash.to_hex(),
        "log": target.location,
        "checkpoints_kept": kept.len(),
    });
    let message = format!(
        "imported {} events from {} into {} (head {}, chain hash {}); kept {} of the file's \
         checkpoints (those signed with this server's key) and signed one at the head",
        checked.count,
        file.display(),
        target.location,
        head.seq,
        head.hash,
        kept.len()
    );
    print(format, &value, &message)
}

/// Walks a binary file's chain from record 1.
fn first_pass_binary(file: &Path, input: impl std::io::Read) -> anyhow::Result<Checked> {
    let mut prev = Digest::default();
    let mut count = 0u64;
    let mut last_at = crate::core::Timestamp(0);
    for record in LogReader::new(input) {
        let record = record
            .with_context(|| format!("{}: record {} is unreadable", file.display(), count + 1))?;
        let envelope = check_link(&record, count + 1, &prev)
            .with_context(|| format!("{}: the chain breaks", file.display()))?;
        last_at = envelope.at;
        prev = record.hash();
        count += 1;
    }
    Ok(Checked {
        count,
        head: prev,
        last_at,
        format: "binary",
    })
}

fn first_pass_jsonl(file: &Path, input: impl std::io::BufRead) -> anyhow::Result<Checked> {
    let mut last_at = crate::core::Timestamp(0);
    let summary = jsonl_export::verify_with(input, None, |item| {
        match item {
            Item::Header(header) if header.since != 0 => {
                return Err(format!(
                    "a partial export (the records after seq {}): an import needs the whole \
                     log from seq 1",
                    header.since
                ))
            }
            Item::Record(_, envelope) => last_at = envelope.at,
            _ => {}
        }
        Ok(())
    })
    .map_err(|e| anyhow!("{} is refused, nothing was imported: {e}", file.display()))?;
    Ok(Checked {
        count: summary.records,
        head: summary.head_hash,
        last_at,
        format: "jsonl",
    })
}
