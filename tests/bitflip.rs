//! Damage at rest (audit test plan B4, B5): one flipped bit anywhere in the event log makes
//! start either give the identical state or refuse naming the damaged record's seq (a flip in
//! the very last frame is a torn tail: cut, leaving the state one event shorter); flipped bits
//! in a snapshot or a checkpoint never stop the start (the log is replayed); sled's files
//! deleted, truncated or overwritten are moved aside and everything is rebuilt from the log.
//! Never a panic, never a silent drop.

use headscale::core::{Actor, Command, State, Timestamp};
use headscale::engine::{self, Clock, EngineOptions};
use headscale::store::disk_store::DiskStore;
use headscale::store::replay::load_state;
use headscale::store::{EventStore, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        Timestamp(1_767_225_600_000)
    }
}

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
        let engine = engine::start(
            Box::new(move || Ok(Arc::new(DiskStore::open(&path, 1 << 20)?) as Arc<dyn EventStore>)),
            Box::new(FixedClock),
            ed25519_dalek::SigningKey::from_bytes(&[3; 32]),
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

/// Start as the server does: open the store and rebuild the state.
fn start(path: &Path) -> Result<State, StoreError> {
    let store = DiskStore::open(path, 1 << 20)?;
    load_state(&store, None)
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
