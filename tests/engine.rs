//! The single writer against an in-memory store: group commit acknowledges only what was
//! appended, a failed append acknowledges nothing and the writer recovers by reopening and
//! replaying, and a clean shutdown leaves a snapshot and a signed checkpoint.

use headscale::core::{Actor, Command, Timestamp};
use headscale::engine::{self, Clock, EngineError, EngineOptions};
use headscale::store::memory::MemoryStore;
use headscale::store::replay::{load_state, verify_chain};
use headscale::store::EventStore;
use std::sync::Arc;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_767_225_600_000)
    }
}

fn create(name: &str) -> Command {
    Command::CreateUser {
        name: name.into(),
        display_name: String::new(),
        email: String::new(),
        picture_url: String::new(),
    }
}

fn start(store: &MemoryStore) -> engine::EngineHandle {
    let opened = store.clone();
    engine::start(
        Box::new(move || Ok(Arc::new(opened.clone()) as Arc<dyn EventStore>)),
        Box::new(FixedClock),
        ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
        EngineOptions::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_appends_acknowledge_nothing_and_the_writer_recovers() {
    let store = MemoryStore::new();
    let engine = start(&store);
    engine
        .execute(Actor::LocalSocket, create("alice"))
        .await
        .unwrap();

    store.set_fail_appends(true);
    let error = engine
        .execute(Actor::LocalSocket, create("bob"))
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::Store(_)), "{error}");
    // Nothing of the failed batch is visible, in the published state or the store.
    assert!(engine.state().user_by_name("bob").is_none());
    assert_eq!(store.head().seq, 1);

    store.set_fail_appends(false);
    let events = engine
        .execute(Actor::LocalSocket, create("bob"))
        .await
        .unwrap();
    assert_eq!(events[0].seq, 2, "seq stays gap-free after a failed append");
    assert_eq!(*engine.state(), load_state(&store, None).unwrap());

    // Rejections are values: nothing is appended.
    let error = engine
        .execute(Actor::LocalSocket, create("bob"))
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::Rejected(_)), "{error}");
    assert_eq!(store.head().seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_committed_in_groups_and_shutdown_signs_the_head() {
    let store = MemoryStore::new();
    let engine = start(&store);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .execute(Actor::LocalSocket, create(&format!("user{i}")))
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(engine.state().users.len(), 200);
    engine.shutdown().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    let report = verify_chain(&store, Some(&key)).unwrap();
    assert_eq!((report.events, report.checkpoints_verified), (200, 1));
    assert_eq!(
        store
            .snapshot_at_or_before(u64::MAX)
            .unwrap()
            .map(|(seq, _)| seq),
        Some(200)
    );
    // After shutdown, commands are refused rather than lost.
    let error = engine
        .execute(Actor::LocalSocket, create("late"))
        .await
        .unwrap_err();
    assert!(matches!(error, EngineError::Stopped), "{error}");
}
