//! Signed checkpoints: every so often, and at clean shutdown, the head of the chain
//! (`seq`, `hash`, `at`) is signed with the server's ed25519 key, so that `events verify` can
//! show the log was not rewritten behind the server's back since then.

use crate::core::keys::Digest;
use crate::core::Timestamp;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation, so a checkpoint signature can never be mistaken for anything else.
const CONTEXT: &[u8] = b"headscale-rs checkpoint v0\0";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub hash: Digest,
    pub at: Timestamp,
    /// The verifying key that made the signature (32 bytes).
    pub public_key: [u8; 32],
    /// ed25519 signature (64 bytes) over the context, seq, hash and at.
    pub signature: Vec<u8>,
}

fn message(seq: u64, hash: &Digest, at: Timestamp) -> Vec<u8> {
    let mut msg = Vec::with_capacity(CONTEXT.len() + 8 + 32 + 8);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg.extend_from_slice(&hash.0);
    msg.extend_from_slice(&at.unix_ms().to_be_bytes());
    msg
}

impl Checkpoint {
    pub fn sign(key: &SigningKey, seq: u64, hash: Digest, at: Timestamp) -> Checkpoint {
        let signature = key.sign(&message(seq, &hash, at));
        Checkpoint {
            seq,
            hash,
            at,
            public_key: key.verifying_key().to_bytes(),
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// Checks the signature against `trusted` (the server's own key).
    pub fn verify(&self, trusted: &VerifyingKey) -> Result<(), String> {
        verify_signature(
            trusted,
            &self.public_key,
            &self.signature,
            &message(self.seq, &self.hash, self.at),
        )
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .expect("a checkpoint always encodes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard().with_limit::<1024>())
            .map(|(c, _)| c)
            .map_err(|e| format!("cannot decode checkpoint: {e}"))
    }
}

/// Checks an ed25519 `signature` over `msg` that names `public_key` as its signer against
/// `trusted` (the server's own key). Shared by checkpoints and signed snapshots.
pub(crate) fn verify_signature(
    trusted: &VerifyingKey,
    public_key: &[u8; 32],
    signature: &[u8],
    msg: &[u8],
) -> Result<(), String> {
    if *public_key != trusted.to_bytes() {
        return Err("signed by a different key than the server's".into());
    }
    let bytes: [u8; 64] = signature
        .try_into()
        .map_err(|_| "signature is not 64 bytes".to_string())?;
    trusted
        .verify(msg, &Signature::from_bytes(&bytes))
        .map_err(|_| "bad signature".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_tamper() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let cp = Checkpoint::sign(&key, 42, Digest([1; 32]), Timestamp(5));
        let back = Checkpoint::from_bytes(&cp.to_bytes()).unwrap();
        assert_eq!(back, cp);
        assert!(back.verify(&key.verifying_key()).is_ok());
        let mut forged = cp.clone();
        forged.seq = 43;
        assert!(forged.verify(&key.verifying_key()).is_err());
        let other = SigningKey::from_bytes(&[8u8; 32]);
        assert!(cp.verify(&other.verifying_key()).is_err());
    }
}
