//! The on-disk store: the event log in our own fdatasync'd segment file (`events.log`), and
//! sled for everything that can be rebuilt or is written lazily (`snapshots`, `checkpoints`).
//! Both live in one directory (`database.sled.path`).
//!
//! After a failed append the store recovers in place (`recover`: a rescan of the log through
//! a fresh file handle), never by opening sled a second time: sled's directory lock belongs
//! to the open handle, so a second open in the same process is refused.

use super::segment_log::{file_opener, LogFileOpener, SegmentLog};
use super::{Checkpoint, EventStore, Head, StoreError, StoredRecord};
use std::path::Path;
use std::sync::{Mutex, RwLock};

/// The sled tree of webhook delivery cursors (endpoint key → last acknowledged seq, 8 bytes
/// big-endian). Like the rest of sled it is not the log: if sled is rebuilt, managed
/// endpoints start again after their creation (duplicates, never losses).
const WEBHOOK_CURSORS: &str = "webhook_cursors";

pub struct DiskStore {
    db: sled::Db,
    snapshots: sled::Tree,
    checkpoints: sled::Tree,
    log: SegmentLog,
    /// Published after each durable append; readers never wait on the append's I/O.
    head: RwLock<Head>,
    /// Serialises appends and recovery (the writer is the only appender anyway).
    appending: Mutex<()>,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl DiskStore {
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<DiskStore, StoreError> {
        Self::open_with_log(
            path,
            cache_capacity_bytes,
            file_opener(&path.join("events.log")),
        )
    }

    /// Opens the store with the event log read and written through `log_file` (tests inject
    /// faults there); sled still lives at `path`.
    pub fn open_with_log(
        path: &Path,
        cache_capacity_bytes: u64,
        log_file: LogFileOpener,
    ) -> Result<DiskStore, StoreError> {
        let (db, snapshots, checkpoints) = match open_sled(path, cache_capacity_bytes) {
            Ok(opened) => opened,
            Err(SledOpen::Locked) => return Err(locked(path)),
            Err(SledOpen::Damaged(reason)) => {
                // sled holds only caches (snapshots) and lazily written checkpoints, and is
                // not fsynced: after a power loss it can be damaged while the log is intact.
                let aside = move_sled_aside(path)?;
                tracing::error!(
                    %reason,
                    moved_to = %aside.display(),
                    "the sled files next to the event log are unreadable: moved them aside and \
                     starting with empty snapshots and checkpoints; the state is rebuilt from \
                     events.log"
                );
                match open_sled(path, cache_capacity_bytes) {
                    Ok(opened) => opened,
                    Err(SledOpen::Locked) => return Err(locked(path)),
                    Err(SledOpen::Damaged(reason)) => return Err(StoreError::Io(reason)),
                }
            }
        };
        let log = SegmentLog::open_with(log_file, path.join("events.log").display().to_string())?;
        let head = head_of(&log)?;
        Ok(DiskStore {
            snapshots,
            checkpoints,
            db,
            log,
            head: RwLock::new(head),
            appending: Mutex::new(()),
        })
    }
}

fn locked(path: &Path) -> StoreError {
    StoreError::Locked {
        path: path.display().to_string(),
    }
}

enum SledOpen {
    Locked,
    Damaged(String),
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(err)
        if err.kind() == std::io::ErrorKind::WouldBlock
            || err.to_string().contains("could not acquire lock"))
}

/// Opens sled and reads every snapshot key and checkpoint once, so damage shows here (as
/// `Damaged`, panics included) rather than later in the engine.
fn open_sled(path: &Path, cache: u64) -> Result<(sled::Db, sled::Tree, sled::Tree), SledOpen> {
    let attempt = std::panic::catch_unwind(|| {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache)
            .open()?;
        let snapshots = db.open_tree("snapshots")?;
        let checkpoints = db.open_tree("checkpoints")?;
        let mut problem = None;
        for key in snapshots.iter().keys() {
            let key = key?;
            if key.len() != 8 {
                problem = Some(format!("a snapshot key of {} bytes", key.len()));
            }
        }
        for item in checkpoints.iter() {
            let (key, value) = item?;
            if key.len() != 8 {
                problem = Some(format!("a checkpoint key of {} bytes", key.len()));
            } else if let Err(reason) = Checkpoint::from_bytes(&value) {
                problem = Some(reason);
            }
        }
        Ok::<_, sled::Error>((db, snapshots, checkpoints, problem))
    });
    match attempt {
        Ok(Ok((db, snapshots, checkpoints, None))) => Ok((db, snapshots, checkpoints)),
        Ok(Ok((_, _, _, Some(problem)))) => Err(SledOpen::Damaged(problem)),
        Ok(Err(e)) if is_lock_error(&e) => Err(SledOpen::Locked),
        Ok(Err(e)) => Err(SledOpen::Damaged(e.to_string())),
        Err(_) => Err(SledOpen::Damaged("sled panicked while opening".into())),
    }
}

/// Moves every file of `path` except the event log into `<path>.sled-corrupt-<time>`, under
/// sled's own lock file so a running server's files are never touched.
pub(crate) fn move_sled_aside(path: &Path) -> Result<std::path::PathBuf, StoreError> {
    let fail = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
    let lock_path = path.join("db");
    let lock = if lock_path.exists() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| fail("cannot open sled's lock file", e))?;
        // sled's background threads of the handle that just failed may hold the lock for a
        // moment after it is dropped: wait up to 2 s for it before calling it taken.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let locked_here = loop {
            let done =
                rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
            if done.is_ok() || std::time::Instant::now() >= deadline {
                break done;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        if locked_here.is_err() {
            return Err(locked(path));
        }
        Some(file)
    } else {
        None
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".sled-corrupt-{stamp}"));
    let aside = std::path::PathBuf::from(aside);
    std::fs::create_dir_all(&aside).map_err(|e| fail("cannot create the aside directory", e))?;
    let entries = std::fs::read_dir(path).map_err(|e| fail("cannot list the store", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| fail("cannot list the store", e))?;
        if entry.file_name() == "events.log" {
            continue;
        }
        std::fs::rename(entry.path(), aside.join(entry.file_name()))
            .map_err(|e| fail("cannot move a sled file aside", e))?;
    }
    // Released only now, and before sled reopens (a second lock in this process would fail).
    drop(lock);
    Ok(aside)
}

/// The head as the log says: its last record's seq and chain hash.
fn head_of(log: &SegmentLog) -> Result<Head, StoreError> {
    match log.last_seq() {
        0 => Ok(Head::default()),
        seq => {
            let record = log.read(seq)?.ok_or_else(|| StoreError::ChainBroken {
                seq,
                reason: "the last record vanished".into(),
            })?;
            Ok(Head {
                seq,
                hash: record.hash(),
            })
        }
    }
}

/// Marks a snapshot value that ends with its checksum: `bytes | SEAL | crc32c(bytes) u32`.
/// sled is not fsynced and snapshots carry no hash of their own, so a damaged one could
/// otherwise decode to a different state. Values without the seal (older builds) are read
/// as they are; a damaged seal makes them fail to decode (trailing bytes), never pass.
const SEAL: &[u8; 4] = b"HSs1";

fn seal_snapshot(bytes: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(bytes.len() + 8);
    sealed.extend_from_slice(bytes);
    sealed.extend_from_slice(SEAL);
    sealed.extend_from_slice(&crc32c::crc32c(bytes).to_be_bytes());
    sealed
}

/// The snapshot bytes, or `None` when a sealed value fails its checksum.
fn unseal_snapshot(value: &[u8]) -> Option<&[u8]> {
    let Some(split) = value.len().checked_sub(8) else {
        return Some(value);
    };
    let (bytes, trailer) = value.split_at(split);
    if &trailer[..4] != SEAL {
        return Some(value);
    }
    let crc = u32::from_be_bytes(trailer[4..].try_into().expect("4 bytes"));
    (crc32c::crc32c(bytes) == crc).then_some(bytes)
}

fn decode_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Io(format!("malformed key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

impl EventStore for DiskStore {
    fn head(&self) -> Head {
        *self.head.read().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let _appending = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        let mut prev = self.head().hash;
        for record in records {
            if record.prev_hash != prev {
                return Err(StoreError::ChainBroken {
                    seq: record.seq,
                    reason: "prev_hash does not match the head".into(),
                });
            }
            prev = record.hash();
        }
        self.log.append(records)?;
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = Head {
            seq: last.seq,
            hash: prev,
        };
        Ok(())
    }

    fn recover(&self) -> Result<(), StoreError> {
        let _appending = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        self.log.recover()?;
        let head = head_of(&self.log)?;
        *self.head.write().unwrap_or_else(|e| e.into_inner()) = head;
        Ok(())
    }

    fn probe(&self) -> Result<(), StoreError> {
        let _appending = self.appending.lock().unwrap_or_else(|e| e.into_inner());
        self.log.probe()
    }

    fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        self.log.read(seq)
    }

    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<dyn Iterator<Item = Result<StoredRecord, StoreError>> + '_> {
        /// Records per sequential read: big enough to stream, small enough to bound memory.
        const CHUNK_RECORDS: u64 = 4096;
        let to = to.min(self.head().seq);
        let mut next = from.max(1);
        let mut buffered = std::collections::VecDeque::new();
        Box::new(std::iter::from_fn(move || {
            if buffered.is_empty() && next <= to {
                let last = to.min(next.saturating_add(CHUNK_RECORDS - 1));
                match self.log.read_range(next, last) {
                    Ok(records) => buffered.extend(records.into_iter().map(Ok)),
                    Err(error) => {
                        next = to.saturating_add(1);
                        return Some(Err(error));
                    }
                }
                next = last.saturating_add(1);
            }
            buffered.pop_front()
        }))
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.snapshots
            .insert(seq.to_be_bytes(), seal_snapshot(bytes))
            .map_err(io)?;
        // Keep the three newest: enough for `--at` speed-ups without unbounded growth.
        let keys: Vec<_> = self
            .snapshots
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        if keys.len() > 3 {
            for key in &keys[..keys.len() - 3] {
                self.snapshots.remove(key).map_err(io)?;
            }
        }
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn snapshot_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self
            .snapshots
            .range(..=seq.to_be_bytes())
            .next_back()
            .transpose()
            .map_err(io)?
        {
            Some((key, value)) => {
                let seq = decode_key(&key)?;
                match unseal_snapshot(&value) {
                    Some(bytes) => Ok(Some((seq, bytes.to_vec()))),
                    None => {
                        tracing::warn!(seq, "snapshot fails its checksum; it will be replayed");
                        // Empty bytes never decode: the caller replays the log instead.
                        Ok(Some((seq, Vec::new())))
                    }
                }
            }
            None => Ok(None),
        }
    }

    fn remove_snapshots_from(&self, seq: u64) -> Result<(), StoreError> {
        let keys: Vec<_> = self
            .snapshots
            .range(seq.to_be_bytes()..)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for key in keys {
            self.snapshots.remove(key).map_err(io)?;
        }
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.checkpoints
            .insert(checkpoint.seq.to_be_bytes(), checkpoint.to_bytes())
            .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.checkpoints
            .iter()
            .map(|item| {
                let (key, value) = item.map_err(io)?;
                let seq = decode_key(&key)?;
                Checkpoint::from_bytes(&value)
                    .map_err(|reason| StoreError::ChainBroken { seq, reason })
            })
            .collect()
    }

    fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        let tree = self.db.open_tree(WEBHOOK_CURSORS).map_err(io)?;
        Ok(tree
            .get(endpoint.as_bytes())
            .map_err(io)?
            .and_then(|value| <[u8; 8]>::try_from(value.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn set_webhook_cursor(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        let tree = self.db.open_tree(WEBHOOK_CURSORS).map_err(io)?;
        tree.fetch_and_update(endpoint.as_bytes(), |old| {
            let old = old
                .and_then(|v| <[u8; 8]>::try_from(v).ok())
                .map(u64::from_be_bytes);
            Some(old.unwrap_or(0).max(seq).to_be_bytes().to_vec())
        })
        .map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
