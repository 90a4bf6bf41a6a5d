//! The sled backend: trees `events` (seq big-endian → record), `snapshots`, `checkpoints`
//! and `meta`. An append is one `apply_batch` followed by `flush` (fsync); nothing is
//! acknowledged before the flush returns. See ARCHITECTURE.md for the crash-test evidence.

use super::{Checkpoint, EventStore, Head, StoreError, StoredRecord};
use std::path::Path;
use std::sync::Mutex;

/// sled's default cache is large; a control server's working set is small.
pub const DEFAULT_CACHE_CAPACITY_BYTES: u64 = 64 << 20;

pub struct SledStore {
    db: sled::Db,
    events: sled::Tree,
    snapshots: sled::Tree,
    checkpoints: sled::Tree,
    /// The head, cached so appends can check continuity without a read.
    head: Mutex<Head>,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    pub fn open(path: &Path, cache_capacity_bytes: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io_err) if io_err.kind() == std::io::ErrorKind::WouldBlock => {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                sled::Error::Io(ref io_err)
                    if io_err.to_string().contains("could not acquire lock") =>
                {
                    StoreError::Locked {
                        path: path.display().to_string(),
                    }
                }
                other => io(other),
            })?;
        let events = db.open_tree("events").map_err(io)?;
        let snapshots = db.open_tree("snapshots").map_err(io)?;
        let checkpoints = db.open_tree("checkpoints").map_err(io)?;
        let head = match events.last().map_err(io)? {
            Some((key, value)) => {
                let seq = decode_key(&key)?;
                let record = StoredRecord::from_bytes(seq, &value)
                    .map_err(|source| StoreError::Corrupt { seq, source })?;
                Head {
                    seq,
                    hash: record.hash(),
                }
            }
            None => Head::default(),
        };
        Ok(SledStore {
            db,
            events,
            snapshots,
            checkpoints,
            head: Mutex::new(head),
        })
    }

    fn head_lock(&self) -> std::sync::MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes on disk, for metrics and benchmarks.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

fn decode_key(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StoreError::Io(format!(
            "malformed key of {} bytes in the events tree",
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

impl EventStore for SledStore {
    fn head(&self) -> Head {
        *self.head_lock()
    }

    fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError> {
        let Some(last) = records.last() else {
            return Ok(());
        };
        let mut head = self.head_lock();
        let mut expected = head.seq + 1;
        let mut prev = head.hash;
        let mut batch = sled::Batch::default();
        for record in records {
            if record.seq != expected {
                return Err(StoreError::OutOfOrder {
                    head: expected - 1,
                    got: record.seq,
                });
            }
            if record.prev_hash != prev {
                return Err(StoreError::ChainBroken {
                    seq: record.seq,
                    reason: "prev_hash does not match the head".into(),
                });
            }
            prev = record.hash();
            expected += 1;
            batch.insert(&record.seq.to_be_bytes(), record.to_bytes());
        }
        self.events.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        *head = Head {
            seq: last.seq,
            hash: prev,
        };
        Ok(())
    }

    fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        self.events
            .get(seq.to_be_bytes())
            .map_err(io)?
            .map(|bytes| {
                StoredRecord::from_bytes(seq, &bytes)
                    .map_err(|source| StoreError::Corrupt { seq, source })
            })
            .transpose()
    }

    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<dyn Iterator<Item = Result<StoredRecord, StoreError>> + '_> {
        if from > to {
            return Box::new(std::iter::empty());
        }
        Box::new(
            self.events
                .range(from.to_be_bytes()..=to.to_be_bytes())
                .map(|item| {
                    let (key, value) = item.map_err(io)?;
                    let seq = decode_key(&key)?;
                    StoredRecord::from_bytes(seq, &value)
                        .map_err(|source| StoreError::Corrupt { seq, source })
                }),
        )
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.snapshots
            .insert(seq.to_be_bytes(), bytes)
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
            Some((key, value)) => Ok(Some((decode_key(&key)?, value.to_vec()))),
            None => Ok(None),
        }
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

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(io)
    }
}
