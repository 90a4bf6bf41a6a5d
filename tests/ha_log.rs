//! Several instances on one PostgreSQL event log, at the engine level (issue #15; the
//! acceptance tests of `shared/reviews/ha-acceptance.md`): racing appenders (T1), a new
//! instance catching up under load (T2), PostgreSQL killed and restarted (T4), a lost
//! notification connection and the append rate of three instances (T7). Each "instance" is
//! an engine over its own `PostgresStore` (its own connections), as `headscale serve` runs
//! it, with the log tail of `ha::tail` where the test needs one. The cluster-level tests (an
//! instance killed under clients, a partition, a reconnect storm) are in `tests/ha_cluster.rs`.
//!
//! The figures T7 asks for are printed (run with `--nocapture`); nothing here asserts a time.

mod common;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use headscale::config::PostgresConfig;
use headscale::core::command::RegisterAuth;
use headscale::core::event::NodeHostinfo;
use headscale::core::ids::UserId;
use headscale::core::keys::{MachineKey, NodeKey};
use headscale::core::{Actor, Command, Envelope, State};
use headscale::engine::{EngineError, EngineHandle, EngineOptions};
use headscale::store::postgres_store::PostgresStore;
use headscale::store::replay::load_state;
use headscale::store::EventStore;
use pg_cluster::PgCluster;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One instance: an engine over a store of its own on the shared database.
fn instance(config: &PostgresConfig, options: EngineOptions) -> EngineHandle {
    let config = config.clone();
    common::start_engine(
        Box::new(move || Ok(Arc::new(PostgresStore::open(&config)?) as Arc<dyn EventStore>)),
        options,
    )
    .expect("the engine starts on PostgreSQL")
}

/// An instance that also follows the log (NOTIFY hints and a poll), as `serve` does.
fn following(config: &PostgresConfig, options: EngineOptions, poll: Duration) -> EngineHandle {
    let engine = instance(config, options);
    let pool = headscale::ha::pool::SharedPool::new(config).unwrap();
    headscale::ha::tail::spawn(engine.clone(), &pool, poll);
    engine
}

/// A node's keys from (instance, number): distinct per pair, never all zero.
fn keys(instance: u8, n: u32) -> (MachineKey, NodeKey) {
    let mut bytes = [0u8; 32];
    bytes[0] = instance + 1;
    bytes[1..5].copy_from_slice(&n.to_be_bytes());
    let machine = MachineKey(bytes);
    bytes[31] = 0xaa;
    (machine, NodeKey(bytes))
}

fn register(user: UserId, instance: u8, n: u32) -> Command {
    let (machine_key, node_key) = keys(instance, n);
    Command::RegisterNode {
        machine_key,
        node_key,
        hostinfo: NodeHostinfo {
            hostname: format!("i{instance}-n{n}"),
            ..NodeHostinfo::default()
        },
        auth: RegisterAuth::Admin { user },
        requested_expiry: None,
        ephemeral: false,
        entropy: u64::from(n),
    }
}

/// Configures the tailnet (address ranges) and creates user `name` on `engine`; returns
/// the user's id.
async fn user(engine: &EngineHandle, name: &str) -> UserId {
    let config = Command::ApplyConfig {
        hash: headscale::core::keys::Digest([7; 32]),
        core: headscale::core::event::CoreConfig {
            prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
            prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
            allocation: headscale::core::event::Allocation::Sequential,
            base_domain: "tailnet.example".into(),
            node_expiry_secs: 0,
            ephemeral_inactivity_secs: 1800,
            require_approval: false,
        },
        netmap_json: "{}".into(),
    };
    engine.execute(Actor::System, config).await.unwrap();
    engine
        .execute(Actor::System, common::create_user(name))
        .await
        .unwrap();
    engine.state().user_by_name(name).unwrap().id
}

/// Reads the whole log from a fresh connection: the chain is checked on the way (`load_state`
/// verifies every link) and the envelopes are returned by seq.
fn log_of(config: &PostgresConfig) -> (State, BTreeMap<u64, Envelope>) {
    let store = PostgresStore::open(config).unwrap();
    let state = load_state(&store, None).expect("the log replays from event 1");
    let head = store.head().seq;
    let envelopes = headscale::store::replay::read_envelopes(&store, 1, head)
        .map(|e| {
            let e = e.unwrap();
            (e.seq, e)
        })
        .collect::<BTreeMap<_, _>>();
    assert_eq!(envelopes.len() as u64, head, "the log has a gap");
    (state, envelopes)
}

/// Every acknowledged envelope is in the log, at its seq, exactly as acknowledged.
fn assert_acknowledged_in_log(acknowledged: &[Envelope], log: &BTreeMap<u64, Envelope>) {
    let mut seqs = HashSet::new();
    for envelope in acknowledged {
        assert!(
            seqs.insert(envelope.seq),
            "seq {} was acknowledged twice",
            envelope.seq
        );
        assert_eq!(
            log.get(&envelope.seq),
            Some(envelope),
            "acknowledged seq {} is not in the log as acknowledged",
            envelope.seq
        );
    }
}

/// No IPv4, IPv6 or node key is held by two nodes.
fn assert_unique_allocations(state: &State) {
    let (mut v4, mut v6, mut node_keys) = (HashSet::new(), HashSet::new(), HashSet::new());
    for node in state.nodes.values() {
        if let Some(ip) = node.ipv4 {
            assert!(v4.insert(ip), "{ip} allocated twice");
        }
        if let Some(ip) = node.ipv6 {
            assert!(v6.insert(ip), "{ip} allocated twice");
        }
        assert!(
            node_keys.insert(node.node_key),
            "a node key is on two nodes"
        );
    }
}

async fn caught_up(engines: &[&EngineHandle]) -> State {
    let mut states = Vec::new();
    for engine in engines {
        engine.catch_up().await.unwrap();
        states.push(engine.state());
    }
    for state in &states[1..] {
        assert_eq!(**state, *states[0], "instances disagree after catching up");
    }
    (*states[0]).clone()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// T1: four instances register nodes at once (each decides at the head it saw and loses
/// races to the others; `HA_SCALE=1` for 10,000 rounds), and all of them try to register
/// one contested machine. Exactly one
/// winner per seq: the log is one gap-free chain, every acknowledged event sits at its seq
/// exactly once, no address or node key is handed out twice, and every instance ends with
/// the state a replay from event 1 gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t1_racing_instances_append_one_chain_without_duplicates() {
    let cluster = PgCluster::start();
    let config = cluster.config();
    let engines: Vec<EngineHandle> = (0..4)
        .map(|_| instance(&config, EngineOptions::default()))
        .collect();
    let owner = user(&engines[0], "racer").await;
    // `HA_SCALE=1`: 2,500 registrations per instance (10,000 rounds) instead of 40.
    let per_instance: u32 = if std::env::var_os("HA_SCALE").is_some() {
        2500
    } else {
        40
    };
    let conflicts_before = headscale::metrics::metrics().append_conflicts.get();
    let mut tasks = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..per_instance {
                let envelopes = engine
                    .execute(Actor::System, register(owner, i as u8, n))
                    .await
                    .unwrap_or_else(|e| panic!("instance {i} node {n}: {e}"));
                acknowledged.extend(envelopes);
                if n == per_instance / 2 {
                    // Everyone registers the same machine: one node, whoever wins.
                    let contested = register(owner, 200, 0);
                    match engine.execute(Actor::System, contested).await {
                        Ok(envelopes) => acknowledged.extend(envelopes),
                        Err(EngineError::Rejected(_)) => {}
                        Err(e) => panic!("instance {i}, contested: {e}"),
                    }
                }
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    let refs: Vec<&EngineHandle> = engines.iter().collect();
    let state = caught_up(&refs).await;
    let (replayed, log) = log_of(&config);
    assert_eq!(state, replayed);
    assert_acknowledged_in_log(&acknowledged, &log);
    assert_unique_allocations(&state);
    let contested = keys(200, 0).1;
    assert_eq!(
        state.nodes_by_node_key(&contested).count(),
        1,
        "the contested machine is one node"
    );
    assert_eq!(state.nodes.len() as u32, 4 * per_instance + 1);
    eprintln!(
        "T1: {} events, {} nodes, {} append conflicts retried",
        log.len(),
        state.nodes.len(),
        headscale::metrics::metrics().append_conflicts.get() - conflicts_before
    );
}

/// T2: a new instance starts from an empty cache while two others keep appending: it loads
/// the newest snapshot, replays the rest and follows the log with no gap at the seam; at the
/// end all three hold the state a replay from event 1 (no snapshot) gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t2_a_new_instance_catches_up_under_load_without_a_gap() {
    let cluster = PgCluster::start();
    let config = cluster.config();
    let options = EngineOptions {
        snapshot_every_events: 100,
        ..EngineOptions::default()
    };
    let a = following(&config, options.clone(), Duration::from_millis(200));
    let b = following(&config, options.clone(), Duration::from_millis(200));
    let owner = user(&a, "loaded").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for (i, engine) in [a.clone(), b.clone()].into_iter().enumerate() {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                acknowledged.extend(
                    engine
                        .execute(Actor::System, register(owner, i as u8, n))
                        .await
                        .unwrap(),
                );
                n += 1;
            }
            acknowledged
        }));
    }
    // Let the log grow past a few snapshots, then start the newcomer under the load.
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.state().last_seq < 400 {
        assert!(
            Instant::now() < deadline,
            "the load never reached 400 events"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let c = following(&config, options, Duration::from_millis(200));
    let loaded_at = c.state().last_seq;
    let head_then = a.state().last_seq;
    c.catch_up().await.unwrap();
    let caught_up_after = started.elapsed();
    assert!(
        matches!(
            c.snapshot_check(),
            headscale::engine::SnapshotCheck::Pending { .. }
                | headscale::engine::SnapshotCheck::Matched { .. }
        ),
        "the newcomer started from a snapshot: {:?}",
        c.snapshot_check()
    );
    // It keeps following while the load goes on.
    let followed_from = c.state().last_seq;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.state().last_seq < followed_from + 100 {
        assert!(Instant::now() < deadline, "the newcomer stopped following");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged = Vec::new();
    for task in load {
        acknowledged.extend(task.await.unwrap());
    }
    let state = caught_up(&[&a, &b, &c]).await;
    let (replayed, log) = log_of(&config);
    assert_eq!(state, replayed, "the newcomer's state is the log's");
    assert_acknowledged_in_log(&acknowledged, &log);
    assert_unique_allocations(&state);
    eprintln!(
        "T2: newcomer loaded seq {loaded_at} (head was {head_then}), caught up in {caught_up_after:?}; \
         final log {} events",
        log.len()
    );
}

/// Waits until `engine` has reached `seq` (through its tail, not by asking it to catch up).
async fn sees(engine: &EngineHandle, seq: u64, within: Duration) -> Duration {
    let started = Instant::now();
    let mut published = engine.subscribe();
    loop {
        if published.borrow_and_update().state.last_seq >= seq {
            return started.elapsed();
        }
        let left = within.saturating_sub(started.elapsed());
        assert!(!left.is_zero(), "seq {seq} not seen within {within:?}");
        let _ = tokio::time::timeout(left, published.changed()).await;
    }
}

/// T4: PostgreSQL stopped hard and started again under two instances. While it is down,
/// appends fail (nothing acknowledged) and both instances go stale (fail closed); when it
/// is back, appends resume, both are fresh again, and each sees the other's writes through
/// its tail (the notification connection came back; hints sent meanwhile were lost). No
/// acknowledged event is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t4_postgres_restarted_loses_no_acknowledged_event_and_tails_resume() {
    let cluster = PgCluster::start();
    let config = cluster.config();
    let options = EngineOptions {
        max_staleness: Duration::from_secs(2),
        ..EngineOptions::default()
    };
    // A long poll: only the notification path (and its reconnect) can be quick.
    let poll = Duration::from_secs(600);
    let a = following(&config, options.clone(), poll);
    let b = following(&config, options, poll);
    let owner = user(&a, "durable").await;
    let mut acknowledged = Vec::new();
    for n in 0..10 {
        acknowledged.extend(
            a.execute(Actor::System, register(owner, 0, n))
                .await
                .unwrap(),
        );
    }
    sees(&b, a.state().last_seq, Duration::from_secs(5)).await;

    cluster.stop_server();
    let refused = a
        .execute(Actor::System, register(owner, 0, 100))
        .await
        .expect_err("no append is acknowledged while PostgreSQL is down");
    assert!(
        matches!(refused, EngineError::Store(_) | EngineError::Timeout(_)),
        "{refused}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.is_fresh() || b.is_fresh() {
        assert!(Instant::now() < deadline, "an instance never went stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.health_problem().is_some());

    cluster.start_server();
    let back = Instant::now();
    let mut resumed = None;
    while resumed.is_none() {
        assert!(
            back.elapsed() < Duration::from_secs(60),
            "appends never resumed"
        );
        match b.execute(Actor::System, register(owner, 1, 0)).await {
            Ok(envelopes) => resumed = Some(envelopes),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let appends_resumed_after = back.elapsed();
    acknowledged.extend(resumed.unwrap());
    // A's tail must bring B's write without anyone asking A to catch up.
    let b_head = b.state().last_seq;
    let a_saw_after = sees(&a, b_head, Duration::from_secs(30)).await;
    for n in 1..5 {
        acknowledged.extend(
            a.execute(Actor::System, register(owner, 0, 200 + n))
                .await
                .unwrap(),
        );
    }
    sees(&b, a.state().last_seq, Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.is_fresh() && b.is_fresh()) {
        assert!(Instant::now() < deadline, "the instances stayed stale");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let state = caught_up(&[&a, &b]).await;
    let (replayed, log) = log_of(&config);
    assert_eq!(state, replayed);
    assert_acknowledged_in_log(&acknowledged, &log);
    eprintln!(
        "T4: appends resumed {appends_resumed_after:?} after PostgreSQL started; the other \
         instance's tail saw the first write {a_saw_after:?} later"
    );
}

/// T7: the notification connection is killed under a running pair: the reconnect reads the
/// log at once, so the write made meanwhile arrives without waiting for the (long) poll.
/// Then the figures: how fast a write on one instance reaches another through NOTIFY, and
/// the append rate and latency of three instances appending at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t7_a_lost_notification_connection_loses_no_write_and_the_append_rate() {
    let cluster = PgCluster::start();
    let config = cluster.config();
    let poll = Duration::from_secs(600);
    let a = following(&config, EngineOptions::default(), poll);
    let b = following(&config, EngineOptions::default(), poll);
    let owner = user(&a, "notified").await;
    sees(&b, a.state().last_seq, Duration::from_secs(5)).await;

    // Propagation through NOTIFY: a write on A, seen by B's tail.
    let mut propagation = Vec::new();
    for n in 0..50 {
        a.execute(Actor::System, register(owner, 0, n))
            .await
            .unwrap();
        propagation.push(sees(&b, a.state().last_seq, Duration::from_secs(5)).await);
    }
    propagation.sort();

    // Every listening connection is ended; writes go on meanwhile.
    let kill = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                WHERE application_name = 'headscale-rs listen'";
    assert_eq!(
        cluster.psql_in(pg_cluster::DATABASE, kill).trim(),
        "2",
        "both listeners were killed"
    );
    for n in 100..110 {
        a.execute(Actor::System, register(owner, 0, n))
            .await
            .unwrap();
    }
    let recovered_after = sees(&b, a.state().last_seq, Duration::from_secs(20)).await;

    // Three instances, four writers each, for three seconds.
    let c = following(&config, EngineOptions::default(), poll);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut writers = Vec::new();
    for (i, engine) in [a.clone(), b.clone(), c.clone()].into_iter().enumerate() {
        for w in 0..4u32 {
            let (engine, stop) = (engine.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 1000 + w * 100_000;
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    engine
                        .execute(Actor::System, register(owner, 10 + i as u8, n))
                        .await
                        .unwrap();
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    for writer in writers {
        latencies.extend(writer.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let state = caught_up(&[&a, &b, &c]).await;
    let (replayed, _) = log_of(&config);
    assert_eq!(state, replayed);
    assert_unique_allocations(&state);
    eprintln!(
        "T7: NOTIFY propagation p50 {:?} p99 {:?}; after the listeners were killed the write \
         arrived in {recovered_after:?}; 3 instances × 4 writers: {} appends in {elapsed:.1?} \
         = {:.0}/s, latency p50 {:?} p99 {:?}",
        percentile(&propagation, 0.5),
        percentile(&propagation, 0.99),
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
}
