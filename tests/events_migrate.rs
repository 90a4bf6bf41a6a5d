//! `headscale events export` / `events import`: a log moved from the embedded store to
//! PostgreSQL and back keeps its chain (the exported records are byte for byte the same, so
//! every hash is), verifies on the new store with a signed checkpoint, and serves the same
//! nodes. Import refuses a store that already holds events and a damaged file, writing
//! nothing (issue #15, T9 of `shared/reviews/ha-acceptance.md`).

mod common;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use common::{node_facts, TestServer};
use pg_cluster::PgCluster;
use std::path::Path;

/// A server config on `database` (a whole `database:` section), not started.
fn server_with_database(database: &str) -> TestServer {
    TestServer::on_database(database, "")
}

/// The server's keys (Noise, checkpoint signing) copied into `to`'s data dir: the same
/// server, moved to another store.
fn copy_keys(from: &TestServer, to: &TestServer) {
    std::fs::create_dir_all(to.data_dir()).unwrap();
    for key in ["noise_private.key", "checkpoint_signing.key"] {
        std::fs::copy(from.data_dir().join(key), to.data_dir().join(key)).unwrap();
    }
}

fn export(server: &TestServer, file: &Path) -> serde_json::Value {
    server.json(&["events", "export", "--file", file.to_str().unwrap()])
}

fn import(server: &TestServer, file: &Path) -> serde_json::Value {
    server.json(&["events", "import", "--file", file.to_str().unwrap()])
}

#[test]
fn a_log_moves_from_sled_to_postgres_and_back_with_its_chain_intact() {
    let files = tempfile::tempdir().unwrap();
    let (first, second, third) = (
        files.path().join("from-sled.jsonl"),
        files.path().join("from-postgres.jsonl"),
        files.path().join("damaged.jsonl"),
    );

    // A server on the embedded store with users and nodes.
    let mut sled = TestServer::start();
    sled.create_user("alice");
    sled.create_user("bob");
    for (name, user) in [("laptop", "alice"), ("phone", "alice"), ("server", "bob")] {
        sled.ok(&["debug", "create-node", "--name", name, "-u", user]);
    }
    let nodes = node_facts(&sled);
    sled.stop();
    let exported = export(&sled, &first);
    let events = exported["events"].as_u64().unwrap();
    assert!(events >= 7, "{exported}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&first).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the exported log is private");

    // Into PostgreSQL: the same head, it verifies (with the checkpoint the import signed)
    // and serves the same nodes.
    let cluster = PgCluster::start();
    let mut postgres = server_with_database(&cluster.database_yaml());
    copy_keys(&sled, &postgres);
    let imported = import(&postgres, &first);
    assert_eq!(imported["events"], events);
    assert_eq!(imported["head_hash"], exported["head_hash"]);
    let verified = postgres.ok(&["events", "verify"]);
    assert!(!verified.trim().is_empty());
    postgres.spawn();
    assert_eq!(node_facts(&postgres), nodes);
    // A second import into a store that holds events writes nothing.
    let refused = postgres.fails(&["events", "import", "--file", first.to_str().unwrap()]);
    assert!(refused.contains("already holds"), "{refused}");
    postgres.stop();

    // Back out of PostgreSQL: the server's start there appended to the log, so the new file's
    // records are the first one's, byte for byte, followed by those records.
    export(&postgres, &second);
    let (a, b) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    let (old, new) = (records(&a), records(&b));
    assert!(
        new.len() > old.len() && new.starts_with(&old),
        "the chain changed"
    );

    // A damaged file is refused before anything is written.
    let mut damaged = b.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    std::fs::write(&third, &damaged).unwrap();
    let fresh = TestServer::new("");
    copy_keys(&sled, &fresh);
    let refused = fresh.fails(&["events", "import", "--file", third.to_str().unwrap()]);
    assert!(refused.contains("nothing was imported"), "{refused}");

    // And into a fresh embedded store: same nodes, verifies.
    let mut back = fresh;
    let imported = import(&back, &second);
    assert_eq!(imported["events"].as_u64().unwrap(), b_events(&b));
    back.ok(&["events", "verify"]);
    back.spawn();
    assert_eq!(node_facts(&back), nodes);
}

/// The record lines of an exported file.
fn records(bytes: &[u8]) -> Vec<&str> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .filter(|line| line.starts_with("{\"kind\":\"record\""))
        .collect()
}

/// Records in an exported file (counted by walking it).
fn b_events(bytes: &[u8]) -> u64 {
    records(bytes).len() as u64
}
