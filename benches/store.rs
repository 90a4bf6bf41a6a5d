//! Store and engine benchmark: group-commit append throughput through the engine, raw store
//! appends, replay rate, and start-up time with and without a snapshot, on a log of
//! `BENCH_EVENTS` events (default 1,000,000) about a steady fleet of 1,000 nodes.
//! The same engine append, raw append and replay on the PostgreSQL store, on a throwaway
//! cluster (`tests/pg_cluster/`; needs PostgreSQL's server binaries; `BENCH_POSTGRES=0` skips
//! it), with at most `BENCH_PG_EVENTS` events (default 200,000).
//! Run: `cargo bench --bench store` (results: benches/BENCHMARKS.md).

use headscale::core::command::{Command, RegisterAuth};
use headscale::core::event::{Actor, Allocation, CoreConfig, NodeHostinfo};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::state::fold;
use headscale::core::{Envelope, State, Timestamp};
use headscale::engine::{self, EngineOptions, SystemClock};
use headscale::store::disk_store::DiskStore;
use headscale::store::record::{encode_snapshot, StoredRecord};
use headscale::store::replay::{load_state_with, read_envelopes, replay_into};
use headscale::store::snapshot_sig;
use headscale::store::EventStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/pg_cluster/mod.rs"]
mod pg_cluster;

const FLEET: u64 = 1000;
const WRITERS: u64 = 2048;

fn open(path: &std::path::Path) -> Arc<dyn EventStore> {
    Arc::new(DiskStore::open(path, 256 << 20).expect("open store"))
}

fn hostinfo(name: String) -> NodeHostinfo {
    NodeHostinfo {
        hostname: name,
        os: "linux".into(),
        ..Default::default()
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Fills the store through the engine; returns (events, seconds).
fn append_through_engine(store: Arc<dyn EventStore>, total: u64) -> (u64, f64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = EngineOptions {
        snapshot_every_events: u64::MAX,
        snapshot_every: Duration::from_secs(1 << 30),
        checkpoint_every_events: 10_000,
        ..EngineOptions::default()
    };
    let engine = engine::start(
        Box::new(move || Ok(store.clone())),
        Box::new(SystemClock),
        ed25519_dalek::SigningKey::from_bytes(&[1; 32]),
        options,
    )
    .unwrap();
    runtime.block_on(async {
        let setup = [
            Command::ApplyConfig {
                hash: Digest([1; 32]),
                core: CoreConfig {
                    prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
                    prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
                    allocation: Allocation::Sequential,
                    base_domain: "bench.example".into(),
                    ..Default::default()
                },
                netmap_json: "{}".into(),
            },
            Command::CreateUser {
                name: "bench".into(),
                display_name: String::new(),
                email: String::new(),
                picture_url: String::new(),
            },
        ];
        for command in setup {
            engine.execute(Actor::System, command).await.unwrap();
        }
        for i in 0..FLEET {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_be_bytes());
            let command = Command::RegisterNode {
                machine_key: MachineKey(key),
                node_key: NodeKey(key),
                hostinfo: hostinfo(format!("node-{i}")),
                auth: RegisterAuth::Admin { user: UserId(1) },
                requested_expiry: None,
                ephemeral: false,
                entropy: i,
            };
            engine.execute(Actor::LocalSocket, command).await.unwrap();
        }
        let start = Instant::now();
        let base = engine.state().last_seq;
        let per_writer = total.saturating_sub(base) / WRITERS;
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let engine = engine.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..per_writer {
                    let node = NodeId(1 + (writer * per_writer + n) % FLEET);
                    let command = Command::UpdateHostinfo {
                        id: node,
                        hostinfo: hostinfo(format!("h-{writer}-{n}")),
                    };
                    engine.execute(Actor::Node(node), command).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = start.elapsed().as_secs_f64();
        let appended = engine.state().last_seq - base;
        engine.shutdown().await;
        (appended, elapsed)
    })
}

fn raw_append(path: &std::path::Path, total: u64, batch: usize) -> f64 {
    raw_append_to(open(path), total, batch)
}

fn raw_append_to(store: Arc<dyn EventStore>, total: u64, batch: usize) -> f64 {
    let mut prev = Digest::default();
    let mut records = Vec::with_capacity(batch);
    let start = Instant::now();
    for seq in 1..=total {
        let envelope = Envelope {
            seq,
            at: Timestamp(seq as i64),
            actor: Actor::Node(NodeId(seq % FLEET)),
            event: headscale::core::Event::NodeHostinfoChanged {
                id: NodeId(seq % FLEET),
                hostinfo: hostinfo(format!("h-{seq}")),
            },
        };
        let record = StoredRecord::encode(&envelope, prev).unwrap();
        prev = record.hash();
        records.push(record);
        if records.len() == batch {
            store.append(&records).unwrap();
            records.clear();
        }
    }
    store.append(&records).unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let total: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine.sled");
    println!("benchmark: {total} events, fleet of {FLEET} nodes, {WRITERS} concurrent writers");

    let store = open(&path);
    let (appended, seconds) = append_through_engine(store.clone(), total);
    let engine_rate = appended as f64 / seconds;

    let head = store.head().seq;
    let start = Instant::now();
    let envelopes: Vec<Envelope> = read_envelopes(store.as_ref(), 1, head)
        .collect::<Result<_, _>>()
        .unwrap();
    let decode_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let folded = fold(State::default(), &envelopes);
    let fold_seconds = start.elapsed().as_secs_f64();
    drop(envelopes);

    // Start-up without a snapshot: replay the whole chain from the empty state.
    let start = Instant::now();
    let mut replayed = State::default();
    replay_into(
        store.as_ref(),
        &mut replayed,
        &mut Digest::default(),
        1,
        head,
    )
    .unwrap();
    let startup_without_snapshot = start.elapsed().as_secs_f64();
    assert_eq!(replayed, folded);

    // Start-up with a snapshot: what the engine's clean shutdown leaves (open + snapshot + tail).
    let snapshot = encode_snapshot(&replayed).unwrap();
    // Signed as the engine signs it: start-up trusts no other snapshot (L11).
    let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
    let signed = snapshot_sig::sign(&key, head, store.head().hash, &snapshot);
    store.put_snapshot(head, &signed).unwrap();
    drop(store);
    let start = Instant::now();
    let reopened = open(&path);
    let open_seconds = start.elapsed().as_secs_f64();
    drop(reopened);
    let start = Instant::now();
    let store = open(&path);
    let loaded = load_state_with(store.as_ref(), None, Some(&key.verifying_key())).unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|(seq, _)| *seq), Some(head));
    let from_snapshot = loaded.state;
    let startup_with_snapshot = start.elapsed().as_secs_f64();
    assert_eq!(from_snapshot, folded);
    drop(store);

    let raw_path = dir.path().join("raw.sled");
    let raw_rate = raw_append(&raw_path, total.min(200_000), 1000);

    println!();
    println!("| measurement | result |");
    println!("|---|---|");
    println!("| events in log | {head} |");
    println!("| append through engine (decide + encode + group commit + apply) | {engine_rate:.0} events/s |");
    println!("| raw store append, batches of 1000, fsync per batch | {raw_rate:.0} events/s |");
    println!(
        "| read + verify + decode records | {:.0} events/s |",
        head as f64 / decode_seconds
    );
    println!(
        "| apply (fold) decoded events | {:.0} events/s |",
        head as f64 / fold_seconds
    );
    println!("| replay rate, start-up without snapshot (read + verify + decode + apply) | {:.0} events/s ({startup_without_snapshot:.2} s) |", head as f64 / startup_without_snapshot);
    println!(
        "| start-up with a snapshot at the head ({} KiB) | {:.3} s |",
        snapshot.len() / 1024,
        startup_with_snapshot
    );
    println!("| of which opening the store (indexing the log file) | {open_seconds:.3} s |");
    println!("| peak RSS | {:.0} MiB |", rss_mib());

    if std::env::var("BENCH_POSTGRES").as_deref() != Ok("0") {
        postgres_rows(total);
    }
}

/// Engine append, raw append and replay on PostgreSQL (a throwaway cluster, fsync on).
fn postgres_rows(total: u64) {
    use headscale::store::postgres_store::PostgresStore;
    let total: u64 = std::env::var("BENCH_PG_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
        .min(total);
    let cluster = pg_cluster::PgCluster::start();
    let config = cluster.config();
    let open_pg = || -> Arc<dyn EventStore> { Arc::new(PostgresStore::open(&config).unwrap()) };
    let store = open_pg();
    let (appended, seconds) = append_through_engine(store.clone(), total);
    let head = store.head().seq;
    drop(store);
    let start = Instant::now();
    let store = open_pg();
    let mut replayed = State::default();
    replay_into(
        store.as_ref(),
        &mut replayed,
        &mut Digest::default(),
        1,
        head,
    )
    .unwrap();
    let replay_seconds = start.elapsed().as_secs_f64();
    drop(store);
    // The raw appends go to a second database of their own.
    cluster.psql(&format!("CREATE DATABASE raw OWNER {}", pg_cluster::USER));
    let raw_config = headscale::config::PostgresConfig {
        name: "raw".into(),
        ..config.clone()
    };
    let raw_rate = raw_append_to(
        Arc::new(PostgresStore::open(&raw_config).unwrap()),
        total,
        1000,
    );
    println!();
    println!("| PostgreSQL 15, unix socket, fsync on ({head} events) | result |");
    println!("|---|---|");
    println!(
        "| append through engine (group commit: one INSERT per batch) | {:.0} events/s |",
        appended as f64 / seconds
    );
    println!(
        "| raw store append, batches of 1000, one commit per batch | {raw_rate:.0} events/s |"
    );
    println!(
        "| replay rate, start-up without snapshot (open + read + verify + decode + apply) | {:.0} events/s ({replay_seconds:.2} s) |",
        head as f64 / replay_seconds
    );
}
