//! TS2021's Noise layer, sans-I/O: the responder side of the `Noise_IK_25519_ChaChaPoly_BLAKE2s`
//! handshake (via `snow`), and the record layer written by hand because Tailscale encodes the
//! transport nonce counter big-endian (stock Noise libraries use little-endian). Functions
//! take and return bytes; the tokio driver around them lives elsewhere.

use crate::core::keys::MachineKey;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use x25519_dalek::{PublicKey, StaticSecret};

const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// `ver u16 | type u8 | len u16 | e[32] | s[48] | tag[16]`.
pub const INITIATION_LEN: usize = 101;
/// `type u8 | len u16 | e[32] | tag[16]`.
pub const RESPONSE_LEN: usize = 51;
/// Largest transport frame, header included.
pub const MAX_FRAME_LEN: usize = 4096;
const HEADER_LEN: usize = 3;
const TAG_LEN: usize = 16;
/// Largest plaintext in one record: 4096 − 3 header − 16 tag.
pub const MAX_PLAINTEXT_LEN: usize = MAX_FRAME_LEN - HEADER_LEN - TAG_LEN;

const TYPE_INITIATION: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
const TYPE_ERROR: u8 = 3;
const TYPE_RECORD: u8 = 4;

/// Why a Noise exchange failed. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    #[error("handshake initiation is {0} bytes, expected 101")]
    InitiationLength(usize),
    #[error(
        "handshake initiation has type {kind} and length {len}, expected type 1 and length 96"
    )]
    InitiationHeader { kind: u8, len: u16 },
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("peer key is a low-order point (non-contributory Diffie-Hellman)")]
    NonContributory,
    #[error("frame of type {0}, expected a transport record (4)")]
    UnexpectedFrame(u8),
    #[error("frame of {0} bytes exceeds the 4096-byte limit")]
    FrameTooLarge(usize),
    #[error("record does not decrypt (wrong key, reordered or tampered)")]
    Decrypt,
    #[error("nonce counter exhausted")]
    Exhausted,
}

/// The outcome of a successful handshake.
pub struct Accepted {
    /// The client's capability version (the initiation's version field).
    pub version: u16,
    /// The client's machine key (its Noise static key).
    pub machine_key: MachineKey,
    /// The 51 bytes to send back.
    pub response: [u8; RESPONSE_LEN],
    pub sender: RecordSender,
    pub receiver: RecordReceiver,
}

/// An error frame (type 3) with a cleartext message, for failures before the handshake ends.
pub fn error_frame(message: &str) -> Vec<u8> {
    let bytes = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
    let mut frame = vec![TYPE_ERROR];
    frame.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    frame.extend_from_slice(bytes);
    frame
}

fn contributory(secret: &StaticSecret, peer: [u8; 32]) -> Result<(), NoiseError> {
    if secret
        .diffie_hellman(&PublicKey::from(peer))
        .was_contributory()
    {
        Ok(())
    } else {
        Err(NoiseError::NonContributory)
    }
}

/// Answers a client's initiation as the responder holding `server_key`.
pub fn accept(server_key: &StaticSecret, initiation: &[u8]) -> Result<Accepted, NoiseError> {
    if initiation.len() != INITIATION_LEN {
        return Err(NoiseError::InitiationLength(initiation.len()));
    }
    let version = u16::from_be_bytes([initiation[0], initiation[1]]);
    let kind = initiation[2];
    let len = u16::from_be_bytes([initiation[3], initiation[4]]);
    if kind != TYPE_INITIATION || len != 96 {
        return Err(NoiseError::InitiationHeader { kind, len });
    }
    let mut client_ephemeral = [0u8; 32];
    client_ephemeral.copy_from_slice(&initiation[5..37]);
    contributory(server_key, client_ephemeral)?;

    let handshake_error = |e: snow::Error| NoiseError::Handshake(e.to_string());
    let prologue = format!("Tailscale Control Protocol v{version}");
    let params = PROTOCOL_NAME.parse().map_err(handshake_error)?;
    let mut responder = snow::Builder::new(params)
        .local_private_key(server_key.as_bytes())
        .map_err(handshake_error)?
        .prologue(prologue.as_bytes())
        .map_err(handshake_error)?
        .build_responder()
        .map_err(handshake_error)?;
    let mut payload = [0u8; 64];
    responder
        .read_message(&initiation[5..], &mut payload)
        .map_err(handshake_error)?;
    let machine: [u8; 32] = responder
        .get_remote_static()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| NoiseError::Handshake("no client static key".into()))?;
    contributory(server_key, machine)?;
    let mut message = [0u8; 48];
    let written = responder
        .write_message(&[], &mut message)
        .map_err(handshake_error)?;
    if written != 48 {
        return Err(NoiseError::Handshake(format!(
            "response of {written} bytes"
        )));
    }
    let mut response = [0u8; RESPONSE_LEN];
    response[0] = TYPE_RESPONSE;
    response[1..3].copy_from_slice(&48u16.to_be_bytes());
    response[3..].copy_from_slice(&message);
    // k1 protects client→server, k2 server→client.
    let (k1, k2) = responder.dangerously_get_raw_split();
    Ok(Accepted {
        version,
        machine_key: MachineKey(machine),
        response,
        sender: RecordSender(Cipher::new(k2)),
        receiver: RecordReceiver {
            cipher: Cipher::new(k1),
            buffer: Vec::new(),
        },
    })
}

/// The client's side of the record layer from the split keys (`k1` client→server, `k2`
/// server→client): used by our own control client and tests.
pub fn client_records(k1: [u8; 32], k2: [u8; 32]) -> (RecordSender, RecordReceiver) {
    (
        RecordSender(Cipher::new(k1)),
        RecordReceiver {
            cipher: Cipher::new(k2),
            buffer: Vec::new(),
        },
    )
}

/// The initiator's first message with Tailscale's 5-byte header, for our own client.
pub fn initiation(
    client_key: &StaticSecret,
    server_public: &[u8; 32],
    version: u16,
) -> Result<(snow::HandshakeState, Vec<u8>), NoiseError> {
    let handshake_error = |e: snow::Error| NoiseError::Handshake(e.to_string());
    let mut initiator = snow::Builder::new(PROTOCOL_NAME.parse().map_err(handshake_error)?)
        .local_private_key(client_key.as_bytes())
        .map_err(handshake_error)?
        .remote_public_key(server_public)
        .map_err(handshake_error)?
        .prologue(format!("Tailscale Control Protocol v{version}").as_bytes())
        .map_err(handshake_error)?
        .build_initiator()
        .map_err(handshake_error)?;
    let mut message = [0u8; 96];
    initiator
        .write_message(&[], &mut message)
        .map_err(handshake_error)?;
    let mut bytes = version.to_be_bytes().to_vec();
    bytes.push(TYPE_INITIATION);
    bytes.extend_from_slice(&96u16.to_be_bytes());
    bytes.extend_from_slice(&message);
    Ok((initiator, bytes))
}

/// Completes the client side with the server's 51-byte response; returns the record layer.
pub fn finish_initiation(
    mut initiator: snow::HandshakeState,
    response: &[u8],
) -> Result<(RecordSender, RecordReceiver), NoiseError> {
    if response.len() != RESPONSE_LEN || response[..3] != [TYPE_RESPONSE, 0, 48] {
        return Err(NoiseError::Handshake("malformed handshake response".into()));
    }
    let mut empty = [0u8; 16];
    initiator
        .read_message(&response[3..], &mut empty)
        .map_err(|e| NoiseError::Handshake(e.to_string()))?;
    let (k1, k2) = initiator.dangerously_get_raw_split();
    Ok(client_records(k1, k2))
}

/// One direction's key and nonce counter.
struct Cipher {
    aead: ChaCha20Poly1305,
    counter: u64,
}

impl Cipher {
    fn new(key: [u8; 32]) -> Cipher {
        Cipher {
            aead: ChaCha20Poly1305::new(Key::from_slice(&key)),
            counter: 0,
        }
    }

    /// Tailscale's nonce: four zero bytes, then the counter big-endian.
    fn next_nonce(&mut self) -> Result<Nonce, NoiseError> {
        if self.counter == u64::MAX {
            return Err(NoiseError::Exhausted);
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Ok(*Nonce::from_slice(&nonce))
    }
}

/// Encrypts outgoing bytes into transport records.
pub struct RecordSender(Cipher);

impl RecordSender {
    /// Seals `plaintext` into as many ≤ 4096-byte records as it needs, appended to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            let nonce = self.0.next_nonce()?;
            let ciphertext = self
                .0
                .aead
                .encrypt(
                    &nonce,
                    Payload {
                        msg: chunk,
                        aad: &[],
                    },
                )
                .map_err(|_| NoiseError::Exhausted)?;
            out.push(TYPE_RECORD);
            out.extend_from_slice(&(ciphertext.len() as u16).to_be_bytes());
            out.extend_from_slice(&ciphertext);
        }
        Ok(())
    }
}

/// Reassembles and decrypts incoming records from an arbitrary byte stream.
pub struct RecordReceiver {
    cipher: Cipher,
    buffer: Vec<u8>,
}

impl RecordReceiver {
    /// Feeds received bytes; appends every complete record's plaintext to `out`. After an
    /// error the receiver is unusable, as in Tailscale's implementation.
    pub fn open(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        self.buffer.extend_from_slice(bytes);
        let mut used = 0;
        while self.buffer.len() - used >= HEADER_LEN {
            let header = &self.buffer[used..used + HEADER_LEN];
            if header[0] != TYPE_RECORD {
                return Err(NoiseError::UnexpectedFrame(header[0]));
            }
            let len = u16::from_be_bytes([header[1], header[2]]) as usize;
            if HEADER_LEN + len > MAX_FRAME_LEN {
                return Err(NoiseError::FrameTooLarge(HEADER_LEN + len));
            }
            if self.buffer.len() - used < HEADER_LEN + len {
                break;
            }
            let ciphertext = &self.buffer[used + HEADER_LEN..used + HEADER_LEN + len];
            let nonce = self.cipher.next_nonce()?;
            let plaintext = self
                .cipher
                .aead
                .decrypt(
                    &nonce,
                    Payload {
                        msg: ciphertext,
                        aad: &[],
                    },
                )
                .map_err(|_| NoiseError::Decrypt)?;
            out.extend_from_slice(&plaintext);
            used += HEADER_LEN + len;
        }
        self.buffer.drain(..used);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side as `tailscaled` does it: snow initiator with the same prologue.
    fn client_initiation(
        server_public: &[u8; 32],
        version: u16,
    ) -> (snow::HandshakeState, Vec<u8>, [u8; 32]) {
        let client_static = StaticSecret::from([7u8; 32]);
        let (initiator, bytes) = initiation(&client_static, server_public, version).unwrap();
        (initiator, bytes, PublicKey::from(&client_static).to_bytes())
    }

    #[test]
    fn handshake_and_big_endian_records_interoperate() {
        let server = StaticSecret::from([9u8; 32]);
        let server_public = PublicKey::from(&server).to_bytes();
        let (mut initiator, initiation, client_public) = client_initiation(&server_public, 142);
        let mut accepted = accept(&server, &initiation).unwrap();
        assert_eq!(accepted.version, 142);
        assert_eq!(accepted.machine_key, MachineKey(client_public));
        assert_eq!(&accepted.response[..3], &[2, 0, 48]);
        let mut empty = [0u8; 16];
        initiator
            .read_message(&accepted.response[3..], &mut empty)
            .unwrap();
        let (k1, k2) = initiator.dangerously_get_raw_split();

        // Server → client: three records, the third sealed with counter 2 big-endian.
        let mut wire = Vec::new();
        let big = vec![0xab; MAX_PLAINTEXT_LEN + 10];
        accepted.sender.seal(b"hello", &mut wire).unwrap();
        accepted.sender.seal(&big, &mut wire).unwrap();
        let client_rx = ChaCha20Poly1305::new(Key::from_slice(&k2));
        let mut pos = 0;
        let mut plaintext = Vec::new();
        for counter in 0u64..3 {
            let len = u16::from_be_bytes([wire[pos + 1], wire[pos + 2]]) as usize;
            assert!(HEADER_LEN + len <= MAX_FRAME_LEN);
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            let ct = &wire[pos + 3..pos + 3 + len];
            plaintext.extend(client_rx.decrypt(Nonce::from_slice(&nonce), ct).unwrap());
            pos += 3 + len;
        }
        assert_eq!(pos, wire.len());
        assert_eq!(&plaintext[..5], b"hello");
        assert_eq!(&plaintext[5..], &big[..]);

        // Client → server, delivered one byte at a time.
        let client_tx = ChaCha20Poly1305::new(Key::from_slice(&k1));
        let mut frames = Vec::new();
        for (counter, message) in [b"one".as_slice(), b"two", b"three"]
            .into_iter()
            .enumerate()
        {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(counter as u64).to_be_bytes());
            let ct = client_tx
                .encrypt(Nonce::from_slice(&nonce), message)
                .unwrap();
            frames.push(TYPE_RECORD);
            frames.extend_from_slice(&(ct.len() as u16).to_be_bytes());
            frames.extend_from_slice(&ct);
        }
        let mut received = Vec::new();
        for byte in &frames {
            accepted
                .receiver
                .open(std::slice::from_ref(byte), &mut received)
                .unwrap();
        }
        assert_eq!(received, b"onetwothree");
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        let server = StaticSecret::from([9u8; 32]);
        let server_public = PublicKey::from(&server).to_bytes();
        assert_eq!(
            accept(&server, &[0; 10]).err(),
            Some(NoiseError::InitiationLength(10))
        );
        let (_, mut initiation, _) = client_initiation(&server_public, 142);
        initiation[2] = 9;
        assert!(matches!(
            accept(&server, &initiation),
            Err(NoiseError::InitiationHeader { .. })
        ));
        // A different prologue version than the client used: authentication fails.
        let (_, mut initiation, _) = client_initiation(&server_public, 142);
        initiation[1] = 143;
        assert!(matches!(
            accept(&server, &initiation),
            Err(NoiseError::Handshake(_))
        ));
        // A low-order ephemeral key is refused before any Noise work.
        let (_, mut initiation, _) = client_initiation(&server_public, 142);
        initiation[5..37].fill(0);
        assert_eq!(
            accept(&server, &initiation).err(),
            Some(NoiseError::NonContributory)
        );

        let (_, initiation, _) = client_initiation(&server_public, 142);
        let mut accepted = accept(&server, &initiation).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            accepted.receiver.open(&[4, 0x10, 0], &mut out).err(),
            Some(NoiseError::FrameTooLarge(4099))
        );
        let (_, initiation, _) = client_initiation(&server_public, 142);
        let mut accepted = accept(&server, &initiation).unwrap();
        assert_eq!(
            accepted.receiver.open(&[2, 0, 0], &mut out).err(),
            Some(NoiseError::UnexpectedFrame(2))
        );
        let (_, initiation, _) = client_initiation(&server_public, 142);
        let mut accepted = accept(&server, &initiation).unwrap();
        let garbage = [
            4u8, 0, 17, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
        ];
        assert_eq!(
            accepted.receiver.open(&garbage, &mut out).err(),
            Some(NoiseError::Decrypt)
        );
        assert_eq!(error_frame("no"), vec![3, 0, 2, b'n', b'o']);
    }
}
