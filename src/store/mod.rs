//! Durable storage: the event log, snapshots, signed checkpoints and metadata, behind the
//! `EventStore` trait so the backend (sled today; a replicated one later) never leaks into
//! the engine. A store never interprets events beyond checking the hash chain.

mod capped;
pub mod checkpoint;
pub mod disk_store;
pub mod export;
pub mod faulty_file;
pub mod jsonl_export;
pub mod memory;
pub mod postgres;
pub mod postgres_store;
pub mod record;
pub mod replay;
pub mod salvage;
pub mod segment_log;
pub mod snapshot_sig;

use crate::core::keys::Digest;
pub use checkpoint::Checkpoint;
pub use record::{DecodeError, StoredRecord};

/// Storage failures. A failed write means "maybe not durable": the engine must not
/// acknowledge anything from that batch and recovers with `EventStore::recover`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("record {seq} is corrupt: {source}")]
    Corrupt { seq: u64, source: DecodeError },
    #[error("the chain breaks at record {seq}: {reason}")]
    ChainBroken { seq: u64, reason: String },
    #[error("append out of order: head is {head}, got record {got}")]
    OutOfOrder { head: u64, got: u64 },
    #[error("the store at {path} is locked by another process (is `headscale serve` running?)")]
    Locked { path: String },
    /// Another instance appended first (a shared log): nothing was written; catch up
    /// (`EventStore::refresh_head`, then read), decide again and retry.
    #[error("another instance appended first (the log's head moved past {head})")]
    Conflict { head: u64 },
}

/// The last record of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    pub seq: u64,
    pub hash: Digest,
}

/// What the engine needs from durable storage.
pub trait EventStore: Send + Sync {
    fn head(&self) -> Head;

    /// Appends records that continue the chain from `head()`; durable when it returns Ok.
    fn append(&self, records: &[StoredRecord]) -> Result<(), StoreError>;

    /// After a failed append: brings the store back to exactly what was acknowledged (in
    /// place, without opening anything a second time) so appends can go on; `head()` then
    /// says what is durable. Fails while the storage still cannot be trusted.
    fn recover(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether a write would work now, without appending a record (health while idle after
    /// a failure). Ok by default.
    fn probe(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether other processes append to this log too (several instances on PostgreSQL):
    /// the engine then tails it and retries appends that lose a race.
    fn is_shared(&self) -> bool {
        false
    }

    /// Reads the head from the log itself (another instance may have appended) and makes it
    /// the one `append` continues from and `read_range` reads up to. A store nobody else
    /// writes to just says `head()`.
    fn refresh_head(&self) -> Result<Head, StoreError> {
        Ok(self.head())
    }

    /// One record, parsed and checked against its payload hash.
    fn read(&self, seq: u64) -> Result<Option<StoredRecord>, StoreError>;

    /// Records `from..=to` in order (fewer if the log is shorter).
    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<dyn Iterator<Item = Result<StoredRecord, StoreError>> + '_>;

    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// The newest snapshot taken at or before `seq`.
    fn snapshot_at_or_before(&self, seq: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// Removes every snapshot taken at or after `seq` (one found to differ from the log,
    /// and those derived from it). Stores that cannot say so.
    fn remove_snapshots_from(&self, seq: u64) -> Result<(), StoreError> {
        Err(StoreError::Io(format!(
            "this store cannot remove snapshots (from seq {seq})"
        )))
    }

    fn put_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// A webhook endpoint's delivery cursor: the last seq delivered to it and acknowledged
    /// (`src/webhooks/`); `None` before the first. Kept beside the log, never in it.
    fn webhook_cursor(&self, endpoint: &str) -> Result<Option<u64>, StoreError> {
        Err(StoreError::Io(format!(
            "this store keeps no webhook cursors (endpoint {endpoint})"
        )))
    }

    /// Moves an endpoint's cursor forward to `seq` (never back: a stale writer, such as
    /// another instance that delivered less, leaves a later cursor alone); durable when Ok.
    fn set_webhook_cursor(&self, endpoint: &str, seq: u64) -> Result<(), StoreError> {
        Err(StoreError::Io(format!(
            "this store keeps no webhook cursors (endpoint {endpoint}, seq {seq})"
        )))
    }
}
