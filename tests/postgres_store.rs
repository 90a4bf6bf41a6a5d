//! `database.type: postgres`: our event log in a throwaway PostgreSQL cluster
//! (`pg_cluster/`). The store passes the same conformance scenario as the embedded store; a
//! second writer cannot fork the chain; a lost connection fails appends without
//! acknowledging them and heals; a server on PostgreSQL registers nodes, keeps them across a
//! restart, goes unhealthy while PostgreSQL is down (nothing acknowledged lost) and comes back
//! when it returns; `headscale events verify` and `events salvage` work (or refuse) on it.

#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use headscale::store::disk_store::DiskStore;
use headscale::store::postgres_store::PostgresStore;
use headscale::store::{EventStore, StoreError};
use pg_cluster::conformance::{self, records};
use pg_cluster::PgCluster;
use std::sync::Arc;

#[test]
fn the_embedded_store_passes_the_conformance_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sled");
    conformance::run(&|| Arc::new(DiskStore::open(&path, 1 << 20).unwrap()));
}

#[test]
fn postgres_passes_the_conformance_scenario_and_a_second_writer_cannot_fork_the_chain() {
    let cluster = PgCluster::start();
    let config = cluster.config();
    conformance::run(&|| Arc::new(PostgresStore::open(&config).unwrap()));

    // Our tables sit in their own schema, with the version row.
    let version = cluster.psql_in(
        pg_cluster::DATABASE,
        "SELECT value FROM headscale_rs.meta WHERE key = 'schema_version'",
    );
    assert_eq!(version.trim(), "1");

    // Two writers at the same head: the second's append of the same seq fails.
    let a = PostgresStore::open(&config).unwrap();
    let b = PostgresStore::open(&config).unwrap();
    let head = a.head();
    assert_eq!(b.head(), head);
    let mine = records(head.seq + 1, 2, head.hash);
    let theirs = records(head.seq + 1, 1, head.hash);
    a.append(&mine).unwrap();
    let refused = b.append(&theirs).unwrap_err();
    assert!(
        matches!(refused, StoreError::OutOfOrder { .. }),
        "{refused}"
    );
    // After recovery the loser sees the winner's head, and the log is one chain.
    b.recover().unwrap();
    assert_eq!(b.head(), a.head());
    let log: Vec<_> = b.read_range(1, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(log.len() as u64, a.head().seq);
    for pair in log.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash());
    }
    assert_eq!(log.last().unwrap(), &mine[1]);
}

#[test]
fn killed_sessions_are_replaced_and_the_log_is_exactly_what_was_acknowledged() {
    let cluster = PgCluster::start();
    let store = PostgresStore::open(&cluster.config()).unwrap();
    let mut acknowledged = Vec::new();
    let kill = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'hs'";
    for round in 0..20u64 {
        if round % 4 == 1 {
            // Our writer session (at least) is ended under the store.
            assert!(
                cluster.psql(kill).contains('t'),
                "no session of ours to kill"
            );
        }
        let head = store.head();
        let batch = records(head.seq + 1, 3, head.hash);
        match store.append(&batch) {
            Ok(()) => acknowledged.extend(batch),
            Err(error) => {
                assert!(matches!(error, StoreError::Io(_)), "{error}");
                store.recover().unwrap();
                assert_eq!(store.head().seq, acknowledged.len() as u64);
            }
        }
    }
    store.probe().unwrap();
    assert!(
        acknowledged.len() >= 15 * 3,
        "{} acknowledged",
        acknowledged.len()
    );
    let log: Vec<_> = store.read_range(1, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(log, acknowledged);
    let reopened = PostgresStore::open(&cluster.config()).unwrap();
    assert_eq!(reopened.head(), store.head());
}

#[test]
fn while_postgres_is_down_appends_fail_and_probes_fail_until_it_returns() {
    let cluster = PgCluster::start();
    let store = PostgresStore::open(&cluster.config()).unwrap();
    let first = records(1, 10, Default::default());
    store.append(&first).unwrap();
    // Snapshots go through the other connection: it must reconnect too.
    store.put_snapshot(10, b"state at 10").unwrap();

    cluster.stop_server();
    let next = records(11, 5, first[9].hash());
    let error = store.append(&next).unwrap_err();
    assert!(matches!(error, StoreError::Io(_)), "{error}");
    // Nothing unacknowledged can be in the database: recovery keeps the acknowledged head.
    store.recover().unwrap();
    assert_eq!(store.head().seq, 10);
    assert!(store.probe().is_err());
    assert!(store.append(&next).is_err());
    assert!(store.read(1).is_err());

    cluster.start_server();
    store.probe().unwrap();
    store.append(&next).unwrap();
    assert_eq!(store.head().seq, 15);
    assert_eq!(
        store.snapshot_at_or_before(100).unwrap(),
        Some((10, b"state at 10".to_vec()))
    );
    let log: Vec<_> = store.read_range(1, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(log.len(), 15);
    assert_eq!(log[10..], next[..]);
}

#[test]
fn bad_settings_are_refused_with_a_clear_message() {
    let cluster = PgCluster::start();
    let mut wrong = cluster.config();
    wrong.pass_file = Default::default();
    wrong.pass = "not-the-password".into();
    let error = PostgresStore::open(&wrong).err().unwrap().to_string();
    assert!(
        error.contains("cannot connect to PostgreSQL hs@"),
        "{error}"
    );
    assert!(error.contains("password authentication failed"), "{error}");

    let mut prefer = cluster.config();
    prefer.ssl = "prefer".into();
    let error = PostgresStore::open(&prefer).err().unwrap().to_string();
    assert!(error.contains("database.postgres.ssl"), "{error}");

    let mut missing = cluster.config();
    missing.pass_file = cluster.socket_dir().join("nope");
    let error = PostgresStore::open(&missing).err().unwrap().to_string();
    assert!(error.contains("database.postgres.pass_file"), "{error}");
}
