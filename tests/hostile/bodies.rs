//! A1: stalled request bodies inside the Noise channel. Many connections, each opening
//! `/machine/map` streams and sending a large body (255 KiB by default, 1 MiB − 1 byte at
//! full scale) without ever finishing it.
//! Expected: every stream the server accepted is answered or reset within the body read
//! deadline (10 s), in-flight body bytes stay within the process budget (RSS bound), and the
//! canary keeps working.

use crate::harness::{full, ip, scale, Canary, Scenario};
use crate::{BODY_DEADLINE, MAX_FDS, MAX_RSS_MIB};
use headscale::client::raw::RawSession;
use hyper::body::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Body bytes sent per stream before stalling: by default just under the 256 KiB map body
/// limit, so the server must wait for the rest (the deadline path, not the size refusal);
/// the audit's 1 MiB − 1 under `HOSTILE_FULL=1`.
fn body_bytes() -> usize {
    if full() {
        (1 << 20) - 1
    } else {
        255 << 10
    }
}
const CHUNK: usize = 128 * 1024;
/// Streams the attacker tries per connection (today's server allows 32).
const STREAMS: usize = 32;
/// Streams per Noise connection the server allows (limits table). The HTTP/2 client keeps
/// streams beyond the server's limit queued locally, so only the first `STREAM_CAP` opened
/// on each connection are certainly on the wire; those are the ones judged.
const STREAM_CAP: usize = 8;

#[derive(Default)]
struct Tally {
    /// Streams whose body the server started reading (a second chunk was taken).
    started: AtomicUsize,
    /// Started streams the server answered or reset.
    ended: AtomicUsize,
    /// Streams the server answered or reset before reading any body (e.g. 503 over budget).
    refused: AtomicUsize,
    uploaded: AtomicU64,
    /// Per judged stream (the first `STREAM_CAP` of each connection): when it was sent and
    /// when the server ended it.
    streams: std::sync::Mutex<Vec<(Instant, Option<Instant>)>>,
}

impl Tally {
    fn opened(&self) -> usize {
        let mut streams = self.streams.lock().unwrap();
        streams.push((Instant::now(), None));
        streams.len() - 1
    }

    fn ended(&self, index: usize) {
        self.streams.lock().unwrap()[index].1 = Some(Instant::now());
    }

    /// (judged streams sent at least `limit` ago, how many of them the server left open
    /// longer).
    fn overdue(&self, limit: Duration) -> (usize, usize) {
        let streams = self.streams.lock().unwrap();
        let judged: Vec<_> = streams
            .iter()
            .filter(|(opened, _)| opened.elapsed() >= limit)
            .collect();
        let overdue = judged
            .iter()
            .filter(|(opened, ended)| ended.is_none_or(|e| e.duration_since(*opened) > limit))
            .count();
        (judged.len(), overdue)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_stalled_bodies_inside_noise() {
    let mut s = Scenario::start("a1_stalled_bodies", "").await;
    let canary = Canary::start(&s).await;
    let connections = scale(20, 200);
    let tally = Arc::new(Tally::default());
    // All connections first, then the streams.
    let mut sessions = Vec::new();
    for c in 0..connections {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        // Spread over a few addresses: this scenario is about the body budget, A9/A10 about
        // per-IP caps.
        let source = ip(1, 0, (c % 50) as u8 + 1);
        match RawSession::connect_from(
            &s.url(),
            source,
            &machine,
            s.server_key,
            crate::common::CLIENT_CAPVER,
        )
        .await
        {
            Ok(session) => sessions.push(Arc::new(session)),
            Err(e) => eprintln!("a1: connection {c} refused: {e}"),
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    // Streams are opened in order, one connection after another, so the first `STREAM_CAP`
    // of each are the first on the wire.
    for session in &sessions {
        for n in 0..STREAMS {
            let Ok((writer, response)) = session.open_post("/machine/map").await else {
                continue;
            };
            let index = (n < STREAM_CAP).then(|| tally.opened());
            let tally = tally.clone();
            tasks.push(tokio::spawn(async move {
                let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (tally2, started2) = (tally.clone(), started.clone());
                let feed = async move {
                    let chunk = Bytes::from(vec![b' '; CHUNK]);
                    let mut sent = 0;
                    let mut chunks = 0;
                    let body_bytes = body_bytes();
                    while sent < body_bytes {
                        let n = CHUNK.min(body_bytes - sent);
                        if writer.send(chunk.slice(..n)).await.is_err() {
                            return;
                        }
                        chunks += 1;
                        if chunks == 2 {
                            started2.store(true, Ordering::Relaxed);
                            tally2.started.fetch_add(1, Ordering::Relaxed);
                        }
                        sent += n;
                        tally2.uploaded.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    // Never finish the body: hold the writer.
                    std::future::pending::<()>().await;
                    drop(writer);
                };
                let feeding = tokio::spawn(feed);
                let _ = response.await;
                // Ended by the server (an answer or a reset).
                if let Some(index) = index {
                    tally.ended(index);
                }
                if started.load(Ordering::Relaxed) {
                    tally.ended.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
                feeding.abort();
            }));
        }
    }
    // Give the bodies time to flow, then wait past the deadline of the first streams.
    let deadline = start
        + BODY_DEADLINE
        + Duration::from_millis(500)
        + if full() {
            Duration::from_secs(20)
        } else {
            Duration::ZERO
        };
    while Instant::now() < deadline
        && tally.ended.load(Ordering::Relaxed) + tally.refused.load(Ordering::Relaxed) < tasks.len()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (judged, overdue) = tally.overdue(BODY_DEADLINE);
    let started = tally.started.load(Ordering::Relaxed);
    let ended = tally.ended.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    let uploaded_mib = tally.uploaded.load(Ordering::Relaxed) >> 20;
    eprintln!(
        "a1: {} connections, {} streams attempted, {started} bodies started, {ended} of them ended by the server, {refused} refused before reading, {uploaded_mib} MiB uploaded",
        sessions.len(),
        tasks.len()
    );
    let finishing = Instant::now();
    let report = canary.finish().await;
    eprintln!(
        "a1: attack {:?}, then the canary's last round ended {:?} later",
        finishing.duration_since(start),
        finishing.elapsed()
    );
    s.check(overdue == 0, || {
        format!(
            "{overdue} of {judged} streams (the first {STREAM_CAP} of each connection) sent {BODY_DEADLINE:?} ago were neither answered nor reset within it (body read deadline 10 s)"
        )
    });
    s.check(judged > 0, || {
        "no stream was open long enough to judge".into()
    });
    s.check(started > 0, || {
        "no stalled body was ever read: the attack did not run".into()
    });
    for task in tasks {
        task.abort();
    }
    drop(sessions);
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
