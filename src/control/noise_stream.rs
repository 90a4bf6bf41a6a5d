//! A byte stream over a Noise-encrypted connection: `AsyncRead`/`AsyncWrite` around the
//! record layer in `noise.rs`, so HTTP/2 can run on top. Buffers are bounded: reads hold at
//! most one chunk of ciphertext, writes at most `MAX_PENDING_WRITE_BYTES` of records.

use super::noise::{NoiseError, RecordReceiver, RecordSender, MAX_PLAINTEXT_LEN};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Sealed bytes waiting for the socket; a writer that gets ahead waits.
const MAX_PENDING_WRITE_BYTES: usize = 64 * 1024;

fn to_io(error: NoiseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

pub struct NoiseStream<IO> {
    inner: IO,
    sender: RecordSender,
    receiver: RecordReceiver,
    plaintext: Vec<u8>,
    plaintext_pos: usize,
    pending: Vec<u8>,
    pending_pos: usize,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> NoiseStream<IO> {
    pub fn new(inner: IO, sender: RecordSender, receiver: RecordReceiver) -> Self {
        NoiseStream {
            inner,
            sender,
            receiver,
            plaintext: Vec::new(),
            plaintext_pos: 0,
            pending: Vec::new(),
            pending_pos: 0,
        }
    }

    /// The transport underneath (tests use it to write raw, unsealed bytes).
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.inner
    }

    /// Writes out sealed records until none are left or the socket is full.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_pos < self.pending.len() {
            let written = ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_pos..])
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending_pos += written;
        }
        self.pending.clear();
        self.pending_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for NoiseStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plaintext_pos < this.plaintext.len() {
                let available = &this.plaintext[this.plaintext_pos..];
                let n = available.len().min(buf.remaining());
                buf.put_slice(&available[..n]);
                this.plaintext_pos += n;
                if this.plaintext_pos == this.plaintext.len() {
                    this.plaintext.clear();
                    this.plaintext_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(())); // EOF
            }
            this.receiver
                .open(read.filled(), &mut this.plaintext)
                .map_err(to_io)?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NoiseStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() - this.pending_pos >= MAX_PENDING_WRITE_BYTES {
            ready!(this.poll_drain(cx))?;
        }
        let n = data.len().min(4 * MAX_PLAINTEXT_LEN);
        this.sender
            .seal(&data[..n], &mut this.pending)
            .map_err(to_io)?;
        // Start sending; whatever the socket does not take yet stays pending.
        if let Poll::Ready(Err(error)) = this.poll_drain(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
