//! `database.type: postgres`: our event log in a throwaway PostgreSQL cluster
//! (`pg_cluster/`). The store passes the same conformance scenario as the embedded store; a
//! second writer cannot fork the chain; a lost connection fails appends without
//! acknowledging them and heals; a server on PostgreSQL registers nodes, keeps them across a
//! restart, goes unhealthy while PostgreSQL is down (nothing acknowledged lost) and comes back
//! when it returns; `headscale events verify` and `events salvage` work (or refuse) on it.

mod common;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use common::{http, node_facts, TestServer};

use headscale::store::disk_store::DiskStore;
use headscale::store::postgres_store::PostgresStore;
use headscale::store::{EventStore, StoreError};
use pg_cluster::conformance::{self, records};
use pg_cluster::PgCluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    assert!(matches!(refused, StoreError::Conflict { .. }), "{refused}");
    // The loser reads the winner's head (as an instance catching up would), and the log
    // is one chain.
    assert!(b.is_shared());
    assert_eq!(b.refresh_head().unwrap(), a.head());
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
fn an_append_that_commits_after_its_caller_gave_up_stays_and_recovery_takes_its_head() {
    let cluster = PgCluster::start();
    let store =
        PostgresStore::open_with_write_timeout(&cluster.config(), Duration::from_secs(1)).unwrap();
    let first = records(1, 5, Default::default());
    store.append(&first).unwrap();
    let count = || -> i64 {
        cluster
            .psql_in(
                pg_cluster::DATABASE,
                "SELECT count(*) FROM headscale_rs.events",
            )
            .trim()
            .parse()
            .unwrap()
    };
    let next = records(6, 3, first[4].hash());
    std::thread::scope(|scope| {
        // Another session holds the table for 2 s: our append waits, its caller gives up
        // after 1 s, and the statement commits when the lock goes.
        let holder = scope.spawn(|| {
            cluster.psql_in(
                pg_cluster::DATABASE,
                "BEGIN; LOCK TABLE headscale_rs.events IN ACCESS EXCLUSIVE MODE; \
                 SELECT pg_sleep(2); COMMIT;",
            )
        });
        let locked = "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
                      AND relation = 'headscale_rs.events'::regclass";
        let deadline = Instant::now() + Duration::from_secs(20);
        while cluster.psql_in(pg_cluster::DATABASE, locked).trim() != "1" {
            assert!(Instant::now() < deadline, "the table was never locked");
            std::thread::sleep(Duration::from_millis(10));
        }
        let error = store.append(&next).unwrap_err().to_string();
        assert!(error.contains("outcome unknown"), "{error}");
        holder.join().unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() != 8 {
        assert!(
            Instant::now() < deadline,
            "the abandoned append never committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // It committed, so it stays (another instance may have read it already): recovery
    // takes the database's head, and the next append follows it.
    store.recover().unwrap();
    assert_eq!(store.head().seq, 8);
    assert_eq!(store.head().hash, next[2].hash());
    assert_eq!(count(), 8);
    store.probe().unwrap();
    let after = records(9, 2, next[2].hash());
    store.append(&after).unwrap();
    let log: Vec<_> = store.read_range(1, u64::MAX).map(Result::unwrap).collect();
    assert_eq!(log[..5], first[..]);
    assert_eq!(log[5..8], next[..]);
    assert_eq!(log[8..], after[..]);
}

#[test]
fn bad_settings_and_newer_tables_are_refused_and_existing_tables_need_no_create_right() {
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

    // Tables of a newer layout are refused, not misread.
    drop(PostgresStore::open(&cluster.config()).unwrap());
    let db = pg_cluster::DATABASE;
    cluster.psql_in(db, "UPDATE headscale_rs.meta SET value = '2'");
    let error = PostgresStore::open(&cluster.config())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("schema version 2"), "{error}");
    cluster.psql_in(db, "UPDATE headscale_rs.meta SET value = '1'");

    // Once the tables exist, a role that may not create anything can use them.
    cluster.psql_in(
        db,
        "CREATE ROLE limited LOGIN PASSWORD 'limited-pw'; \
         REVOKE CREATE ON DATABASE hs FROM PUBLIC; \
         GRANT USAGE ON SCHEMA headscale_rs TO limited; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA headscale_rs TO limited",
    );
    let limited = headscale::config::PostgresConfig {
        user: "limited".into(),
        pass: "limited-pw".into(),
        pass_file: Default::default(),
        ..cluster.config()
    };
    let store = PostgresStore::open(&limited).unwrap();
    store.append(&records(1, 2, Default::default())).unwrap();
    let denied = cluster.psql_in(
        db,
        "SELECT has_database_privilege('limited', 'hs', 'CREATE')",
    );
    assert_eq!(denied.trim(), "f");
}

/// A test server whose log lives in `cluster` (keys and socket in its data dir).
fn server_on(cluster: &PgCluster) -> TestServer {
    server_on_yaml(&cluster.database_yaml())
}

/// A test server with `database` as its `database:` section.
fn server_on_yaml(database: &str) -> TestServer {
    TestServer::on_database(database, "")
}

/// Polls `/health` until it answers `status`, for at most 20 s.
fn wait_health(server: &TestServer, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, _) = http(server.port, "GET", "/health", None);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health stayed {got}, expected {status}: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_server_on_postgres_registers_nodes_keeps_them_across_a_restart_and_verifies() {
    let cluster = PgCluster::start();
    let mut server = server_on(&cluster);
    server.spawn();
    server.wait_healthy();
    server.create_user("ann");
    let key = server.pre_auth_key("ann", &["--reusable"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for name in ["alpha", "beta", "gamma"] {
            common::join(&server, &key, name).await;
        }
    });
    let before = node_facts(&server);
    assert_eq!(before.len(), 3);
    let online = server.ok(&["events", "verify"]);
    assert!(online.starts_with("ok: "), "{online}");
    server.stop();

    // The keys live in the data dir beside the Noise key; there is no sled store.
    let data = server.data_dir();
    assert!(data.join("checkpoint_signing.key").is_file());
    assert!(data.join("noise_private.key").is_file());
    assert!(!data.join("db.sled").exists());
    let events: i64 = cluster
        .psql_in(
            pg_cluster::DATABASE,
            "SELECT count(*) FROM headscale_rs.events",
        )
        .trim()
        .parse()
        .unwrap();
    assert!(events >= 5, "{events} events in PostgreSQL");

    // Offline, the CLI reads the PostgreSQL log directly.
    let offline = server.cli(&["events", "verify"]);
    let stdout = String::from_utf8_lossy(&offline.stdout);
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert!(offline.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("ok: {events} events"))
            && stdout.contains("signatures checked")
            && !stdout.contains("0 checkpoint(s)")
            // The shutdown snapshot, stored in PostgreSQL, matches the log.
            && stdout.contains(&format!("snapshots {events}: ok")),
        "{stdout}"
    );
    assert!(
        stderr.contains("reading the store at postgres hs@"),
        "{stderr}"
    );
    let listed = server.ok(&["events", "list"]);
    assert!(listed.lines().count() >= events as usize, "{listed}");
    let at = |seq: &str| server.json(&["nodes", "list", "--at", seq]);
    assert_eq!(at("1").as_array().map(Vec::len), Some(0));
    assert_eq!(at(&events.to_string()).as_array().map(Vec::len), Some(3));
    let salvage = server.fails(&["events", "salvage"]);
    assert!(
        salvage.contains("does not apply to database.type: postgres"),
        "{salvage}"
    );

    // Restarted: the same nodes, ids, names and addresses.
    server.spawn();
    server.wait_healthy();
    assert_eq!(node_facts(&server), before);
    runtime.block_on(common::join(&server, &key, "delta"));
    let after = node_facts(&server);
    assert_eq!(after.len(), 4);
    assert_eq!(after[..3], before[..]);
}

#[test]
fn postgres_stopped_under_load_fails_writes_unacknowledged_and_the_server_heals() {
    let cluster = PgCluster::start();
    let mut server = server_on(&cluster);
    server.spawn();
    server.wait_healthy();
    let done = AtomicBool::new(false);
    // (user name, whether `users create` said it was made)
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for writer in 0..2 {
            let (server, done, outcomes) = (&server, &done, &outcomes);
            scope.spawn(move || {
                let mut i = 0;
                while !done.load(Ordering::SeqCst) {
                    let name = format!("user-{writer}-{i}");
                    let made = server.cli(&["users", "create", &name]).status.success();
                    outcomes.lock().unwrap().push((name, made));
                    i += 1;
                }
            });
        }
        let made = |outcomes: &Mutex<Vec<(String, bool)>>| {
            outcomes
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, made)| *made)
                .count()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while made(&outcomes) < 5 {
            assert!(Instant::now() < deadline, "no writes: {}", server.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.stop_server();
        wait_health(&server, 503);
        let failed_while_down = outcomes.lock().unwrap().len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while outcomes.lock().unwrap().len() < failed_while_down + 3 {
            assert!(Instant::now() < deadline, "no attempts while down");
            std::thread::sleep(Duration::from_millis(20));
        }
        cluster.start_server();
        wait_health(&server, 200);
        let healed = made(&outcomes);
        let deadline = Instant::now() + Duration::from_secs(20);
        while made(&outcomes) < healed + 5 {
            assert!(
                Instant::now() < deadline,
                "no writes after PostgreSQL returned"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
    });
    let outcomes = outcomes.into_inner().unwrap();
    let refused = outcomes.iter().filter(|(_, made)| !made).count();
    assert!(refused >= 1, "no write failed while PostgreSQL was down");
    // Every acknowledged user is there; no refused one is.
    let users = server.json(&["users", "list"]);
    let names: std::collections::HashSet<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    for (name, made) in &outcomes {
        assert_eq!(
            names.contains(name.as_str()),
            *made,
            "{name}: acknowledged {made}"
        );
    }
    let verified = server.ok(&["events", "verify"]);
    assert!(verified.starts_with("ok: "), "{verified}");
}

#[test]
fn ssl_true_connects_over_tls_and_verifies_the_servers_certificate() {
    let cluster = PgCluster::start_with_tls();
    let mut server = server_on_yaml(&cluster.database_yaml_at("localhost", true));
    server.env.push((
        "SSL_CERT_FILE".into(),
        cluster.ca_file().display().to_string(),
    ));
    server.spawn();
    server.wait_healthy();
    server.create_user("ann");
    let encrypted = cluster.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE usename = 'hs' AND ssl",
    );
    assert_ne!(encrypted.trim(), "0", "no TLS session of ours");
    let plain = cluster.psql(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE usename = 'hs' AND NOT ssl",
    );
    assert_eq!(plain.trim(), "0");
    server.stop();

    // Trusting another CA, the server's certificate is refused and the server does not start.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let other_ca = server.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let log = std::fs::File::create(server.dir.path().join("untrusted.log")).unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .args(["serve", "-c"])
        .arg(&server.config)
        .env("SSL_CERT_FILE", &other_ca)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started although it cannot trust PostgreSQL's certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let stderr = std::fs::read_to_string(server.dir.path().join("untrusted.log")).unwrap();
    assert!(
        stderr.contains("cannot connect to PostgreSQL hs@localhost")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
}
