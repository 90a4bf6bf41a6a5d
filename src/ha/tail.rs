//! Keeps this instance at the shared log's head. NOTIFY (sent by every append, delivered at
//! commit) is only a hint that wakes the writer early; the truth is the catch-up read the
//! writer then makes (`EngineHandle::nudge` → `refresh_head` + read). A poll every
//! `ha.poll_interval` is the safety net for hints lost while the LISTEN connection was down,
//! and a (re)established LISTEN connection catches up at once for the same reason.
//!
//! Each successful read of the head renews the writer's contact with PostgreSQL; cut off
//! longer than `ha.max_staleness`, the instance fails closed (`EngineHandle::is_fresh`):
//! health says so and the hub ends its map streams, so clients move elsewhere.

use super::pool::{Hint, SharedPool};
use crate::engine::EngineHandle;
use std::time::Duration;

/// Follows the log until the engine stops; runs on the server's runtime.
pub fn spawn(engine: EngineHandle, pool: &SharedPool, poll_interval: Duration) {
    let hints = pool.listen(&[super::EVENTS_CHANNEL]);
    tokio::spawn(follow(engine, hints, poll_interval));
}

async fn follow(
    engine: EngineHandle,
    mut hints: tokio::sync::mpsc::Receiver<Hint>,
    poll_interval: Duration,
) {
    let mut poll = tokio::time::interval(poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut engine_gone = std::pin::pin!(engine.stopped());
    loop {
        tokio::select! {
            hint = hints.recv() => match hint {
                None => return,
                Some(Hint::Notified { payload, .. }) => {
                    // Our own appends notify too: only a head past ours needs reading.
                    let past_ours = payload
                        .parse::<u64>()
                        .map_or(true, |seq| seq > engine.state().last_seq);
                    if past_ours {
                        engine.nudge();
                    }
                }
                Some(Hint::Listening) => {
                    tracing::debug!("listening for appends of other instances");
                    engine.nudge();
                }
                Some(Hint::Lost(reason)) => {
                    tracing::warn!(%reason, "lost the notification connection to PostgreSQL; polling until it is back");
                }
            },
            _ = poll.tick() => engine.nudge(),
            () = &mut engine_gone => return,
        }
    }
}
