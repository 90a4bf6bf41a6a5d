//! Webhooks driven by the log, against the real binary and a local receiver (axum on
//! 127.0.0.1) that checks every signature: events arrive in log order with a valid HMAC;
//! SIGKILL mid-delivery loses nothing (duplicates allowed, with equal ids); a receiver that
//! answers 500 for a while gets everything afterwards; a slow receiver never holds up admin
//! commands. Also prints the delivery throughput and the append → receiver lag on loopback.

mod common;
#[path = "webhook_receiver/mod.rs"]
mod webhook_receiver;

use common::TestServer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use webhook_receiver::{now_ms, receiver};

/// `webhooks create` for `url` and `events`; returns (id, secret).
fn create_webhook(server: &TestServer, url: &str, events: &str) -> (String, String) {
    let created = server.json(&["webhooks", "create", "--url", url, "-e", events]);
    (
        created["webhook"]["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

/// The seqs of the `UserCreated` events of `names`, from the log.
fn user_created_seqs(server: &TestServer, names: &BTreeSet<String>) -> BTreeSet<String> {
    let events = server.json(&["events", "list", "--type", "UserCreated"]);
    let list = events.as_array().cloned().unwrap_or_default();
    let seqs: BTreeSet<String> = list
        .iter()
        .filter(|e| {
            let text = e.to_string();
            names.iter().any(|n| text.contains(&format!("\"{n}\"")))
        })
        .map(|e| e["seq"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seqs.len(), names.len(), "{events}");
    seqs
}

/// Creates `count` users named `prefix-N` on `threads` CLI threads.
fn create_users(
    server: &TestServer,
    prefix: &str,
    count: usize,
    threads: usize,
) -> BTreeSet<String> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    std::thread::scope(|scope| {
        for chunk in names.chunks(count.div_ceil(threads).max(1)) {
            scope.spawn(move || {
                for name in chunk {
                    server.create_user(name);
                }
            });
        }
    });
    names.into_iter().collect()
}

#[test]
fn events_arrive_in_log_order_with_valid_signatures() {
    let rx = receiver();
    let server = TestServer::start();

    // Bad input is refused with one clear line.
    let unknown = server.fails(&["webhooks", "create", "--url", &rx.url, "-e", "nodeExploded"]);
    assert!(
        unknown.contains("nodeExploded") && unknown.contains("nodeCreated"),
        "{unknown}"
    );
    let bad_url = server.fails(&["webhooks", "create", "--url", "ftp://x", "-e", "*"]);
    assert!(bad_url.contains("http"), "{bad_url}");

    let (id, secret) = create_webhook(&server, &rx.url, "userCreated,userDeleted,policyUpdate");
    assert!(secret.starts_with("hskey-webhook-"), "{secret}");
    *rx.receiver.secret.lock().unwrap() = secret;
    // The secret is a 0600 file under the data directory, never in the log.
    let path = server.data_dir().join(format!("webhooks/{id}.secret"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let log = server.ok(&["events", "list", "-o", "api-json"]);
    assert!(
        !log.contains("hskey-webhook-"),
        "the secret reached the log"
    );

    let names = create_users(&server, "order", 30, 1);
    server.ok(&["users", "delete", "--name", "order-0", "--force"]);
    let mut ids = user_created_seqs(&server, &names);
    let deleted = server.json(&["events", "list", "--type", "UserDeleted"]);
    let deleted_seq = deleted.as_array().and_then(|l| l.last().cloned()).unwrap()["seq"]
        .as_str()
        .unwrap()
        .to_string();
    ids.insert(deleted_seq);
    rx.wait_for_ids(&ids, 30);

    let got = rx.got();
    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let seqs: Vec<u64> = got.iter().map(|g| g.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "not in log order: {seqs:?}"
    );
    assert!(got
        .iter()
        .all(|g| ["userCreated", "userDeleted"].contains(&g.kind.as_str())));
    assert!(got
        .iter()
        .any(|g| g.kind == "userCreated" && g.message.contains("order-1")));

    // `list` shows the endpoint caught up; `deliveries` the attempts; `test` sends now.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = server.json(&["webhooks", "list"]);
        let hook = &list.as_array().unwrap()[0];
        assert_eq!(hook["id"], id.as_str());
        assert_eq!(hook["source"], "api");
        if hook["lag"] == 0 {
            assert_eq!(hook["consecutiveFailures"], 0);
            assert!(hook["lastSuccess"].is_string(), "{hook}");
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {hook}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deliveries = server.json(&["webhooks", "deliveries", "-i", &id]);
    let deliveries = deliveries.as_array().unwrap();
    assert!(!deliveries.is_empty() && deliveries.iter().all(|d| d["ok"] == true));
    let test = server.json(&["webhooks", "test", "-i", &id]);
    assert_eq!(test["delivery"]["ok"], true, "{test}");
    assert!(rx.got().iter().any(|g| g.kind == "test"));
    let human = server.ok(&["webhooks", "list"]);
    println!("{human}");

    // Deleted: no more deliveries, the secret file is gone.
    server.ok(&["webhooks", "delete", "-i", &id]);
    assert!(!path.exists());
    assert_eq!(server.json(&["webhooks", "list"]), serde_json::json!([]));
}

#[test]
fn sigkill_mid_delivery_loses_nothing() {
    let rx = receiver();
    let mut server = TestServer::start();
    let (_, secret) = create_webhook(&server, &rx.url, "*");
    *rx.receiver.secret.lock().unwrap() = secret;
    let first = create_users(&server, "before", 20, 2);
    rx.wait_for_ids(&user_created_seqs(&server, &first), 30);
    // The next request is received but never answered: the server dies mid-delivery.
    rx.receiver.hold.store(true, Ordering::SeqCst);
    let requests = rx.receiver.requests.load(Ordering::SeqCst);
    let names = create_users(&server, "crash", 40, 4);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.receiver.requests.load(Ordering::SeqCst) == requests {
        assert!(Instant::now() < deadline, "no delivery started");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    let before = rx.got().len();
    // The receiver is down while the server restarts, then both are back.
    rx.receiver.down.store(true, Ordering::SeqCst);
    rx.receiver.hold.store(false, Ordering::SeqCst);
    server.spawn();
    std::thread::sleep(Duration::from_millis(300));
    rx.receiver.down.store(false, Ordering::SeqCst);
    let ids: BTreeSet<String> = user_created_seqs(&server, &names)
        .into_iter()
        .chain(user_created_seqs(&server, &first))
        .collect();
    rx.wait_for_ids(&ids, 60);

    let got = rx.got();
    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);
    // Duplicates are allowed, and a redelivered id is the same event.
    let mut by_id: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for g in &got {
        let seen = by_id.entry(&g.id).or_insert((g.seq, &g.kind));
        assert_eq!(
            *seen,
            (g.seq, g.kind.as_str()),
            "id {} changed meaning",
            g.id
        );
    }
    let duplicates = got.len() - by_id.len();
    // The batch in flight at the SIGKILL was never acknowledged, so it came again.
    assert!(duplicates >= 1, "nothing was redelivered");
    println!(
        "{before} events received before the SIGKILL (the last batch unacknowledged), {} after; \
         {duplicates} duplicate(s)",
        got.len() - before
    );
}

#[test]
fn a_receiver_answering_500_for_a_while_gets_everything_afterwards() {
    let rx = receiver();
    // A configured endpoint this time (secret in a file the operator wrote).
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("siem.secret");
    std::fs::write(&secret_path, "configured-secret\n").unwrap();
    *rx.receiver.secret.lock().unwrap() = "configured-secret".into();
    let server = TestServer::start_with(&format!(
        "webhooks:\n  - name: siem\n    url: {}\n    secret_path: {}\n    events: [\"userCreated\"]\n",
        rx.url,
        secret_path.display()
    ));
    // Wait until the worker has its cursor (a configured endpoint starts at the head).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.json(&["webhooks", "list"])[0]["cursor"].is_null() {
        assert!(Instant::now() < deadline, "the worker never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    rx.receiver.fail_next.store(3, Ordering::SeqCst);
    let names = create_users(&server, "retry", 10, 2);
    let ids = user_created_seqs(&server, &names);
    rx.wait_for_ids(&ids, 60);
    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);

    let deliveries = server.json(&["webhooks", "deliveries", "-i", "siem"]);
    let failed: Vec<&Value> = deliveries
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["ok"] == false)
        .collect();
    assert_eq!(failed.len(), 3, "{deliveries}");
    assert!(failed.iter().all(|d| d["status"] == 500));
    let list = server.json(&["webhooks", "list"]);
    assert_eq!(list[0]["source"], "config");
    assert_eq!(list[0]["consecutiveFailures"], 0, "{list}");
    assert_eq!(list[0]["lastError"], "HTTP 500", "{list}");
}

#[test]
fn a_slow_receiver_never_slows_the_engine() {
    let rx = receiver();
    let server = TestServer::start();
    let (_, secret) = create_webhook(&server, &rx.url, "userCreated");
    *rx.receiver.secret.lock().unwrap() = secret;
    let delay = Duration::from_secs(4);
    rx.receiver
        .delay_ms
        .store(delay.as_millis() as u64, Ordering::SeqCst);
    let mut slowest = Duration::ZERO;
    let names: BTreeSet<String> = (0..15).map(|i| format!("slow-{i}")).collect();
    for name in &names {
        let started = Instant::now();
        server.create_user(name);
        slowest = slowest.max(started.elapsed());
    }
    // Every command was acknowledged while delivery was still held up by the receiver.
    let delivered = rx.got().len();
    assert!(
        delivered < names.len(),
        "delivery was not lagging ({delivered})"
    );
    assert!(
        slowest < delay,
        "a command took {slowest:?}, as long as one delivery"
    );
    let list = server.json(&["webhooks", "list"]);
    println!("while lagging: {list}");
    let ids = user_created_seqs(&server, &names);
    rx.wait_for_ids(&ids, 60);
}

#[test]
fn delivery_throughput_and_lag_on_loopback() {
    let rx = receiver();
    let server = TestServer::start();
    let (_, secret) = create_webhook(&server, &rx.url, "userCreated");
    *rx.receiver.secret.lock().unwrap() = secret;

    // Lag: append → receiver, one event at a time.
    let names = create_users(&server, "lag", 20, 1);
    let ids = user_created_seqs(&server, &names);
    rx.wait_for_ids(&ids, 30);
    let mut lags: Vec<i64> = rx
        .got()
        .iter()
        .map(|g| g.arrived_ms - g.recorded_ms)
        .collect();
    lags.sort();

    // Throughput: a backlog built while the worker waits on a held request, then
    // delivered in batches once the receiver lets go.
    rx.receiver.hold.store(true, Ordering::SeqCst);
    server.create_user("held");
    let backlog = create_users(&server, "burst", 300, 4);
    let backlog_ids = user_created_seqs(&server, &backlog);
    let released_ms = now_ms();
    rx.receiver.hold.store(false, Ordering::SeqCst);
    rx.wait_for_ids(&backlog_ids, 120);
    let last_ms = rx.got().iter().map(|g| g.arrived_ms).max().unwrap();
    let span_ms = (last_ms - released_ms).max(1);
    println!(
        "webhook lag append->receiver over {} events: median {} ms, max {} ms; a backlog of {} \
         events delivered in {} ms ({:.0} events/s)",
        lags.len(),
        lags[lags.len() / 2],
        lags.last().unwrap(),
        backlog.len(),
        span_ms,
        backlog.len() as f64 * 1000.0 / span_ms as f64,
    );
}

#[test]
fn key_expiries_are_sent_when_their_time_comes_and_a_day_before() {
    let rx = receiver();
    let server = TestServer::start();
    server.create_user("alice");
    server.ok(&["debug", "create-node", "--name", "soon", "-u", "alice"]);
    server.ok(&["debug", "create-node", "--name", "tomorrow", "-u", "alice"]);
    let (_, secret) = create_webhook(&server, &rx.url, "nodeKeyExpired,nodeKeyExpiringInOneDay");
    *rx.receiver.secret.lock().unwrap() = secret;
    // No log record says "expired now": the time passing is what sends these.
    let at = |ms: i64| headscale::core::time::Timestamp::from_unix_ms(ms).to_rfc3339();
    let soon = now_ms() + 2_000;
    let tomorrow = now_ms() + 24 * 3600 * 1000 + 2_000;
    server.ok(&["nodes", "expire", "-i", "1", "-e", &at(soon), "--force"]);
    server.ok(&["nodes", "expire", "-i", "2", "-e", &at(tomorrow), "--force"]);
    let expired = format!("expired-1-{soon}");
    let expiring = format!("expiring-2-{tomorrow}");
    rx.wait_for_ids(&BTreeSet::from([expired.clone(), expiring.clone()]), 30);
    let got = rx.got();
    let kinds: BTreeMap<&str, &str> = got
        .iter()
        .map(|g| (g.id.as_str(), g.kind.as_str()))
        .collect();
    assert_eq!(kinds[expired.as_str()], "nodeKeyExpired");
    assert_eq!(kinds[expiring.as_str()], "nodeKeyExpiringInOneDay");
    // Sent once the time had come, not when the expiry was set.
    let sent = got.iter().find(|g| g.id == expired).unwrap();
    assert!(
        sent.arrived_ms >= soon,
        "sent {} ms early",
        soon - sent.arrived_ms
    );
    // The admin's changes themselves were not subscribed to; nothing else arrived.
    assert_eq!(rx.duplicates(), 0);
    assert!(got.iter().all(|g| g.kind.starts_with("nodeKey")), "{got:?}");
    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);
}
