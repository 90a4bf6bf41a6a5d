//! The server's optional early payload (protocol notes §2.4): after the handshake, the first
//! nine plaintext bytes decide. `FF FF FF 'T' 'S'` + big-endian u32 length + that much JSON
//! (`tailcfg.EarlyNoise`) is consumed and kept; anything else is the start of HTTP/2 and is
//! replayed to the layer above. Decided lazily on the first read, as the Go client does, so
//! a server that waits for our HTTP/2 preface first is not deadlocked.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub const EARLY_PAYLOAD_MAGIC: [u8; 5] = [0xff, 0xff, 0xff, b'T', b'S'];
/// The Go client refuses more.
pub const MAX_EARLY_PAYLOAD_BYTES: usize = 10 << 20;

/// Where the payload lands once read (`None` until then, or if the server sent none).
pub type EarlyPayload = Arc<Mutex<Option<serde_json::Value>>>;

enum Phase {
    Detect {
        head: [u8; 9],
        filled: usize,
    },
    Payload {
        remaining: usize,
        json: Vec<u8>,
    },
    Replay {
        head: [u8; 9],
        pos: usize,
        len: usize,
    },
    Pass,
    Failed(String),
}

pub struct EarlyPayloadStream<IO> {
    inner: IO,
    phase: Phase,
    payload: EarlyPayload,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

impl<IO> EarlyPayloadStream<IO> {
    pub fn new(inner: IO, payload: EarlyPayload) -> Self {
        EarlyPayloadStream {
            inner,
            phase: Phase::Detect {
                head: [0; 9],
                filled: 0,
            },
            payload,
        }
    }
}

fn parse_payload(json: &[u8]) -> Result<serde_json::Value, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("early payload is not JSON: {e}"))?;
    if let Some(challenge) = value.get("nodeKeyChallenge") {
        let ok = challenge
            .as_str()
            .and_then(|s| s.strip_prefix("chalpub:"))
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !ok {
            return Err("early payload has a malformed nodeKeyChallenge".into());
        }
    }
    Ok(value)
}

impl<IO: AsyncRead + Unpin> AsyncRead for EarlyPayloadStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Failed(message) => return Poll::Ready(Err(invalid(message.clone()))),
                Phase::Replay { head, pos, len } => {
                    let n = (*len - *pos).min(buf.remaining());
                    buf.put_slice(&head[*pos..*pos + n]);
                    *pos += n;
                    if *pos == *len {
                        this.phase = Phase::Pass;
                    }
                    return Poll::Ready(Ok(()));
                }
                Phase::Detect { head, filled } => {
                    let mut read = ReadBuf::new(&mut head[*filled..]);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let got = read.filled().len();
                    if got == 0 {
                        // EOF before nine bytes: hand over whatever came.
                        if *filled == 0 {
                            this.phase = Phase::Pass;
                            return Poll::Ready(Ok(()));
                        }
                        this.phase = Phase::Replay {
                            head: *head,
                            pos: 0,
                            len: *filled,
                        };
                        continue;
                    }
                    *filled += got;
                    if *filled < 9 {
                        continue;
                    }
                    if head[..5] == EARLY_PAYLOAD_MAGIC {
                        let len = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) as usize;
                        if len > MAX_EARLY_PAYLOAD_BYTES {
                            this.phase =
                                Phase::Failed(format!("early payload of {len} bytes is too large"));
                            continue;
                        }
                        this.phase = Phase::Payload {
                            remaining: len,
                            json: Vec::with_capacity(len.min(64 * 1024)),
                        };
                    } else {
                        this.phase = Phase::Replay {
                            head: *head,
                            pos: 0,
                            len: 9,
                        };
                    }
                }
                Phase::Payload { remaining, json } => {
                    if *remaining > 0 {
                        let mut chunk = vec![0u8; (*remaining).min(16 * 1024)];
                        let mut read = ReadBuf::new(&mut chunk);
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                        let got = read.filled().len();
                        if got == 0 {
                            this.phase =
                                Phase::Failed("stream ended inside the early payload".into());
                            continue;
                        }
                        json.extend_from_slice(read.filled());
                        *remaining -= got;
                        continue;
                    }
                    match parse_payload(json) {
                        Ok(value) => {
                            *this.payload.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                            this.phase = Phase::Pass;
                        }
                        Err(message) => this.phase = Phase::Failed(message),
                    }
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for EarlyPayloadStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_through(wire: Vec<u8>) -> (io::Result<Vec<u8>>, Option<serde_json::Value>) {
        let (mut server, client) = tokio::io::duplex(64);
        tokio::spawn(async move {
            // Dribble it out in small writes to exercise every phase boundary.
            for chunk in wire.chunks(3) {
                let _ = server.write_all(chunk).await;
            }
        });
        let payload = EarlyPayload::default();
        let mut stream = EarlyPayloadStream::new(client, payload.clone());
        let mut out = Vec::new();
        let result = stream.read_to_end(&mut out).await.map(|_| out);
        let value = payload.lock().unwrap().clone();
        (result, value)
    }

    #[tokio::test]
    async fn payload_is_taken_and_http2_bytes_pass() {
        let json = br#"{"nodeKeyChallenge":"chalpub:0000000000000000000000000000000000000000000000000000000000000001"}"#;
        let mut wire = EARLY_PAYLOAD_MAGIC.to_vec();
        wire.extend_from_slice(&(json.len() as u32).to_be_bytes());
        wire.extend_from_slice(json);
        wire.extend_from_slice(b"\x00\x00\x12\x04rest-of-http2");
        let (bytes, value) = read_through(wire).await;
        assert_eq!(bytes.unwrap(), b"\x00\x00\x12\x04rest-of-http2");
        assert!(value.unwrap()["nodeKeyChallenge"].is_string());

        // No magic: all bytes replayed, nothing recorded; short streams too.
        let (bytes, value) =
            read_through(b"\x00\x00\x12\x04\x00\x00\x00\x00\x00settings".to_vec()).await;
        assert_eq!(
            bytes.unwrap(),
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00settings"
        );
        assert!(value.is_none());
        let (bytes, _) = read_through(b"abc".to_vec()).await;
        assert_eq!(bytes.unwrap(), b"abc");

        // Bad JSON, a bad key, or a huge length poisons the stream.
        let mut bad = EARLY_PAYLOAD_MAGIC.to_vec();
        bad.extend_from_slice(&3u32.to_be_bytes());
        bad.extend_from_slice(b"{x}");
        assert!(read_through(bad).await.0.is_err());
        let json = br#"{"nodeKeyChallenge":"chalpub:zz"}"#;
        let mut bad = EARLY_PAYLOAD_MAGIC.to_vec();
        bad.extend_from_slice(&(json.len() as u32).to_be_bytes());
        bad.extend_from_slice(json);
        assert!(read_through(bad).await.0.is_err());
        let mut huge = EARLY_PAYLOAD_MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_through(huge).await.0.is_err());
    }
}
