//! A webhook receiver for the tests (axum on 127.0.0.1, its own runtime): checks every
//! signature, records what arrived, and can fail, go down, slow down or hold its answers.

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use headscale::core::time::Timestamp;
use headscale::webhooks::sign;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One event as the receiver got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub seq: u64,
    pub kind: String,
    pub message: String,
    /// When the fact was recorded (the payload's timestamp) and when it arrived, Unix ms.
    pub recorded_ms: i64,
    pub arrived_ms: i64,
}

#[derive(Default)]
pub struct Receiver {
    pub secret: Mutex<String>,
    pub got: Mutex<Vec<Got>>,
    pub bad_signatures: AtomicUsize,
    pub requests: AtomicUsize,
    /// Answer 500 to this many more requests.
    pub fail_next: AtomicUsize,
    /// Answer 503 to everything while set (the receiver is "down").
    pub down: AtomicBool,
    /// Sleep this long in every request.
    pub delay_ms: AtomicU64,
    /// Requests are recorded, then wait for an answer while set.
    pub hold: AtomicBool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let delay = r.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if r.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if r.fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let secret = r.secret.lock().unwrap().clone();
    let header = headers
        .get(sign::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if sign::verify(&secret, header, &body).is_none() {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let events: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let arrived_ms = now_ms();
    {
        let mut got = r.got.lock().unwrap();
        for e in events {
            let recorded = Timestamp::parse_rfc3339(e["timestamp"].as_str().unwrap())
                .unwrap()
                .unix_ms();
            got.push(Got {
                id: e["id"].as_str().unwrap().to_string(),
                seq: e["seq"].as_u64().unwrap(),
                kind: e["type"].as_str().unwrap().to_string(),
                message: e["message"].as_str().unwrap().to_string(),
                recorded_ms: recorded,
                arrived_ms,
            });
        }
    }
    // Held requests were received (and recorded) but are not answered yet: a crash of the
    // sender now loses the acknowledgement, not the events.
    while r.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    StatusCode::OK
}

/// A receiver on a free loopback port, served by its own runtime (kept alive by the handle).
pub struct Running {
    pub receiver: Arc<Receiver>,
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

pub fn receiver() -> Running {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = Arc::new(Receiver::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(receiver.clone());
    runtime.spawn(async move { axum::serve(listener, app).await });
    Running {
        receiver,
        url: format!("http://127.0.0.1:{port}/hook"),
        _runtime: runtime,
    }
}

impl Running {
    pub fn got(&self) -> Vec<Got> {
        self.receiver.got.lock().unwrap().clone()
    }

    /// Waits (up to `secs`) until every id in `ids` has arrived.
    pub fn wait_for_ids(&self, ids: &BTreeSet<String>, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let have: BTreeSet<String> = self.got().into_iter().map(|g| g.id).collect();
            let missing: Vec<&String> = ids.difference(&have).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "missing {} event(s), e.g. {:?}; received {} request(s)",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                self.receiver.requests.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many requests arrived (answered or not).
    pub fn requests(&self) -> usize {
        self.receiver.requests.load(Ordering::SeqCst)
    }

    /// Events received more than once (a redelivered id must keep its seq).
    pub fn duplicates(&self) -> usize {
        let got = self.got();
        let mut by_id: BTreeMap<&str, u64> = BTreeMap::new();
        for g in &got {
            assert_eq!(*by_id.entry(&g.id).or_insert(g.seq), g.seq, "id {}", g.id);
        }
        got.len() - by_id.len()
    }
}
