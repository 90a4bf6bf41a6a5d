//! Reading the log back: rebuilding the state at any point (nearest snapshot + replay),
//! mapping a time to a seq, and verifying the whole chain and its signed checkpoints.

use super::record::decode_snapshot;
use super::{EventStore, StoreError};
use crate::core::keys::Digest;
use crate::core::{Envelope, State, Timestamp};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;

/// Rebuilds the state as of `upto` (the head when `None`): the newest snapshot at or before
/// it, then the tail, checking every chain link on the way.
pub fn load_state(store: &dyn EventStore, upto: Option<u64>) -> Result<State, StoreError> {
    let head = store.head();
    let target = upto.unwrap_or(head.seq).min(head.seq);
    // A snapshot is only a cache of the fold: one that no longer decodes (written by a build
    // whose `State` had other fields, or damaged) is skipped and the log replayed instead.
    let snapshot = match store.snapshot_at_or_before(target)? {
        Some((seq, bytes)) if seq > 0 => match decode_snapshot(&bytes) {
            Ok(state) => Some((seq, state)),
            Err(error) => {
                tracing::warn!(seq, %error, "snapshot unreadable; replaying the log from the start instead");
                None
            }
        },
        _ => None,
    };
    let (mut state, mut prev_hash) = match snapshot {
        Some((seq, state)) => {
            let record = store.read(seq)?.ok_or_else(|| StoreError::ChainBroken {
                seq,
                reason: "the snapshot's record is missing".into(),
            })?;
            (state, record.hash())
        }
        None => (State::default(), Digest::default()),
    };
    let from = state.last_seq + 1;
    replay_into(store, &mut state, &mut prev_hash, from, target)?;
    Ok(state)
}

/// Checks that `record` is the one expected next in the chain and decodes it.
fn check_link(
    record: &super::StoredRecord,
    expected: u64,
    prev_hash: &Digest,
) -> Result<Envelope, StoreError> {
    if record.seq != expected {
        return Err(StoreError::ChainBroken {
            seq: expected,
            reason: format!("record {expected} is missing (found {})", record.seq),
        });
    }
    if record.prev_hash != *prev_hash {
        return Err(StoreError::ChainBroken {
            seq: record.seq,
            reason: "prev_hash does not match the previous record".into(),
        });
    }
    record.envelope().map_err(|source| StoreError::Corrupt {
        seq: record.seq,
        source,
    })
}

/// Applies records `from..=to` onto `state`, checking links from `prev_hash`.
pub fn replay_into(
    store: &dyn EventStore,
    state: &mut State,
    prev_hash: &mut Digest,
    from: u64,
    to: u64,
) -> Result<(), StoreError> {
    let mut expected = from;
    for record in store.read_range(from, to) {
        let record = record?;
        let envelope = check_link(&record, expected, prev_hash)?;
        state.apply(&envelope);
        *prev_hash = record.hash();
        expected += 1;
    }
    if from <= to && expected != to + 1 {
        return Err(StoreError::ChainBroken {
            seq: expected,
            reason: format!("record {expected} is missing"),
        });
    }
    Ok(())
}

/// Decoded envelopes `from..=to`.
pub fn read_envelopes(
    store: &dyn EventStore,
    from: u64,
    to: u64,
) -> impl Iterator<Item = Result<Envelope, StoreError>> + '_ {
    store.read_range(from, to).map(|record| {
        let record = record?;
        record.envelope().map_err(|source| StoreError::Corrupt {
            seq: record.seq,
            source,
        })
    })
}

/// The seq of the last event appended at or before `at` (0 if none). Times are monotonic in
/// seq, so this is a binary search over the log.
pub fn seq_at_time(store: &dyn EventStore, at: Timestamp) -> Result<u64, StoreError> {
    let (mut low, mut high) = (0u64, store.head().seq);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        let envelope = read_envelopes(store, mid, mid)
            .next()
            .transpose()?
            .ok_or_else(|| StoreError::ChainBroken {
                seq: mid,
                reason: "record is missing".into(),
            })?;
        if envelope.at <= at {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    Ok(low)
}

/// What `events verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub head_hash: Digest,
    pub checkpoints_verified: usize,
}

/// Walks the whole chain: gap-free seqs, links, payload hashes, decodable envelopes,
/// monotonic times, and every checkpoint's hash and signature. Fails at the first bad record.
pub fn verify_chain(
    store: &dyn EventStore,
    trusted: Option<&VerifyingKey>,
) -> Result<VerifyReport, StoreError> {
    let checkpoints = store.checkpoints()?;
    let wanted: HashMap<u64, Digest> = checkpoints.iter().map(|c| (c.seq, c.hash)).collect();
    let mut prev_hash = Digest::default();
    let mut expected = 1u64;
    let mut last_at = Timestamp::EPOCH;
    let mut seen_at_checkpoint: HashMap<u64, Digest> = HashMap::new();
    for record in store.read_range(1, u64::MAX) {
        let record = record?;
        let envelope = check_link(&record, expected, &prev_hash)?;
        if envelope.at < last_at {
            return Err(StoreError::ChainBroken {
                seq: record.seq,
                reason: "time goes backwards".into(),
            });
        }
        last_at = envelope.at;
        prev_hash = record.hash();
        if wanted.contains_key(&record.seq) {
            seen_at_checkpoint.insert(record.seq, prev_hash);
        }
        expected += 1;
    }
    let mut verified = 0;
    for checkpoint in &checkpoints {
        match seen_at_checkpoint.get(&checkpoint.seq) {
            Some(hash) if *hash == checkpoint.hash => {}
            Some(_) => {
                return Err(StoreError::ChainBroken {
                    seq: checkpoint.seq,
                    reason: "the chain hash differs from the signed checkpoint".into(),
                })
            }
            None => {
                return Err(StoreError::ChainBroken {
                    seq: checkpoint.seq,
                    reason: "a signed checkpoint names a record that is missing".into(),
                })
            }
        }
        if let Some(key) = trusted {
            checkpoint
                .verify(key)
                .map_err(|reason| StoreError::ChainBroken {
                    seq: checkpoint.seq,
                    reason: format!("checkpoint: {reason}"),
                })?;
        }
        verified += 1;
    }
    Ok(VerifyReport {
        events: expected - 1,
        head_hash: prev_hash,
        checkpoints_verified: verified,
    })
}
