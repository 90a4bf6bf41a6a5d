//! The byte layout of stored events and snapshots, and the hash chain over them. Pure
//! functions only (encode, decode, hash), so they can be fuzzed and property-tested apart
//! from any backend.
//!
//! Record value: `version u8 | prev_hash [32] | payload_hash [32] | payload`, where payload
//! is the bincode encoding of an `Envelope`. The chain hash of record n is
//! `sha256(seq_be || prev_hash || payload_hash)`: it covers the stored bytes through their
//! hash, which leaves room to redact a payload later while the chain still verifies.

use crate::core::event::SCHEMA_VERSION;
use crate::core::keys::Digest;
use crate::core::{Envelope, State};
use sha2::{Digest as _, Sha256};

/// Bytes before the payload.
pub const RECORD_HEADER_LEN: usize = 1 + 32 + 32;
/// A single event larger than this is refused: events are small facts, never blobs.
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;
/// Snapshots may be large (a whole tailnet), but not unbounded.
pub const MAX_SNAPSHOT_LEN: usize = 1 << 30;

/// What can be wrong with stored bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record is {0} bytes, shorter than its {RECORD_HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("unknown schema version {0}")]
    UnknownVersion(u8),
    #[error("payload does not match its hash")]
    PayloadHashMismatch,
    #[error("payload is {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("cannot decode: {0}")]
    Malformed(String),
    #[error("envelope says seq {found}, stored at seq {expected}")]
    SeqMismatch { expected: u64, found: u64 },
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn sha256(bytes: &[u8]) -> Digest {
    Digest(Sha256::digest(bytes).into())
}

/// One event as stored, with its link to the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: u64,
    pub version: u8,
    pub prev_hash: Digest,
    pub payload_hash: Digest,
    pub payload: Vec<u8>,
}

impl StoredRecord {
    /// Encodes `envelope` as the record following `prev_hash`.
    pub fn encode(envelope: &Envelope, prev_hash: Digest) -> Result<StoredRecord, DecodeError> {
        let payload = bincode::serde::encode_to_vec(envelope, bincode_config())
            .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        Ok(StoredRecord {
            seq: envelope.seq,
            version: SCHEMA_VERSION,
            prev_hash,
            payload_hash: sha256(&payload),
            payload,
        })
    }

    /// The chain hash of this record; the next record's `prev_hash`.
    pub fn hash(&self) -> Digest {
        let mut hasher = Sha256::new();
        hasher.update(self.seq.to_be_bytes());
        hasher.update(self.prev_hash.0);
        hasher.update(self.payload_hash.0);
        Digest(hasher.finalize().into())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(RECORD_HEADER_LEN + self.payload.len());
        bytes.push(self.version);
        bytes.extend_from_slice(&self.prev_hash.0);
        bytes.extend_from_slice(&self.payload_hash.0);
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// Parses stored bytes and checks the payload against its hash.
    pub fn from_bytes(seq: u64, bytes: &[u8]) -> Result<StoredRecord, DecodeError> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(DecodeError::Truncated(bytes.len()));
        }
        let version = bytes[0];
        if version != SCHEMA_VERSION {
            return Err(DecodeError::UnknownVersion(version));
        }
        let payload = &bytes[RECORD_HEADER_LEN..];
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLarge(payload.len()));
        }
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&bytes[1..33]);
        let mut payload_hash = [0u8; 32];
        payload_hash.copy_from_slice(&bytes[33..65]);
        if sha256(payload).0 != payload_hash {
            return Err(DecodeError::PayloadHashMismatch);
        }
        Ok(StoredRecord {
            seq,
            version,
            prev_hash: Digest(prev_hash),
            payload_hash: Digest(payload_hash),
            payload: payload.to_vec(),
        })
    }

    /// Decodes the envelope (upcasting older schema versions here once there are any).
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        let (envelope, read): (Envelope, usize) = bincode::serde::decode_from_slice(
            &self.payload,
            bincode_config().with_limit::<MAX_PAYLOAD_LEN>(),
        )
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if read != self.payload.len() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the envelope",
                self.payload.len() - read
            )));
        }
        if envelope.seq != self.seq {
            return Err(DecodeError::SeqMismatch {
                expected: self.seq,
                found: envelope.seq,
            });
        }
        Ok(envelope)
    }
}

/// Encodes envelopes as consecutive records chained from `prev_hash` (tests, tools, golden
/// logs; the engine chains as it decides).
pub fn encode_chain(
    envelopes: &[Envelope],
    mut prev_hash: Digest,
) -> Result<Vec<StoredRecord>, DecodeError> {
    envelopes
        .iter()
        .map(|envelope| {
            let record = StoredRecord::encode(envelope, prev_hash)?;
            prev_hash = record.hash();
            Ok(record)
        })
        .collect()
}

/// Snapshot bytes: `version u8 | bincode(State)`.
pub fn encode_snapshot(state: &State) -> Result<Vec<u8>, DecodeError> {
    let mut bytes = vec![SCHEMA_VERSION];
    bincode::serde::encode_into_std_write(state, &mut bytes, bincode_config())
        .map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(bytes)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<State, DecodeError> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(DecodeError::Truncated(0));
    };
    if version != SCHEMA_VERSION {
        return Err(DecodeError::UnknownVersion(version));
    }
    if body.len() > MAX_SNAPSHOT_LEN {
        return Err(DecodeError::TooLarge(body.len()));
    }
    let config = bincode_config().with_limit::<MAX_SNAPSHOT_LEN>();
    // Length prefixes come from the bytes: `Capped` keeps them from sizing allocations.
    struct CappedState;
    impl<'de> serde::de::DeserializeSeed<'de> for CappedState {
        type Value = State;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<State, D::Error> {
            <State as serde::Deserialize>::deserialize(super::capped::Capped(d))
        }
    }
    // Backstop: a decoder bug must not take the server down; a snapshot is only a cache.
    let decoded = std::panic::catch_unwind(|| {
        bincode::serde::seed_decode_from_slice(CappedState, body, config)
    })
    .map_err(|_| DecodeError::Malformed("the snapshot decoder panicked".into()))?;
    let (state, read): (State, usize) =
        decoded.map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if read != body.len() {
        return Err(DecodeError::Malformed(
            "trailing bytes after the snapshot".into(),
        ));
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_length_prefixes_in_a_snapshot_are_errors_not_panics() {
        let good = encode_snapshot(&State::default()).unwrap();
        // version, last_seq 0, last_at 0, then the users map's length prefix.
        assert_eq!(&good[1..4], &[0, 0, 0]);
        for prefix in [
            vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 1],
            vec![0xfc, 0xff, 0xff, 0xff, 0x0f],
        ] {
            let mut bytes = good[..3].to_vec();
            bytes.extend_from_slice(&prefix);
            bytes.extend_from_slice(&good[4..]);
            assert!(decode_snapshot(&bytes).is_err(), "{prefix:?}");
        }
        let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/snapshot/");
        for name in [
            "crash-imbl-map-alloc-abort",
            "crash-imbl-map-capacity-overflow",
        ] {
            let bytes = std::fs::read(format!("{corpus}{name}")).unwrap();
            assert!(decode_snapshot(&bytes).is_err(), "{name}");
        }
        assert_eq!(decode_snapshot(&good).unwrap(), State::default());
    }
}
