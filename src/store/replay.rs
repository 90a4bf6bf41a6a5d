//! Reading the log back: rebuilding the state at any point (nearest snapshot + replay),
//! mapping a time to a seq, and verifying the whole chain and its signed checkpoints.

use super::record::decode_snapshot;
use super::snapshot_sig::{authenticate, Authenticity};
use super::{EventStore, StoreError};
use crate::core::keys::Digest;
use crate::core::{Envelope, State, Timestamp};
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;

/// Rebuilds the state as of `upto` (the head when `None`) by replaying the log from the
/// start, checking every chain link. Without the server's key no snapshot can be trusted
/// (audit L11); [`load_state_with`] uses one when given the key.
pub fn load_state(store: &dyn EventStore, upto: Option<u64>) -> Result<State, StoreError> {
    load_state_with(store, upto, None).map(|loaded| loaded.state)
}

/// A rebuilt state, and the snapshot it started from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub state: State,
    /// The seq and decoded state of the snapshot the replay started from, if any (the
    /// engine compares it with a full replay in the background).
    pub snapshot: Option<(u64, State)>,
}

/// Rebuilds the state as of `upto` (the head when `None`): the newest snapshot at or before
/// it, when `trusted` is given and it is signed by that key and bound to the log's chain hash
/// at its seq ([`snapshot_sig`](super::snapshot_sig)), then the tail, checking every chain
/// link on the way. Any other snapshot (unsigned, badly signed, bound to another chain,
/// undecodable) is skipped with a warning and the log replayed from the start: a snapshot is
/// only a cache, never a reason to fail. (An attacker who can read the signing key can still
/// re-sign; see `snapshot_sig`.)
pub fn load_state_with(
    store: &dyn EventStore,
    upto: Option<u64>,
    trusted: Option<&VerifyingKey>,
) -> Result<Loaded, StoreError> {
    let head = store.head();
    let target = upto.unwrap_or(head.seq).min(head.seq);
    let snapshot = match trusted {
        Some(key) => trusted_snapshot(store, target, key)?,
        None => None,
    };
    let (mut state, mut prev_hash) = match &snapshot {
        Some((_, state, hash)) => (state.clone(), *hash),
        None => (State::default(), Digest::default()),
    };
    let from = state.last_seq + 1;
    replay_into(store, &mut state, &mut prev_hash, from, target)?;
    Ok(Loaded {
        state,
        snapshot: snapshot.map(|(seq, state, _)| (seq, state)),
    })
}

/// The newest snapshot at or before `target` if it can be trusted: its seq, state and the
/// chain hash of its record.
fn trusted_snapshot(
    store: &dyn EventStore,
    target: u64,
    key: &VerifyingKey,
) -> Result<Option<(u64, State, Digest)>, StoreError> {
    let Some((seq, value)) = store.snapshot_at_or_before(target)? else {
        return Ok(None);
    };
    if seq == 0 {
        return Ok(None);
    }
    let Some(record) = store.read(seq)? else {
        tracing::warn!(
            seq,
            "the snapshot's record is missing; replaying the log from the start"
        );
        return Ok(None);
    };
    if value.is_empty() {
        // What a store hands back for a value that failed its own checksum.
        tracing::warn!(
            seq,
            "snapshot damaged; replaying the log from the start instead"
        );
        return Ok(None);
    }
    let record_hash = record.hash();
    let (verdict, bytes) = authenticate(seq, &value, Some(&record_hash), Some(key));
    let skip = |why: &str| {
        tracing::warn!(
            seq,
            why,
            "snapshot not used (audit L11); replaying the log from the start instead"
        );
    };
    match verdict {
        Authenticity::Signed => {}
        Authenticity::Unsigned => {
            skip("it is not signed (written by an older build, or planted)");
            return Ok(None);
        }
        Authenticity::BadSignature(reason) => {
            skip(&format!("its signature does not verify: {reason}"));
            return Ok(None);
        }
        Authenticity::HeadMismatch | Authenticity::NotChecked => {
            skip("it is not bound to this log's chain hash at its seq");
            return Ok(None);
        }
    }
    // A snapshot that no longer decodes (written by a build whose `State` had other fields,
    // or damaged) is skipped too.
    match decode_snapshot(bytes) {
        Ok(state) if state.last_seq == seq => Ok(Some((seq, state, record_hash))),
        Ok(state) => {
            skip(&format!("it says seq {} inside", state.last_seq));
            Ok(None)
        }
        Err(error) => {
            skip(&format!("it is unreadable: {error}"));
            Ok(None)
        }
    }
}

/// Checks that `record` is the one expected next in the chain and decodes it.
pub fn check_link(
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
    /// Every stored snapshot, oldest first, checked against the chain and the fold.
    pub snapshots: Vec<SnapshotReport>,
}

impl VerifyReport {
    /// The snapshots that show tampering (or a bug): see [`SnapshotStatus::is_evidence`].
    pub fn suspicious_snapshots(&self) -> impl Iterator<Item = &SnapshotReport> {
        self.snapshots.iter().filter(|s| s.status.is_evidence())
    }
}

/// One stored snapshot as `events verify` found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotReport {
    pub seq: u64,
    pub status: SnapshotStatus,
}

/// What a stored snapshot is worth (audit L11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStatus {
    /// Signed by the server's key (or, without the key, bound to the log's hash) and equal
    /// to the fold of the log up to its seq.
    Ok,
    /// Equal to the fold, but unsigned (an older build's): never used at start.
    Unsigned,
    /// Signed, but not by the server's key or not over these bytes.
    BadSignature(String),
    /// Signed for another chain hash than the log's at its seq (or beyond the log's end).
    HeadMismatch,
    /// Decodes to another state than the fold of the log up to its seq (planted, or signed
    /// by someone who holds the key).
    DiffersFromLog,
    /// Damaged or from a build with another `State` shape: a cache miss, not evidence.
    Unreadable(String),
}

impl SnapshotStatus {
    /// Whether this is evidence of tampering rather than age or damage: the verdict is then
    /// not ok.
    pub fn is_evidence(&self) -> bool {
        matches!(
            self,
            SnapshotStatus::BadSignature(_)
                | SnapshotStatus::HeadMismatch
                | SnapshotStatus::DiffersFromLog
        )
    }

    /// A short word for reports: `ok`, `unsigned`, `bad signature`, `head mismatch`,
    /// `differs from the log`, `unreadable`.
    pub fn label(&self) -> &'static str {
        match self {
            SnapshotStatus::Ok => "ok",
            SnapshotStatus::Unsigned => "unsigned",
            SnapshotStatus::BadSignature(_) => "bad signature",
            SnapshotStatus::HeadMismatch => "head mismatch",
            SnapshotStatus::DiffersFromLog => "differs from the log",
            SnapshotStatus::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotStatus::BadSignature(detail) | SnapshotStatus::Unreadable(detail) => {
                write!(f, "{}: {detail}", self.label())
            }
            _ => f.write_str(self.label()),
        }
    }
}

/// Judges the stored `value` of the snapshot at `seq` against the log's chain hash at that
/// seq and `folded`, the fold of the log up to it (`None` for both when the log is shorter).
/// Without `trusted`, signatures are not checked (only the head binding). Pure.
pub fn snapshot_status(
    seq: u64,
    value: &[u8],
    record_hash: Option<&Digest>,
    folded: Option<&State>,
    trusted: Option<&VerifyingKey>,
) -> SnapshotStatus {
    let (authenticity, bytes) = authenticate(seq, value, record_hash, trusted);
    match authenticity {
        Authenticity::BadSignature(reason) => return SnapshotStatus::BadSignature(reason),
        Authenticity::HeadMismatch => return SnapshotStatus::HeadMismatch,
        Authenticity::Signed | Authenticity::NotChecked | Authenticity::Unsigned => {}
    }
    let state = match decode_snapshot(bytes) {
        Ok(state) => state,
        Err(error) => return SnapshotStatus::Unreadable(error.to_string()),
    };
    if folded != Some(&state) {
        return SnapshotStatus::DiffersFromLog;
    }
    match authenticity {
        Authenticity::Unsigned => SnapshotStatus::Unsigned,
        _ => SnapshotStatus::Ok,
    }
}

/// At most this many snapshots are checked by `verify_chain` (the disk store keeps three).
const MAX_SNAPSHOTS_CHECKED: usize = 64;

/// The seqs of the stored snapshots, oldest first.
fn snapshot_seqs(store: &dyn EventStore) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    let mut below = Some(u64::MAX);
    while let Some(upto) = below {
        let Some((seq, _)) = store.snapshot_at_or_before(upto)? else {
            break;
        };
        seqs.push(seq);
        if seqs.len() == MAX_SNAPSHOTS_CHECKED {
            break;
        }
        below = seq.checked_sub(1);
    }
    seqs.reverse();
    Ok(seqs)
}

/// Reads the snapshot at `seq` again and judges it (`None` if it was removed meanwhile).
fn check_stored_snapshot(
    store: &dyn EventStore,
    seq: u64,
    record_hash: Option<&Digest>,
    folded: Option<&State>,
    trusted: Option<&VerifyingKey>,
) -> Result<Option<SnapshotReport>, StoreError> {
    Ok(match store.snapshot_at_or_before(seq)? {
        Some((found, value)) if found == seq => Some(SnapshotReport {
            seq,
            status: snapshot_status(seq, &value, record_hash, folded, trusted),
        }),
        _ => None,
    })
}

/// Walks the whole chain: gap-free seqs, links, payload hashes, decodable envelopes,
/// monotonic times, and every checkpoint's hash and signature. Fails at the first bad record.
/// Then every stored snapshot is judged ([`snapshot_status`]): its signature, its head hash,
/// and that it equals the fold of the log up to its seq (so the log is folded up to the
/// newest snapshot on the way). Blocking: callers on a runtime use `spawn_blocking`.
pub fn verify_chain(
    store: &dyn EventStore,
    trusted: Option<&VerifyingKey>,
) -> Result<VerifyReport, StoreError> {
    // Listed before the walk: every snapshot is of a durable head, so all are within it.
    let snapshot_seqs = snapshot_seqs(store)?;
    let fold_upto = snapshot_seqs.last().copied().unwrap_or(0);
    let mut pending = snapshot_seqs.into_iter().peekable();
    let mut snapshots = Vec::new();
    let mut folded = State::default();
    while let Some(seq) = pending.next_if_eq(&0) {
        snapshots.extend(check_stored_snapshot(
            store,
            seq,
            Some(&Digest::default()),
            Some(&folded),
            trusted,
        )?);
    }
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
        if record.seq <= fold_upto {
            folded.apply(&envelope);
        }
        while let Some(seq) = pending.next_if_eq(&record.seq) {
            snapshots.extend(check_stored_snapshot(
                store,
                seq,
                Some(&prev_hash),
                Some(&folded),
                trusted,
            )?);
        }
        expected += 1;
    }
    // Snapshots beyond the end of the log.
    for seq in pending {
        snapshots.extend(check_stored_snapshot(store, seq, None, None, trusted)?);
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
        snapshots,
    })
}
