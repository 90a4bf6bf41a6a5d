//! Webhooks on a PostgreSQL log (`pg_cluster/`): the cursor table keeps a cursor across a
//! reopen and only moves it forward; a server on PostgreSQL delivers to a local receiver
//! (axum on 127.0.0.1, checking every signature) and, after a clean restart, resumes at its
//! acknowledged cursor without resending anything.

mod common;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::TestServer;
use headscale::store::postgres_store::PostgresStore;
use headscale::store::EventStore;
use headscale::webhooks::sign;
use pg_cluster::PgCluster;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One event as the receiver got it: its id and seq.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    seq: u64,
}

#[derive(Default)]
struct Receiver {
    secret: Mutex<String>,
    got: Mutex<Vec<Got>>,
    bad_signatures: AtomicUsize,
    requests: AtomicUsize,
    /// Requests are recorded, then wait for an answer while set.
    hold: AtomicBool,
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
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
    r.got.lock().unwrap().extend(events.iter().map(|e| Got {
        id: e["id"].as_str().unwrap().to_string(),
        seq: e["seq"].as_u64().unwrap(),
    }));
    while r.hold.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    StatusCode::OK
}

/// A receiver on a free loopback port, served by its own runtime (kept alive by the handle).
struct Running {
    receiver: Arc<Receiver>,
    url: String,
    _runtime: tokio::runtime::Runtime,
}

fn receiver() -> Running {
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
    fn got(&self) -> Vec<Got> {
        self.receiver.got.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.receiver.requests.load(Ordering::SeqCst)
    }

    /// Waits (up to `secs`) until every id in `ids` has arrived.
    fn wait_for_ids(&self, ids: &BTreeSet<String>, secs: u64) {
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
                self.requests()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Events received more than once (a redelivered id must keep its seq).
    fn duplicates(&self) -> usize {
        let got = self.got();
        let mut by_id: BTreeMap<&str, u64> = BTreeMap::new();
        for g in &got {
            assert_eq!(*by_id.entry(&g.id).or_insert(g.seq), g.seq, "id {}", g.id);
        }
        got.len() - by_id.len()
    }
}

/// The ids (seqs) of the `UserCreated` events of `names`, from the log.
fn user_created_ids(server: &TestServer, names: &BTreeSet<String>) -> BTreeSet<String> {
    let events = server.json(&["events", "list", "--type", "UserCreated"]);
    let ids: BTreeSet<String> = events
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            let text = e.to_string();
            names.iter().any(|n| text.contains(&format!("\"{n}\"")))
        })
        .map(|e| e["seq"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), names.len(), "{events}");
    ids
}

/// Creates users `prefix-0..count`; their names.
fn create_users(server: &TestServer, prefix: &str, count: usize) -> BTreeSet<String> {
    let names: BTreeSet<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();
    for name in &names {
        server.create_user(name);
    }
    names
}

/// Waits until `webhooks list` shows endpoint 0 with no lag (its cursor at the head).
fn wait_caught_up(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = server.json(&["webhooks", "list"]);
        if list[0]["lag"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never caught up: {list}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn postgres_cursors_move_forward_only_and_survive_a_reopen() {
    let pg = PgCluster::start();
    let config = pg.config();
    {
        let store = PostgresStore::open(&config).unwrap();
        assert_eq!(store.webhook_cursor("api:1").unwrap(), None);
        store.set_webhook_cursor("api:1", 7).unwrap();
        // A stale writer (an instance that delivered less) cannot move it back.
        store.set_webhook_cursor("api:1", 5).unwrap();
        assert_eq!(store.webhook_cursor("api:1").unwrap(), Some(7));
        store.set_webhook_cursor("config:siem", 3).unwrap();
        // A second instance on the same database sees and respects the same cursors.
        let other = PostgresStore::open(&config).unwrap();
        assert_eq!(other.webhook_cursor("api:1").unwrap(), Some(7));
        other.set_webhook_cursor("api:1", 9).unwrap();
        store.set_webhook_cursor("api:1", 8).unwrap();
        assert_eq!(store.webhook_cursor("api:1").unwrap(), Some(9));
    }
    let reopened = PostgresStore::open(&config).unwrap();
    assert_eq!(reopened.webhook_cursor("api:1").unwrap(), Some(9));
    assert_eq!(reopened.webhook_cursor("config:siem").unwrap(), Some(3));
    assert_eq!(reopened.webhook_cursor("api:2").unwrap(), None);
}

#[test]
fn a_server_on_postgres_resumes_at_its_cursor_after_a_clean_restart() {
    let pg = PgCluster::start();
    let rx = receiver();
    let mut server = TestServer::on_database(&pg.database_yaml(), "");
    server.spawn();
    let created = server.json(&["webhooks", "create", "--url", &rx.url, "-e", "userCreated"]);
    *rx.receiver.secret.lock().unwrap() = created["secret"].as_str().unwrap().to_string();
    let first = create_users(&server, "before", 15);
    rx.wait_for_ids(&user_created_ids(&server, &first), 30);
    wait_caught_up(&server);

    // A clean restart: the acknowledged cursor is in PostgreSQL, so nothing comes again.
    server.stop();
    server.spawn();
    let second = create_users(&server, "after", 15);
    let ids: BTreeSet<String> = user_created_ids(&server, &second)
        .into_iter()
        .chain(user_created_ids(&server, &first))
        .collect();
    rx.wait_for_ids(&ids, 30);
    wait_caught_up(&server);
    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);
    assert_eq!(rx.duplicates(), 0, "redelivered after a clean restart");
    let seqs: Vec<u64> = rx.got().iter().map(|g| g.seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs.len(), 30);
    // The cursor in the table is the last delivered seq.
    let stored = pg.psql_in(
        pg_cluster::DATABASE,
        "SELECT seq FROM headscale_rs.webhook_cursors",
    );
    assert_eq!(stored.trim(), seqs.last().unwrap().to_string());
}
