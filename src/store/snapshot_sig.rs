//! Snapshots bound to the hash chain (audit L11). A snapshot is a cache of `fold(log[..=S])`;
//! on its own nothing ties its bytes to the log, so anyone who can write the data directory
//! could plant one (say, with an extra API-key hash) and the server would start from it while
//! `events verify` still found a clean chain. So each snapshot written by the engine carries an
//! ed25519 signature, by the checkpoint signing key, over (S, the chain hash of record S,
//! sha256 of the snapshot bytes); start-up uses a snapshot only when that signature verifies
//! against the server's key and the hash matches the log's record S, and otherwise replays
//! the log from the start (a snapshot is a cache: never a reason to refuse to start).
//!
//! Stored value: `snapshot bytes | public key [32] | head hash [32] | signature [64] | "HSg1"`
//! (the store may wrap it further, e.g. `DiskStore`'s checksum seal). Values without the
//! marker are older unsigned snapshots: read, never trusted. Older builds see the trailer as
//! "trailing bytes" and replay, so a downgrade is safe too.
//!
//! **Limit:** the signing key lives in the same directory (`checkpoint_signing.key`). An
//! attacker who can read it can re-sign a planted snapshot (and checkpoints). That attacker
//! is caught only by the background comparison of the snapshot with a full replay after
//! start (`engine.rs`) and by `events verify`, which compares every snapshot with the fold of
//! the log. The real remedy, out of scope here, is a signing key kept outside the data
//! directory (an HSM or a separate signer) or checkpoint heads published to a witness.
//!
//! Pure functions only.

use super::checkpoint::verify_signature;
use super::record::sha256;
use crate::core::keys::Digest;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Domain separation from checkpoint signatures and anything else the key signs.
const CONTEXT: &[u8] = b"headscale-rs snapshot v0\0";
/// Ends a signed snapshot value.
const MARKER: &[u8; 4] = b"HSg1";
const TRAILER_LEN: usize = 32 + 32 + 64 + MARKER.len();

/// The signature part of a signed snapshot value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSignature {
    /// The verifying key that made the signature.
    pub public_key: [u8; 32],
    /// The chain hash of record S, as the signer saw it.
    pub head_hash: Digest,
    pub signature: [u8; 64],
}

fn message(seq: u64, head_hash: &Digest, bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 8 + 32 + 32);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(&head_hash.0);
    msg.extend_from_slice(&sha256(bytes).0);
    msg
}

/// The value to store for the snapshot `bytes` of the state at `seq`, whose record has the
/// chain hash `head_hash`.
pub fn sign(key: &SigningKey, seq: u64, head_hash: Digest, bytes: &[u8]) -> Vec<u8> {
    let signature = key.sign(&message(seq, &head_hash, bytes));
    let mut value = Vec::with_capacity(bytes.len() + TRAILER_LEN);
    value.extend_from_slice(bytes);
    value.extend_from_slice(&key.verifying_key().to_bytes());
    value.extend_from_slice(&head_hash.0);
    value.extend_from_slice(&signature.to_bytes());
    value.extend_from_slice(MARKER);
    value
}

/// Splits a stored value into the snapshot bytes and its signature (`None`: an unsigned,
/// older value, returned whole).
pub fn split(value: &[u8]) -> (&[u8], Option<SnapshotSignature>) {
    let Some(at) = value.len().checked_sub(TRAILER_LEN) else {
        return (value, None);
    };
    let (bytes, trailer) = value.split_at(at);
    if &trailer[TRAILER_LEN - MARKER.len()..] != MARKER {
        return (value, None);
    }
    let part = |from: usize, to: usize| &trailer[from..to];
    let signature = SnapshotSignature {
        public_key: part(0, 32).try_into().expect("32 bytes"),
        head_hash: Digest(part(32, 64).try_into().expect("32 bytes")),
        signature: part(64, 128).try_into().expect("64 bytes"),
    };
    (bytes, Some(signature))
}

/// Whether a stored snapshot may stand in for the log up to its seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// Signed by the trusted key over its seq, the log's hash at that seq and its bytes.
    Signed,
    /// Signed and bound to the log's hash, but no trusted key was given to check it.
    NotChecked,
    /// No signature (written by an older build, or planted).
    Unsigned,
    BadSignature(String),
    /// The signed head hash is not the log's record hash at that seq (or that record is
    /// missing): the snapshot belongs to another log.
    HeadMismatch,
}

/// Checks the value of the snapshot at `seq` against the log's chain hash of record `seq`
/// (`None` when the log has no such record) and, when given, the trusted key. Returns the
/// verdict and the snapshot bytes to decode.
pub fn authenticate<'a>(
    seq: u64,
    value: &'a [u8],
    record_hash: Option<&Digest>,
    trusted: Option<&VerifyingKey>,
) -> (Authenticity, &'a [u8]) {
    let (bytes, signature) = split(value);
    let Some(signature) = signature else {
        return (Authenticity::Unsigned, bytes);
    };
    let verdict = match trusted {
        Some(key) => match verify_signature(
            key,
            &signature.public_key,
            &signature.signature,
            &message(seq, &signature.head_hash, bytes),
        ) {
            Err(reason) => Authenticity::BadSignature(reason),
            Ok(()) if record_hash != Some(&signature.head_hash) => Authenticity::HeadMismatch,
            Ok(()) => Authenticity::Signed,
        },
        None if record_hash != Some(&signature.head_hash) => Authenticity::HeadMismatch,
        None => Authenticity::NotChecked,
    };
    (verdict, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_values_verify_and_bind_seq_head_and_bytes() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let trusted = key.verifying_key();
        let head = Digest([1; 32]);
        let value = sign(&key, 42, head, b"state bytes");
        let (verdict, bytes) = authenticate(42, &value, Some(&head), Some(&trusted));
        assert_eq!(
            (verdict, bytes),
            (Authenticity::Signed, &b"state bytes"[..])
        );
        assert_eq!(
            authenticate(42, &value, Some(&head), None).0,
            Authenticity::NotChecked
        );
        // Another seq, another head, other bytes, another key: never `Signed`.
        assert!(matches!(
            authenticate(43, &value, Some(&head), Some(&trusted)).0,
            Authenticity::BadSignature(_)
        ));
        assert_eq!(
            authenticate(42, &value, Some(&Digest([2; 32])), Some(&trusted)).0,
            Authenticity::HeadMismatch
        );
        assert_eq!(
            authenticate(42, &value, None, Some(&trusted)).0,
            Authenticity::HeadMismatch
        );
        let mut changed = value.clone();
        changed[0] ^= 1;
        assert!(matches!(
            authenticate(42, &changed, Some(&head), Some(&trusted)).0,
            Authenticity::BadSignature(_)
        ));
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let resigned = sign(&other, 42, head, b"state bytes");
        assert!(matches!(
            authenticate(42, &resigned, Some(&head), Some(&trusted)).0,
            Authenticity::BadSignature(_)
        ));
    }

    #[test]
    fn unsigned_and_short_values_are_returned_whole() {
        for value in [&b""[..], b"short", &[0u8; 200][..]] {
            assert_eq!(
                authenticate(1, value, None, None),
                (Authenticity::Unsigned, value)
            );
        }
    }
}
