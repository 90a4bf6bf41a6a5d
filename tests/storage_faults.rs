//! Storage faults through the real engine, `DiskStore` and `SegmentLog` (audit H1, L1, test
//! plan B1/B2). Each iteration runs a workload of about 2,000 commands with one fault armed
//! in the log file (a failed write, fsync or truncate, once or until cleared; ENOSPC after a
//! byte budget with a partial write; an fsync that fails and drops its dirty pages), then
//! clears the fault and checks: a new command commits within 1 s without a restart, health
//! was degraded while appends failed, and after a power loss (only synced bytes kept) the
//! log reopens gap-free with every acknowledged command at the seq it was acknowledged with.
//! `STORAGE_FAULT_SAMPLES=N` sets how many op positions are tried per kind of fault (12 by
//! default; a number above the workload's count of writes and fsyncs, e.g. 100000, fails every
//! single one of them in turn; ENOSPC budgets stay sampled, at most 64).
//! One more test fills a real 4 MiB tmpfs and frees it again.

mod common;

use common::{create_user as create, start_engine};
use headscale::core::{Actor, Event};
use headscale::engine::{EngineError, EngineHandle, EngineOptions};
use headscale::store::disk_store::DiskStore;
use headscale::store::faulty_file::{Fault, FaultyDisk, Op};
use headscale::store::replay::{load_state, verify_chain};
use headscale::store::EventStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const COMMANDS: usize = 2000;
/// Commands in flight at once, so the writer forms group commits of varying size.
const WAVE: usize = 16;

fn options() -> EngineOptions {
    EngineOptions {
        // Snapshots and checkpoints live in sled; this test is about the log.
        snapshot_every_events: u64::MAX,
        snapshot_every: Duration::from_secs(1 << 30),
        checkpoint_every_events: u64::MAX,
        ..EngineOptions::default()
    }
}

fn start(store: Arc<dyn EventStore>) -> EngineHandle {
    start_engine(Box::new(move || Ok(store.clone())), options()).unwrap()
}

/// How a fault is armed and when it is lifted.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    Clean,
    /// Armed for the whole workload, cleared after it.
    Armed(Fault),
    /// The file cannot grow past this many bytes until the workload ends.
    Enospc(usize),
    /// The Nth write fails, and so does every truncate, fsync and read for 200 ms (recovery
    /// itself keeps failing, then works).
    StuckRecovery(u64),
}

#[derive(Default, Debug)]
struct Totals {
    iterations: u64,
    faults_injected: u64,
    failed_appends: u64,
    acknowledged: u64,
    refused: u64,
    lost: u64,
}

/// Runs one workload; returns the log file's calls (writes, fsyncs) and its final size.
async fn iteration(scenario: Scenario, totals: &mut Totals) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let disk = FaultyDisk::new();
    let store: Arc<dyn EventStore> =
        Arc::new(DiskStore::open_with_log(&dir.path().join("db"), 1 << 20, disk.opener()).unwrap());
    let engine = start(store.clone());
    match scenario {
        Scenario::Clean => {}
        Scenario::Armed(fault) => disk.inject(fault),
        Scenario::Enospc(bytes) => disk.set_capacity(Some(bytes)),
        Scenario::StuckRecovery(nth) => {
            disk.inject(Fault::Fail {
                op: Op::Write,
                nth,
                sticky: false,
            });
            for op in [Op::SetLen, Op::Sync, Op::Read] {
                disk.inject(Fault::Fail {
                    op,
                    nth: 1,
                    sticky: true,
                });
            }
        }
    }

    // StuckRecovery: lift the truncate/fsync faults 200 ms after the write fault hit, while
    // the writer keeps retrying its recovery (and commands wait).
    let lifter = matches!(scenario, Scenario::StuckRecovery(_)).then(|| {
        let disk = disk.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while disk.injected() == 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            disk.clear();
        })
    });
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_failure_seen_down = None;
    let mut refused = 0u64;
    for wave in 0..COMMANDS / WAVE {
        let tasks: Vec<_> = (0..WAVE)
            .map(|i| {
                let engine = engine.clone();
                let name = format!("u{}", wave * WAVE + i);
                tokio::spawn(async move {
                    let outcome = engine.execute(Actor::LocalSocket, create(&name)).await;
                    (name, outcome)
                })
            })
            .collect();
        for task in tasks {
            let (name, outcome) = task.await.expect("no panic in a command");
            match outcome {
                Ok(events) => {
                    assert_eq!(events.len(), 1);
                    assert!(
                        acked.insert(name, events[0].seq).is_none(),
                        "acknowledged twice"
                    );
                }
                Err(EngineError::Store(_)) => {
                    refused += 1;
                    if first_failure_seen_down.is_none() {
                        first_failure_seen_down = Some(engine.failed_appends() > 0);
                    }
                }
                Err(other) => panic!("{scenario:?}: unexpected error {other}"),
            }
        }
    }
    if let Some(lifter) = lifter {
        lifter.await.unwrap();
    }
    let injected = disk.injected();
    // Only a fault that fails every write until cleared keeps health down to the end; under
    // ENOSPC a later, smaller batch (or the idle probe's one page) may still fit in the space
    // left, and then health rightly comes back (the first failure's "down" is checked below).
    let sticky = matches!(scenario, Scenario::Armed(Fault::Fail { sticky: true, .. }));
    if sticky && injected > 0 {
        assert!(
            !engine.is_up(),
            "{scenario:?}: health must be down while writes fail"
        );
    }
    disk.clear();

    // Liveness: after the fault stops, a command commits within 1 s, without a restart.
    let started = Instant::now();
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        engine.execute(Actor::LocalSocket, create("probe")),
    )
    .await
    .unwrap_or_else(|_| panic!("{scenario:?}: no commit within 1 s after the fault stopped"))
    .unwrap_or_else(|e| panic!("{scenario:?}: the probe failed: {e}"));
    assert!(started.elapsed() < Duration::from_secs(1));
    acked.insert("probe".into(), probe[0].seq);
    assert!(
        engine.is_up(),
        "{scenario:?}: health is back after a commit"
    );
    if refused > 0 {
        assert_eq!(
            first_failure_seen_down,
            Some(true),
            "{scenario:?}: the engine was marked down by the failed append"
        );
        assert!(engine.failed_appends() > 0);
    }
    let failed = engine.failed_appends();
    engine.shutdown().await;
    drop(engine);
    drop(store);

    // Power loss: only synced bytes remain. Reopen (fresh sled) and replay the log alone.
    disk.crash();
    let dir2 = tempfile::tempdir().unwrap();
    let reopened = DiskStore::open_with_log(&dir2.path().join("db"), 1 << 20, disk.opener())
        .unwrap_or_else(|e| panic!("{scenario:?}: reopen failed: {e}"));
    let report = verify_chain(&reopened, None)
        .unwrap_or_else(|e| panic!("{scenario:?}: the chain does not verify: {e}"));
    let state = load_state(&reopened, None).unwrap();
    assert_eq!(state.last_seq, report.events, "gap-free");
    let mut lost = 0;
    let mut seqs = std::collections::BTreeSet::new();
    for (name, seq) in &acked {
        assert!(
            seqs.insert(*seq),
            "{scenario:?}: seq {seq} acknowledged twice"
        );
        let record = reopened.read(*seq).unwrap();
        let found = record
            .map(|r| r.envelope().unwrap().event)
            .is_some_and(|e| matches!(e, Event::UserCreated { name: ref n, .. } if n == name));
        if !found || state.user_by_name(name).is_none() {
            lost += 1;
        }
    }
    assert_eq!(lost, 0, "{scenario:?}: acknowledged commands lost");
    totals.iterations += 1;
    totals.faults_injected += injected;
    totals.failed_appends += failed;
    totals.acknowledged += acked.len() as u64;
    totals.refused += refused;
    totals.lost += lost;
    let (writes, syncs, _) = disk.calls();
    (writes, syncs, disk.contents().len() as u64)
}

/// `count` positions spread over `1..=max` (all of them when `count >= max`).
fn sample(max: u64, count: u64) -> Vec<u64> {
    if max == 0 {
        return Vec::new();
    }
    if count >= max {
        return (1..=max).collect();
    }
    let mut positions: Vec<u64> = (0..count)
        .map(|i| 1 + i * (max - 1) / (count - 1).max(1))
        .collect();
    positions.dedup();
    positions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_log_fault_loses_nothing_acknowledged_and_heals_without_restart() {
    let samples: u64 = std::env::var("STORAGE_FAULT_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let started = Instant::now();
    let mut totals = Totals::default();
    // The clean run's calls and log size bound the fault positions and ENOSPC budgets.
    let (writes, syncs, bytes) = iteration(Scenario::Clean, &mut totals).await;
    let mut scenarios = Vec::new();
    for nth in sample(writes, samples) {
        scenarios.push(Scenario::Armed(Fault::Fail {
            op: Op::Write,
            nth,
            sticky: false,
        }));
        scenarios.push(Scenario::StuckRecovery(nth));
    }
    for nth in sample(syncs, samples) {
        scenarios.push(Scenario::Armed(Fault::Fail {
            op: Op::Sync,
            nth,
            sticky: false,
        }));
        scenarios.push(Scenario::Armed(Fault::FsyncGate { nth }));
    }
    for nth in sample(writes, samples.div_ceil(2)) {
        scenarios.push(Scenario::Armed(Fault::Fail {
            op: Op::Write,
            nth,
            sticky: true,
        }));
    }
    // ENOSPC budgets are byte offsets, not I/O calls: a sample of them (at most 64) covers
    // every batch boundary of interest without one scenario per byte.
    for budget in sample(bytes, samples.min(64)) {
        scenarios.push(Scenario::Enospc(budget as usize));
    }
    for scenario in scenarios {
        iteration(scenario, &mut totals).await;
    }
    println!(
        "storage faults: {} iterations, {} faults injected, {} failed appends, {} commands \
         acknowledged, {} refused, events lost = {}, {:?}",
        totals.iterations,
        totals.faults_injected,
        totals.failed_appends,
        totals.acknowledged,
        totals.refused,
        totals.lost,
        started.elapsed()
    );
    assert_eq!(totals.lost, 0);
    assert!(
        totals.faults_injected >= totals.iterations - 1 - samples,
        "faults were injected"
    );
}

/// Unmounts the tmpfs however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a 4 MiB tmpfs at `base/small`, or fails saying why (never skips silently).
fn mount_small_tmpfs(base: &std::path::Path) -> Mounted {
    let mount = base.join("small");
    std::fs::create_dir(&mount).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .status();
    match status {
        Ok(s) if s.success() => Mounted(mount),
        other => panic!(
            "cannot mount a 4 MiB tmpfs for the real ENOSPC test (needs root and mount(8)): \
             {other:?}"
        ),
    }
}

/// Fills the file system holding `dir` with a file `dir/filler` (removed to free the space).
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                break;
            }
        }
    }
    // Byte-sized writes take the last partial page.
    while file.write(&[1]).map(|n| n > 0).unwrap_or(false) {}
    filler
}

/// B2: a real ENOSPC. The whole store lives on a 4 MiB tmpfs; a filler file takes the rest;
/// appends fail and health goes down; deleting the filler lets the next command commit,
/// without a restart, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tmpfs_fails_writes_then_heals_when_space_is_freed() {
    let base = tempfile::tempdir().unwrap();
    let mounted = mount_small_tmpfs(base.path());
    let mount = mounted.0.clone();
    let path = mount.join("db");
    let store: Arc<dyn EventStore> = Arc::new(DiskStore::open(&path, 1 << 20).unwrap());
    let engine = start(store.clone());
    let mut acked = Vec::new();
    for i in 0..10 {
        let name = format!("before{i}");
        engine
            .execute(Actor::LocalSocket, create(&name))
            .await
            .unwrap();
        acked.push(name);
    }

    let filler = fill(&mount);
    let long = "x".repeat(200);
    let mut failed = None;
    for i in 0..200 {
        let name = format!("full{i}-{long}");
        match engine.execute(Actor::LocalSocket, create(&name)).await {
            Ok(_) => acked.push(name),
            Err(error) => {
                failed = Some(error);
                break;
            }
        }
    }
    let error = failed.expect("appends fail on a full file system");
    assert!(matches!(error, EngineError::Store(_)), "{error}");
    assert!(error.to_string().contains("No space left"), "{error}");
    assert!(
        !engine.is_up(),
        "health is down while the log cannot be written"
    );
    // Still failing, still down, and nothing hangs.
    let again = engine
        .execute(Actor::LocalSocket, create("still-full"))
        .await
        .unwrap_err();
    assert!(matches!(again, EngineError::Store(_)), "{again}");
    assert!(!engine.is_up());

    std::fs::remove_file(&filler).unwrap();
    // Health comes back by itself (the idle writer probes the store), before any write.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !engine.is_up() {
        assert!(
            Instant::now() < deadline,
            "health did not come back after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let events = tokio::time::timeout(
        Duration::from_secs(1),
        engine.execute(Actor::LocalSocket, create("after")),
    )
    .await
    .expect("a commit within 1 s of freeing space")
    .expect("the commit succeeds without a restart");
    println!(
        "real ENOSPC: healed in {:?}, seq {}",
        started.elapsed(),
        events[0].seq
    );
    acked.push("after".into());
    assert!(engine.is_up(), "health is back");
    engine.shutdown().await;
    drop(engine);
    drop(store);

    // A background snapshot thread may still hold its clone of the store (and so sled's lock)
    // for a moment after the shutdown; wait for it rather than racing it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reopened = loop {
        match DiskStore::open(&path, 1 << 20) {
            Err(headscale::store::StoreError::Locked { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            opened => break opened.unwrap(),
        }
    };
    verify_chain(&reopened, None).unwrap();
    let state = load_state(&reopened, None).unwrap();
    for name in &acked {
        assert!(
            state.user_by_name(name).is_some(),
            "{name} was acknowledged"
        );
    }
    assert!(state.user_by_name("still-full").is_none());
}

/// The daemon's health endpoints follow the engine: with its store on a full tmpfs, a write
/// fails, `GET /health` answers 503 and `/api/v1/health` 503 `databaseConnectivity: false`;
/// once space is freed both are 200 again (same 2xx shape) and the next write commits.
#[test]
fn health_endpoints_report_a_full_disk_and_recover() {
    let base = tempfile::tempdir().unwrap();
    let mounted = mount_small_tmpfs(base.path());
    let db = mounted.0.join("db.sled");
    let mut server = common::TestServer::with_yaml(|data, port| {
        let base = common::base_yaml(data, port);
        let own = format!("{}/db.sled", data.display());
        assert!(base.contains(&own));
        format!(
            "{}derp:\n  server:\n    enabled: false\n    private_key_path: {}/derp.key\n\
             log:\n  level: warn\n",
            base.replace(&own, &db.display().to_string()),
            data.display()
        )
    });
    server.spawn();
    server.wait_healthy();
    let key = server.ok(&["apikeys", "create"]).trim().to_string();
    assert_eq!(
        common::http(server.port, "GET", "/api/v1/health", Some(&key)),
        (200, serde_json::json!({"databaseConnectivity": true}))
    );

    let filler = fill(&mounted.0);
    let long = "y".repeat(200);
    let mut failed = false;
    for i in 0..200 {
        if !server
            .cli(&["users", "create", &format!("full{i}-{long}")])
            .status
            .success()
        {
            failed = true;
            break;
        }
    }
    assert!(failed, "a write fails on a full file system");
    let (status, body) = common::http(server.port, "GET", "/health", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "fail");
    assert_eq!(
        common::http(server.port, "GET", "/api/v1/health", Some(&key)),
        (503, serde_json::json!({"databaseConnectivity": false}))
    );

    std::fs::remove_file(&filler).unwrap();
    // Back to 200 without any write (the idle writer probes the store).
    let deadline = Instant::now() + Duration::from_secs(5);
    while common::http(server.port, "GET", "/health", None).0 != 200 {
        assert!(Instant::now() < deadline, "health did not come back");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.create_user("after-space-freed");
    assert_eq!(common::http(server.port, "GET", "/health", None).0, 200);
    assert_eq!(
        common::http(server.port, "GET", "/api/v1/health", Some(&key)),
        (200, serde_json::json!({"databaseConnectivity": true}))
    );
    server.stop();
}
