//! The map stream's frames: a little-endian u32 length, then the JSON (zstd-compressed when
//! the client asked for it). Most sessions of one tick get byte-identical messages (one
//! peer's patch, seen by everyone), so `FrameCache` compresses each distinct message once.

use crate::tailcfg::MapResponse;
use axum::body::Bytes;
use std::collections::HashMap;

/// Prefixes `body` with its little-endian length.
pub fn frame(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The keep-alive frame, byte-identical every time (the client short-circuits repeats).
pub fn keep_alive_frame(compress: bool) -> Bytes {
    let json = br#"{"KeepAlive":true}"#;
    if compress {
        if let Ok(body) = zstd::bulk::compress(json, 1) {
            return frame(&body);
        }
    }
    frame(json)
}

/// One encoder: a zstd context (made on first use, kept: making one per message costs more
/// than compressing a small one) and the frames it already made in this batch.
#[derive(Default)]
pub(super) struct Encoder {
    compressor: Option<zstd::bulk::Compressor<'static>>,
    frames: HashMap<(bool, Vec<u8>), Bytes>,
}

impl Encoder {
    /// The frame of `response`; `None` (logged) if it cannot be encoded.
    pub fn encode(&mut self, response: &MapResponse, compress: bool) -> Option<Bytes> {
        let json = to_json(response)?;
        self.encode_json(&json, compress)
    }

    /// As `encode`, once per distinct message until `new_batch` (the JSON is the key).
    pub fn encode_shared(&mut self, response: &MapResponse, compress: bool) -> Option<Bytes> {
        let key = (compress, to_json(response)?);
        if let Some(frame) = self.frames.get(&key) {
            return Some(frame.clone());
        }
        let frame = self.encode_json(&key.1, compress)?;
        self.frames.insert(key, frame.clone());
        Some(frame)
    }

    /// Forgets the frames of the last batch (the compressor stays).
    pub fn new_batch(&mut self) {
        self.frames.clear();
    }

    fn encode_json(&mut self, json: &[u8], compress: bool) -> Option<Bytes> {
        if !compress {
            return Some(frame(json));
        }
        if self.compressor.is_none() {
            self.compressor = zstd::bulk::Compressor::new(1).ok();
        }
        match self.compressor.as_mut()?.compress(json) {
            Ok(body) => Some(frame(&body)),
            Err(error) => {
                tracing::error!(%error, "zstd failed");
                None
            }
        }
    }
}

fn to_json(response: &MapResponse) -> Option<Vec<u8>> {
    serde_json::to_vec(response)
        .map_err(|error| tracing::error!(%error, "cannot encode a map response"))
        .ok()
}
