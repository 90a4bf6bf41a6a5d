//! The single writer against an in-memory store: group commit acknowledges only what was
//! appended, a failed append acknowledges nothing and the writer recovers (and
//! re-derives its state from the store), callers get a timeout (and given-up commands are skipped) when the writer is
//! stuck, a panic in the writer or a critical task ends the process (checked in a child
//! process), and a clean shutdown leaves a snapshot and a signed checkpoint.

mod common;

use common::{create_user as create, start_engine};
use headscale::core::Actor;
use headscale::engine::{self, EngineError, EngineOptions};
use headscale::store::memory::MemoryStore;
use headscale::store::replay::{load_state, verify_chain};
use headscale::store::EventStore;
use std::sync::Arc;

fn start(store: &MemoryStore) -> engine::EngineHandle {
    let opened = store.clone();
    start_engine(
        Box::new(move || Ok(Arc::new(opened.clone()) as Arc<dyn EventStore>)),
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

/// A store whose appends block while `stuck` is set (a writer stuck in I/O).
#[derive(Clone)]
struct StuckStore {
    inner: MemoryStore,
    stuck: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    /// Appends that have started (the writer is inside one when it rises while stuck).
    entered: Arc<std::sync::atomic::AtomicU64>,
}

impl EventStore for StuckStore {
    fn head(&self) -> headscale::store::Head {
        self.inner.head()
    }
    fn append(
        &self,
        records: &[headscale::store::StoredRecord],
    ) -> Result<(), headscale::store::StoreError> {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let (lock, wake) = &*self.stuck;
        let mut stuck = lock.lock().unwrap();
        while *stuck {
            stuck = wake.wait(stuck).unwrap();
        }
        self.inner.append(records)
    }
    fn read(
        &self,
        seq: u64,
    ) -> Result<Option<headscale::store::StoredRecord>, headscale::store::StoreError> {
        self.inner.read(seq)
    }
    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<
        dyn Iterator<Item = Result<headscale::store::StoredRecord, headscale::store::StoreError>>
            + '_,
    > {
        self.inner.read_range(from, to)
    }
    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), headscale::store::StoreError> {
        self.inner.put_snapshot(seq, bytes)
    }
    fn snapshot_at_or_before(
        &self,
        seq: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, headscale::store::StoreError> {
        self.inner.snapshot_at_or_before(seq)
    }
    fn put_checkpoint(
        &self,
        checkpoint: &headscale::store::Checkpoint,
    ) -> Result<(), headscale::store::StoreError> {
        self.inner.put_checkpoint(checkpoint)
    }
    fn checkpoints(
        &self,
    ) -> Result<Vec<headscale::store::Checkpoint>, headscale::store::StoreError> {
        self.inner.checkpoints()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_get_a_timeout_when_the_writer_is_stuck_and_given_up_commands_are_skipped() {
    let store = StuckStore {
        inner: MemoryStore::new(),
        stuck: Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new())),
        entered: Arc::default(),
    };
    let opened = store.clone();
    let engine = start_engine(
        Box::new(move || Ok(Arc::new(opened.clone()) as Arc<dyn EventStore>)),
        EngineOptions {
            command_deadline: std::time::Duration::from_millis(300),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    engine
        .execute(Actor::LocalSocket, create("alice"))
        .await
        .unwrap();

    *store.stuck.0.lock().unwrap() = true;
    // The first command gets the writer stuck in its append; the second waits in the queue.
    let first = tokio::spawn({
        let engine = engine.clone();
        async move { engine.execute(Actor::LocalSocket, create("bob")).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.entered.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never reached bob's append"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let started = std::time::Instant::now();
    let second = engine
        .execute(Actor::LocalSocket, create("carol"))
        .await
        .unwrap_err();
    assert!(matches!(second, EngineError::Timeout(_)), "{second}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let first = first.await.unwrap().unwrap_err();
    assert!(matches!(first, EngineError::Timeout(_)), "{first}");

    *store.stuck.0.lock().unwrap() = false;
    store.stuck.1.notify_all();
    let events = engine
        .execute(Actor::LocalSocket, create("dave"))
        .await
        .unwrap();
    // bob was already being written (it may commit); carol's caller had gone: never run.
    assert!(engine.state().user_by_name("carol").is_none());
    assert_eq!(store.inner.head().seq, events[0].seq);
}

/// A store whose appends panic (a bug in the writer's path), or, with `broken`, fail and
/// never recover (a disk gone for good).
#[derive(Clone)]
struct PanickingStore(MemoryStore, bool);

impl EventStore for PanickingStore {
    fn head(&self) -> headscale::store::Head {
        self.0.head()
    }
    fn append(
        &self,
        _records: &[headscale::store::StoredRecord],
    ) -> Result<(), headscale::store::StoreError> {
        if self.1 {
            return Err(headscale::store::StoreError::Io(
                "injected: disk gone".into(),
            ));
        }
        panic!("injected panic in append")
    }
    fn recover(&self) -> Result<(), headscale::store::StoreError> {
        Err(headscale::store::StoreError::Io(
            "injected: still gone".into(),
        ))
    }
    fn read(
        &self,
        seq: u64,
    ) -> Result<Option<headscale::store::StoredRecord>, headscale::store::StoreError> {
        self.0.read(seq)
    }
    fn read_range(
        &self,
        from: u64,
        to: u64,
    ) -> Box<
        dyn Iterator<Item = Result<headscale::store::StoredRecord, headscale::store::StoreError>>
            + '_,
    > {
        self.0.read_range(from, to)
    }
    fn put_snapshot(&self, seq: u64, bytes: &[u8]) -> Result<(), headscale::store::StoreError> {
        self.0.put_snapshot(seq, bytes)
    }
    fn snapshot_at_or_before(
        &self,
        seq: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, headscale::store::StoreError> {
        self.0.snapshot_at_or_before(seq)
    }
    fn put_checkpoint(
        &self,
        checkpoint: &headscale::store::Checkpoint,
    ) -> Result<(), headscale::store::StoreError> {
        self.0.put_checkpoint(checkpoint)
    }
    fn checkpoints(
        &self,
    ) -> Result<Vec<headscale::store::Checkpoint>, headscale::store::StoreError> {
        self.0.checkpoints()
    }
}

/// Set in the child process of the supervision tests: which part to make panic.
const SUPERVISE_CHILD: &str = "HEADSCALE_TEST_SUPERVISE_CHILD";

/// What the child does: make the writer thread or a critical task panic, then wait (the
/// process must end by itself well before the wait does).
fn supervised_child(which: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        match which {
            "writer" | "recovery" => {
                let store = PanickingStore(MemoryStore::new(), which == "recovery");
                let engine = start_engine(
                    Box::new(move || Ok(Arc::new(store.clone()) as Arc<dyn EventStore>)),
                    EngineOptions {
                        recovery_deadline: std::time::Duration::from_millis(300),
                        ..EngineOptions::default()
                    },
                )
                .unwrap();
                let _ = engine.execute(Actor::LocalSocket, create("boom")).await;
            }
            _ => headscale::supervise::spawn_critical("test", async {
                panic!("injected panic in a critical task")
            }),
        }
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    });
}

/// Runs this test binary again as the child for `which`; returns its exit code and stderr.
fn run_supervised_child(test: &str, which: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(SUPERVISE_CHILD, which)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_panic_in_the_writer_thread_ends_the_process_with_a_clear_line() {
    if let Ok(which) = std::env::var(SUPERVISE_CHILD) {
        return supervised_child(&which);
    }
    let started = std::time::Instant::now();
    let (code, stderr) = run_supervised_child(
        "a_panic_in_the_writer_thread_ends_the_process_with_a_clear_line",
        "writer",
    );
    assert_eq!(code, Some(headscale::supervise::EXIT_CRITICAL), "{stderr}");
    assert!(
        stderr.contains("fatal: the engine writer thread panicked"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn a_panic_in_a_critical_task_ends_the_process_with_a_clear_line() {
    if let Ok(which) = std::env::var(SUPERVISE_CHILD) {
        return supervised_child(&which);
    }
    let (code, stderr) = run_supervised_child(
        "a_panic_in_a_critical_task_ends_the_process_with_a_clear_line",
        "task",
    );
    assert_eq!(code, Some(headscale::supervise::EXIT_CRITICAL), "{stderr}");
    assert!(stderr.contains("fatal: the test task panicked"), "{stderr}");
}

#[test]
fn recovery_that_keeps_failing_ends_the_process_after_its_deadline() {
    if let Ok(which) = std::env::var(SUPERVISE_CHILD) {
        return supervised_child(&which);
    }
    let (code, stderr) = run_supervised_child(
        "recovery_that_keeps_failing_ends_the_process_after_its_deadline",
        "recovery",
    );
    assert_eq!(code, Some(headscale::supervise::EXIT_CRITICAL), "{stderr}");
    assert!(
        stderr.contains("fatal: the event store could not be recovered"),
        "{stderr}"
    );
    assert!(stderr.contains("still gone"), "{stderr}");
}
