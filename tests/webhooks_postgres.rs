//! Webhooks on a PostgreSQL log (`pg_cluster/`): the cursor table keeps a cursor across a
//! reopen and only moves it forward; a server on PostgreSQL delivers to a local receiver
//! (axum on 127.0.0.1, checking every signature) and, after a clean restart, resumes at its
//! acknowledged cursor without resending anything. Two `headscale serve` instances on one
//! log (`ha_cluster/`): one delivers an endpoint at a time (its lease, an advisory lock), so
//! the receiver gets every event once; when that one is SIGKILLed mid-delivery the other
//! takes over within seconds, resending at most the batch that was never acknowledged.

mod common;
#[path = "ha_cluster/mod.rs"]
mod ha_cluster;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;
#[path = "webhook_receiver/mod.rs"]
mod webhook_receiver;

use common::TestServer;
use ha_cluster::{Cluster, ClusterOptions};
use headscale::store::postgres_store::PostgresStore;
use headscale::store::EventStore;
use headscale::webhooks::DeliveryOptions;
use pg_cluster::PgCluster;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use webhook_receiver::receiver;

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

/// Whether instance `index` has sent anything to the endpoint `siem`.
fn delivered(cluster: &Cluster, index: usize) -> bool {
    let sent = cluster
        .instance(index)
        .json(&["webhooks", "deliveries", "-i", "siem"]);
    !sent.as_array().unwrap().is_empty()
}

#[test]
fn two_instances_on_one_log_deliver_each_event_once_and_take_over_after_a_sigkill() {
    let rx = receiver();
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("siem.secret");
    std::fs::write(&secret_path, "shared-secret\n").unwrap();
    *rx.receiver.secret.lock().unwrap() = "shared-secret".into();
    let mut cluster = Cluster::start_with(ClusterOptions {
        instances: 2,
        extra_yaml: format!(
            "webhooks:\n  - name: siem\n    url: {}\n    secret_path: {}\n    events: [\"userCreated\"]\n",
            rx.url,
            secret_path.display()
        ),
        ..Default::default()
    });
    // The endpoint's cursor is stored (at the head) by the first worker that starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cluster.instance(1).json(&["webhooks", "list"])[0]["cursor"].is_null() {
        assert!(Instant::now() < deadline, "no cursor was stored");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Both instances run a worker for the endpoint; one holds its lease and delivers.
    let first = create_users(cluster.instance(0), "both", 20);
    let first_ids = user_created_ids(cluster.instance(0), &first);
    rx.wait_for_ids(&first_ids, 30);
    wait_caught_up(cluster.instance(0));
    wait_caught_up(cluster.instance(1));
    assert_eq!(
        rx.duplicates(),
        0,
        "two instances delivered the same events"
    );
    let holders: Vec<usize> = (0..2).filter(|i| delivered(&cluster, *i)).collect();
    assert_eq!(holders.len(), 1, "instances {holders:?} both delivered");
    let (holder, standby) = (holders[0], 1 - holders[0]);

    // The holder dies with a request in flight (received, never answered).
    rx.receiver.hold.store(true, Ordering::SeqCst);
    let before = rx.requests();
    let second = create_users(cluster.instance(standby), "takeover", 20);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.requests() == before {
        assert!(Instant::now() < deadline, "no delivery started");
        std::thread::sleep(Duration::from_millis(2));
    }
    cluster.kill(holder);
    let killed = Instant::now();
    let at_kill = (rx.requests(), rx.got().len());
    rx.receiver.hold.store(false, Ordering::SeqCst);
    let takeover = Cluster::within(Duration::from_secs(20), || rx.requests() > at_kill.0)
        .expect("the standby never took over");
    let ids: BTreeSet<String> = user_created_ids(cluster.instance(standby), &second)
        .into_iter()
        .chain(first_ids)
        .collect();
    rx.wait_for_ids(&ids, 30);
    wait_caught_up(cluster.instance(standby));
    let delivered_in = killed.elapsed();

    assert_eq!(rx.receiver.bad_signatures.load(Ordering::SeqCst), 0);
    let duplicates = rx.duplicates();
    // Only the unacknowledged batch comes again.
    assert!(
        duplicates <= DeliveryOptions::default().max_events_per_request,
        "{duplicates} duplicates"
    );
    assert!(duplicates <= at_kill.1, "{duplicates} duplicates");
    assert!(delivered(&cluster, standby), "the standby never delivered");
    println!(
        "webhook lease takeover after SIGKILL: first request from the standby {takeover:?} \
         after the kill, all {} events delivered {delivered_in:?} after it; {duplicates} \
         duplicate(s) (the batch in flight)",
        ids.len()
    );
}
