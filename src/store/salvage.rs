//! `headscale events salvage`: what an admin runs when the server refuses to start because
//! the event log is damaged. It reports exactly what would be kept (the records up to the
//! last one that is whole and links into the hash chain) and what would be cut (bytes and
//! the first damaged seq), and on request writes the kept prefix as the new log, keeping the
//! cut bytes and the original file beside it. sled's snapshots and checkpoints, which may
//! describe records that are cut, are moved aside (they are rebuilt from the log).

use super::disk_store::move_sled_aside;
use super::segment_log::salvage_scan;
use super::{StoreError, StoredRecord};
use crate::core::keys::Digest;
use std::io::Write;
use std::path::Path;

/// What salvage found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SalvageReport {
    pub log: String,
    pub file_bytes: u64,
    /// Records kept: 1..=last_good_seq.
    pub last_good_seq: u64,
    pub kept_bytes: u64,
    pub cut_bytes: u64,
    /// The first record that is damaged or does not link, and why.
    pub first_bad_seq: Option<u64>,
    pub reason: Option<String>,
    /// Set by `write`: where the cut bytes and the original log were kept.
    pub cut_saved_to: Option<String>,
    pub original_saved_to: Option<String>,
}

fn io(what: &str, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what}: {e}"))
}

/// Reads the log at `<store>/events.log` and says what salvage would keep. Changes nothing.
pub fn inspect(store: &Path) -> Result<SalvageReport, StoreError> {
    let log = store.join("events.log");
    let bytes =
        std::fs::read(&log).map_err(|e| io(&format!("cannot read {}", log.display()), e))?;
    Ok(report(&log, &bytes))
}

fn report(log: &Path, bytes: &[u8]) -> SalvageReport {
    let (frames, mut damage) = salvage_scan(bytes);
    // Frames are whole; keep them while each decodes and links to the one before.
    let mut prev = Digest::default();
    let mut kept = 0usize;
    let mut last_good_seq = 0;
    for (seq, range) in &frames {
        let body = &bytes[range.start + 16..range.end];
        match StoredRecord::from_bytes(*seq, body) {
            Ok(record) if record.prev_hash == prev => {
                prev = record.hash();
                kept = range.end;
                last_good_seq = *seq;
            }
            Ok(_) => {
                damage = Some((*seq, "prev_hash does not match the previous record".into()));
                break;
            }
            Err(error) => {
                damage = Some((*seq, error.to_string()));
                break;
            }
        }
    }
    SalvageReport {
        log: log.display().to_string(),
        file_bytes: bytes.len() as u64,
        last_good_seq,
        kept_bytes: kept as u64,
        cut_bytes: (bytes.len() - kept) as u64,
        first_bad_seq: damage.as_ref().map(|(seq, _)| *seq),
        reason: damage.map(|(_, reason)| reason),
        cut_saved_to: None,
        original_saved_to: None,
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| io(&format!("cannot create {}", path.display()), e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| io(&format!("cannot write {}", path.display()), e))
}

/// Cuts the log after its last good record: the cut bytes go to
/// `events.log.cut-<time>`, the original file is renamed to `events.log.before-salvage-<time>`
/// and the kept prefix becomes `events.log` (written to a temporary file, fsynced, renamed,
/// directory fsynced). Refuses while a server holds the store (sled's lock).
pub fn write(store: &Path) -> Result<SalvageReport, StoreError> {
    let log = store.join("events.log");
    let bytes =
        std::fs::read(&log).map_err(|e| io(&format!("cannot read {}", log.display()), e))?;
    let mut report = report(&log, &bytes);
    if report.cut_bytes == 0 {
        return Ok(report);
    }
    // Takes sled's lock (refusing if a server runs) and moves its files aside.
    move_sled_aside(store)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let kept = report.kept_bytes as usize;
    let cut_path = store.join(format!("events.log.cut-{stamp}"));
    write_synced(&cut_path, &bytes[kept..])?;
    let temporary = store.join(format!("events.log.salvaged-{stamp}"));
    write_synced(&temporary, &bytes[..kept])?;
    let original = store.join(format!("events.log.before-salvage-{stamp}"));
    std::fs::rename(&log, &original).map_err(|e| io("cannot keep the original log", e))?;
    std::fs::rename(&temporary, &log).map_err(|e| io("cannot put the new log in place", e))?;
    std::fs::File::open(store)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io("cannot sync the store directory", e))?;
    report.cut_saved_to = Some(cut_path.display().to_string());
    report.original_saved_to = Some(original.display().to_string());
    Ok(report)
}
