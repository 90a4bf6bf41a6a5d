//! The DERP frame codec, sans I/O: a frame is a 1-byte type, a 4-byte big-endian payload
//! length and the payload. Decoding checks every length before anything is allocated by it:
//! per-type limits (client info ≤ 256 KiB, packets ≤ 64 KiB, pings 8..=1000 bytes) and 1 MiB
//! for any frame. Bad input is an error, never a panic (fuzzed: `fuzz/`).

/// The 8 bytes "DERP🔑" that open the ServerKey frame.
pub const MAGIC: [u8; 8] = *b"DERP\xf0\x9f\x94\x91";
/// Type byte + big-endian u32 length.
pub const HEADER_LEN: usize = 5;
pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
/// Payload bytes of one relayed packet.
pub const MAX_PACKET_SIZE: usize = 64 * 1024;
/// A sealed ClientInfo (key, nonce, box) may not exceed this.
pub const MAX_CLIENT_INFO_LEN: usize = 256 * 1024;
/// Any frame larger than this ends the connection.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// Pings carry 8 bytes; the Go server accepts up to 1000 and echoes the first 8.
pub const PING_LEN: usize = 8;
pub const MAX_PING_LEN: usize = 1000;
/// The protocol version we speak (v2: received packets carry the source key).
pub const PROTOCOL_VERSION: u32 = 2;
/// Disco packets start with "TS💬"; the server treats them specially for unknown peers.
pub const DISCO_MAGIC: [u8; 6] = *b"TS\xf0\x9f\x92\xac";

/// A public key as it travels in frames.
pub type Key = [u8; KEY_LEN];

/// Frame type bytes.
pub mod kind {
    pub const SERVER_KEY: u8 = 0x01;
    pub const CLIENT_INFO: u8 = 0x02;
    pub const SERVER_INFO: u8 = 0x03;
    pub const SEND_PACKET: u8 = 0x04;
    pub const RECV_PACKET: u8 = 0x05;
    pub const KEEP_ALIVE: u8 = 0x06;
    pub const NOTE_PREFERRED: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const PEER_PRESENT: u8 = 0x09;
    pub const FORWARD_PACKET: u8 = 0x0a;
    pub const WATCH_CONNS: u8 = 0x10;
    pub const CLOSE_PEER: u8 = 0x11;
    pub const PING: u8 = 0x12;
    pub const PONG: u8 = 0x13;
    pub const HEALTH: u8 = 0x14;
    pub const RESTARTING: u8 = 0x15;
}

/// Why a peer is gone (PeerGone's reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerGoneReason {
    Disconnected,
    NotHere,
    Other(u8),
}

impl PeerGoneReason {
    fn byte(self) -> u8 {
        match self {
            PeerGoneReason::Disconnected => 0x00,
            PeerGoneReason::NotHere => 0x01,
            PeerGoneReason::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> PeerGoneReason {
        match b {
            0x00 => PeerGoneReason::Disconnected,
            0x01 => PeerGoneReason::NotHere,
            other => PeerGoneReason::Other(other),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of type {kind:#04x} is {len} bytes, more than the {max} allowed")]
    TooLong { kind: u8, len: usize, max: usize },
    #[error("frame of type {kind:#04x} has a bad length {len}")]
    BadLength { kind: u8, len: usize },
    #[error("ServerKey frame does not start with the DERP magic")]
    BadMagic,
}

/// The header of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub len: usize,
}

/// The largest payload a frame of `kind` may declare. Checked before reading the payload.
pub fn max_payload(kind: u8) -> usize {
    match kind {
        kind::CLIENT_INFO => MAX_CLIENT_INFO_LEN,
        kind::SEND_PACKET | kind::RECV_PACKET => KEY_LEN + MAX_PACKET_SIZE,
        kind::FORWARD_PACKET => 2 * KEY_LEN + MAX_PACKET_SIZE,
        kind::PING | kind::PONG => MAX_PING_LEN,
        kind::NOTE_PREFERRED => 1,
        kind::KEEP_ALIVE | kind::WATCH_CONNS => 0,
        _ => MAX_FRAME_LEN,
    }
}

/// Parses and checks a 5-byte header.
pub fn parse_header(bytes: [u8; HEADER_LEN]) -> Result<Header, FrameError> {
    let kind = bytes[0];
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let max = max_payload(kind);
    if len > max {
        return Err(FrameError::TooLong { kind, len, max });
    }
    Ok(Header { kind, len })
}

/// A complete frame at the start of a buffer: its header, its payload and the bytes it takes.
pub type SplitFrame<'a> = (Header, &'a [u8], usize);

/// Splits the first complete frame off `buf`: `Ok(None)` when more bytes are needed.
pub fn split_frame(buf: &[u8]) -> Result<Option<SplitFrame<'_>>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = parse_header(*head)?;
    let end = HEADER_LEN + header.len;
    match buf.get(HEADER_LEN..end) {
        Some(payload) => Ok(Some((header, payload, end))),
        None => Ok(None),
    }
}

/// Encodes one frame. `payload` must respect `max_payload(kind)` (callers build it).
pub fn encode(kind: u8, payload: &[&[u8]]) -> Vec<u8> {
    let len: usize = payload.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    out.push(kind);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    for part in payload {
        out.extend_from_slice(part);
    }
    out
}

fn key_at(payload: &[u8], at: usize) -> Option<Key> {
    payload.get(at..at + KEY_LEN)?.try_into().ok()
}

/// A frame a client sends to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame<'a> {
    /// Client public key, 24-byte nonce, NaCl box of the JSON ClientInfo.
    ClientInfo {
        key: Key,
        nonce: [u8; NONCE_LEN],
        sealed: &'a [u8],
    },
    SendPacket {
        dst: Key,
        packet: &'a [u8],
    },
    NotePreferred(bool),
    Ping([u8; PING_LEN]),
    Pong([u8; PING_LEN]),
    /// Any other type (mesh frames included): read and thrown away.
    Other(u8),
}

impl<'a> ClientFrame<'a> {
    /// Decodes the payload of a frame whose header passed `parse_header`.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<ClientFrame<'a>, FrameError> {
        let bad = || FrameError::BadLength {
            kind,
            len: payload.len(),
        };
        if payload.len() > max_payload(kind) {
            return Err(FrameError::TooLong {
                kind,
                len: payload.len(),
                max: max_payload(kind),
            });
        }
        Ok(match kind {
            kind::CLIENT_INFO => {
                let key = key_at(payload, 0).ok_or_else(bad)?;
                let nonce = payload
                    .get(KEY_LEN..KEY_LEN + NONCE_LEN)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(bad)?;
                ClientFrame::ClientInfo {
                    key,
                    nonce,
                    sealed: &payload[KEY_LEN + NONCE_LEN..],
                }
            }
            kind::SEND_PACKET => ClientFrame::SendPacket {
                dst: key_at(payload, 0).ok_or_else(bad)?,
                packet: &payload[KEY_LEN..],
            },
            kind::NOTE_PREFERRED => match payload {
                [b] => ClientFrame::NotePreferred(*b != 0),
                _ => return Err(bad()),
            },
            kind::PING | kind::PONG => {
                let data = payload.first_chunk::<PING_LEN>().copied().ok_or_else(bad)?;
                if kind == kind::PING {
                    ClientFrame::Ping(data)
                } else {
                    ClientFrame::Pong(data)
                }
            }
            other => ClientFrame::Other(other),
        })
    }

    /// The encoded frame (used by clients and tests).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ClientFrame::ClientInfo { key, nonce, sealed } => {
                encode(kind::CLIENT_INFO, &[key, nonce, sealed])
            }
            ClientFrame::SendPacket { dst, packet } => encode(kind::SEND_PACKET, &[dst, packet]),
            ClientFrame::NotePreferred(home) => encode(kind::NOTE_PREFERRED, &[&[u8::from(*home)]]),
            ClientFrame::Ping(data) => encode(kind::PING, &[data]),
            ClientFrame::Pong(data) => encode(kind::PONG, &[data]),
            ClientFrame::Other(kind) => encode(*kind, &[]),
        }
    }
}

/// A frame the server sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    /// The server's public key (after the magic). Extra trailing bytes are tolerated.
    ServerKey(Key),
    /// Nonce + NaCl box of the JSON ServerInfo.
    ServerInfo {
        nonce: [u8; NONCE_LEN],
        sealed: &'a [u8],
    },
    RecvPacket {
        src: Key,
        packet: &'a [u8],
    },
    KeepAlive,
    PeerGone {
        key: Key,
        reason: PeerGoneReason,
    },
    Ping([u8; PING_LEN]),
    Pong([u8; PING_LEN]),
    Other(u8),
}

impl<'a> ServerFrame<'a> {
    /// Decodes the payload of a frame whose header passed `parse_header`.
    pub fn decode(kind: u8, payload: &'a [u8]) -> Result<ServerFrame<'a>, FrameError> {
        let bad = || FrameError::BadLength {
            kind,
            len: payload.len(),
        };
        if payload.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLong {
                kind,
                len: payload.len(),
                max: MAX_FRAME_LEN,
            });
        }
        Ok(match kind {
            kind::SERVER_KEY => {
                let magic = payload.get(..MAGIC.len()).ok_or_else(bad)?;
                if magic != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                ServerFrame::ServerKey(key_at(payload, MAGIC.len()).ok_or_else(bad)?)
            }
            kind::SERVER_INFO => ServerFrame::ServerInfo {
                nonce: payload
                    .get(..NONCE_LEN)
                    .and_then(|n| n.try_into().ok())
                    .ok_or_else(bad)?,
                sealed: &payload[NONCE_LEN..],
            },
            kind::RECV_PACKET => {
                if payload.len() > KEY_LEN + MAX_PACKET_SIZE {
                    return Err(bad());
                }
                ServerFrame::RecvPacket {
                    src: key_at(payload, 0).ok_or_else(bad)?,
                    packet: &payload[KEY_LEN..],
                }
            }
            kind::KEEP_ALIVE => ServerFrame::KeepAlive,
            kind::PEER_GONE => ServerFrame::PeerGone {
                key: key_at(payload, 0).ok_or_else(bad)?,
                // Old servers left the reason out.
                reason: PeerGoneReason::from_byte(payload.get(KEY_LEN).copied().unwrap_or(0)),
            },
            kind::PING | kind::PONG => {
                let data = payload.first_chunk::<PING_LEN>().copied().ok_or_else(bad)?;
                if kind == kind::PING {
                    ServerFrame::Ping(data)
                } else {
                    ServerFrame::Pong(data)
                }
            }
            other => ServerFrame::Other(other),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            ServerFrame::ServerKey(key) => encode(kind::SERVER_KEY, &[&MAGIC, key]),
            ServerFrame::ServerInfo { nonce, sealed } => {
                encode(kind::SERVER_INFO, &[nonce, sealed])
            }
            ServerFrame::RecvPacket { src, packet } => encode(kind::RECV_PACKET, &[src, packet]),
            ServerFrame::KeepAlive => encode(kind::KEEP_ALIVE, &[]),
            ServerFrame::PeerGone { key, reason } => {
                encode(kind::PEER_GONE, &[key, &[reason.byte()]])
            }
            ServerFrame::Ping(data) => encode(kind::PING, &[data]),
            ServerFrame::Pong(data) => encode(kind::PONG, &[data]),
            ServerFrame::Other(kind) => encode(*kind, &[]),
        }
    }
}

/// Whether a relayed packet is a disco message.
pub fn is_disco(packet: &[u8]) -> bool {
    packet.starts_with(&DISCO_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip_client(frame: ClientFrame<'_>) {
        let bytes = frame.encode();
        let (header, payload, used) = split_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(ClientFrame::decode(header.kind, payload).unwrap(), frame);
    }

    fn roundtrip_server(frame: ServerFrame<'_>) {
        let bytes = frame.encode();
        let (header, payload, used) = split_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(ServerFrame::decode(header.kind, payload).unwrap(), frame);
    }

    #[test]
    fn magic_is_derp_and_the_key_emoji() {
        assert_eq!(MAGIC, [0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);
        assert_eq!(&MAGIC[4..], "🔑".as_bytes());
        assert_eq!(&DISCO_MAGIC[2..], "💬".as_bytes());
    }

    #[test]
    fn frames_round_trip() {
        let packet = vec![7u8; 1200];
        roundtrip_client(ClientFrame::ClientInfo {
            key: [1; 32],
            nonce: [2; 24],
            sealed: b"sealed",
        });
        roundtrip_client(ClientFrame::SendPacket {
            dst: [3; 32],
            packet: &packet,
        });
        roundtrip_client(ClientFrame::NotePreferred(true));
        roundtrip_client(ClientFrame::NotePreferred(false));
        roundtrip_client(ClientFrame::Ping(*b"12345678"));
        roundtrip_client(ClientFrame::Pong(*b"abcdefgh"));
        roundtrip_client(ClientFrame::Other(kind::WATCH_CONNS));
        roundtrip_server(ServerFrame::ServerKey([4; 32]));
        roundtrip_server(ServerFrame::ServerInfo {
            nonce: [5; 24],
            sealed: b"box",
        });
        roundtrip_server(ServerFrame::RecvPacket {
            src: [6; 32],
            packet: &packet,
        });
        roundtrip_server(ServerFrame::KeepAlive);
        roundtrip_server(ServerFrame::PeerGone {
            key: [8; 32],
            reason: PeerGoneReason::NotHere,
        });
        roundtrip_server(ServerFrame::Ping(*b"pingpong"));
        roundtrip_server(ServerFrame::Other(kind::HEALTH));
    }

    #[test]
    fn header_layout_is_type_then_big_endian_length() {
        let bytes = ClientFrame::Ping(*b"12345678").encode();
        assert_eq!(&bytes[..5], &[0x12, 0, 0, 0, 8]);
        let key = ServerFrame::ServerKey([9; 32]).encode();
        assert_eq!(&key[..5], &[0x01, 0, 0, 0, 40]);
        assert_eq!(&key[5..13], &MAGIC);
    }

    #[test]
    fn truncated_input_asks_for_more() {
        let bytes = ClientFrame::SendPacket {
            dst: [3; 32],
            packet: b"hello",
        }
        .encode();
        for cut in 0..bytes.len() {
            assert_eq!(split_frame(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let (_, _, used) = split_frame(&two).unwrap().unwrap();
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn limits_are_checked_from_the_header() {
        let header = |kind: u8, len: u32| {
            let mut h = [kind, 0, 0, 0, 0];
            h[1..].copy_from_slice(&len.to_be_bytes());
            h
        };
        let packet_max = (KEY_LEN + MAX_PACKET_SIZE) as u32;
        assert!(parse_header(header(kind::SEND_PACKET, packet_max)).is_ok());
        assert!(parse_header(header(kind::SEND_PACKET, packet_max + 1)).is_err());
        assert!(parse_header(header(kind::CLIENT_INFO, 256 * 1024)).is_ok());
        assert!(parse_header(header(kind::CLIENT_INFO, 256 * 1024 + 1)).is_err());
        assert!(parse_header(header(0x7f, 1024 * 1024)).is_ok());
        assert!(parse_header(header(0x7f, 1024 * 1024 + 1)).is_err());
        assert!(parse_header(header(kind::PING, 1001)).is_err());
        assert!(parse_header(header(kind::NOTE_PREFERRED, 2)).is_err());
        assert!(parse_header(header(0xff, u32::MAX)).is_err());
        // Before the payload arrives, too.
        assert!(split_frame(&header(kind::PING, 5000)).is_err());
    }

    #[test]
    fn short_payloads_are_errors() {
        assert!(ClientFrame::decode(kind::SEND_PACKET, &[0; 31]).is_err());
        assert!(ClientFrame::decode(kind::CLIENT_INFO, &[0; 55]).is_err());
        assert!(ClientFrame::decode(kind::PING, &[0; 7]).is_err());
        assert!(ClientFrame::decode(kind::NOTE_PREFERRED, &[]).is_err());
        assert!(ServerFrame::decode(kind::SERVER_KEY, &[0; 40]).is_err());
        assert!(ServerFrame::decode(kind::SERVER_KEY, &MAGIC).is_err());
        assert!(ServerFrame::decode(kind::PEER_GONE, &[0; 31]).is_err());
        // A long ping is echoed by its first 8 bytes.
        let mut long = b"12345678".to_vec();
        long.extend_from_slice(&[0; 100]);
        assert_eq!(
            ClientFrame::decode(kind::PING, &long).unwrap(),
            ClientFrame::Ping(*b"12345678")
        );
        // An old server's PeerGone without a reason.
        assert_eq!(
            ServerFrame::decode(kind::PEER_GONE, &[1; 32]).unwrap(),
            ServerFrame::PeerGone {
                key: [1; 32],
                reason: PeerGoneReason::Disconnected
            }
        );
    }
}
