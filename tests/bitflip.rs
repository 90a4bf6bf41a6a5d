//! Damage at rest (audit test plan B4, B5): one flipped bit anywhere in the event log makes
//! start either give the identical state or refuse naming the damaged record's seq (a flip in
//! the very last frame is a torn tail: cut, leaving the state one event shorter); flipped bits
//! in a snapshot or a checkpoint never stop the start (the log is replayed); sled's files
//! deleted, truncated or overwritten are moved aside and everything is rebuilt from the log.
//! Never a panic, never a silent drop. `headscale events salvage` reports and cuts a damaged
//! log so the server starts again.

mod common;

use common::start_engine;
use headscale::core::{Actor, Command, State};
use headscale::engine::EngineOptions;
use headscale::store::disk_store::DiskStore;
use headscale::store::replay::{load_state, load_state_with};
use headscale::store::{EventStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn create(name: &str) -> Command {
    Command::CreateUser {
        name: name.into(),
        display_name: format!("User {name}"),
        email: String::new(),
        picture_url: String::new(),
    }
}

/// Writes `users` users through the engine (in concurrent waves, so batches vary) and shuts
/// down cleanly (a snapshot and a signed checkpoint at the head). Returns the final state.
fn build(path: &Path, users: usize) -> State {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let path = path.to_path_buf();
        let engine = start_engine(
            Box::new(move || Ok(Arc::new(DiskStore::open(&path, 1 << 20)?) as Arc<dyn EventStore>)),
            EngineOptions {
                snapshot_every_events: 500,
                snapshot_every: Duration::from_secs(1 << 30),
                checkpoint_every_events: 250,
                ..EngineOptions::default()
            },
        )
        .unwrap();
        for wave in 0..users.div_ceil(8) {
            let tasks: Vec<_> = (0..8)
                .map(|i| wave * 8 + i)
                .filter(|i| *i < users)
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
        }
        let state = (*engine.state()).clone();
        engine.shutdown().await;
        state
    })
}

/// Start as the server does: open the store and rebuild the state (from a snapshot signed
/// by the engine's key, `build`'s, when one is usable).
fn start(path: &Path) -> Result<State, StoreError> {
    load_as_the_server(&DiskStore::open(path, 1 << 20)?)
}

fn load_as_the_server(store: &DiskStore) -> Result<State, StoreError> {
    let trusted = ed25519_dalek::SigningKey::from_bytes(&[3; 32]).verifying_key();
    load_state_with(store, None, Some(&trusted)).map(|loaded| loaded.state)
}

/// `DiskStore::open`, waiting up to 5 s for a sled handle this process just dropped (its
/// background threads may hold sled's lock a moment) to let go.
fn open_when_unlocked(path: &Path) -> Result<DiskStore, StoreError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match DiskStore::open(path, 1 << 20) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

/// `start` through `open_when_unlocked`.
fn start_when_unlocked(path: &Path) -> Result<State, StoreError> {
    load_as_the_server(&open_when_unlocked(path)?)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn aside_dirs(parent: &Path) -> usize {
    std::fs::read_dir(parent)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".sled-corrupt-")
        })
        .count()
}

#[test]
fn damaged_or_missing_sled_files_are_moved_aside_and_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let expected = build(&pristine, 300);
    assert_eq!(start(&pristine).unwrap(), expected);

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 5] = [
        ("conf deleted", |p| {
            std::fs::remove_file(p.join("conf")).unwrap()
        }),
        ("conf garbage", |p| {
            std::fs::write(p.join("conf"), b"\xff\xfe garbage").unwrap()
        }),
        ("db truncated", |p| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(p.join("db"))
                .unwrap();
            file.set_len(100).unwrap();
        }),
        ("db overwritten", |p| {
            let len = std::fs::metadata(p.join("db")).unwrap().len() as usize;
            std::fs::write(p.join("db"), vec![0x5a; len]).unwrap();
        }),
        ("everything but the log deleted", |p| {
            for entry in std::fs::read_dir(p).unwrap() {
                let entry = entry.unwrap();
                if entry.file_name() != "events.log" {
                    let path = entry.path();
                    if path.is_dir() {
                        std::fs::remove_dir_all(path).unwrap();
                    } else {
                        std::fs::remove_file(path).unwrap();
                    }
                }
            }
        }),
    ];
    for (i, (what, damage)) in damages.iter().enumerate() {
        let case = dir.path().join(format!("case{i}"));
        let path = case.join("db.sled");
        copy_dir(&pristine, &path);
        damage(&path);
        let state = start(&path).unwrap_or_else(|e| panic!("{what}: start refused: {e}"));
        assert_eq!(state, expected, "{what}: the state is rebuilt from the log");
        // And the store takes writes again (the engine starts on it).
        let again = start(&path).unwrap();
        assert_eq!(again, expected, "{what}: second start");
        let moved = aside_dirs(&case);
        let unreadable = !what.contains("deleted");
        assert_eq!(
            moved,
            usize::from(unreadable),
            "{what}: moved aside once if unreadable"
        );
        println!("{what}: rebuilt, {moved} moved aside");
    }
}

/// `(seq, start..end)` of every frame of a log file (`len u32 | crc u32 | seq u64 | body`,
/// the seq field's top 16 bits being the index within the batch), and the first seq of the
/// last batch.
fn frames_and_last_batch(log: &[u8]) -> (Vec<(u64, std::ops::Range<usize>)>, u64) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut last_batch = 0;
    while pos < log.len() {
        let len = u32::from_be_bytes(log[pos..pos + 4].try_into().unwrap()) as usize;
        let field = u64::from_be_bytes(log[pos + 8..pos + 16].try_into().unwrap());
        let seq = field & ((1 << 48) - 1);
        if field >> 48 == 0 {
            last_batch = seq;
        }
        out.push((seq, pos..pos + 16 + len));
        pos += 16 + len;
    }
    (out, last_batch)
}

fn frames(log: &[u8]) -> Vec<(u64, std::ops::Range<usize>)> {
    frames_and_last_batch(log).0
}

/// `count` bit positions spread over `bits`, plus every bit of the first and last frame
/// headers (the interesting edges).
fn sampled_bits(frames: &[(u64, std::ops::Range<usize>)], bits: usize, count: usize) -> Vec<usize> {
    let mut picks: Vec<usize> = (0..count).map(|i| i * bits / count + (i * 7) % 8).collect();
    for (_, range) in [frames.first().unwrap(), frames.last().unwrap()] {
        picks.extend(range.start * 8..(range.start + 16) * 8);
    }
    picks.retain(|b| *b < bits);
    picks.sort_unstable();
    picks.dedup();
    picks
}

fn samples() -> usize {
    std::env::var("BITFLIP_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

#[test]
fn a_flipped_bit_in_the_log_gives_the_same_state_or_a_refusal_naming_its_seq() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let expected = build(&pristine, 1200);
    let last = expected.last_seq;
    let log = std::fs::read(pristine.join("events.log")).unwrap();
    let (frames, last_batch) = frames_and_last_batch(&log);
    let prefix = |seq: u64| {
        let store = DiskStore::open(&pristine, 1 << 20).unwrap();
        load_state(&store, Some(seq)).unwrap()
    };
    assert_eq!(frames.len() as u64, last);
    let (mut same, mut cut, mut refused) = (0, 0, 0);
    let bits = sampled_bits(&frames, log.len() * 8, samples());
    for (i, bit) in bits.iter().enumerate() {
        let byte = bit / 8;
        let (seq, _) = frames
            .iter()
            .find(|(_, range)| range.contains(&byte))
            .unwrap()
            .clone();
        let mut damaged = log.clone();
        damaged[byte] ^= 1 << (bit % 8);
        // Only the log: no snapshot, so start replays every record.
        let path = dir.path().join(format!("flip{i}"));
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("events.log"), &damaged).unwrap();
        let outcome = std::panic::catch_unwind(|| start(&path))
            .unwrap_or_else(|_| panic!("bit {bit} (record {seq}): start panicked"));
        match outcome {
            Ok(state) if state == expected => same += 1,
            Ok(state) => {
                // Damage in the last batch (never acknowledged if the crash came before its
                // fdatasync) is a torn tail: cut from the damaged record on.
                assert!(
                    seq >= last_batch,
                    "bit {bit}: record {seq} dropped silently"
                );
                assert_eq!(
                    state.last_seq,
                    seq - 1,
                    "bit {bit}: cut at the damaged record"
                );
                assert_eq!(
                    state,
                    prefix(seq - 1),
                    "bit {bit}: the kept prefix is intact"
                );
                cut += 1;
            }
            Err(StoreError::ChainBroken { seq: at, reason }) => {
                assert_eq!(at, seq, "bit {bit}: refusal names record {at}: {reason}");
                refused += 1;
            }
            Err(StoreError::Corrupt { seq: at, source }) => {
                assert_eq!(at, seq, "bit {bit}: refusal names record {at}: {source}");
                refused += 1;
            }
            Err(other) => panic!("bit {bit} (record {seq}): unexpected refusal {other}"),
        }
        std::fs::remove_dir_all(&path).unwrap();
    }
    println!(
        "log bit flips: {} sampled over {} records ({} bytes): {same} identical, {cut} torn \
         tail cut (last batch from {last_batch}), {refused} refused naming the right seq",
        bits.len(),
        last,
        log.len()
    );
    assert_eq!(same + cut + refused, bits.len());
    assert!(refused > 0 && cut > 0);
}

/// Flips one bit of the newest value of sled tree `tree` in a copy of `pristine`, at
/// sampled bit positions, and checks that start and a commit still work with the state
/// intact.
fn flip_sled_values(tree: &str, pristine: &Path, expected: &State, scratch: &Path) -> usize {
    let value = {
        let db = sled::open(pristine).unwrap();
        let value = db
            .open_tree(tree)
            .unwrap()
            .last()
            .unwrap()
            .unwrap()
            .1
            .to_vec();
        drop(db);
        value
    };
    let bits = value.len() * 8;
    let count = samples().min(bits) / 3;
    let picks: Vec<usize> = (0..count).map(|i| i * bits / count + (i * 5) % 8).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (i, bit) in picks.iter().enumerate() {
        let path = scratch.join(format!("{tree}{i}"));
        copy_dir(pristine, &path);
        {
            let db = sled::open(&path).unwrap();
            let t = db.open_tree(tree).unwrap();
            let (key, value) = t.last().unwrap().unwrap();
            let mut damaged = value.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            t.insert(key, damaged).unwrap();
            db.flush().unwrap();
        }
        // sled's background threads of the handle just dropped may hold its lock a moment.
        let state = std::panic::catch_unwind(|| start_when_unlocked(&path))
            .unwrap_or_else(|_| panic!("{tree} bit {bit}: start panicked"))
            .unwrap_or_else(|e| panic!("{tree} bit {bit}: start refused: {e}"));
        assert_eq!(
            &state, expected,
            "{tree} bit {bit}: the log decides the state"
        );
        // The engine starts on it and commits.
        let opened = path.clone();
        let engine = start_engine(
            Box::new(move || Ok(Arc::new(open_when_unlocked(&opened)?) as Arc<dyn EventStore>)),
            EngineOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{tree} bit {bit}: the engine refused: {e}"));
        runtime.block_on(async {
            engine
                .execute(Actor::LocalSocket, create("after"))
                .await
                .unwrap();
            engine.shutdown().await;
        });
        drop(engine);
        std::fs::remove_dir_all(&path).unwrap();
    }
    picks.len()
}

#[test]
fn flipped_bits_in_a_snapshot_or_a_checkpoint_fall_back_to_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = dir.path().join("pristine");
    let expected = build(&pristine, 600);
    let snapshots = flip_sled_values("snapshots", &pristine, &expected, dir.path());
    let checkpoints = flip_sled_values("checkpoints", &pristine, &expected, dir.path());
    println!("sled bit flips: {snapshots} in a snapshot, {checkpoints} in a checkpoint");
    assert!(snapshots > 0 && checkpoints > 0);
}

#[test]
fn events_salvage_reports_then_cuts_a_damaged_log_and_the_server_starts_again() {
    let mut server = common::TestServer::new("");
    let path = server.data_dir().join("db.sled");
    let expected = build(&path, 300);
    let log_path = path.join("events.log");
    let log = std::fs::read(&log_path).unwrap();
    let frames = frames(&log);
    // Damage record 200's body: records 200.. are beyond repair, 1..=199 are kept.
    let (_, range) = frames[199].clone();
    let mut damaged = log.clone();
    damaged[range.start + 40] ^= 0x10;
    std::fs::write(&log_path, &damaged).unwrap();
    let refusal = start(&path).unwrap_err().to_string();
    assert!(refusal.contains("record 200"), "{refusal}");

    let report = server.json(&["events", "salvage"]);
    assert_eq!(report["lastGoodSeq"], 199, "{report}");
    assert_eq!(report["firstBadSeq"], 200, "{report}");
    assert_eq!(
        report["cutBytes"],
        (log.len() - range.start) as u64,
        "{report}"
    );
    assert_eq!(
        std::fs::read(&log_path).unwrap(),
        damaged,
        "a report changes nothing"
    );
    let human = server.ok(&["events", "salvage"]);
    assert!(human.contains("would keep records 1..=199"), "{human}");

    let written = server.json(&["events", "salvage", "--write"]);
    assert_eq!(written["lastGoodSeq"], 199, "{written}");
    let cut = std::fs::read(written["cutSavedTo"].as_str().unwrap()).unwrap();
    assert_eq!(cut, damaged[range.start..], "the cut bytes are kept");
    let original = std::fs::read(written["originalSavedTo"].as_str().unwrap()).unwrap();
    assert_eq!(original, damaged, "the original file is kept");
    assert_eq!(std::fs::read(&log_path).unwrap(), log[..range.start]);

    let before = load_state(&DiskStore::open(&path, 1 << 20).unwrap(), None).unwrap();
    assert_eq!(before.last_seq, 199);
    assert!(before.user_by_name("user0").is_some());
    assert!(expected.last_seq > 199);
    // The server starts on the salvaged log and takes writes.
    server.spawn();
    server.create_user("after-salvage");
    let whole = server.ok(&["events", "verify"]);
    assert!(whole.contains("ok:"), "{whole}");
    server.stop();
    let again = server.ok(&["events", "salvage"]);
    assert!(again.contains("the event log is whole"), "{again}");
}
