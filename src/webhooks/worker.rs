//! One endpoint's delivery loop: read the log after the cursor (off the runtime, in bounded
//! batches), POST the signed batch, retry with capped exponential backoff and jitter until a
//! 2xx, then move the durable cursor. Also the HTTP client and the one-shot `test` send.

use super::payload::{self, WebhookEvent};
use super::{secret, sign, Endpoint, Hub, MAX_RECENT_ATTEMPTS};
use crate::core::command::webhooks::wants;
use crate::core::time::Timestamp;
use crate::engine::{Clock, Published, SystemClock};
use crate::ha::lease::Lease;
use crate::ha::pool::SharedPool;
use crate::store::replay::read_envelopes;
use crate::store::EventStore;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The named limits and pacing of delivery.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Events in one request at most.
    pub max_events_per_request: usize,
    /// A request body's size at most (one record's events always go, even if larger).
    pub max_body_bytes: usize,
    /// Log records read for one batch at most (an endpoint subscribed to rare types skips
    /// through the log in steps of this many, moving its cursor each time).
    pub max_scanned_per_batch: u64,
    /// One request, connection to last byte.
    pub request_timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How often an idle worker looks at the head without a publish (several instances).
    pub idle_poll: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            max_events_per_request: 100,
            max_body_bytes: 512 * 1024,
            max_scanned_per_batch: 1000,
            request_timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            idle_poll: Duration::from_secs(1),
        }
    }
}

/// One POST to an endpoint, as `webhooks deliveries` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at: Timestamp,
    /// Seqs of the first and last event sent (0 for a test).
    pub first_seq: u64,
    pub last_seq: u64,
    pub events: usize,
    /// The HTTP status, when an answer came.
    pub status: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub ok: bool,
}

/// The answers read from a receiver are discarded; this much at most is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<HttpClient, String> {
        let tls = crate::outbound_tls::client_config(crate::outbound_tls::system_roots())?;
        let connector = crate::outbound_tls::https_or_http_connector(tls, timeout);
        Ok(HttpClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        })
    }

    /// POSTs `body` signed with `secret`; the status, or why there is none. Redirects are
    /// not followed (they could send the events elsewhere).
    async fn post(&self, url: &str, secret: &str, body: Vec<u8>) -> Result<u16, String> {
        let now = SystemClock.now().unix_ms() / 1000;
        let signature = sign::signature(secret, now, &body);
        let request = hyper::Request::post(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("headscale-rs/", env!("CARGO_PKG_VERSION")),
            )
            .header(sign::SIGNATURE_HEADER, signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("invalid request: {e}"))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::error_chain::error_chain(&e))?;
            let status = response.status().as_u16();
            // Read (a bounded part of) the answer so the connection can be reused.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// A batch ready to send: its events and the seq the cursor moves to once acknowledged.
struct Batch {
    events: Vec<WebhookEvent>,
    upto: u64,
}

/// Reads records after `cursor` up to `head` and keeps what `endpoint` subscribed to,
/// within the limits. Runs on the blocking pool.
fn read_batch(
    store: &dyn EventStore,
    endpoint: &Endpoint,
    tailnet: &str,
    options: &DeliveryOptions,
    cursor: u64,
    head: u64,
) -> Result<Batch, String> {
    let to = head.min(cursor.saturating_add(options.max_scanned_per_batch));
    let mut events: Vec<WebhookEvent> = Vec::new();
    let mut bytes = 2;
    let mut upto = cursor;
    for envelope in read_envelopes(store, cursor + 1, to) {
        let envelope = envelope.map_err(|e| format!("reading the log: {e}"))?;
        let made = payload::events_for(&envelope, tailnet, &endpoint.kinds);
        let size: usize = made
            .iter()
            .map(|e| serde_json::to_vec(e).map(|v| v.len() + 1).unwrap_or(0))
            .sum();
        let full = events.len() + made.len() > options.max_events_per_request
            || bytes + size > options.max_body_bytes;
        if full && !events.is_empty() {
            break;
        }
        bytes += size;
        events.extend(made);
        upto = envelope.seq;
    }
    Ok(Batch { events, upto })
}

/// Delivers to `endpoint` forever (aborted by the supervisor when it goes away).
pub(super) async fn run(
    hub: Arc<Hub>,
    store: Arc<dyn EventStore>,
    mut states: watch::Receiver<Published>,
    endpoint: Endpoint,
    leases: Option<SharedPool>,
) {
    let key = endpoint.key.clone();
    let mut lease = Lease::new(format!("webhook {key}"));
    // The secret and the cursor: retried until they can be read.
    // A managed endpoint's secret file is written just after its creation is published, so
    // the first retries come quickly.
    let mut wait = Duration::from_millis(50);
    let (secret, mut cursor) = loop {
        match start(&store, &endpoint).await {
            Ok(started) => break started,
            Err(problem) => {
                if wait >= Duration::from_secs(1) {
                    tracing::warn!(endpoint = %key, %problem, "webhook endpoint cannot deliver");
                }
                hub.update(&key, |s| s.problem = Some(problem));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    };
    hub.update(&key, |s| {
        s.problem = None;
        s.cursor = Some(cursor);
    });
    let mut failures: u64 = 0;
    // Time-made events (`nodeKeyExpired`, `nodeKeyExpiringInOneDay`) have no record in the
    // log: their durable cursor is a time, everything due up to it having been acknowledged.
    let mut expiry_watermark = if wants(&endpoint.kinds, "nodeKeyExpired")
        || wants(&endpoint.kinds, "nodeKeyExpiringInOneDay")
    {
        expiry_start(&store, &endpoint.key).await
    } else {
        None
    };
    loop {
        if store.is_shared() {
            // Several instances share the cursor: skip what another one has already had
            // acknowledged (the last holder of the lease, before this one took it).
            let (shared, key) = (store.clone(), key.clone());
            if let Ok(Ok(Some(theirs))) =
                tokio::task::spawn_blocking(move || shared.webhook_cursor(&key)).await
            {
                if theirs > cursor {
                    cursor = theirs;
                    hub.update(&endpoint.key, |s| s.cursor = Some(cursor));
                }
            }
        }
        let head = store.head().seq;
        if head <= cursor {
            // Caught up with the log: the key expiries whose time has come go now.
            let due = match &expiry_watermark {
                Some(watermark) => {
                    let state = states.borrow().state.clone();
                    let now = SystemClock.now();
                    let events = payload::expiries_between(
                        &state,
                        *watermark,
                        now,
                        &hub.tailnet,
                        &endpoint.kinds,
                    );
                    (!events.is_empty()).then_some((events, now))
                }
                None => None,
            };
            // Only the lease holder sends (asked only when something is due).
            let holds_lease = match (&due, &leases) {
                (Some(_), Some(pool)) => matches!(lease.hold(pool).await, Ok(true)),
                _ => true,
            };
            if let (Some((events, now)), true) = (due, holds_lease) {
                send(&hub, &endpoint, &secret, &events, &mut failures).await;
                // Durable before it counts, like the cursor: a crash now sends them again.
                let (store, key) = (store.clone(), expiry_key(&endpoint.key));
                let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
                match tokio::task::spawn_blocking(move || store.set_webhook_cursor(&key, ms)).await
                {
                    Ok(Ok(())) => expiry_watermark = Some(now),
                    _ => tokio::time::sleep(hub.options.initial_backoff).await,
                }
                continue;
            }
            // Wait for a publish, or poll (another instance may append without one here).
            let _ = tokio::time::timeout(hub.options.idle_poll, states.changed()).await;
            continue;
        }
        if let Some(pool) = &leases {
            // One deliverer per endpoint: deliver only while holding its lease; a standby
            // tries again each `idle_poll` (the holder's death frees it at once).
            let was_held = lease.held();
            match lease.hold(pool).await {
                Ok(true) if was_held => {}
                Ok(true) => {
                    tracing::info!(endpoint = %key, "this instance delivers to the webhook");
                    // Read the shared cursor again first: the last holder may have moved it.
                    continue;
                }
                Ok(false) => {
                    tokio::time::sleep(hub.options.idle_poll).await;
                    continue;
                }
                Err(problem) => {
                    tracing::warn!(endpoint = %key, %problem, "cannot take the webhook lease");
                    tokio::time::sleep(hub.options.idle_poll).await;
                    continue;
                }
            }
        }
        let batch = {
            let (store, endpoint, tailnet, options) = (
                store.clone(),
                endpoint.clone(),
                hub.tailnet.clone(),
                hub.options.clone(),
            );
            tokio::task::spawn_blocking(move || {
                read_batch(store.as_ref(), &endpoint, &tailnet, &options, cursor, head)
            })
            .await
            .unwrap_or_else(|e| Err(format!("the log read failed: {e}")))
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(problem) => {
                hub.update(&key, |s| s.problem = Some(problem));
                tokio::time::sleep(hub.options.initial_backoff).await;
                continue;
            }
        };
        if !batch.events.is_empty() {
            send(&hub, &endpoint, &secret, &batch.events, &mut failures).await;
        }
        // Durable before it counts: a crash now redelivers this batch (at-least-once).
        let moved = {
            let (store, key, upto) = (store.clone(), key.clone(), batch.upto);
            tokio::task::spawn_blocking(move || store.set_webhook_cursor(&key, upto))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
        };
        match moved {
            Ok(()) => {
                cursor = batch.upto;
                crate::metrics::webhook_lag(
                    &endpoint.name,
                    store.head().seq.saturating_sub(cursor),
                );
                hub.update(&key, |s| {
                    s.cursor = Some(cursor);
                    s.problem = None;
                });
            }
            Err(problem) => {
                hub.update(&key, |s| {
                    s.problem = Some(format!("cannot store the cursor: {problem}"))
                });
                tokio::time::sleep(hub.options.initial_backoff).await;
            }
        }
    }
}

/// POSTs `events` until a 2xx, backing off between failures (recorded in the endpoint's
/// attempts and metrics).
async fn send(
    hub: &Arc<Hub>,
    endpoint: &Endpoint,
    secret: &str,
    events: &[WebhookEvent],
    failures: &mut u64,
) {
    let body = payload::body(events);
    let (first_seq, last_seq) = (
        events.first().map_or(0, |e| e.seq),
        events.last().map_or(0, |e| e.seq),
    );
    loop {
        let started = Instant::now();
        let result = hub.client.post(&endpoint.url, secret, body.clone()).await;
        let attempt = attempt(first_seq, last_seq, events.len(), started, result);
        let ok = attempt.ok;
        record(hub, &endpoint.key, attempt.clone());
        if ok {
            crate::metrics::webhook_delivered(&endpoint.name, events.len());
            *failures = 0;
            return;
        }
        crate::metrics::webhook_failed(&endpoint.name);
        *failures += 1;
        let jitter = rand::random::<f64>();
        tokio::time::sleep(super::backoff(&hub.options, *failures, jitter)).await;
    }
}

/// Where an endpoint's time watermark is kept, beside its log cursor.
fn expiry_key(endpoint: &str) -> String {
    format!("{endpoint}#expiry")
}

/// The endpoint's time watermark, stored as "now" the first time (expiries that passed
/// before an endpoint existed are not sent); `None` if the store cannot be read.
async fn expiry_start(store: &Arc<dyn EventStore>, endpoint: &str) -> Option<Timestamp> {
    let (store, key) = (store.clone(), expiry_key(endpoint));
    let now = SystemClock.now();
    tokio::task::spawn_blocking(move || match store.webhook_cursor(&key) {
        Ok(Some(ms)) => Some(Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))),
        Ok(None) => {
            let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
            store.set_webhook_cursor(&key, ms).ok().map(|()| now)
        }
        Err(_) => None,
    })
    .await
    .ok()
    .flatten()
}

/// Reads the endpoint's secret and cursor; a new endpoint's cursor is stored first (after
/// its creation, or at the head for a configured one).
async fn start(store: &Arc<dyn EventStore>, endpoint: &Endpoint) -> Result<(String, u64), String> {
    let (store, endpoint) = (store.clone(), endpoint.clone());
    tokio::task::spawn_blocking(move || {
        let secret = secret::read(&endpoint.secret_path)?;
        let cursor = match store
            .webhook_cursor(&endpoint.key)
            .map_err(|e| format!("cannot read the cursor: {e}"))?
        {
            Some(cursor) => cursor,
            None => {
                let start = endpoint.start_after.unwrap_or(store.head().seq);
                store
                    .set_webhook_cursor(&endpoint.key, start)
                    .map_err(|e| format!("cannot store the cursor: {e}"))?;
                start
            }
        };
        Ok((secret, cursor))
    })
    .await
    .unwrap_or_else(|e| Err(format!("starting delivery failed: {e}")))
}

fn attempt(
    first_seq: u64,
    last_seq: u64,
    events: usize,
    started: Instant,
    result: Result<u16, String>,
) -> Attempt {
    let (status, error) = match result {
        Ok(status) if (200..300).contains(&status) => (Some(status), None),
        Ok(status) => (Some(status), Some(format!("HTTP {status}"))),
        Err(error) => (None, Some(error)),
    };
    Attempt {
        at: SystemClock.now(),
        first_seq,
        last_seq,
        events,
        ok: error.is_none(),
        status,
        error,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

fn record(hub: &Hub, key: &str, attempt: Attempt) {
    hub.update(key, |s| {
        if attempt.ok {
            s.last_success = Some(attempt.at);
            s.consecutive_failures = 0;
            if attempt.first_seq > 0 {
                s.delivered_events += attempt.events as u64;
            }
        } else {
            s.last_failure = Some((attempt.at, attempt.error.clone().unwrap_or_default()));
            s.consecutive_failures += 1;
            s.failed_attempts += 1;
        }
        if s.recent.len() >= MAX_RECENT_ATTEMPTS {
            s.recent.pop_front();
        }
        s.recent.push_back(attempt);
    });
}

/// One signed `test` event, now, recorded among the endpoint's attempts.
pub(super) async fn send_test(hub: &Hub, endpoint: &Endpoint, now: Timestamp) -> Attempt {
    let started = Instant::now();
    let path = endpoint.secret_path.clone();
    let secret = tokio::task::spawn_blocking(move || secret::read(&path))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let result = match secret {
        Ok(secret) => {
            let nonce = format!("{}", now.unix_ms());
            let body = payload::body(&[payload::test_event(now, &hub.tailnet, &nonce)]);
            hub.client.post(&endpoint.url, &secret, body).await
        }
        Err(problem) => Err(problem),
    };
    let attempt = attempt(0, 0, 1, started, result);
    record(hub, &endpoint.key, attempt.clone());
    attempt
}
