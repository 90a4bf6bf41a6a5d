//! `headscale events export` / `events verify --file` / `events import` (issue #16): a JSONL
//! export made beside a running server or offline verifies anywhere with nothing but the file
//! (no config, server or data dir); tampering — a flipped payload byte, an edited event, a
//! deleted, reordered or cut line — is refused naming the first bad seq; a partial export
//! verifies on its own; a wrong pinned key fails; an import into a fresh data dir serves the
//! same state and chain, and refuses tampered and partial files and a non-empty store.

mod common;

use common::{TestServer, BIN};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs the CLI with no config anywhere: `HEADSCALE_CONFIG` names a file that does not exist
/// and the working directory is empty, so a command that reads a config fails.
fn standalone(args: &[&str]) -> Output {
    let empty = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(args)
        .current_dir(empty.path())
        .env("HEADSCALE_CONFIG", empty.path().join("missing.yaml"))
        .env_remove("HEADSCALE_CLI_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn standalone_ok(args: &[&str]) -> String {
    let out = standalone(args);
    assert!(
        out.status.success(),
        "`headscale {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn standalone_fails(args: &[&str]) -> String {
    let out = standalone(args);
    assert!(
        !out.status.success(),
        "`headscale {}` should have failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {stderr}");
    lines[0].to_string()
}

fn verify(file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["events", "verify", "--file", file.to_str().unwrap()];
    args.extend(extra);
    args.extend(["-o", "json"]);
    serde_json::from_str(&standalone_ok(&args)).unwrap()
}

fn verify_fails(file: &Path, extra: &[&str]) -> String {
    let mut args = vec!["events", "verify", "--file", file.to_str().unwrap()];
    args.extend(extra);
    standalone_fails(&args)
}

/// A server with two users, three nodes and a policy.
fn story() -> TestServer {
    let server = TestServer::start();
    server.create_user("alice");
    server.create_user("bob");
    for (name, user) in [("laptop", "alice"), ("phone", "alice"), ("db", "bob")] {
        server.ok(&["debug", "create-node", "--name", name, "-u", user]);
    }
    server
}

fn export(server: &TestServer, file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["events", "export", "--file", file.to_str().unwrap()];
    args.extend(extra);
    server.json(&args)
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    std::fs::write(file, lines.join("\n") + "\n").unwrap();
}

/// The index of record `seq`'s line.
fn record_line(lines: &[String], seq: u64) -> usize {
    let prefix = format!("{{\"kind\":\"record\",\"seq\":{seq},");
    lines.iter().position(|l| l.starts_with(&prefix)).unwrap()
}

/// The server's checkpoint public key, from its key file.
fn server_key(server: &TestServer) -> String {
    let text = std::fs::read_to_string(server.data_dir().join("checkpoint_signing.key")).unwrap();
    let hex_key = text.trim().strip_prefix("ed25519-private:").unwrap();
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).unwrap();
    hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&bytes)
            .verifying_key()
            .to_bytes(),
    )
}

/// `GET path` on the server's unix socket (local trust): the JSON body.
fn socket_get(server: &TestServer, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(server.socket()).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn exports_online_and_offline_verify_without_a_config() {
    let files = tempfile::tempdir().unwrap();
    let (online, offline) = (
        files.path().join("online.jsonl"),
        files.path().join("offline.jsonl"),
    );
    let mut server = story();

    // Beside the running server (which holds the store's lock).
    let exported = export(&server, &online, &[]);
    let head = exported["head_seq"].as_u64().unwrap();
    assert!(head >= 7, "{exported}");
    assert_eq!(exported["events"], head);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&online).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the export is private");
    let checked = verify(&online, &[]);
    assert_eq!(checked["ok"], true);
    assert_eq!(checked["records"], head);
    assert_eq!(checked["headHash"], exported["head_hash"]);
    assert_eq!(checked["keySource"], "file");
    assert_eq!(checked["publicKey"].as_str().unwrap(), server_key(&server));
    // The server says which key to pin.
    let verified = server.json(&["events", "verify"]);
    assert_eq!(
        verified["checkpointKey"].as_str().unwrap(),
        server_key(&server)
    );
    // The human summary says what was checked.
    let human = standalone_ok(&["events", "verify", "--file", online.to_str().unwrap()]);
    assert!(
        human.starts_with(&format!("ok: {head} events (seq 1..={head})")),
        "{human}"
    );
    assert!(human.contains("not pinned"), "{human}");

    // To standard output: the same records.
    let out = server.cli(&["events", "export"]);
    assert!(out.status.success());
    let streamed = String::from_utf8(out.stdout).unwrap();
    let records = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("{\"kind\":\"record\""))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        records(&streamed),
        records(&std::fs::read_to_string(&online).unwrap())
    );

    // Offline, after a clean stop (which signs a checkpoint at the head): the checkpoint is
    // in the file and verifies against the pinned key.
    server.stop();
    let exported = export(&server, &offline, &[]);
    assert!(exported["checkpoints"].as_u64().unwrap() >= 1, "{exported}");
    let key = server_key(&server);
    let pinned = verify(&offline, &["--key", &key]);
    assert_eq!(pinned["keySource"], "pinned");
    assert!(pinned["checkpointsVerified"].as_u64().unwrap() >= 1);
    assert_eq!(pinned["lastSignedSeq"], pinned["until"]);
    // The online export's records are the first ones of the offline one: the same chain.
    let (first, second) = (lines(&online), lines(&offline));
    assert_eq!(first[1..=head as usize], second[1..=head as usize]);

    // A wrong pinned key fails, naming both keys.
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32])
            .verifying_key()
            .to_bytes(),
    );
    let refused = verify_fails(&offline, &["--key", &other]);
    assert!(refused.contains("pinned key"), "{refused}");
    assert!(refused.contains(&key), "{refused}");
}

#[test]
fn tampering_is_refused_naming_the_first_bad_seq() {
    let files = tempfile::tempdir().unwrap();
    let good = files.path().join("good.jsonl");
    let bad = files.path().join("bad.jsonl");
    let mut server = story();
    server.stop();
    export(&server, &good, &[]);
    let all = lines(&good);
    let key = server_key(&server);
    // Record 4 creates user bob (ServerStarted, ConfigApplied, alice, bob, …).
    let four = record_line(&all, 4);
    assert!(all[four].contains("\"name\":\"bob\""), "{}", all[four]);

    let check = |lines: Vec<String>, seq: u64, what: &str| {
        write_lines(&bad, &lines);
        let refused = verify_fails(&bad, &["--key", &key]);
        assert!(
            refused.contains(&format!("seq {seq} ")),
            "{what}: {refused}"
        );
        refused
    };

    // A flipped byte in the stored payload.
    let mut flipped = all.clone();
    let at = flipped[four].find("\"payload\":\"").unwrap() + 12;
    let mut bytes = flipped[four].clone().into_bytes();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    flipped[four] = String::from_utf8(bytes).unwrap();
    let refused = check(flipped, 4, "flipped payload");
    assert!(refused.contains("hash"), "{refused}");

    // The readable event edited (the payload is intact).
    let mut edited = all.clone();
    edited[four] = edited[four].replace("\"name\":\"bob\"", "\"name\":\"eve\"");
    let refused = check(edited, 4, "edited event");
    assert!(refused.contains("event"), "{refused}");

    // A deleted line, two lines swapped.
    let mut deleted = all.clone();
    deleted.remove(four);
    let refused = check(deleted, 4, "deleted line");
    assert!(refused.contains("missing"), "{refused}");
    let mut swapped = all.clone();
    swapped.swap(four, four + 1);
    check(swapped, 4, "reordered");

    // Cut short: the last records and the trailer gone.
    let cut: Vec<String> = all[..=four].to_vec();
    let refused = check(cut, 5, "truncated");
    assert!(refused.contains("cut short"), "{refused}");

    // A removed checkpoint shows in the trailer's count.
    let without: Vec<String> = all
        .iter()
        .filter(|l| !l.starts_with("{\"kind\":\"checkpoint\""))
        .cloned()
        .collect();
    assert!(without.len() < all.len());
    write_lines(&bad, &without);
    let refused = verify_fails(&bad, &[]);
    assert!(refused.contains("checkpoints"), "{refused}");

    // The untouched file still verifies.
    assert_eq!(verify(&good, &["--key", &key])["ok"], true);
}

#[test]
fn a_partial_export_verifies_on_its_own() {
    let files = tempfile::tempdir().unwrap();
    let part = files.path().join("part.jsonl");
    let server = story();
    let exported = export(&server, &part, &["--since", "3", "--until", "6"]);
    assert_eq!(exported["events"], 3);
    let checked = verify(&part, &[]);
    assert_eq!(
        (checked["since"].as_u64(), checked["until"].as_u64()),
        (Some(3), Some(6))
    );
    assert_eq!(checked["records"], 3);
    let all = lines(&part);
    assert!(
        all[1].starts_with("{\"kind\":\"record\",\"seq\":4,"),
        "{}",
        all[1]
    );
    // The chain resumes from the hash of record 3, which the server agrees on.
    let three = server.json(&["events", "show", "3"]);
    let header: serde_json::Value = serde_json::from_str(&all[0]).unwrap();
    assert_eq!(header["prevHash"], three["hash"]);
    // A point in time: everything happened within the last hour.
    let recent = files.path().join("recent.jsonl");
    let exported = export(&server, &recent, &["--since", "1h"]);
    assert_eq!(exported["since"], 0);
    // A point beyond the head is refused.
    let refused = server.fails(&["events", "export", "--since", "999999"]);
    assert!(refused.contains("beyond the end of the log"), "{refused}");
}

#[test]
fn an_import_into_a_fresh_data_dir_serves_the_same_state_and_chain() {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("log.jsonl");
    let server = story();
    let exported = export(&server, &file, &[]);
    let head = exported["head_seq"].as_u64().unwrap();
    let state_then = socket_get(&server, &format!("/api/v1/state?at={head}"));

    // Into the data dir of a server that has never run, without a config.
    let mut fresh = TestServer::new("");
    let data_dir = fresh.data_dir();
    let imported: serde_json::Value = serde_json::from_str(&standalone_ok(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(imported["events"], head);
    assert_eq!(imported["head_hash"], exported["head_hash"]);
    // A store that holds events is refused.
    let refused = standalone_fails(&[
        "events",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(refused.contains("already holds"), "{refused}");

    fresh.spawn();
    fresh.ok(&["events", "verify"]);
    assert_eq!(
        socket_get(&fresh, &format!("/api/v1/state?at={head}")),
        state_then
    );
    assert_eq!(
        fresh.json(&["events", "show", &head.to_string()])["hash"],
        exported["head_hash"]
    );
    assert_eq!(common::node_facts(&fresh), common::node_facts(&server));
}

#[test]
fn an_import_refuses_tampered_and_partial_files_and_reads_the_older_binary_form() {
    let files = tempfile::tempdir().unwrap();
    let (whole, part, bad) = (
        files.path().join("whole.jsonl"),
        files.path().join("part.jsonl"),
        files.path().join("bad.jsonl"),
    );
    let server = story();
    export(&server, &whole, &[]);
    export(&server, &part, &["--since", "2"]);
    let mut all = lines(&whole);
    let four = record_line(&all, 4);
    all[four] = all[four].replace("\"name\":\"bob\"", "\"name\":\"eve\"");
    write_lines(&bad, &all);
    let target: PathBuf = files.path().join("data");
    let import = |file: &Path| {
        standalone_fails(&[
            "events",
            "import",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ])
    };
    let refused = import(&bad);
    assert!(
        refused.contains("nothing was imported") && refused.contains("seq 4 "),
        "{refused}"
    );
    let refused = import(&part);
    assert!(refused.contains("partial export"), "{refused}");
    // Nothing was written: the whole file goes in afterwards.
    standalone_ok(&[
        "events",
        "import",
        whole.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);

    // Files in the older binary form (issue #15's export, the golden logs) still import
    // and verify.
    let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/events/v0-lifecycle.bin");
    let checked = verify(Path::new(golden), &[]);
    assert_eq!(checked["format"], "binary");
    let out = standalone_ok(&[
        "events",
        "import",
        "--file",
        golden,
        "--data-dir",
        files.path().join("golden").to_str().unwrap(),
    ]);
    assert!(out.starts_with("imported "), "{out}");
}
