//! The CPU-heavy part of a tick, spread over the machine's cores: per session, the delta
//! against what that session was sent (`SessionView::delta`), its JSON and zstd frame; per
//! newly opened session, its full map. Sessions are independent given the shared state,
//! renderings and access view (all read-only here, `Access` caches per viewer behind
//! `OnceLock`s), so the work splits into one chunk per core under `std::thread::scope`;
//! below `PARALLEL_MIN` sessions a single chunk runs on the hub's own thread.

use super::framing::Encoder;
use crate::core::ids::NodeId;
use crate::core::netmap::{Delta, NetmapContext, PeerCache, SessionView};
use crate::core::time::Timestamp;
use crate::core::State;
use axum::body::Bytes;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::mpsc;

/// Fewer sessions with work than this are not worth a thread each.
const PARALLEL_MIN: usize = 64;

/// One live map session.
pub(super) struct LiveSession {
    pub id: u64,
    pub view: SessionView,
    pub frames: mpsc::Sender<Bytes>,
    pub compress: bool,
    pub pending: BTreeSet<NodeId>,
    pub pending_everything: bool,
    /// Re-check filter, SSH policy and capabilities even with no node pending.
    pub poke: bool,
}

impl LiveSession {
    fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.pending_everything || self.poke
    }
}

/// What every session's delta is computed from.
pub(super) struct Basis<'a> {
    pub state: &'a State,
    pub cache: &'a PeerCache,
    pub context: &'a NetmapContext,
    pub now: Timestamp,
}

/// The outcome of one fan-out.
#[derive(Default)]
pub(super) struct Sent {
    /// Sessions whose stream closed or whose node is gone: to be dropped.
    pub gone: Vec<NodeId>,
    /// Frames handed to streams.
    pub frames: usize,
    /// Some session had changes but no room for them (a slow client): they wait.
    pub blocked: bool,
}

/// Sends each session with pending changes and room in its queue one message with what
/// changed for it; a full (slow) session keeps coalescing. One encoder per chunk.
pub(super) fn fan_out(
    sessions: &mut HashMap<NodeId, LiveSession>,
    basis: &Basis<'_>,
    encoders: &mut [Encoder],
) -> Sent {
    let mut sent = Sent::default();
    let mut work: Vec<(NodeId, &mut LiveSession)> = Vec::new();
    for (node, session) in sessions.iter_mut() {
        if !session.has_work() {
            continue;
        }
        if session.frames.capacity() == 0 {
            // Full (a slow client: its changes keep coalescing) or closed.
            if session.frames.is_closed() {
                sent.gone.push(*node);
            } else {
                sent.blocked = true;
            }
            continue;
        }
        work.push((*node, session));
    }
    let results = in_chunks(&mut work, encoders, |chunk, encoder| {
        let mut out = Sent::default();
        for (node, session) in chunk.iter_mut() {
            deliver(*node, session, basis, encoder, &mut out);
        }
        out
    });
    for result in results {
        sent.gone.extend(result.gone);
        sent.frames += result.frames;
        sent.blocked |= result.blocked;
    }
    sent
}

fn deliver(
    node: NodeId,
    session: &mut LiveSession,
    basis: &Basis<'_>,
    encoder: &mut Encoder,
    out: &mut Sent,
) {
    let Ok(permit) = session.frames.try_reserve() else {
        if session.frames.is_closed() {
            out.gone.push(node);
        } else {
            out.blocked = true;
        }
        return;
    };
    let changed: Vec<NodeId> = std::mem::take(&mut session.pending).into_iter().collect();
    let everything = std::mem::take(&mut session.pending_everything);
    session.poke = false;
    match session.view.delta(
        &changed,
        everything,
        basis.state,
        basis.cache,
        basis.context,
        basis.now,
    ) {
        Delta::Nothing => {}
        Delta::Message(response) => match encoder.encode_shared(&response, session.compress) {
            Some(frame) => {
                crate::metrics::metrics().map_message("delta", frame.len());
                out.frames += 1;
                permit.send(frame);
            }
            None => out.gone.push(node),
        },
        Delta::ViewerGone => out.gone.push(node),
    }
}

/// A new session's first message: its view and the full map's frame.
pub(super) struct Opened {
    pub view: SessionView,
    pub frame: Bytes,
}

/// The full maps of `nodes` (with the compression each asked for); `None` for a node that
/// is gone or whose map cannot be encoded.
pub(super) fn full_maps(
    nodes: &[(NodeId, bool)],
    basis: &Basis<'_>,
    encoders: &mut [Encoder],
) -> Vec<Option<Opened>> {
    let mut slots: Vec<(NodeId, bool, Option<Opened>)> = nodes
        .iter()
        .map(|&(node, compress)| (node, compress, None))
        .collect();
    in_chunks(&mut slots, encoders, |chunk, encoder| {
        for (node, compress, slot) in chunk.iter_mut() {
            *slot = SessionView::full(*node, basis.state, basis.cache, basis.context, basis.now)
                .and_then(|(view, response)| {
                    let frame = encoder.encode(&response, *compress)?;
                    Some(Opened { view, frame })
                });
        }
    });
    slots.into_iter().map(|(_, _, opened)| opened).collect()
}

/// Runs `work` over `items` in one chunk per encoder (each chunk with its own), in parallel
/// when there is enough to do; the results in chunk order.
fn in_chunks<T: Send, R: Send>(
    items: &mut [T],
    encoders: &mut [Encoder],
    work: impl Fn(&mut [T], &mut Encoder) -> R + Sync,
) -> Vec<R> {
    for encoder in encoders.iter_mut() {
        encoder.new_batch();
    }
    let threads = encoders.len();
    let Some((first, rest)) = encoders.split_first_mut() else {
        return Vec::new();
    };
    if items.len() < PARALLEL_MIN || rest.is_empty() {
        return vec![work(items, first)];
    }
    let size = items.len().div_ceil(threads);
    let mut chunks = items.chunks_mut(size);
    let own = chunks.next().unwrap_or_default();
    std::thread::scope(|scope| {
        let work = &work;
        let others: Vec<_> = chunks
            .zip(rest.iter_mut())
            .map(|(chunk, encoder)| scope.spawn(move || work(chunk, encoder)))
            .collect();
        let mut results = vec![work(own, first)];
        for handle in others {
            match handle.join() {
                Ok(result) => results.push(result),
                // A panic in a helper thread is a bug like one on the hub's own thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        results
    })
}
