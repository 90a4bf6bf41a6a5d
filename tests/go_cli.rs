//! The real Go `headscale` CLI v0.29.2 drives this server, as a headscale user's scripts do:
//! over the unix socket (local trust, the `:authority` grpc-go sends there) and remotely over
//! `grpc_listen_addr` with TLS (`HEADSCALE_CLI_ADDRESS`, `HEADSCALE_CLI_API_KEY`,
//! `HEADSCALE_CLI_INSECURE` for the self-signed test certificate). The binary comes from
//! `HEADSCALE_GO`, or from the cache `bash .ci/install-go-headscale` fills.

mod common;

use common::{free_port, TestServer};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// The Go CLI with `config` and `env` (through `common::go_cli_*`).
struct GoCli {
    config: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl GoCli {
    /// The environment of every call: ours plus a timeout that fits a loaded machine.
    fn env(&self) -> Vec<(&str, &str)> {
        let mut env = vec![("HEADSCALE_CLI_TIMEOUT", "10s")];
        env.extend(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        env
    }

    fn run(&self, args: &[&str]) -> Output {
        common::go_cli_output(&self.config, args, &self.env())
    }

    /// Expects success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        common::go_cli_ok(&self.config, args, &self.env())
    }

    /// `-o json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        common::go_cli_json(&self.config, args, &self.env())
    }

    /// Expects failure; stderr and stdout together.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !out.status.success(),
            "Go `headscale {}` should fail: {text}",
            args.join(" ")
        );
        text
    }
}

/// A Go CLI config naming only the socket (the rest are headscale's defaults).
fn go_config(dir: &Path, socket: &Path) -> PathBuf {
    let config = dir.join("go-cli.yaml");
    std::fs::write(&config, format!("unix_socket: {}\n", socket.display())).unwrap();
    config
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| {
            item[field]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| item[field].to_string())
        })
        .collect()
}

const POLICY: &str = r#"{"tagOwners": {"tag:server": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

#[test]
fn the_go_cli_drives_users_keys_nodes_and_policy_over_the_socket() {
    common::go_headscale(); // fails at once, naming the install script, when missing
    let server = TestServer::start();
    let dir = server.dir.path().to_path_buf();
    let go = GoCli {
        config: go_config(&dir, &server.socket()),
        env: vec![],
    };

    // users create / list / rename.
    go.ok(&[
        "users",
        "create",
        "alice",
        "-d",
        "Alice A",
        "-e",
        "alice@example.com",
    ]);
    go.ok(&["users", "create", "bob"]);
    let users = go.json(&["users", "list"]);
    assert_eq!(ids(&users, "name"), ["alice", "bob"], "{users}");
    assert_eq!(users[0]["display_name"], "Alice A", "{users}");
    let alice = users[0]["id"].to_string();
    let bob = users[1]["id"].to_string();
    go.ok(&["users", "rename", "-i", &bob, "-r", "robert"]);
    assert_eq!(
        ids(&go.json(&["users", "list"]), "name"),
        ["alice", "robert"]
    );
    assert!(go.ok(&["users", "list"]).contains("robert"));

    // preauthkeys create / list / expire / delete.
    let key = go.json(&[
        "preauthkeys",
        "create",
        "-u",
        &alice,
        "--reusable",
        "-e",
        "24h",
    ]);
    assert!(
        key["key"].as_str().unwrap().starts_with("hskey-auth-"),
        "{key}"
    );
    assert_eq!(key["reusable"], true, "{key}");
    let key_id = key["id"].to_string();
    let keys = go.json(&["preauthkeys", "list"]);
    assert_eq!(ids(&keys, "id"), [key_id.as_str()], "{keys}");
    go.ok(&["preauthkeys", "expire", "-i", &key_id]);
    go.ok(&["preauthkeys", "delete", "-i", &key_id]);
    assert_eq!(go.json(&["preauthkeys", "list"]), Value::Null);

    // apikeys create / list / expire / delete.
    let api_key = go.ok(&["apikeys", "create", "-e", "30d"]);
    assert!(api_key.trim().starts_with("hskey-api-"), "{api_key}");
    let api_keys = go.json(&["apikeys", "list"]);
    let prefix = api_keys[0]["prefix"].as_str().unwrap().to_string();
    go.ok(&["apikeys", "expire", "-p", &prefix]);
    go.ok(&["apikeys", "delete", "-p", &prefix]);
    assert_eq!(go.json(&["apikeys", "list"]), Value::Null);

    // policy set / get / check.
    let file = dir.join("policy.json");
    std::fs::write(&file, POLICY).unwrap();
    go.ok(&["policy", "check", "-f", file.to_str().unwrap()]);
    go.ok(&["policy", "set", "-f", file.to_str().unwrap()]);
    assert!(go.ok(&["policy", "get"]).contains("tag:server"));
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]}"#,
    )
    .unwrap();
    let refused = go.fails(&["policy", "set", "-f", bad.to_str().unwrap()]);
    assert!(refused.contains("tag:nope"), "{refused}");

    // nodes: a waiting login (queued by debug create-node), then register, list, rename,
    // tag, approve-routes, expire, delete.
    let auth_id = format!("hskey-authreq-{}", "x".repeat(24));
    go.ok(&[
        "debug",
        "create-node",
        "-u",
        "alice",
        "-k",
        &auth_id,
        "--name",
        "laptop",
        "-r",
        "10.1.0.0/24",
    ]);
    let node = go.json(&["nodes", "register", "-u", "alice", "-k", &auth_id]);
    assert_eq!(node["given_name"], "laptop", "{node}");
    let node_id = node["id"].to_string();
    let nodes = go.json(&["nodes", "list"]);
    assert_eq!(ids(&nodes, "id"), [node_id.as_str()], "{nodes}");
    assert!(go.ok(&["nodes", "list"]).contains("laptop"));
    go.ok(&["nodes", "rename", "-i", &node_id, "work"]);
    go.ok(&["nodes", "tag", "-i", &node_id, "-t", "tag:server"]);
    let node = go.json(&[
        "nodes",
        "approve-routes",
        "-i",
        &node_id,
        "-r",
        "10.1.0.0/24",
    ]);
    assert_eq!(
        node["approved_routes"],
        serde_json::json!(["10.1.0.0/24"]),
        "{node}"
    );
    let node = &go.json(&["nodes", "list"])[0];
    assert_eq!(node["given_name"], "work", "{node}");
    assert_eq!(node["tags"], serde_json::json!(["tag:server"]), "{node}");
    go.ok(&["nodes", "expire", "-i", &node_id]);
    go.ok(&["nodes", "delete", "-i", &node_id, "--force"]);
    assert_eq!(go.json(&["nodes", "list"]), Value::Null);

    // auth register / reject, health, backfillips.
    let (second, third) = (
        format!("hskey-authreq-{}", "y".repeat(24)),
        format!("hskey-authreq-{}", "z".repeat(24)),
    );
    for (id, name) in [(&second, "desk"), (&third, "phone")] {
        go.ok(&[
            "debug",
            "create-node",
            "-u",
            "alice",
            "-k",
            id,
            "--name",
            name,
        ]);
    }
    let desk = go.json(&["auth", "register", "-u", "alice", "--auth-id", &second]);
    assert_eq!(desk["given_name"], "desk", "{desk}");
    go.ok(&["auth", "reject", "--auth-id", &third]);
    let unknown = go.fails(&["auth", "approve", "--auth-id", &third]);
    assert!(unknown.contains("NotFound"), "{unknown}");
    let health = go.json(&["health"]);
    assert_eq!(health["database_connectivity"], true, "{health}");
    go.ok(&["nodes", "backfillips", "--force"]);
    go.ok(&["nodes", "delete", "-i", &desk["id"].to_string(), "--force"]);

    // users destroy.
    go.ok(&["users", "destroy", "-i", &bob, "--force"]);
    assert_eq!(ids(&go.json(&["users", "list"]), "name"), ["alice"]);

    // Errors come back as the API's messages.
    let missing = go.fails(&["nodes", "rename", "-i", "999", "x"]);
    assert!(missing.contains("not found"), "{missing}");
}

#[test]
fn the_go_cli_works_remotely_over_tls_with_an_api_key() {
    common::go_headscale(); // fails at once, naming the install script, when missing
    let grpc_port = free_port();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, _) = common::self_signed_localhost(certs.path());
    let server = TestServer::start_with(&format!(
        "grpc_listen_addr: 127.0.0.1:{grpc_port}\ntls_cert_path: {}\ntls_key_path: {}\n",
        cert.display(),
        key.display()
    ));
    server.create_user("alice");
    let api_key = server.ok(&["apikeys", "create"]).trim().to_string();
    let dir = server.dir.path().to_path_buf();
    let remote = |api_key: &str| GoCli {
        // No socket on this side: everything goes over the network.
        config: go_config(&dir, &dir.join("no-such.sock")),
        env: vec![
            ("HEADSCALE_CLI_ADDRESS", format!("127.0.0.1:{grpc_port}")),
            ("HEADSCALE_CLI_API_KEY", api_key.to_string()),
            ("HEADSCALE_CLI_INSECURE", "1".to_string()),
        ],
    };
    let go = remote(&api_key);
    assert_eq!(ids(&go.json(&["users", "list"]), "name"), ["alice"]);
    go.ok(&["users", "create", "bob"]);
    assert_eq!(go.json(&["nodes", "list"]), Value::Null);
    assert_eq!(go.json(&["apikeys", "list"]).as_array().unwrap().len(), 1);
    let wrong = remote("hskey-api-AAAAAAAAAAAA-wrong").fails(&["users", "list"]);
    assert!(
        wrong.contains("Unauthenticated") && wrong.contains("invalid token"),
        "{wrong}"
    );
}
