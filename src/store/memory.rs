//! An in-memory `EventStore` for tests, with a switch that makes appends fail so the
//! engine's recovery path can be exercised without a real disk fault.

use super::{Checkpoint, EventStore, Head, StoreError, StoredRecord};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Inner {
    events: BTreeMap<u64, Vec<u8>>,
    snapshots: BTreeMap<u64, Vec<u8>>,
    checkpoints: Vec<Checkpoint>,
    webhook_cursors: BTreeMap<String, u64>,
}

/// Shared contents, so a "reopened" store sees what the old one made durable.
#[derive(Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    fail_appends: Arc<AtomicBool>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// While set, every append fails (and writes nothing).
    pub fn set_fail_appends(&self, fail: bool) {
        self.fail_appends.store(fail, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock would be a test bug; keep going with the data.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventStore for MemoryStore {
    fn head(&self) -> Head {
        let inner = self.lock();
        match inner.events.iter().next_back() {
            Some((seq, bytes)) => match StoredRecord::from_bytes(*seq, bytes) {
                Ok(record) => Head {
                    seq: *seq,
                    hash: record.hash(),
                },
                Err(_) => Head {
                    seq: *seq,
                    hash: Default::default(),
                },
            },
            None => Head::default(),
        }
    }

    fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError> {
        if self.fail_appends.load(Ordering::SeqCst) {
            return Err(StoreError::Io("injected append failure".into()));
        }
        let head = self.head();
        let mut inner = self.lock();
        for (expected, record) in (head.seq + 1..).zip(records) {
            if record.seq != expected {
                return Err(StoreError::OutOfOrder {
                    head: expected - 1,
                    got: record.seq,
                });
            }
        }
        for record in records {
            inner.events.insert(record.seq, record.to_bytes());
        }
        Ok(())
    }

    fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError> {
        let inner = self.lock();
        inner
            .events
            .get(&seq)
            .map(|bytes| {
                StoredRecord::from_bytes(seq, bytes)
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
        let items: Vec<_> = {
            let inner = self.lock();
            inner
                .events
                .range(from..=to)
                .map(|(seq, bytes)| {
                    StoredRecord::from_bytes(*seq, bytes)
                        .map_err(|source| StoreError::Corrupt { seq: *seq, source })
                })
                .collect()
        };
        Box::new(items.into_iter())
    }

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.lock().snapshots.insert(seq, bytes.to_vec());
        Ok(())
    }

    fn snapshot_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .snapshots
            .range(..=seq)
            .next_back()
            .map(|(s, b)| (*s, b.clone())))
    }

    fn remove_snapshots_from(&self, seq: u64) -> Result<(), StoreError> {
        self.lock().snapshots.retain(|s, _| *s < seq);
        Ok(())
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.lock().checkpoints.push(checkpoint.clone());
        Ok(())
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        Ok(self.lock().checkpoints.clone())
    }

    fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.lock().webhook_cursors.get(endpoint).copied())
    }

    fn set_webhook_cursor(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let cursor = inner
            .webhook_cursors
            .entry(endpoint.to_string())
            .or_insert(seq);
        *cursor = (*cursor).max(seq);
        Ok(())
    }
}
