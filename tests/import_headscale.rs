//! Importing a real headscale: the Go headscale v0.29.2 (`bash .ci/install-go-headscale`, or
//! `HEADSCALE_GO`) makes a database with users, keys, nodes, routes, tags, a deleted user and
//! node and a policy; it is stopped, and we import it. Every field is compared with what the
//! Go CLI's `-o json` listing said, then an API key and a reusable pre-auth key made by
//! headscale are used against us, and `serve`'s first-start import is checked.

mod common;

use common::TestServer;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The real Go headscale on loopback with a throwaway config (SQLite, policy in database).
struct GoHeadscale {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl GoHeadscale {
    fn start() -> GoHeadscale {
        let dir = tempfile::tempdir().unwrap();
        let database = format!(
            "database:\n  type: sqlite\n  sqlite:\n    path: {}/db.sqlite\n    write_ahead_log: true\n",
            dir.path().display()
        );
        GoHeadscale::start_in(dir, &database)
    }

    /// Starts it in `dir` with `database` (the `database:` section of its config).
    fn start_in(dir: tempfile::TempDir, database: &str) -> GoHeadscale {
        let port = common::free_port();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("derp.yaml"),
            "regions:\n  900:\n    regionid: 900\n    regioncode: test\n    regionname: Test\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\nmetrics_listen_addr: 127.0.0.1:0\ngrpc_listen_addr: 127.0.0.1:0\ndisable_check_updates: true\nnoise:\n  private_key_path: {d}/noise_private.key\nprefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n  allocation: sequential\nderp:\n  server:\n    enabled: false\n  urls: []\n  paths: [{d}/derp.yaml]\n  auto_update_enabled: false\nnode:\n  expiry: 0\n{database}log:\n  level: warn\npolicy:\n  mode: database\ndns:\n  magic_dns: true\n  base_domain: tailnet.example\n  override_local_dns: false\n  nameservers:\n    global: []\nunix_socket: {d}/headscale.sock\nunix_socket_permission: \"0770\"\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let child = Command::new(common::go_headscale())
            .arg("-c")
            .arg(dir.path().join("config.yaml"))
            .arg("serve")
            .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let go = GoHeadscale {
            dir,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(go.socket().exists()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && common::http(port, "GET", "/health", None).0 == 200)
        {
            assert!(
                Instant::now() < deadline,
                "Go headscale did not start: {}",
                go.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        go
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("headscale.sock")
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("db.sqlite")
    }

    fn noise_key(&self) -> PathBuf {
        self.dir.path().join("noise_private.key")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// Runs the Go CLI; stdout on success.
    fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.push("--force");
        common::go_cli_ok(&self.dir.path().join("config.yaml"), &all, &[])
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--force");
        common::go_cli_json(&self.dir.path().join("config.yaml"), &all, &[])
    }

    /// The last line the CLI printed (a created key).
    fn key(&self, args: &[&str]) -> String {
        self.cli(args)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// SIGTERM and wait.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for GoHeadscale {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the Go headscale holds after the scenario, as its CLI listed it, and the secrets it
/// handed out.
struct Made {
    nodes: Value,
    users: Value,
    pre_auth_keys: Value,
    api_key: String,
    reusable_key: String,
}

fn authreq_id(n: u8) -> String {
    // headscale's registration ids: `hskey-authreq-` and 24 base64url characters.
    format!("hskey-authreq-{}", format!("importtest{n:02}").repeat(2))
}

fn make_headscale(go: &GoHeadscale) -> Made {
    go.cli(&[
        "users",
        "create",
        "alice",
        "--display-name",
        "Alice A",
        "--email",
        "alice@example.com",
    ]);
    go.cli(&["users", "create", "bob"]);
    go.cli(&["users", "create", "carol"]);
    go.cli(&[
        "policy",
        "set",
        "-f",
        go.dir.path().join("policy.hujson").to_str().unwrap(),
    ]);
    let reusable_key = go.key(&[
        "preauthkeys",
        "create",
        "-u",
        "1",
        "--reusable",
        "--expiration",
        "24h",
    ]);
    go.key(&[
        "preauthkeys",
        "create",
        "-u",
        "2",
        "--ephemeral",
        "--expiration",
        "24h",
    ]);
    go.key(&[
        "preauthkeys",
        "create",
        "--tags",
        "tag:server",
        "--expiration",
        "24h",
    ]);
    go.key(&["preauthkeys", "create", "-u", "2", "--expiration", "24h"]);
    go.cli(&["preauthkeys", "expire", "-i", "4"]);
    let api_key = go.key(&["apikeys", "create", "--expiration", "30d"]);
    for (n, user, name, route) in [
        (1, "alice", "laptop", Some("10.0.0.0/24")),
        (2, "bob", "desktop", None),
        (3, "carol", "doomed", None),
        (4, "alice", "server", None),
    ] {
        let id = authreq_id(n);
        let mut args = vec![
            "debug",
            "create-node",
            "--user",
            user,
            "--name",
            name,
            "--key",
            &id,
        ];
        if let Some(route) = route {
            args.extend(["--route", route]);
        }
        go.cli(&args);
        go.cli(&["auth", "register", "--user", user, "--auth-id", &id]);
    }
    go.cli(&["nodes", "approve-routes", "-i", "1", "-r", "10.0.0.0/24"]);
    go.cli(&["nodes", "rename", "-i", "2", "workstation"]);
    go.cli(&["nodes", "tag", "-i", "4", "-t", "tag:server"]);
    go.cli(&["nodes", "delete", "-i", "3"]);
    go.cli(&["users", "destroy", "--identifier", "3"]);
    Made {
        nodes: go.json(&["nodes", "list"]),
        users: go.json(&["users", "list"]),
        pre_auth_keys: go.json(&["preauthkeys", "list"]),
        api_key,
        reusable_key,
    }
}

const POLICY: &str = r#"{
  // made by the Go headscale, imported by us
  "tagOwners": { "tag:server": ["alice@"] },
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
}"#;

fn go_with_database() -> (GoHeadscale, Made) {
    go_made_with(GoHeadscale::start())
}

fn go_made_with(mut go: GoHeadscale) -> (GoHeadscale, Made) {
    std::fs::write(go.dir.path().join("policy.hujson"), POLICY).unwrap();
    let made = make_headscale(&go);
    go.stop();
    (go, made)
}

/// Our server's config on headscale's database: `database.type: sqlite`, its Noise key.
fn our_server(go: &GoHeadscale, db: &Path) -> TestServer {
    let db = db.to_path_buf();
    let noise = go.noise_key();
    TestServer::with_yaml(move |data, port| {
        format!(
            "server_url: http://127.0.0.1:{port}\nlisten_addr: 127.0.0.1:{port}\nmetrics_listen_addr: \"\"\nunix_socket: {data}/headscale.sock\nnoise:\n  private_key_path: {noise}\ndatabase:\n  type: sqlite\n  sqlite:\n    path: {db}\n  sled:\n    path: {data}/db.sled\nprefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\ndns:\n  base_domain: tailnet.example\n  override_local_dns: false\nderp:\n  server:\n    enabled: false\n    private_key_path: {data}/derp.key\npolicy:\n  mode: database\nlog:\n  level: info\n",
            data = data.display(),
            noise = noise.display(),
            db = db.display(),
        )
    })
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

fn list(value: &Value) -> Vec<Value> {
    value.as_array().cloned().unwrap_or_default()
}

fn strings(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = list(value)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// Every node the Go CLI listed is ours with the same id, keys, addresses, names, owner,
/// tags and routes (we read ours through the REST API with headscale's API key).
fn assert_same_nodes(go_nodes: &Value, ours: &Value) {
    let ours = list(&ours["nodes"]);
    assert_eq!(
        list(go_nodes).len(),
        ours.len(),
        "ours: {ours:?}\ngo: {go_nodes}"
    );
    for go in list(go_nodes) {
        let id = go["id"].as_u64().unwrap().to_string();
        let mine = ours
            .iter()
            .find(|n| n["id"] == id.as_str())
            .unwrap_or_else(|| panic!("node {id} missing from ours: {ours:?}"));
        assert_eq!(mine["machineKey"], go["machine_key"], "node {id}");
        assert_eq!(mine["nodeKey"], go["node_key"], "node {id}");
        assert_eq!(
            strings(&mine["ipAddresses"]),
            strings(&go["ip_addresses"]),
            "node {id}"
        );
        assert_eq!(mine["givenName"], go["given_name"], "node {id}");
        assert_eq!(strings(&mine["tags"]), strings(&go["tags"]), "node {id}");
        assert_eq!(
            strings(&mine["approvedRoutes"]),
            strings(&go["approved_routes"]),
            "node {id}"
        );
        assert_eq!(
            strings(&mine["availableRoutes"]),
            strings(&go["available_routes"]),
            "node {id}"
        );
        let go_user = go["user"]["name"].as_str().unwrap_or_default();
        if strings(&go["tags"]).is_empty() {
            assert_eq!(mine["user"]["name"], go_user, "node {id}");
        }
        // headscale's zero time is "no expiry".
        let go_expiry = go["expiry"]["seconds"].as_i64().unwrap_or(-62135596800);
        assert_eq!(
            mine["expiry"].is_null(),
            go_expiry < -2208988800,
            "node {id}: {mine}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headscale_sqlite_database_is_imported_and_keeps_working() {
    let (go, made) = go_with_database();
    let before = sha256_file(&go.db());
    let mut ours = our_server(&go, &go.db());

    // The offline import: counts (headscale 0.29 deletes users and nodes for real, so
    // nothing is soft-deleted here; skipping those rows is unit-tested in `import::convert`).
    let out = ours.ok(&["import", "headscale", "--db", go.db().to_str().unwrap()]);
    let users = list(&made.users).len();
    let nodes = list(&made.nodes).len();
    let keys = list(&made.pre_auth_keys).len();
    assert!(
        out.contains(&format!(
            "{users} user(s), {nodes} node(s), {keys} pre-auth key(s), 1 API key(s), a policy, 0 row(s) skipped"
        )),
        "{out}"
    );
    assert_eq!(
        sha256_file(&go.db()),
        before,
        "the headscale database was changed"
    );

    // A second import into the now non-empty log is refused.
    let refused = ours.fails(&["import", "headscale", "--db", go.db().to_str().unwrap()]);
    assert!(refused.contains("non-empty log is refused"), "{refused}");

    ours.spawn();
    ours.wait_healthy();
    assert!(
        ours.log().contains("already holds events"),
        "{}",
        ours.log()
    );

    // headscale's API key works against our REST API, and shows every node as it was.
    let (status, node_list) = common::http(ours.port, "GET", "/api/v1/node", Some(&made.api_key));
    assert_eq!(status, 200, "{node_list}");
    assert_same_nodes(&made.nodes, &node_list);
    let (status, _) = common::http(
        ours.port,
        "GET",
        "/api/v1/user",
        Some(&format!("{}x", made.api_key)),
    );
    assert_eq!(status, 401, "a wrong secret is refused");
    // Wrong secrets for a bcrypt key go through the same lockout as ours; the right key
    // still passes from the locked-out source.
    let mut statuses = vec![status];
    while statuses.len() < 12 && *statuses.last().unwrap() != 429 {
        let wrong = format!("{}y", made.api_key);
        statuses.push(common::http(ours.port, "GET", "/api/v1/user", Some(&wrong)).0);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let (status, _) = common::http(ours.port, "GET", "/api/v1/user", Some(&made.api_key));
    assert_eq!(status, 200);

    // Users with display name and email; keys with their flags and tags.
    let (_, our_users) = common::http(ours.port, "GET", "/api/v1/user", Some(&made.api_key));
    for go_user in list(&made.users) {
        let id = go_user["id"].as_u64().unwrap().to_string();
        let mine = list(&our_users["users"])
            .into_iter()
            .find(|u| u["id"] == id.as_str())
            .unwrap_or_else(|| panic!("user {id} missing: {our_users}"));
        assert_eq!(mine["name"], go_user["name"]);
        assert_eq!(
            mine["displayName"].as_str().unwrap_or(""),
            go_user["display_name"].as_str().unwrap_or("")
        );
        assert_eq!(
            mine["email"].as_str().unwrap_or(""),
            go_user["email"].as_str().unwrap_or("")
        );
    }
    let our_keys = ours.json(&["preauthkeys", "list"]);
    assert_eq!(
        list(&our_keys).len(),
        list(&made.pre_auth_keys).len(),
        "{our_keys}"
    );
    for go_key in list(&made.pre_auth_keys) {
        let id = go_key["id"].as_u64().unwrap();
        let mine = list(&our_keys)
            .into_iter()
            .find(|k| k["id"].as_u64() == Some(id) || k["id"] == id.to_string().as_str())
            .unwrap_or_else(|| panic!("pre-auth key {id} missing: {our_keys}"));
        assert_eq!(
            mine["reusable"].as_bool(),
            go_key["reusable"].as_bool().or(Some(false)),
            "key {id}"
        );
        assert_eq!(
            mine["ephemeral"].as_bool(),
            go_key["ephemeral"].as_bool().or(Some(false)),
            "key {id}"
        );
        assert_eq!(
            strings(&mine["acl_tags"]).len() + strings(&mine["aclTags"]).len(),
            strings(&go_key["acl_tags"]).len(),
            "key {id}: {mine}"
        );
    }
    let policy = ours.ok(&["policy", "get"]);
    assert!(policy.contains("tag:server"), "{policy}");

    // A reusable pre-auth key made by headscale registers a new node with our client; it
    // gets the next id and an address nobody has.
    let highest = list(&made.nodes)
        .iter()
        .filter_map(|n| n["id"].as_u64())
        .max()
        .unwrap();
    common::join(&ours, &made.reusable_key, "newcomer").await;
    let (_, after) = common::http(ours.port, "GET", "/api/v1/node", Some(&made.api_key));
    let newcomer = list(&after["nodes"])
        .into_iter()
        .find(|n| n["givenName"] == "newcomer")
        .expect("the new node");
    let new_id: u64 = newcomer["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        new_id,
        highest + 1,
        "node ids continue after the highest id"
    );
    // User ids continue after the deleted user 3 (SQLite's AUTOINCREMENT sequence), not
    // after the highest id still listed.
    let dave = ours.json(&["users", "create", "dave"]);
    assert_eq!(dave["id"], "4", "{dave}");
    let taken: Vec<String> = list(&made.nodes)
        .iter()
        .flat_map(|n| strings(&n["ip_addresses"]))
        .collect();
    assert!(
        strings(&newcomer["ipAddresses"])
            .iter()
            .all(|ip| !taken.contains(ip)),
        "{newcomer}"
    );
    // headscale's mixed-case prefix names its key in `DELETE /api/v1/apikey/{prefix}`; the
    // key stops working at once (the remembered bcrypt success goes with it).
    let prefix = &made.api_key["hskey-api-".len().."hskey-api-".len() + 12];
    let path = format!("/api/v1/apikey/{prefix}");
    let (status, body) = common::http(ours.port, "DELETE", &path, Some(&made.api_key));
    assert_eq!(status, 200, "{body}");
    // (Our source is still locked out from above, so a refused key answers 429; a valid
    // one would pass regardless.)
    let (status, _) = common::http(ours.port, "GET", "/api/v1/user", Some(&made.api_key));
    assert!(
        matches!(status, 401 | 429),
        "the deleted key still works: {status}"
    );
    ours.stop();
    assert_eq!(
        sha256_file(&go.db()),
        before,
        "the headscale database was changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_imports_a_headscale_database_on_first_start_only() {
    let (go, made) = go_with_database();
    let mut ours = our_server(&go, &go.db());
    ours.spawn();
    ours.wait_healthy();
    let log = ours.log();
    assert!(log.contains("imported headscale's database"), "{log}");
    assert!(
        log.contains("db.sled"),
        "the log line says where our log is: {log}"
    );
    let (status, node_list) = common::http(ours.port, "GET", "/api/v1/node", Some(&made.api_key));
    assert_eq!(status, 200);
    assert_same_nodes(&made.nodes, &node_list);
    ours.stop();
    ours.spawn();
    let log = ours.log();
    assert_eq!(
        log.matches("imported headscale's database").count(),
        1,
        "{log}"
    );
    assert!(log.contains("headscale's database is ignored"), "{log}");
    ours.stop();
}

/// A machine registered with the Go headscale by our own client (same protocol tailscaled
/// speaks), kept to come back to us with the same machine and node key.
struct Registered {
    machine: x25519_dalek::StaticSecret,
    node_key: String,
    disco_key: String,
    addresses: Vec<String>,
}

async fn register_with(url: &str, auth_key: &str, hostname: &str) -> Registered {
    use headscale::tailcfg::{Hostinfo, RegisterAuth, RegisterRequest};
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client =
        headscale::client::ControlClient::connect(url, machine.clone(), common::CLIENT_CAPVER)
            .await
            .unwrap();
    let (node_key, _) = headscale::client::random_key("nodekey:");
    let (disco_key, _) = headscale::client::random_key("discokey:");
    let answer = client
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: node_key.clone(),
            // Go decodes every key field: an unset one is the zero key, as tailscaled sends.
            old_node_key: format!("nodekey:{}", "0".repeat(64)),
            auth: Some(RegisterAuth {
                auth_key: auth_key.into(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: hostname.into(),
                os: "linux".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        answer.error.is_empty() && answer.auth_url.is_empty(),
        "{answer:?}"
    );
    let request = client.stream_request(&node_key, &disco_key, vec![]);
    let mut stream = client.map_stream(&request).await.unwrap();
    let first = stream
        .next_within(Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    let addresses = first.response.node.expect("self node").addresses;
    Registered {
        machine,
        node_key,
        disco_key,
        addresses,
    }
}

/// Machines that registered with headscale come back to us after the switch with the same
/// machine and node key: no new login, same addresses and node, and they see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_registered_with_headscale_keep_working_after_the_switch() {
    use headscale::tailcfg::RegisterRequest;
    let mut go = GoHeadscale::start();
    go.cli(&["users", "create", "alice"]);
    let key = go.key(&[
        "preauthkeys",
        "create",
        "-u",
        "1",
        "--reusable",
        "--expiration",
        "1h",
    ]);
    let url = format!("http://127.0.0.1:{}", go.port);
    let one = register_with(&url, &key, "one").await;
    let two = register_with(&url, &key, "two").await;
    let go_nodes = go.json(&["nodes", "list"]);
    go.stop();

    let mut ours = our_server(&go, &go.db());
    ours.spawn();
    ours.wait_healthy();
    let client = headscale::client::ControlClient::connect(
        &ours.url(),
        one.machine.clone(),
        common::CLIENT_CAPVER,
    )
    .await
    .unwrap();
    // tailscaled's start: a registration with its node key and no auth key.
    let answer = client
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: one.node_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(answer.error.is_empty(), "{answer:?}");
    assert!(
        answer.auth_url.is_empty(),
        "asked to log in again: {answer:?}"
    );
    assert!(
        answer.machine_authorized && !answer.node_key_expired,
        "{answer:?}"
    );
    let request = client.stream_request(&one.node_key, &one.disco_key, vec![]);
    let mut stream = client.map_stream(&request).await.unwrap();
    let first = stream
        .next_within(Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap()
        .response;
    let me = first.node.expect("self node");
    assert_eq!(me.addresses, one.addresses);
    let go_id = list(&go_nodes)
        .iter()
        .find(|n| n["node_key"] == one.node_key.as_str())
        .and_then(|n| n["id"].as_u64())
        .unwrap();
    assert_eq!(me.id, go_id, "same node id");
    let peers = first.peers.unwrap_or_default();
    assert!(
        peers
            .iter()
            .any(|p| p.key == two.node_key && p.addresses == two.addresses),
        "the other machine is a peer with its addresses: {peers:?}"
    );
    ours.stop();
}

/// A fixed headscale database as plain rows: every import event kind, a bcrypt and a legacy
/// key, an OIDC user, a tagged node and a soft-deleted row.
fn golden_source() -> headscale::import::Source {
    fn row(pairs: &[(&str, &str)]) -> headscale::import::Row {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }
    let bcrypt = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
    headscale::import::Source {
        kind: "sqlite".into(),
        migrations: vec![headscale::import::convert::REQUIRED_MIGRATION.into()],
        users: vec![
            row(&[
                ("id", "1"),
                ("name", "alice"),
                ("display_name", "Alice"),
                ("email", "alice@example.com"),
                ("created_at", "2026-01-02 03:04:05.123+00:00"),
            ]),
            row(&[
                ("id", "2"),
                ("name", "bob@idp"),
                ("provider", "oidc"),
                ("provider_identifier", "https://idp.example/bob"),
                ("profile_pic_url", "https://idp.example/bob.png"),
                ("created_at", "2026-01-02 03:04:06+00:00"),
            ]),
            row(&[
                ("id", "3"),
                ("name", "gone"),
                ("deleted_at", "2026-02-01 00:00:00+00:00"),
            ]),
        ],
        pre_auth_keys: vec![
            row(&[
                ("id", "1"),
                ("prefix", "Ab-d_EF-h1k2"),
                ("hash", bcrypt),
                ("user_id", "1"),
                ("reusable", "1"),
                ("ephemeral", "0"),
                ("used", "0"),
                ("tags", "[]"),
                ("created_at", "2026-01-03 00:00:00+00:00"),
                ("expiration", "2026-03-03 00:00:00+00:00"),
            ]),
            row(&[
                ("id", "2"),
                ("key", "0123456789abcdef0123456789abcdef0123456789abcdef"),
                ("prefix", ""),
                ("user_id", "1"),
                ("reusable", "0"),
                ("used", "1"),
                ("ephemeral", "1"),
                ("created_at", "2026-01-03 00:00:00+00:00"),
            ]),
            row(&[
                ("id", "3"),
                ("prefix", "TaGgEdKeY_01"),
                ("hash", bcrypt),
                ("tags", "[\"tag:server\"]"),
                ("reusable", "1"),
                ("created_at", "2026-01-03 00:00:00+00:00"),
                ("expiration", "2026-03-03 00:00:00+00:00"),
            ]),
        ],
        api_keys: vec![row(&[
            ("id", "1"),
            ("prefix", "E9ecQnsclK5N"),
            ("hash", bcrypt),
            ("created_at", "2026-01-04 00:00:00+00:00"),
            ("expiration", "2027-01-04 00:00:00+00:00"),
        ])],
        nodes: vec![
            row(&[
                ("id", "1"),
                ("machine_key", &format!("mkey:{}", "11".repeat(32))),
                ("node_key", &format!("nodekey:{}", "12".repeat(32))),
                ("ipv4", "100.64.0.1"),
                ("ipv6", "fd7a:115c:a1e0::1"),
                ("hostname", "laptop"),
                ("given_name", "laptop"),
                ("user_id", "1"),
                ("register_method", "authkey"),
                ("auth_key_id", "2"),
                (
                    "host_info",
                    r#"{"Hostname":"laptop","OS":"linux","OSVersion":"6.1","IPNVersion":"1.80.3","RoutableIPs":["10.0.0.0/24"]}"#,
                ),
                ("approved_routes", r#"["10.0.0.0/24"]"#),
                ("expiry", "0001-01-01 00:00:00+00:00"),
                ("last_seen", "2026-01-05 00:00:00+00:00"),
                ("created_at", "2026-01-04 00:00:00+00:00"),
            ]),
            row(&[
                ("id", "4"),
                ("machine_key", &format!("mkey:{}", "41".repeat(32))),
                ("node_key", &format!("nodekey:{}", "42".repeat(32))),
                ("ipv4", "100.64.0.4"),
                ("hostname", "db"),
                ("given_name", "database"),
                ("tags", r#"["tag:server"]"#),
                ("register_method", "cli"),
                ("expiry", "2026-06-01 00:00:00+00:00"),
                ("created_at", "2026-01-04 00:00:00+00:00"),
            ]),
        ],
        policies: vec![row(&[
            ("id", "1"),
            (
                "data",
                r#"{"tagOwners":{"tag:server":["alice@"]},"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#,
            ),
        ])],
        sequences: [("nodes".to_string(), 6), ("users".to_string(), 3)].into(),
    }
}

/// The golden log of an import (`events/v0-import.*`, `snapshots/v0-import.json`):
/// `tests/golden.rs` replays it on every run; this checks that the converter still writes
/// it (regenerate with `REGENERATE_GOLDEN=1`).
#[test]
fn the_import_golden_log_is_what_the_converter_writes() {
    use headscale::core::{decide, Actor, Command, Envelope, State, Timestamp};
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let at = Timestamp(1_767_225_600_000);
    let converted = headscale::import::convert(&golden_source(), at).unwrap();
    let events = decide(
        &State::default(),
        &Command::Import {
            events: converted.events,
        },
        at,
    )
    .unwrap();
    let envelopes: Vec<Envelope> = events
        .into_iter()
        .enumerate()
        .map(|(i, event)| Envelope {
            seq: i as u64 + 1,
            at,
            actor: Actor::System,
            event,
        })
        .collect();
    let twin: String = envelopes
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    if std::env::var_os("REGENERATE_GOLDEN").is_some() {
        let records =
            headscale::store::record::encode_chain(&envelopes, Default::default()).unwrap();
        std::fs::write(
            repo.join("events/v0-import.bin"),
            headscale::store::export::write_log(&records),
        )
        .unwrap();
        std::fs::write(repo.join("events/v0-import.jsonl"), &twin).unwrap();
        let state = headscale::core::state::fold(State::default(), &envelopes);
        let json = serde_json::to_string_pretty(&state.canonical_json()).unwrap() + "\n";
        std::fs::write(repo.join("snapshots/v0-import.json"), json).unwrap();
    }
    let committed = std::fs::read_to_string(repo.join("events/v0-import.jsonl")).unwrap();
    assert_eq!(committed, twin, "the import converter's output changed");
    // An imported OIDC user shows its identity in the API, as in headscale.
    let state = headscale::core::state::fold(State::default(), &envelopes);
    let bob = state.users.values().find(|u| u.name == "bob@idp").unwrap();
    let wire = serde_json::to_value(headscale::api::wire::user(&state, bob)).unwrap();
    assert_eq!(wire["provider"], "oidc", "{wire}");
    assert_eq!(wire["providerId"], "https://idp.example/bob", "{wire}");
    let kinds: std::collections::BTreeSet<&str> =
        envelopes.iter().map(|e| e.event.kind()).collect();
    for kind in [
        "UserImported",
        "PreAuthKeyImported",
        "ApiKeyImported",
        "NodeImported",
        "PolicyReplaced",
        "Imported",
    ] {
        assert!(kinds.contains(kind), "the golden import lacks {kind}");
    }
}

// --- import: postgres cluster ---

/// A throwaway PostgreSQL cluster run as the `postgres` user in a temp dir, reachable only
/// through a unix socket in that dir (no TCP listener), stopped on drop.
struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl PgCluster {
    fn as_postgres(program: &str, args: &[&str]) -> std::process::Output {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--", program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} as postgres ({e}): PostgreSQL (initdb, pg_ctl, psql) must be installed"));
        assert!(
            out.status.success(),
            "{program} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn start() -> PgCluster {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = common::free_port();
        let d = dir.path().display().to_string();
        PgCluster::as_postgres(
            "initdb",
            &["-D", &format!("{d}/data"), "-A", "trust", "-U", "postgres"],
        );
        let options = format!("-k {d} -c listen_addresses= -p {port}");
        PgCluster::as_postgres(
            "pg_ctl",
            &[
                "-D",
                &format!("{d}/data"),
                "-o",
                &options,
                "-l",
                &format!("{d}/log"),
                "-w",
                "start",
            ],
        );
        let cluster = PgCluster { dir, port };
        cluster.psql("postgres", "CREATE DATABASE headscale");
        cluster
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let port = self.port.to_string();
        let host = self.dir.path().display().to_string();
        let out = PgCluster::as_postgres(
            "psql",
            &[
                "-h", &host, "-p", &port, "-U", "postgres", "-d", db, "-At", "-c", sql,
            ],
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A digest of every table an import reads, to show it left them alone.
    fn fingerprint(&self) -> String {
        ["migrations", "users", "pre_auth_keys", "api_keys", "nodes", "policies"]
            .iter()
            .map(|t| {
                self.psql(
                    "headscale",
                    &format!("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {t} t"),
                )
            })
            .collect()
    }

    fn dsn(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=headscale",
            self.dir.path().display(),
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = format!("{}/data", self.dir.path().display());
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                "pg_ctl",
                "-D",
                &data,
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdin(Stdio::null())
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headscale_postgres_database_is_imported_read_only() {
    let cluster = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let database = format!(
        "database:\n  type: postgres\n  postgres:\n    host: {}\n    port: {}\n    name: headscale\n    user: postgres\n    pass: \"\"\n    ssl: false\n",
        cluster.dir.path().display(),
        cluster.port
    );
    std::fs::write(dir.path().join("policy.hujson"), POLICY).unwrap();
    let (go, made) = go_made_with(GoHeadscale::start_in(dir, &database));
    let before = cluster.fingerprint();

    // Our log in sled; the source named by --db as a DSN.
    let mut ours = TestServer::new("");
    let out = ours.ok(&[
        "import",
        "headscale",
        "--db",
        &cluster.dsn(),
        "--noise-key",
        go.noise_key().to_str().unwrap(),
    ]);
    let users = list(&made.users).len();
    let nodes = list(&made.nodes).len();
    assert!(
        out.contains(&format!("{users} user(s), {nodes} node(s)")),
        "{out}"
    );
    assert!(out.contains("Noise key copied"), "{out}");
    assert_eq!(
        std::fs::read(ours.data_dir().join("noise_private.key")).unwrap(),
        std::fs::read(go.noise_key()).unwrap()
    );
    assert_eq!(
        cluster.fingerprint(),
        before,
        "the headscale database was changed"
    );
    let refused = ours.fails(&["import", "headscale", "--db", &cluster.dsn()]);
    assert!(refused.contains("non-empty log is refused"), "{refused}");

    ours.spawn();
    ours.wait_healthy();
    let (status, node_list) = common::http(ours.port, "GET", "/api/v1/node", Some(&made.api_key));
    assert_eq!(status, 200, "{node_list}");
    assert_same_nodes(&made.nodes, &node_list);
    common::join(&ours, &made.reusable_key, "newcomer").await;
    ours.stop();
}
