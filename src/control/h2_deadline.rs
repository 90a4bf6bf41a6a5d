//! Read deadlines for HTTP/2 inside the Noise channel (audit H2). hyper's HTTP/2 server has
//! no header timeout: a peer that stops in the middle of the preface, of a frame, or of a
//! header block (a HEADERS frame without END_HEADERS, then no CONTINUATION) stalls the whole
//! connection, holding its buffers, with nothing to end it but keep-alive pings.
//!
//! [`FrameTracker`] follows the frame boundaries of the client's byte stream (sans-I/O);
//! [`H2ReadDeadline`] wraps the stream and fails reads with `TimedOut` when a *unit* (the
//! preface, one frame, or one whole header block across its CONTINUATION frames) is not
//! complete [`UNIT_DEADLINE`] after it started. Between units the connection may be silent
//! (the session's idle timeout in `upgrade.rs` covers that); a whole request body is bounded
//! by `machine.rs`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A preface, frame or header block must be complete this long after it started.
pub const UNIT_DEADLINE: Duration = Duration::from_secs(10);

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;

/// Where the client's byte stream is in HTTP/2's framing.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    preface_left: usize,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    payload_left: usize,
    in_header_block: bool,
    /// Units completed so far (a fresh unit gets a fresh deadline).
    completed: u64,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            preface_left: PREFACE_LEN,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            payload_left: 0,
            in_header_block: false,
            completed: 0,
        }
    }
}

impl FrameTracker {
    /// Follows `bytes`, the next bytes the client sent.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(bytes.len());
                self.preface_left -= n;
                bytes = &bytes[n..];
                if self.preface_left == 0 {
                    self.completed += 1;
                }
                continue;
            }
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                if self.payload_left == 0 && !self.in_header_block {
                    self.completed += 1;
                }
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let h = &self.header;
                self.payload_left = (h[0] as usize) << 16 | (h[1] as usize) << 8 | h[2] as usize;
                let (kind, flags) = (h[3], h[4]);
                match kind {
                    HEADERS | PUSH_PROMISE => self.in_header_block = flags & END_HEADERS == 0,
                    CONTINUATION if flags & END_HEADERS != 0 => self.in_header_block = false,
                    _ => {}
                }
                if self.payload_left == 0 && !self.in_header_block {
                    self.completed += 1;
                }
            }
        }
    }

    /// True while a unit has started and is not complete.
    pub fn mid_unit(&self) -> bool {
        self.preface_left > 0
            || self.header_len > 0
            || self.payload_left > 0
            || self.in_header_block
    }

    pub fn completed(&self) -> u64 {
        self.completed
    }
}

/// The client's byte stream with a deadline on each unit (see the module doc).
pub struct H2ReadDeadline<IO> {
    inner: IO,
    tracker: FrameTracker,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> H2ReadDeadline<IO> {
    /// The preface is the first unit: its deadline starts now.
    pub fn new(inner: IO, limit: Duration) -> Self {
        H2ReadDeadline {
            inner,
            tracker: FrameTracker::default(),
            limit,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for H2ReadDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => {
                let completed = this.tracker.completed();
                this.tracker.feed(&buf.filled()[before..]);
                if !this.tracker.mid_unit() {
                    this.deadline = None;
                } else if this.deadline.is_none() || this.tracker.completed() != completed {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.limit)));
                }
            }
            Poll::Ready(Err(_)) => this.deadline = None,
            Poll::Pending => {
                if let Some(deadline) = this.deadline.as_mut() {
                    if std::future::Future::poll(deadline.as_mut(), cx).is_ready() {
                        return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                    }
                }
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for H2ReadDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn units_are_the_preface_frames_and_whole_header_blocks() {
        let mut tracker = FrameTracker::default();
        assert!(tracker.mid_unit());
        tracker.feed(&PREFACE[..10]);
        assert!(tracker.mid_unit());
        tracker.feed(&PREFACE[10..]);
        assert!(!tracker.mid_unit());
        // A frame, byte by byte: mid-unit until its last byte.
        let settings = frame(0x4, 0, &[0; 6]);
        for byte in &settings[..settings.len() - 1] {
            tracker.feed(&[*byte]);
            assert!(tracker.mid_unit());
        }
        tracker.feed(&settings[settings.len() - 1..]);
        assert!(!tracker.mid_unit());
        // HEADERS without END_HEADERS: the block stays open across its frames.
        tracker.feed(&frame(HEADERS, 0, b"abc"));
        assert!(tracker.mid_unit());
        tracker.feed(&frame(CONTINUATION, 0, b"def"));
        assert!(tracker.mid_unit());
        tracker.feed(&frame(CONTINUATION, END_HEADERS, b"ghi"));
        assert!(!tracker.mid_unit());
        // An empty frame and a HEADERS with END_HEADERS are whole units at once.
        let before = tracker.completed();
        let mut two = frame(0x4, 0x1, &[]);
        two.extend(frame(HEADERS, END_HEADERS, b"x"));
        tracker.feed(&two);
        assert!(!tracker.mid_unit());
        assert_eq!(tracker.completed(), before + 2);
    }

    proptest::proptest! {
        /// However the bytes are split into reads, the tracker ends in the same place.
        #[test]
        fn splitting_never_changes_the_outcome(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..20),
        ) {
            let mut whole = FrameTracker::default();
            whole.feed(PREFACE);
            whole.feed(&bytes);
            let mut pieces = FrameTracker::default();
            pieces.feed(PREFACE);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= bytes.len()).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                pieces.feed(&bytes[start..cut]);
                start = cut;
            }
            proptest::prop_assert_eq!(whole.mid_unit(), pieces.mid_unit());
            proptest::prop_assert_eq!(whole.completed(), pieces.completed());
            proptest::prop_assert_eq!(whole.payload_left, pieces.payload_left);
        }
    }

    #[tokio::test]
    async fn a_stalled_unit_times_out_and_silence_between_units_does_not() {
        let limit = Duration::from_millis(100);
        let (client, server) = tokio::io::duplex(1024);
        let mut reader = H2ReadDeadline::new(server, limit);
        let mut client = client;
        client.write_all(PREFACE).await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(reader.read(&mut buf).await.unwrap(), PREFACE.len());
        // Silent between units: no deadline.
        let silent = tokio::time::timeout(limit * 3, reader.read(&mut buf)).await;
        assert!(silent.is_err(), "a read ended while idle between units");
        // Half a frame header, then nothing: TimedOut.
        client.write_all(&[0, 0, 3, HEADERS]).await.unwrap();
        assert_eq!(reader.read(&mut buf).await.unwrap(), 4);
        let started = tokio::time::Instant::now();
        let error = reader.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < limit * 5);
    }

    #[tokio::test]
    async fn a_missing_preface_times_out() {
        let (_client, server) = tokio::io::duplex(64);
        let mut reader = H2ReadDeadline::new(server, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let error = reader.read(&mut buf).await.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }
}
