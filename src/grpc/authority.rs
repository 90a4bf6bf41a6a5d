//! The unix socket's `:authority` shim. grpc-go, dialing a bare socket path (as the Go
//! `headscale` CLI does), sends the percent-encoded path as `:authority`
//! (`%2Fvar%2Frun%2Fheadscale%2Fheadscale.sock`), which the `h2` crate refuses with
//! `PROTOCOL_ERROR` (hyperium/h2#487, still open). This wrapper sits between the socket and
//! the HTTP server: on an HTTP/2 connection it decodes each header block the client sends
//! (HEADERS + CONTINUATION, HPACK by `loona-hpack`), replaces an `:authority` that is not a
//! valid authority with `localhost`, and re-encodes the block for `h2` (its own HPACK
//! context, so both dynamic tables stay in step). Every other frame passes through
//! untouched; HTTP/1.1 connections pass through entirely. Nothing is trusted more than
//! before: the socket is local-trust already, and `h2` still checks everything else.
//!
//! Limits: a header frame is at most [`MAX_FRAME_BYTES`] (h2's and hyper's default
//! `SETTINGS_MAX_FRAME_SIZE`), a header block at most [`MAX_HEADER_BLOCK_BYTES`] encoded and
//! its decoded list at most [`MAX_HEADER_LIST_BYTES`]; over any of them, or on any HPACK or
//! framing error, the connection is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 client connection preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The largest frame payload the server accepts (`SETTINGS_MAX_FRAME_SIZE`, which hyper
/// leaves at the protocol's default).
pub const MAX_FRAME_BYTES: usize = 16_384;
/// The largest encoded header block (HEADERS plus its CONTINUATIONs).
pub const MAX_HEADER_BLOCK_BYTES: usize = 64 * 1024;
/// The largest decoded header list (RFC 7541 sizes: name + value + 32 per field); the
/// same bound the HTTP/2 server applies (`listener::HTTP2_MAX_HEADER_LIST_BYTES`).
pub const MAX_HEADER_LIST_BYTES: usize = crate::listener::HTTP2_MAX_HEADER_LIST_BYTES as usize;
/// The HPACK dynamic table size the server advertises (the protocol default).
const HPACK_TABLE_BYTES: usize = 4096;
/// What replaces an authority `h2` would refuse.
const LOCAL_AUTHORITY: &[u8] = b"localhost";

const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// A header block still waiting for its CONTINUATION frames.
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

enum Mode {
    /// Reading the first bytes: the HTTP/2 preface, or something else.
    Sniffing,
    /// HTTP/2: header blocks are rewritten.
    Http2,
    /// Not HTTP/2: bytes pass through.
    Passthrough,
}

/// The sans-I/O rewriter: client bytes in, bytes for the server out.
pub struct Rewriter {
    mode: Mode,
    decoder: loona_hpack::Decoder<'static>,
    encoder: loona_hpack::Encoder<'static>,
    open: Option<OpenBlock>,
    /// Payload bytes of the current non-header frame still to pass through.
    passing: usize,
}

impl Default for Rewriter {
    fn default() -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HPACK_TABLE_BYTES);
        Rewriter {
            mode: Mode::Sniffing,
            decoder,
            encoder: loona_hpack::Encoder::new(),
            open: None,
            passing: 0,
        }
    }
}

impl Rewriter {
    /// Consumes what it can of `input` (leaving an incomplete frame there) and appends what
    /// the server should read to `output`.
    pub fn feed(&mut self, input: &mut Vec<u8>, output: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        let result = self.feed_from(input, &mut at, output);
        input.drain(..at);
        result
    }

    fn feed_from(&mut self, input: &[u8], at: &mut usize, output: &mut Vec<u8>) -> io::Result<()> {
        loop {
            let rest = &input[*at..];
            match self.mode {
                Mode::Sniffing => {
                    let n = rest.len().min(PREFACE.len());
                    if rest[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return Ok(());
                    }
                    output.extend_from_slice(PREFACE);
                    *at += n;
                    self.mode = Mode::Http2;
                }
                Mode::Passthrough => {
                    output.extend_from_slice(rest);
                    *at = input.len();
                    return Ok(());
                }
                Mode::Http2 if self.passing > 0 => {
                    let n = rest.len().min(self.passing);
                    if n == 0 {
                        return Ok(());
                    }
                    output.extend_from_slice(&rest[..n]);
                    self.passing -= n;
                    *at += n;
                }
                Mode::Http2 => {
                    if rest.len() < 9 {
                        return Ok(());
                    }
                    let length = usize::from(rest[0]) << 16
                        | usize::from(rest[1]) << 8
                        | usize::from(rest[2]);
                    let kind = rest[3];
                    let flags = rest[4];
                    let stream =
                        u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
                    if kind != FRAME_HEADERS && kind != FRAME_CONTINUATION {
                        if self.open.is_some() {
                            return Err(invalid(
                                "a frame other than CONTINUATION inside a header block",
                            ));
                        }
                        output.extend_from_slice(&rest[..9]);
                        self.passing = length;
                        *at += 9;
                        continue;
                    }
                    if length > MAX_FRAME_BYTES {
                        return Err(invalid(format!(
                            "header frame of {length} bytes is over {MAX_FRAME_BYTES}"
                        )));
                    }
                    if rest.len() < 9 + length {
                        return Ok(());
                    }
                    let payload = &rest[9..9 + length];
                    *at += 9 + length;
                    self.header_frame(kind, flags, stream, payload, output)?;
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        output: &mut Vec<u8>,
    ) -> io::Result<()> {
        let fragment = if kind == FRAME_HEADERS {
            if self.open.is_some() {
                return Err(invalid("HEADERS inside an open header block"));
            }
            let mut fragment = payload;
            let mut padding = 0;
            if flags & FLAG_PADDED != 0 {
                let (&pad, rest) = fragment
                    .split_first()
                    .ok_or_else(|| invalid("empty padded HEADERS"))?;
                padding = usize::from(pad);
                fragment = rest;
            }
            if flags & FLAG_PRIORITY != 0 {
                fragment = fragment
                    .get(5..)
                    .ok_or_else(|| invalid("short HEADERS priority"))?;
            }
            let end = fragment
                .len()
                .checked_sub(padding)
                .ok_or_else(|| invalid("HEADERS padding too long"))?;
            self.open = Some(OpenBlock {
                stream,
                end_stream: flags & FLAG_END_STREAM != 0,
                block: Vec::new(),
            });
            &fragment[..end]
        } else {
            match &self.open {
                Some(open) if open.stream == stream => payload,
                _ => return Err(invalid("CONTINUATION without its HEADERS")),
            }
        };
        let open = self.open.as_mut().expect("opened above");
        if open.block.len() + fragment.len() > MAX_HEADER_BLOCK_BYTES {
            return Err(invalid(format!(
                "header block over {MAX_HEADER_BLOCK_BYTES} bytes"
            )));
        }
        open.block.extend_from_slice(fragment);
        if flags & FLAG_END_HEADERS != 0 {
            let open = self.open.take().expect("opened above");
            self.rewrite(open, output)?;
        }
        Ok(())
    }

    /// Decodes a complete block, mends `:authority`, and writes it re-encoded as HEADERS
    /// (+ CONTINUATION) frames.
    fn rewrite(&mut self, open: OpenBlock, output: &mut Vec<u8>) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        self.decoder
            .decode_with_cb(&open.block, |name, value| {
                size += name.len() + value.len() + 32;
                if size <= MAX_HEADER_LIST_BYTES {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| invalid(format!("HPACK: {e:?}")))?;
        if size > MAX_HEADER_LIST_BYTES {
            return Err(invalid(format!(
                "header list over {MAX_HEADER_LIST_BYTES} bytes"
            )));
        }
        for (name, value) in &mut fields {
            if name == b":authority"
                && axum::http::uri::Authority::try_from(value.as_slice()).is_err()
            {
                *value = LOCAL_AUTHORITY.to_vec();
            }
        }
        let block = self
            .encoder
            .encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = block.chunks(MAX_FRAME_BYTES).peekable();
        let mut kind = FRAME_HEADERS;
        let first_flags = if open.end_stream { FLAG_END_STREAM } else { 0 };
        let mut flags = first_flags;
        // An empty block still needs its HEADERS frame.
        let empty: &[u8] = &[];
        let mut next = chunks.next().or(Some(empty));
        while let Some(chunk) = next {
            next = chunks.next();
            if next.is_none() {
                flags |= FLAG_END_HEADERS;
            }
            let length = chunk.len() as u32;
            output.extend_from_slice(&length.to_be_bytes()[1..]);
            output.push(kind);
            output.push(flags);
            output.extend_from_slice(&open.stream.to_be_bytes());
            output.extend_from_slice(chunk);
            kind = FRAME_CONTINUATION;
            flags = 0;
        }
        Ok(())
    }
}

/// A stream whose incoming bytes go through a [`Rewriter`]; writes pass straight through.
pub struct AuthorityShim<S> {
    inner: S,
    rewriter: Rewriter,
    /// Client bytes not yet rewritten (at most one incomplete header block).
    input: Vec<u8>,
    /// Rewritten bytes not yet read by the server, from `read_at`.
    output: Vec<u8>,
    read_at: usize,
    eof: bool,
}

impl<S> AuthorityShim<S> {
    pub fn new(inner: S) -> AuthorityShim<S> {
        AuthorityShim {
            inner,
            rewriter: Rewriter::default(),
            input: Vec::new(),
            output: Vec::new(),
            read_at: 0,
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AuthorityShim<S> {
    /// Reads until the connection shows what it speaks: true after the HTTP/2 preface,
    /// false for anything else or an early end. What was read stays buffered for the server.
    pub async fn is_http2(&mut self) -> io::Result<bool> {
        use tokio::io::AsyncReadExt as _;
        while matches!(self.rewriter.mode, Mode::Sniffing) && !self.eof {
            let mut chunk = [0u8; 1024];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                self.eof = true;
            }
            self.input.extend_from_slice(&chunk[..n]);
            self.rewriter.feed(&mut self.input, &mut self.output)?;
        }
        Ok(matches!(self.rewriter.mode, Mode::Http2))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityShim<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.read_at);
                buf.put_slice(&this.output[this.read_at..this.read_at + n]);
                this.read_at += n;
                if this.read_at == this.output.len() {
                    this.output.clear();
                    this.read_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // An incomplete frame at the end is the server's to notice: it sees EOF.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if read.filled().is_empty() {
                this.eof = true;
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.rewriter.feed(&mut this.input, &mut this.output)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityShim<S> {
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

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame: 9-byte header and payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The frames in `bytes` (after the preface), as (kind, flags, stream, payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let length =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            out.push((bytes[3], bytes[4], stream, bytes[9..9 + length].to_vec()));
            bytes = &bytes[9 + length..];
        }
        out
    }

    /// What grpc-go sends for a unary call to a bare socket path.
    fn grpc_go_headers(path: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "%2Ftmp%2Fhs%2Fheadscale.sock"),
            ("content-type", "application/grpc"),
            ("user-agent", "grpc-go/1.81.1"),
            ("te", "trailers"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    fn encode(
        encoder: &mut loona_hpack::Encoder<'static>,
        fields: &[(Vec<u8>, Vec<u8>)],
    ) -> Vec<u8> {
        encoder.encode(fields.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
    }

    #[test]
    fn grpc_go_authority_becomes_localhost_and_everything_else_is_kept() {
        let mut client = loona_hpack::Encoder::new();
        let fields = grpc_go_headers("/headscale.v1.HeadscaleService/ListUsers");
        let block = encode(&mut client, &fields);
        // The block split over HEADERS (padded, with priority) and a CONTINUATION, as a
        // client may send it; then a DATA frame and a second request on the same context.
        let (first, second) = block.split_at(block.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(first);
        padded.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_PADDED | FLAG_PRIORITY,
            1,
            &padded,
        ));
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, second));
        input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
        let again = encode(
            &mut client,
            &grpc_go_headers("/headscale.v1.HeadscaleService/Health"),
        );
        input.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 3, &again));

        // Fed one byte at a time: nothing depends on how reads split the stream.
        let mut rewriter = Rewriter::default();
        let (mut pending, mut output) = (Vec::new(), Vec::new());
        for byte in input {
            pending.push(byte);
            rewriter.feed(&mut pending, &mut output).unwrap();
        }
        assert!(pending.is_empty());
        assert_eq!(&output[..PREFACE.len()], PREFACE);
        let frames = frames(&output[PREFACE.len()..]);
        let kinds: Vec<(u8, u8, u32)> = frames.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            vec![
                (0x4, 0, 0),
                (FRAME_HEADERS, FLAG_END_HEADERS, 1),
                (0x0, FLAG_END_STREAM, 1),
                (FRAME_HEADERS, FLAG_END_HEADERS, 3),
            ]
        );
        assert_eq!(frames[2].3, vec![0, 0, 0, 0, 0]);
        let mut server = loona_hpack::Decoder::new();
        for (index, path) in [(1, "ListUsers"), (3, "Health")] {
            let decoded = server.decode(&frames[index].3).unwrap();
            let mut expected = grpc_go_headers(&format!("/headscale.v1.HeadscaleService/{path}"));
            expected[3].1 = b"localhost".to_vec();
            assert_eq!(decoded, expected);
        }
    }

    #[test]
    fn a_valid_authority_and_http1_pass_unchanged() {
        let mut client = loona_hpack::Encoder::new();
        let mut fields = grpc_go_headers("/x");
        fields[3].1 = b"127.0.0.1:50443".to_vec();
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &encode(&mut client, &fields),
        ));
        let (mut rewriter, mut output) = (Rewriter::default(), Vec::new());
        rewriter.feed(&mut input, &mut output).unwrap();
        let frames = frames(&output[PREFACE.len()..]);
        assert_eq!(frames[0].1, FLAG_END_HEADERS | FLAG_END_STREAM);
        assert_eq!(
            loona_hpack::Decoder::new().decode(&frames[0].3).unwrap(),
            fields
        );

        let request = b"GET /api/v1/user HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec();
        let (mut rewriter, mut output) = (Rewriter::default(), Vec::new());
        rewriter.feed(&mut request.clone(), &mut output).unwrap();
        assert_eq!(output, request);
    }

    #[test]
    fn oversized_or_broken_header_blocks_close_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &vec![0x40; MAX_FRAME_BYTES + 1]));
        let error = Rewriter::default()
            .feed(&mut input, &mut Vec::new())
            .unwrap_err();
        assert!(error.to_string().contains("over"), "{error}");

        let mut input = PREFACE.to_vec();
        input.extend(frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            1,
            &[0xff, 0xff, 0xff, 0xff],
        ));
        assert!(Rewriter::default()
            .feed(&mut input, &mut Vec::new())
            .is_err());

        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        input.extend(frame(0x0, 0, 1, &[]));
        assert!(Rewriter::default()
            .feed(&mut input, &mut Vec::new())
            .is_err());

        // CONTINUATIONs cannot grow a block without bound.
        let mut rewriter = Rewriter::default();
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_HEADERS, 0, 1, &[0x82]));
        let mut result = Ok(());
        for _ in 0..(MAX_HEADER_BLOCK_BYTES / MAX_FRAME_BYTES + 2) {
            input.extend(frame(
                FRAME_CONTINUATION,
                0,
                1,
                &vec![0x82; MAX_FRAME_BYTES],
            ));
            result = rewriter.feed(&mut input, &mut Vec::new());
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err());
    }
}
