//! Map-stream framing on the client side: `[u32 little-endian length][zstd frame]` repeated
//! (protocol notes §6.1). Bytes arrive in arbitrary pieces; `FrameReader` cuts them into
//! frames, refuses any frame over the limit before buffering it, and decompresses with the
//! same limit (a small frame cannot expand past it either).

use std::io::Read;

/// The largest frame we accept, compressed or decompressed.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("map frame of {0} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("map stream ended inside a frame")]
    Truncated,
    #[error("map frame does not decompress: {0}")]
    Decompress(String),
}

/// Reassembles frames from the body's data chunks.
pub struct FrameReader {
    buffer: Vec<u8>,
    limit: usize,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new(MAX_FRAME_BYTES)
    }
}

impl FrameReader {
    pub fn new(limit: usize) -> FrameReader {
        FrameReader {
            buffer: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete frame's body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge(len));
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        let body = self.buffer[4..4 + len].to_vec();
        self.buffer.drain(..4 + len);
        Ok(Some(body))
    }

    /// Call at the end of the stream: leftover bytes mean a cut frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Decompresses one zstd frame, refusing output over `limit`.
pub fn decompress(
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
    body: &[u8],
    limit: usize,
) -> Result<Vec<u8>, FrameError> {
    let error = |e: std::io::Error| FrameError::Decompress(e.to_string());
    // Frames that declare their size (ours do) take the fast path with a reused context.
    if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(body) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > limit {
            return Err(FrameError::TooLarge(size));
        }
        if decompressor.is_none() {
            *decompressor = Some(zstd::bulk::Decompressor::new().map_err(error)?);
        }
        if let Some(d) = decompressor.as_mut() {
            return d.decompress(body, size).map_err(error);
        }
    }
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(body)
        .map_err(error)?
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(error)?;
    if out.len() > limit {
        return Err(FrameError::TooLarge(out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn frames_split_anywhere_and_limits_hold() {
        let one = zstd::bulk::compress(br#"{"KeepAlive":true}"#, 1).unwrap();
        let mut wire = framed(&one);
        wire.extend(framed(&one));
        let mut reader = FrameReader::default();
        let mut frames = Vec::new();
        for byte in &wire {
            reader.push(std::slice::from_ref(byte));
            while let Some(frame) = reader.next_frame().unwrap() {
                frames.push(frame);
            }
        }
        assert_eq!(frames.len(), 2);
        reader.finish().unwrap();
        let mut d = None;
        assert_eq!(
            decompress(&mut d, &frames[0], 1024).unwrap(),
            br#"{"KeepAlive":true}"#
        );
        // A declared size over the limit is refused before anything is buffered.
        let mut reader = FrameReader::new(100);
        reader.push(&101u32.to_le_bytes());
        assert_eq!(reader.next_frame(), Err(FrameError::TooLarge(101)));
        // A cut frame.
        let mut reader = FrameReader::default();
        reader.push(&wire[..6]);
        assert_eq!(reader.next_frame(), Ok(None));
        assert_eq!(reader.finish(), Err(FrameError::Truncated));
        // A small frame that expands past the limit.
        let bomb = zstd::bulk::compress(&vec![b'a'; 10_000], 19).unwrap();
        assert!(matches!(
            decompress(&mut d, &bomb, 1000),
            Err(FrameError::TooLarge(_))
        ));
        assert!(decompress(&mut d, b"not zstd", 1000).is_err());
    }
}
