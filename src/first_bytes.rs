//! A read deadline for the first bytes of a connection: used inside the Noise channel, where
//! hyper's HTTP/2 server has no deadline for the preface (a peer that finishes the handshake
//! but never starts HTTP/2). The public listener serves HTTP/1.1 only, whose header timeout
//! runs from the first byte, so it needs no such wrapper (`listener.rs`).

use std::time::Duration;

/// Fails reads with `TimedOut` when the first bytes of a connection (enough to tell HTTP/1
/// from HTTP/2) have not arrived by the deadline: hyper's header timeout only starts after
/// the protocol is known, so a silent peer would otherwise be held forever.
pub struct FirstBytesDeadline<IO> {
    inner: IO,
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    read: usize,
}

/// The HTTP/2 preface is 24 bytes; any HTTP/1 request line is decided well before that.
const FIRST_BYTES: usize = 24;

impl<IO> FirstBytesDeadline<IO> {
    pub fn new(inner: IO, limit: Duration) -> Self {
        FirstBytesDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            read: 0,
        }
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for FirstBytesDeadline<IO> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Some(deadline) = this.deadline.as_mut() {
            match &result {
                Poll::Ready(Ok(())) => {
                    this.read += buf.filled().len() - before;
                    if this.read >= FIRST_BYTES || buf.filled().len() == before {
                        this.deadline = None;
                    }
                }
                Poll::Ready(Err(_)) => this.deadline = None,
                Poll::Pending => {
                    if std::future::Future::poll(deadline.as_mut(), cx).is_ready() {
                        return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
                    }
                }
            }
        }
        result
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for FirstBytesDeadline<IO> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
