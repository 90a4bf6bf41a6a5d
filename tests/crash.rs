//! Crash safety of the whole daemon: concurrent API writers, SIGKILL at random moments,
//! restart. Every acknowledged command's events must be there, the chain must verify, and
//! the state from snapshot + tail must equal a full replay. `CRASH_ITERATIONS=1000` for the
//! long mode (default 20).

mod common;

use common::TestServer;
use headscale::core::state::fold;
use headscale::core::State;
use headscale::store::disk_store::DiskStore;
use headscale::store::replay::{load_state_with, read_envelopes, verify_chain};
use headscale::store::EventStore;
use rand::Rng;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One HTTP/1.1 request over the unix socket; `None` when the server died mid-request.
fn post(socket: &std::path::Path, path: &str, body: &str) -> Option<u16> {
    let mut stream = UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

/// What a check saw: events in the log, newest snapshot seq, signed checkpoints.
struct Seen {
    events: u64,
    snapshot_seq: u64,
    checkpoints: usize,
}

fn check_store(path: &std::path::Path, acknowledged: &BTreeSet<String>, iteration: usize) -> Seen {
    let store = DiskStore::open(path, 16 << 20)
        .unwrap_or_else(|e| panic!("iteration {iteration}: reopen failed: {e}"));
    let snapshot_seq = store
        .snapshot_at_or_before(u64::MAX)
        .unwrap()
        .map(|(seq, _)| seq)
        .unwrap_or(0);
    let checkpoints = store.checkpoints().unwrap().len();
    let key_path = path.parent().unwrap().join("checkpoint_signing.key");
    let key = headscale::keyfile::read(&key_path, headscale::server::CHECKPOINT_KEY_KIND)
        .unwrap()
        .expect("the server wrote its checkpoint key");
    let trusted = ed25519_dalek::SigningKey::from_bytes(&key).verifying_key();
    let report = verify_chain(&store, Some(&trusted))
        .unwrap_or_else(|e| panic!("iteration {iteration}: chain: {e}"));
    let envelopes: Vec<_> = read_envelopes(&store, 1, store.head().seq)
        .collect::<Result<_, _>>()
        .unwrap();
    let replayed = fold(State::default(), &envelopes);
    // As the server starts: from the newest snapshot when it is signed by its key.
    let loaded = load_state_with(&store, None, Some(&trusted)).unwrap().state;
    assert_eq!(
        loaded, replayed,
        "iteration {iteration}: snapshot + tail differs from a full replay"
    );
    let names: BTreeSet<String> = replayed.users.values().map(|u| u.name.clone()).collect();
    let lost: Vec<&String> = acknowledged.difference(&names).collect();
    assert!(
        lost.is_empty(),
        "iteration {iteration}: acknowledged users lost: {lost:?}"
    );
    Seen {
        events: report.events,
        snapshot_seq,
        checkpoints,
    }
}

#[test]
fn sigkill_under_concurrent_writes_loses_nothing_acknowledged() {
    let iterations: usize = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Frequent snapshots and checkpoints, so crashes also land while they are written.
    let mut server = TestServer::new("");
    server.env = vec![
        (
            "HEADSCALE_DATABASE_SLED_SNAPSHOT_EVERY_EVENTS".into(),
            "40".into(),
        ),
        (
            "HEADSCALE_DATABASE_SLED_CHECKPOINT_EVERY_EVENTS".into(),
            "25".into(),
        ),
    ];
    let store_path = server.data_dir().join("db.sled");
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut rng = rand::thread_rng();
    let mut seen = Seen {
        events: 0,
        snapshot_seq: 0,
        checkpoints: 0,
    };
    for iteration in 0..iterations {
        server.spawn();
        let socket = server.socket();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let (socket, stop, acknowledged) = (socket.clone(), stop.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let name = format!("u{iteration}-{writer}-{n}");
                        n += 1;
                        match post(&socket, "/api/v1/user", &format!("{{\"name\":\"{name}\"}}")) {
                            Some(200) => {
                                acknowledged.lock().unwrap().insert(name.clone());
                                let node = format!("{{\"user\":\"{name}\",\"name\":\"n{n}\",\"routes\":[\"10.{writer}.0.0/16\"]}}");
                                let _ = post(&socket, "/api/v1/debug/node", &node);
                            }
                            Some(status) => panic!("unexpected status {status}"),
                            None => break,
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(30..300)));
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            writer.join().unwrap();
        }
        seen = check_store(&store_path, &acknowledged.lock().unwrap(), iteration);
    }
    let acked = acknowledged.lock().unwrap().len();
    eprintln!(
        "{iterations} SIGKILLs, {acked} acknowledged users, {} events, newest snapshot at {}, {} checkpoints: nothing lost",
        seen.events, seen.snapshot_seq, seen.checkpoints
    );
    assert!(
        acked > iterations,
        "the writers acknowledged almost nothing ({acked})"
    );
    assert!(
        seen.snapshot_seq > 0 && seen.checkpoints > 0,
        "no snapshot or checkpoint was exercised"
    );
}
