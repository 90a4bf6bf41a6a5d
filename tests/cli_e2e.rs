//! End-to-end: the real `headscale` binary as daemon and CLI, on temp dirs and loopback.
//! Covers the admin command tree, output formats, bad input (one line, non-zero exit,
//! nothing changed), `--at` history, offline reads, restarts and Bearer auth on TCP.

mod common;

use common::{http, TestServer};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn users_lifecycle_and_errors() {
    let server = TestServer::start();
    let alice = server.json(&[
        "users",
        "create",
        "alice",
        "--email",
        "alice@example.com",
        "-d",
        "Alice",
    ]);
    assert_eq!(alice["id"], "1");
    assert_eq!(alice["name"], "alice");
    assert_eq!(alice["displayName"], "Alice");
    assert!(alice["createdAt"].as_str().unwrap().ends_with('Z'));
    server.ok(&["namespaces", "create", "bob"]);

    let line = server.fails(&["users", "create", "alice"]);
    assert_eq!(line, "Error: a user named \"alice\" already exists");
    let line = server.fails(&["users", "create", "x y"]);
    assert!(line.contains("invalid user name"), "{line}");
    let line = server.fails(&["users", "rename", "-n", "nobody", "-r", "z"]);
    assert!(line.contains("not found"), "{line}");

    server.ok(&["users", "rename", "-n", "bob", "-r", "robert"]);
    let users = server.json(&["users", "list"]);
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "robert"]);
    let filtered = server.json(&["users", "list", "-n", "robert"]);
    assert_eq!(ids(&filtered), ["2"]);

    // A user who owns nodes is not destroyed without --force.
    server.ok(&["debug", "create-node", "--name", "laptop", "-u", "alice"]);
    let line = server.fails(&["users", "destroy", "-n", "alice"]);
    assert!(line.contains("still owns 1 node"), "{line}");
    assert_eq!(server.json(&["nodes", "list"]).as_array().unwrap().len(), 1);
    server.ok(&["users", "destroy", "-n", "alice", "--force"]);
    assert_eq!(ids(&server.json(&["users", "list"])), ["2"]);
    assert!(server
        .json(&["nodes", "list"])
        .as_array()
        .unwrap()
        .is_empty());

    // Human output is an aligned table.
    let table = server.ok(&["users", "list"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID | Name"));
    assert!(lines.next().unwrap().starts_with("2  | robert"));
}

#[test]
fn pre_auth_keys_semantics_and_formats() {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    let key = server.json(&[
        "preauthkeys",
        "create",
        "-u",
        "alice",
        "--reusable",
        "--ephemeral",
        "-e",
        "24h",
        "--tags",
        "tag:web,tag:db",
    ]);
    let full = key["key"].as_str().unwrap();
    assert!(
        full.starts_with("hskey-auth-") && !full.ends_with("***"),
        "{full}"
    );
    assert_eq!(key["reusable"], true);
    assert_eq!(key["ephemeral"], true);
    assert_eq!(key["aclTags"], serde_json::json!(["tag:db", "tag:web"]));
    // The plaintext is shown once; listings show the prefix only.
    let listed = server.json(&["authkeys", "list"]);
    assert!(listed[0]["key"].as_str().unwrap().ends_with("-***"));
    // Only a hash is stored: the secret is nowhere in the data dir.
    let secret = full.rsplit('-').next().unwrap();
    assert!(
        !dir_contains(&server.data_dir(), secret.as_bytes()),
        "plaintext secret found on disk"
    );

    let line = server.fails(&["preauthkeys", "create", "-u", "alice", "-e", "91d"]);
    assert!(line.contains("more than 90 days"), "{line}");
    let line = server.fails(&["preauthkeys", "create", "-u", "alice", "--tags", "web"]);
    assert!(line.contains("must start with \"tag:\""), "{line}");
    let line = server.fails(&["preauthkeys", "create", "-u", "nobody"]);
    assert!(line.contains("not found"), "{line}");
    let line = server.fails(&["preauthkeys", "create", "-u", "alice", "-e", "soon"]);
    assert!(line.contains("invalid expiration"), "{line}");
    let line = server.fails(&["preauthkeys", "create"]);
    assert!(line.contains("needs a user or at least one tag"), "{line}");
    // A tag-only key needs no user.
    let tagged = server.json(&["preauthkeys", "create", "--tags", "tag:server"]);
    assert_eq!(tagged["user"], Value::Null);

    // Expired keys stay listed, with their state.
    server.ok(&["preauthkeys", "expire", "--id", "1"]);
    let listed = server.json(&["preauthkeys", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["state"], "expired");
    let line = server.fails(&["preauthkeys", "expire", "--id", "99"]);
    assert!(line.contains("not found"), "{line}");
    server.ok(&["preauthkeys", "delete", "--id", "2"]);
    assert_eq!(
        server
            .json(&["preauthkeys", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Other output formats parse.
    let yaml = server.ok(&["preauthkeys", "list", "-o", "yaml"]);
    assert!(yaml.contains("  expiration:\n    seconds: "), "{yaml}");
    let line = server.ok(&["preauthkeys", "list", "-o", "json-line"]);
    assert_eq!(line.lines().count(), 1);
    serde_json::from_str::<Value>(&line).unwrap();
}

fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            dir_contains(&path, needle)
        } else {
            std::fs::read(&path)
                .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
                .unwrap_or(false)
        }
    })
}

#[test]
fn nodes_routes_and_history() {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["users", "create", "bob"]);
    let node = server.json(&[
        "debug",
        "create-node",
        "--name",
        "Web Server",
        "-u",
        "alice",
        "-r",
        "10.0.0.0/24",
        "-r",
        "0.0.0.0/0",
    ]);
    assert_eq!(node["givenName"], "web-server");
    assert_eq!(
        node["ipAddresses"],
        serde_json::json!(["100.64.0.1", "fd7a:115c:a1e0::1"])
    );
    let second = server.json(&[
        "debug",
        "create-node",
        "--name",
        "web server",
        "-u",
        "bob",
        "-r",
        "10.0.0.0/24",
    ]);
    assert_eq!(second["givenName"], "web-server-1");

    // Routes: enable without --id approves on every node announcing it and names them.
    let out = server.ok(&["routes", "enable", "-r", "10.0.0.0/24"]);
    assert!(
        out.contains("web-server (id 1)") && out.contains("web-server-1 (id 2)"),
        "{out}"
    );
    let out = server.ok(&["routes", "enable", "-r", "::/0", "-i", "1"]);
    assert!(out.contains("id 1"), "{out}");
    let node = server.json(&["nodes", "list"])[0].clone();
    assert_eq!(
        node["approvedRoutes"],
        serde_json::json!(["0.0.0.0/0", "10.0.0.0/24", "::/0"])
    );
    assert_eq!(
        node["subnetRoutes"],
        serde_json::json!(["0.0.0.0/0", "10.0.0.0/24"])
    );
    let line = server.fails(&["routes", "enable", "-r", "10.9.0.0/24"]);
    assert!(line.contains("no node advertises"), "{line}");
    let line = server.fails(&["routes", "enable", "-r", "not-a-cidr"]);
    assert!(line.contains("invalid route"), "{line}");
    server.ok(&["routes", "disable", "-r", "0.0.0.0/0"]);
    let routes = server.json(&["routes", "list", "-i", "1"]);
    let enabled: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["enabled"] == true)
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(enabled, ["10.0.0.0/24"]);
    server.ok(&["nodes", "approve-routes", "-i", "2", "-r", ""]);
    assert_eq!(
        server.json(&["nodes", "list", "-u", "bob"])[0]["approvedRoutes"],
        serde_json::json!([])
    );

    // Rename, tag, move, expire.
    let line = server.fails(&["nodes", "rename", "-i", "1", "Bad Name"]);
    assert!(line.contains("not a valid DNS label"), "{line}");
    let line = server.fails(&["nodes", "rename", "-i", "1", "web-server-1"]);
    assert!(line.contains("already taken"), "{line}");
    server.ok(&["nodes", "rename", "-i", "1", "www"]);
    let line = server.fails(&["nodes", "tag", "-i", "2", "-t", "server"]);
    assert!(line.contains("tag:"), "{line}");
    let tagged = server.json(&["nodes", "tag", "-i", "2", "-t", "tag:server"]);
    assert_eq!(tagged["tags"], serde_json::json!(["tag:server"]));
    assert_eq!(tagged["user"], Value::Null);
    let moved = server.json(&["nodes", "move", "-i", "2", "-u", "alice"]);
    assert_eq!(moved["user"]["name"], "alice");
    assert_eq!(moved["tags"], serde_json::json!([]));
    let expired = server.json(&["nodes", "expire", "-i", "1"]);
    assert_eq!(expired["expired"], true);
    let never = server.json(&["nodes", "expire", "-i", "1", "--disable"]);
    assert_eq!(never["expiry"], Value::Null);
    let later = server.json(&["nodes", "expire", "-i", "1", "-e", "2099-01-01T00:00:00Z"]);
    assert_eq!(later["expiry"], "2099-01-01T00:00:00.000Z");
    let line = server.fails(&["nodes", "delete", "-i", "42"]);
    assert_eq!(line, "Error: node 42 not found");
    let line = server.fails(&["nodes", "register", "-u", "alice", "-k", "nodekey:00"]);
    assert!(line.contains("no pending registration"), "{line}");

    // The node's story, in order.
    let story = server.json(&["events", "list", "--node", "1"]);
    let kinds: Vec<&str> = story
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "NodeRegistered",
            "RoutesApproved",
            "RoutesApproved",
            "RoutesApproved",
            "NodeRenamed",
            "NodeExpiryChanged",
            "NodeExpiryChanged",
            "NodeExpiryChanged"
        ]
    );
    let line = server.fails(&["events", "list", "--type", "Nope"]);
    assert!(line.contains("unknown event type"), "{line}");

    // --at shows the past: before the rename the node was "web-server".
    let renamed = story
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "NodeRenamed")
        .unwrap();
    let seq: u64 = renamed["seq"].as_str().unwrap().parse().unwrap();
    let before = server.json(&["nodes", "list", "--at", &(seq - 1).to_string()]);
    assert_eq!(before[0]["givenName"], "web-server");
    let at_time = server.json(&["nodes", "list", "--at", renamed["at"].as_str().unwrap()]);
    assert_eq!(at_time[0]["givenName"], "www");
    let line = server.fails(&["users", "list", "--at", "999999"]);
    assert!(line.contains("beyond the end of the log"), "{line}");
    let line = server.fails(&["users", "list", "--at", "yesterday"]);
    assert!(line.contains("is not a point in the log"), "{line}");
    assert!(line.contains("a duration ago"), "{line}");
    // A duration is that long ago: a day ago the log was empty, a second from now is all of it.
    let day_ago = server.json(&["nodes", "list", "--at", "1d"]);
    assert_eq!(day_ago.as_array().map(Vec::len), Some(0), "{day_ago}");
    let recent = server.json(&["events", "list", "--since", "1h"]);
    assert_eq!(
        recent.as_array().unwrap().len(),
        server.json(&["events", "list"]).as_array().unwrap().len()
    );

    // Who did it: the admin made every change to the node, the server started itself.
    let by_admin = server.json(&["events", "list", "--actor", "admin", "--node", "1"]);
    assert_eq!(by_admin, story);
    let by_system = server.json(&["events", "list", "--actor", "system"]);
    assert!(by_system
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "system"));
    assert!(by_system
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["type"] == "ServerStarted"));
    let line = server.fails(&["events", "list", "--actor", "root"]);
    assert!(line.contains("invalid actor \"root\""), "{line}");

    let until = server.json(&["events", "list", "--until", "3"]);
    assert_eq!(until.as_array().unwrap().len(), 3);
    let since = server.json(&["events", "list", "--since", "3", "--until", "4"]);
    assert_eq!(since[0]["seq"], "4");
    let alices = server.json(&["events", "list", "--user", "alice"]);
    let kinds: Vec<&str> = alices
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["UserCreated", "NodeRegistered", "NodeMoved"]);
    assert_eq!(server.ok(&["health"]).trim(), "healthy");

    let shown = server.json(&["events", "show", "1"]);
    assert_eq!(shown["event"]["type"], "ServerStarted");
    assert_eq!(shown["hash"].as_str().unwrap().len(), 64);
    assert!(server.ok(&["events", "verify"]).starts_with("ok: "));
}

#[test]
fn restart_offline_reads_and_key_files() {
    let mut server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["debug", "create-node", "--name", "n1", "-u", "alice"]);
    server.stop();

    // No daemon: reads open the store directly and say so; writes refuse clearly.
    let out = server.cli(&["users", "list", "-o", "json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the store"));
    let line = server.fails(&["users", "create", "bob"]);
    assert!(line.contains("no headscale daemon is running"), "{line}");
    let verify = server.ok(&["events", "verify"]);
    assert!(
        verify.contains("1 checkpoint(s) verified (signatures checked)"),
        "{verify}"
    );

    let key = server.data_dir().join("checkpoint_signing.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Restart: everything is still there, and the server recorded its start.
    server.spawn();
    assert_eq!(server.json(&["nodes", "list"])[0]["givenName"], "n1");
    let starts = server.json(&["events", "list", "--type", "ServerStarted"]);
    assert_eq!(starts.as_array().unwrap().len(), 2);
    // The unchanged config is not recorded again.
    let configs = server.json(&["events", "list", "--type", "ConfigApplied"]);
    assert_eq!(configs.as_array().unwrap().len(), 1);
    server.ok(&["users", "create", "bob"]);
    assert_eq!(server.json(&["users", "list"]).as_array().unwrap().len(), 2);
    server.stop();

    // Damage in the middle of the log is reported in one line, never papered over.
    let log = server.data_dir().join("db.sled/events.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&log, bytes).unwrap();
    let line = server.fails(&["users", "list"]);
    assert!(line.contains("damaged"), "{line}");
}

#[test]
fn tcp_api_needs_a_valid_api_key() {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    let key = server
        .ok(&["apikeys", "create", "-e", "1d"])
        .trim()
        .to_string();
    assert!(key.starts_with("hskey-api-"), "{key}");

    // headscale's answer: a plain-text "Unauthorized" (tests/golden/api/auth.*.json).
    let (status, body) = http(server.port, "GET", "/api/v1/user", None);
    assert_eq!(status, 401);
    assert_eq!(body, Value::Null);
    let (status, _) = http(
        server.port,
        "GET",
        "/api/v1/user",
        Some("hskey-api-aaaaaaaaaaaa-wrong"),
    );
    assert_eq!(status, 401);
    let (status, body) = http(server.port, "GET", "/api/v1/user", Some(&key));
    assert_eq!(status, 200);
    assert_eq!(body["users"][0]["name"], "alice");
    // The control protocol's first step: the server's stable Noise key, persisted 0600.
    let (status, body) = http(server.port, "GET", "/key?v=113", None);
    assert_eq!(status, 200);
    let public = body["publicKey"].as_str().unwrap().to_string();
    assert!(
        public.starts_with("mkey:") && public != body["legacyPublicKey"],
        "{body}"
    );
    let noise = server.data_dir().join("noise_private.key");
    assert_eq!(
        std::fs::metadata(&noise).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (status, _) = http(server.port, "GET", "/key?v=abc", None);
    assert_eq!(status, 400);

    let (status, body) = http(server.port, "GET", "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("pass")));

    // Writes through the API key are attributed to it.
    let (status, _) = http(server.port, "DELETE", "/api/v1/user/1", Some(&key));
    assert_eq!(status, 200);
    let deleted = server.json(&["events", "list", "--type", "UserDeleted"]);
    assert_eq!(deleted[0]["actor"], "admin (api key 1)");

    let prefix = key.split('-').nth(2).unwrap().to_string();
    server.ok(&["apikeys", "expire", "-p", &prefix]);
    let (status, _) = http(server.port, "GET", "/api/v1/user", Some(&key));
    assert_eq!(status, 401);
    let listed = server.json(&["apikeys", "list"]);
    assert_eq!(listed[0]["prefix"], format!("hskey-api-{prefix}-***"));
    server.ok(&["apikeys", "delete", "-p", &prefix]);
    assert!(server
        .json(&["apikeys", "list"])
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn config_errors_are_one_line() {
    let server = TestServer::new("");
    let out = server.ok(&["configtest"]);
    assert!(out.contains("config OK"), "{out}");
    let bad = TestServer::new("prefixes:\n  v4: not-a-prefix\n");
    let line = bad.fails(&["configtest"]);
    assert!(
        line.starts_with("Error: config ") && line.contains("prefixes.v4"),
        "{line}"
    );
    let line = bad.fails(&["serve"]);
    assert!(line.contains("prefixes.v4"), "{line}");
    let out = std::process::Command::new(common::BIN)
        .args(["-c", "/nonexistent/config.yaml", "users", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.yaml"));
}

#[test]
fn completion_version_and_generate_need_no_config() {
    let run = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["completion", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("headscale"));
    let out = run(&["version", "-o", "json"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"version\""));
    let out = run(&["generate", "private-key"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("privkey:"));
}

#[test]
fn policy_check_locally_and_against_the_tailnet() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    };
    let valid = write(
        "valid.hujson",
        "// HuJSON: comments and trailing commas\n{\n  \"tagOwners\": {\"tag:server\": [\"alice@example.com\"]},\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"alice@example.com\"], \"dst\": [\"tag:server:22\"]},\n  ],\n  \"tests\": [\n    {\"src\": \"alice@example.com\", \"accept\": [\"tag:server:22\"], \"deny\": [\"tag:server:80\"]},\n  ],\n}\n",
    );
    let syntax = write(
        "syntax.hujson",
        "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}\n",
    );
    let unknown = write(
        "unknown.json",
        "{\"acls\": [{\"action\": \"accept\", \"srcs\": [\"*\"], \"dst\": [\"*:*\"]}]}",
    );
    let failing = write(
        "failing.json",
        "{\"tagOwners\": {\"tag:server\": [\"alice@example.com\"]}, \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}], \"tests\": [{\"src\": \"alice@example.com\", \"deny\": [\"tag:server:22\"]}]}",
    );
    // Valid on its own, but names a user the tailnet does not have.
    let stranger = write(
        "stranger.json",
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}], \"tests\": [{\"src\": \"nobody@example.com\", \"accept\": [\"100.64.0.1:22\"]}]}",
    );

    // No config, no daemon: the file alone is checked, and a note says the tests did not run.
    let missing_config = dir.path().join("missing.yaml");
    let alone = |args: &[&str]| {
        std::process::Command::new(common::BIN)
            .arg("-c")
            .arg(&missing_config)
            .args(["policy", "check"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = alone(&["-f", &valid]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Policy is valid\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("tests were not run"));
    // headscale's CLI prints the line whatever the format; `api-json` says more.
    let out = alone(&["--file", &failing, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Policy is valid\n");
    let out = alone(&["--file", &failing, "-o", "api-json"]);
    assert!(out.status.success(), "{out:?}");
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["valid"], true);
    assert_eq!(value["checkedAgainstTailnet"], false);
    let error_line = |out: std::process::Output| {
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("note:")).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        lines[0].to_string()
    };
    let line = error_line(alone(&["-f", &syntax]));
    assert!(
        line.starts_with("Error: invalid policy: policy is not valid HuJSON")
            && line.contains("Expected comma on line 3"),
        "{line}"
    );
    let line = error_line(alone(&["-f", &unknown]));
    assert!(
        line.contains("acls[0].srcs: unknown field `srcs`"),
        "{line}"
    );
    let line = error_line(alone(&[
        "-f",
        dir.path().join("nope.json").to_str().unwrap(),
    ]));
    assert!(line.contains("cannot read policy file"), "{line}");

    // With a daemon, its users and nodes decide the tests; nothing is set.
    let mut server = TestServer::start();
    server.ok(&["users", "create", "alice", "--email", "alice@example.com"]);
    let out = server.cli(&["policy", "check", "-f", &valid]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Policy is valid\n");
    assert!(out.stderr.is_empty(), "{out:?}");
    let value = server.json(&["policy", "check", "-f", &valid]);
    assert_eq!(value["checkedAgainstTailnet"], true);
    let line = server.fails(&["policy", "check", "-f", &failing]);
    assert_eq!(
        line,
        "Error: invalid policy: test(s) failed: tests[0]: alice@example.com can reach tag:server:22"
    );
    let line = server.fails(&["policy", "check", "-f", &stranger]);
    assert!(line.contains("names no user"), "{line}");
    let line = server.fails(&["policy", "check", "-f", &syntax]);
    assert!(line.contains("Expected comma on line 3"), "{line}");
    let line = server.fails(&["policy", "get"]);
    assert!(line.contains("no policy is set"), "{line}");

    // No daemon but a store: the tests run against the tailnet it recorded.
    server.stop();
    let line = server.fails(&["policy", "check", "-f", &failing]);
    assert!(line.contains("can reach tag:server:22"), "{line}");
    let out = server.cli(&["policy", "check", "-f", &valid, "-o", "api-json"]);
    assert!(out.status.success(), "{out:?}");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("\"checkedAgainstTailnet\": true"), "{yaml}");
}
