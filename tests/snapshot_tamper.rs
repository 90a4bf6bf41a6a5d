//! Snapshots bound to the hash chain (audit L11): a snapshot planted in the store (decodable,
//! with another state: an extra user) is never used at start — the state equals a full
//! replay of the log — whether it is unsigned, signed by another key, or signed by the right
//! key for another log; an unsigned snapshot of an older build is skipped gracefully with an
//! identical state; the engine's own snapshots are signed and used. `events verify` judges
//! every stored snapshot (ok / unsigned / bad signature / head mismatch / differs from the
//! log), in the store and end to end through a real server's data directory. A snapshot
//! forged with the signing key itself (the limit of signatures kept beside the data) is
//! used at start but caught by the background comparison with a full replay: the state is
//! re-derived from the log and the snapshot dropped.

mod common;

use headscale::core::ids::UserId;
use headscale::core::{Actor, Command, State, Timestamp};
use headscale::engine::{self, Clock, EngineHandle, EngineOptions, SnapshotCheck};
use headscale::store::disk_store::DiskStore;
use headscale::store::memory::MemoryStore;
use headscale::store::record::{decode_snapshot, encode_snapshot};
use headscale::store::replay::{load_state, load_state_with, verify_chain, SnapshotStatus};
use headscale::store::snapshot_sig::{self, Authenticity};
use headscale::store::EventStore;
use std::sync::Arc;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_767_225_600_000)
    }
}

const KEY: [u8; 32] = [3; 32];

fn key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&KEY)
}

fn create(name: &str) -> Command {
    Command::CreateUser {
        name: name.into(),
        display_name: String::new(),
        email: String::new(),
        picture_url: String::new(),
    }
}

fn start(store: &MemoryStore, signing: [u8; 32]) -> EngineHandle {
    start_with(store, signing, EngineOptions::default())
}

fn start_with(store: &MemoryStore, signing: [u8; 32], options: EngineOptions) -> EngineHandle {
    let opened = store.clone();
    engine::start(
        Box::new(move || Ok(Arc::new(opened.clone()) as Arc<dyn EventStore>)),
        Box::new(FixedClock),
        ed25519_dalek::SigningKey::from_bytes(&signing),
        options,
    )
    .unwrap()
}

/// Checks the start-up snapshot at once.
fn checking_at_once() -> EngineOptions {
    EngineOptions {
        snapshot_check_delay: std::time::Duration::ZERO,
        ..EngineOptions::default()
    }
}

/// Polls `done` for up to 10 s (a liveness bound, not a speed target).
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A store whose log holds `users` (one event each) and whose clean shutdown left a signed
/// snapshot and checkpoint at the head, made with `signing`.
async fn store_with(users: &[&str], signing: [u8; 32]) -> MemoryStore {
    let store = MemoryStore::new();
    let engine = start(&store, signing);
    for user in users {
        engine
            .execute(Actor::LocalSocket, create(user))
            .await
            .unwrap();
    }
    engine.shutdown().await;
    store
}

fn snapshot_value(store: &MemoryStore) -> (u64, Vec<u8>) {
    store.snapshot_at_or_before(u64::MAX).unwrap().unwrap()
}

fn names(state: &State) -> Vec<String> {
    state.users.values().map(|u| u.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_own_snapshot_is_signed_bound_to_the_head_and_used() {
    let store = store_with(&["alice", "bob"], KEY).await;
    let (seq, value) = snapshot_value(&store);
    assert_eq!(seq, 2);
    let record_hash = store.read(2).unwrap().unwrap().hash();
    let trusted = key().verifying_key();
    let (verdict, bytes) =
        snapshot_sig::authenticate(seq, &value, Some(&record_hash), Some(&trusted));
    assert_eq!(verdict, Authenticity::Signed);
    assert_eq!(names(&decode_snapshot(bytes).unwrap()), ["alice", "bob"]);

    let loaded = load_state_with(&store, None, Some(&trusted)).unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|(seq, _)| *seq), Some(2));
    assert_eq!(loaded.state, load_state(&store, None).unwrap());
    let engine = start(&store, KEY);
    assert_eq!(*engine.state(), loaded.state);
    engine.shutdown().await;
}

/// Every way of planting a decodable snapshot with an extra user at the head's seq.
async fn planted_values(store: &MemoryStore) -> Vec<(&'static str, Vec<u8>)> {
    // The same seq, but another history: alice and mallory.
    let other = store_with(&["alice", "mallory"], KEY).await;
    let (_, signed_for_other_log) = snapshot_value(&other);
    let (bytes, _) = snapshot_sig::split(&signed_for_other_log);
    let forged = decode_snapshot(bytes).unwrap();
    assert_eq!(names(&forged), ["alice", "mallory"]);
    let unsigned = encode_snapshot(&forged).unwrap();
    let own_head = store.read(2).unwrap().unwrap().hash();
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    vec![
        ("unsigned", unsigned.clone()),
        (
            "signed by another key",
            snapshot_sig::sign(&attacker, 2, own_head, &unsigned),
        ),
        ("signed by our key for another log", signed_for_other_log),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_snapshot_is_ignored_at_start() {
    let trusted = key().verifying_key();
    for case in 0..3 {
        let store = store_with(&["alice", "bob"], KEY).await;
        let full = load_state(&store, None).unwrap();
        assert_eq!(names(&full), ["alice", "bob"]);
        let (how, value) = planted_values(&store).await.swap_remove(case);
        store.put_snapshot(2, &value).unwrap();
        let loaded = load_state_with(&store, None, Some(&trusted)).unwrap();
        assert!(loaded.snapshot.is_none(), "{how}: the snapshot was used");
        assert_eq!(loaded.state, full, "{how}");
        let engine = start(&store, KEY);
        assert_eq!(*engine.state(), full, "{how}: the engine started from it");
        assert!(engine.state().user_by_name("mallory").is_none(), "{how}");
        // Commands go on from the log's state.
        engine
            .execute(Actor::LocalSocket, create("carol"))
            .await
            .unwrap();
        engine.shutdown().await;
        assert_eq!(*engine.state(), load_state(&store, None).unwrap(), "{how}");
        assert_eq!(names(&engine.state()), ["alice", "bob", "carol"], "{how}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_snapshot_of_an_older_build_is_skipped_with_an_identical_state() {
    let store = store_with(&["alice", "bob", "carol"], KEY).await;
    let full = load_state(&store, None).unwrap();
    // What an older build wrote: the same state, no signature.
    store
        .put_snapshot(3, &encode_snapshot(&full).unwrap())
        .unwrap();
    let loaded = load_state_with(&store, None, Some(&key().verifying_key())).unwrap();
    assert!(loaded.snapshot.is_none());
    assert_eq!(loaded.state, full);
    let engine = start(&store, KEY);
    assert_eq!(*engine.state(), full);
    engine
        .execute(Actor::LocalSocket, create("dave"))
        .await
        .unwrap();
    engine.shutdown().await;
    // The clean shutdown replaced it with a signed snapshot, used at the next start.
    let loaded = load_state_with(&store, None, Some(&key().verifying_key())).unwrap();
    assert_eq!(loaded.snapshot.as_ref().map(|(seq, _)| *seq), Some(4));
    assert_eq!(names(&loaded.state), ["alice", "bob", "carol", "dave"]);
}

/// `state` plus a user the log never created.
fn with_mallory(state: &State) -> State {
    let mut forged = state.clone();
    let mut user = forged.users.values().next().unwrap().clone();
    user.id = UserId(999);
    user.name = "mallory".into();
    forged.users.insert(user.id, user);
    forged
}

fn statuses(
    store: &MemoryStore,
    trusted: Option<&ed25519_dalek::VerifyingKey>,
) -> Vec<(u64, SnapshotStatus)> {
    verify_chain(store, trusted)
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| (s.seq, s.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_verify_judges_every_snapshot() {
    let store = store_with(&["alice", "bob", "carol"], KEY).await;
    let trusted = key().verifying_key();
    let at = |seq| load_state(&store, Some(seq)).unwrap();
    let head = |seq| store.read(seq).unwrap().unwrap().hash();
    // An older build's snapshot (same state), a planted one, and the engine's own.
    store
        .put_snapshot(1, &encode_snapshot(&at(1)).unwrap())
        .unwrap();
    store
        .put_snapshot(2, &encode_snapshot(&with_mallory(&at(2))).unwrap())
        .unwrap();
    let report = verify_chain(&store, Some(&trusted)).unwrap();
    assert_eq!(report.events, 3);
    let found: Vec<_> = report
        .snapshots
        .iter()
        .map(|s| (s.seq, s.status.clone()))
        .collect();
    assert_eq!(
        found,
        [
            (1, SnapshotStatus::Unsigned),
            (2, SnapshotStatus::DiffersFromLog),
            (3, SnapshotStatus::Ok)
        ]
    );
    let suspicious: Vec<u64> = report.suspicious_snapshots().map(|s| s.seq).collect();
    assert_eq!(suspicious, [2]);

    // Signed by another key; signed by ours but with another state (the key was read);
    // ours for another log; beyond the end of the log.
    let attacker = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let bytes = encode_snapshot(&at(2)).unwrap();
    store
        .put_snapshot(2, &snapshot_sig::sign(&attacker, 2, head(2), &bytes))
        .unwrap();
    let forged = encode_snapshot(&with_mallory(&at(3))).unwrap();
    store
        .put_snapshot(3, &snapshot_sig::sign(&key(), 3, head(3), &forged))
        .unwrap();
    let other = store_with(&["alice", "bob", "carol", "dave"], KEY).await;
    store.put_snapshot(4, &snapshot_value(&other).1).unwrap();
    let found = statuses(&store, Some(&trusted));
    assert!(
        matches!(&found[1], (2, SnapshotStatus::BadSignature(_))),
        "{found:?}"
    );
    assert_eq!(found[2], (3, SnapshotStatus::DiffersFromLog));
    assert_eq!(found[3], (4, SnapshotStatus::HeadMismatch));
    // Without the key, the head binding and the fold are still checked.
    let found = statuses(&store, None);
    assert_eq!(found[1], (2, SnapshotStatus::Ok));
    assert_eq!(found[2], (3, SnapshotStatus::DiffersFromLog));
    assert_eq!(found[3], (4, SnapshotStatus::HeadMismatch));
    // Damage is a cache miss, not evidence.
    store.put_snapshot(2, b"\x01garbage").unwrap();
    let found = statuses(&store, Some(&trusted));
    assert!(
        matches!(&found[1], (2, SnapshotStatus::Unreadable(_))),
        "{found:?}"
    );
    assert!(!found[1].1.is_evidence());
}

/// Opens the stopped server's store (its sled lock may linger a moment after exit).
fn open_store(server: &common::TestServer) -> DiskStore {
    let path = server.data_dir().join("db.sled");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match DiskStore::open(&path, 1 << 20) {
            Ok(store) => return store,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(error) => panic!("cannot open the store: {error}"),
        }
    }
}

fn user_names(server: &common::TestServer) -> Vec<String> {
    let users = server.json(&["users", "list"]);
    let mut names: Vec<String> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_planted_in_the_data_directory_is_ignored_and_reported() {
    let mut server = common::TestServer::start();
    server.create_user("alice");
    server.create_user("bob");
    server.stop();
    let seq = {
        let store = open_store(&server);
        let (seq, value) = store.snapshot_at_or_before(u64::MAX).unwrap().unwrap();
        let (bytes, signature) = snapshot_sig::split(&value);
        assert!(signature.is_some(), "the server signs its snapshots");
        let planted = encode_snapshot(&with_mallory(&decode_snapshot(bytes).unwrap())).unwrap();
        store.put_snapshot(seq, &planted).unwrap();
        seq
    };
    // Offline: reads ignore it, and `events verify` names it.
    assert_eq!(user_names(&server), ["alice", "bob"]);
    let line = server.fails(&["events", "verify"]);
    assert!(
        line.contains(&format!("snapshot at seq {seq}: differs from the log")),
        "{line}"
    );
    // Started: the state is the log's.
    server.spawn();
    assert_eq!(user_names(&server), ["alice", "bob"]);
    server.stop();
    // The clean stop wrote a signed snapshot at the new head; the planted one stays
    // reported until it is pruned.
    let verify = server.cli(&["events", "verify"]);
    let out = String::from_utf8_lossy(&verify.stdout).to_string()
        + &String::from_utf8_lossy(&verify.stderr);
    assert!(out.contains(&format!("snapshot at seq {seq}")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genuine_start_up_snapshot_is_confirmed_in_the_background() {
    let store = store_with(&["alice", "bob"], KEY).await;
    let engine = start_with(&store, KEY, checking_at_once());
    eventually("the check", || {
        engine.snapshot_check() == SnapshotCheck::Matched { seq: 2 }
    })
    .await;
    assert_eq!(*engine.state(), load_state(&store, None).unwrap());
    engine.shutdown().await;
    // Without a snapshot there is nothing to compare.
    let fresh = MemoryStore::new();
    let engine = start_with(&fresh, KEY, checking_at_once());
    assert_eq!(engine.snapshot_check(), SnapshotCheck::NotNeeded);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_forged_with_the_signing_key_is_caught_and_dropped() {
    let store = store_with(&["alice", "bob"], KEY).await;
    let full = load_state(&store, None).unwrap();
    // Whoever can read the key can sign a forged snapshot bound to the right head.
    let head = store.read(2).unwrap().unwrap().hash();
    let forged = encode_snapshot(&with_mallory(&full)).unwrap();
    store
        .put_snapshot(2, &snapshot_sig::sign(&key(), 2, head, &forged))
        .unwrap();
    let loaded = load_state_with(&store, None, Some(&key().verifying_key())).unwrap();
    assert_eq!(
        loaded.snapshot.map(|(seq, _)| seq),
        Some(2),
        "signatures alone cannot tell"
    );
    assert!(loaded.state.user_by_name("mallory").is_some());
    let mismatches_before = headscale::metrics::metrics().snapshot_mismatches.get();

    let engine = start_with(&store, KEY, checking_at_once());
    eventually("the mismatch and the rebuild", || {
        engine.snapshot_check() == SnapshotCheck::Mismatched { seq: 2 } && *engine.state() == full
    })
    .await;
    assert!(headscale::metrics::metrics().snapshot_mismatches.get() > mismatches_before);
    // The forged snapshot is gone, replaced by a fresh signed one of the log's state.
    eventually("a fresh snapshot", || {
        store
            .snapshot_at_or_before(u64::MAX)
            .unwrap()
            .is_some_and(|(_, value)| snapshot_sig::split(&value).0 != forged.as_slice())
    })
    .await;
    engine
        .execute(Actor::LocalSocket, create("carol"))
        .await
        .unwrap();
    engine.shutdown().await;
    let report = verify_chain(&store, Some(&key().verifying_key())).unwrap();
    assert!(!report.snapshots.is_empty());
    assert!(
        report
            .snapshots
            .iter()
            .all(|s| s.status == SnapshotStatus::Ok),
        "{:?}",
        report.snapshots
    );
    let engine = start_with(&store, KEY, checking_at_once());
    assert_eq!(names(&engine.state()), ["alice", "bob", "carol"]);
    eventually("the next start's check", || {
        matches!(engine.snapshot_check(), SnapshotCheck::Matched { .. })
    })
    .await;
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_planted_beyond_the_head_does_not_hold_back_new_snapshots() {
    let store = store_with(&["alice", "bob"], KEY).await;
    let full = load_state(&store, None).unwrap();
    let far = u64::MAX - 1;
    store
        .put_snapshot(far, &encode_snapshot(&with_mallory(&full)).unwrap())
        .unwrap();
    let engine = start_with(
        &store,
        KEY,
        EngineOptions {
            snapshot_every_events: 2,
            ..EngineOptions::default()
        },
    );
    assert_eq!(*engine.state(), full);
    for name in ["carol", "dave"] {
        engine
            .execute(Actor::LocalSocket, create(name))
            .await
            .unwrap();
    }
    // Written in the background after the second commit: a signed snapshot at seq 4.
    eventually("a snapshot at seq 4", || {
        store
            .snapshot_at_or_before(4)
            .unwrap()
            .is_some_and(|(seq, _)| seq == 4)
    })
    .await;
    engine.shutdown().await;
    let report = verify_chain(&store, Some(&key().verifying_key())).unwrap();
    let far_status = report.snapshots.iter().find(|s| s.seq == far).unwrap();
    assert_eq!(far_status.status, SnapshotStatus::DiffersFromLog);
}
