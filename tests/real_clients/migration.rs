//! Switching from headscale, with real clients: nodes registered against the real Go
//! headscale v0.29.2 (`.ci/install-go-headscale`), headscale stopped, ours started on the
//! **same config file, data directory and Noise key**. The clients must stay `Running` with the
//! same IPs and node ids, see each other, never log in again, and an API key and a reusable
//! pre-auth key headscale made must keep working against us.

use crate::common::{self, TestServer};
use crate::scenarios::{wait_peers_online, LONG, SHORT};
use crate::server::BASE_DOMAIN;
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A headscale 0.29 config as a headscale user has it (sqlite database, Noise key and socket
/// in the data dir, policy in the database), with a DERP map file that needs no network:
/// one region whose relay does not exist, so clients talk directly (same namespace).
fn headscale_config(data: &Path, port: u16) -> String {
    std::fs::create_dir_all(data).unwrap();
    std::fs::write(
        data.join("derp.yaml"),
        "regions:\n  900:\n    regionid: 900\n    regioncode: none\n    regionname: Nowhere\n    \
         nodes:\n      - name: 900a\n        regionid: 900\n        hostname: 127.0.0.1\n        \
         ipv4: 127.0.0.1\n        stunport: -1\n        derpport: 1\n",
    )
    .unwrap();
    format!(
        "server_url: http://127.0.0.1:{port}\n\
         listen_addr: 127.0.0.1:{port}\n\
         metrics_listen_addr: 127.0.0.1:{metrics}\n\
         grpc_listen_addr: 127.0.0.1:{grpc}\n\
         grpc_allow_insecure: false\n\
         disable_check_updates: true\n\
         noise:\n  private_key_path: {data}/noise_private.key\n\
         prefixes:\n  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48\n  allocation: sequential\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n  paths:\n    - {data}/derp.yaml\n  \
         auto_update_enabled: false\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {data}/db.sqlite\n    write_ahead_log: true\n\
         log:\n  level: info\n  format: text\n\
         policy:\n  mode: database\n\
         dns:\n  magic_dns: true\n  base_domain: {BASE_DOMAIN}\n  override_local_dns: false\n  \
         nameservers:\n    global: []\n\
         unix_socket: {data}/headscale.sock\n\
         unix_socket_permission: \"0770\"\n\
         logtail:\n  enabled: false\n",
        metrics = common::free_port(),
        grpc = common::free_port(),
        data = data.display()
    )
}

/// The Go headscale server on a config file, with its CLI.
struct GoHeadscale {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl GoHeadscale {
    fn start(config: &Path, log: PathBuf, port: u16) -> GoHeadscale {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(common::go_headscale())
            .arg("-c")
            .arg(config)
            .arg("serve")
            .env("HEADSCALE_DISABLE_CHECK_UPDATES", "true")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let go = GoHeadscale {
            config: config.to_path_buf(),
            log,
            child: Some(child),
        };
        wait_until(SHORT, "the Go headscale to be healthy", || {
            let listening = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
            (listening && common::http(port, "GET", "/health", None).0 == 200).then_some(())
        });
        go
    }

    fn cli(&self, args: &[&str]) -> String {
        common::go_cli_ok(&self.config, args, &[])
    }

    fn json(&self, args: &[&str]) -> Value {
        common::go_cli_json(&self.config, args, &[])
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 20 s).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GoHeadscale {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::print_tail(
                "Go headscale log",
                &std::fs::read_to_string(&self.log).unwrap_or_default(),
            );
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `(given name, id, addresses)` of every node, from a `/api/v1/node` listing (ours or
/// headscale's REST shape) or the Go CLI's `nodes list -o json`.
fn identities(nodes: &Value) -> Vec<(String, u64, Vec<String>)> {
    let mut out: Vec<(String, u64, Vec<String>)> = nodes
        .as_array()
        .unwrap_or_else(|| panic!("not a node list: {nodes}"))
        .iter()
        .map(|node| {
            let name = node["given_name"]
                .as_str()
                .or(node["givenName"].as_str())
                .unwrap_or_default()
                .to_string();
            let id = node["id"]
                .as_u64()
                .or_else(|| node["id"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| panic!("no id: {node}"));
            let ips = node["ip_addresses"]
                .as_array()
                .or(node["ipAddresses"].as_array())
                .into_iter()
                .flatten()
                .map(|ip| ip.as_str().unwrap().to_string())
                .collect();
            (name, id, ips)
        })
        .collect();
    out.sort();
    out
}

/// A GET on our REST API with a Bearer key: status and body.
fn api_get(port: u16, path: &str, key: &str) -> (u16, Value) {
    common::http(port, "GET", path, Some(key))
}

pub fn migrate_from_go_headscale() {
    // One config file and one data dir, written as a headscale user has them.
    let mut ours = TestServer::with_yaml(headscale_config);
    let port = ours.port;
    let url = format!("http://127.0.0.1:{port}");
    let go_log = ours.dir.path().join("go-headscale.log");
    let mut go = GoHeadscale::start(&ours.config, go_log, port);

    // The headscale side: two users, a reusable key, an API key, two clients Running.
    go.cli(&["users", "create", "alice"]);
    go.cli(&["users", "create", "bob"]);
    let users = go.json(&["users", "list"]);
    let user_id = |name: &str| -> String {
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .unwrap_or_else(|| panic!("no user {name}: {users}"))["id"]
            .to_string()
    };
    let reusable = go.json(&[
        "preauthkeys",
        "create",
        "--user",
        &user_id("alice"),
        "--reusable",
        "--expiration",
        "24h",
    ]);
    let reusable = reusable["key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key: {reusable}"))
        .to_string();
    let bob_key = go.json(&["preauthkeys", "create", "--user", &user_id("bob")]);
    let bob_key = bob_key["key"].as_str().unwrap().to_string();
    let api_key = go
        .cli(&["apikeys", "create", "--expiration", "24h"])
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(api_key.starts_with("hskey-api-"), "{api_key}");

    let none = Options::default();
    let clients = [
        Client::start("laptop", Version::Newest, &none),
        Client::start("desk", Version::Oldest, &none),
    ];
    let ups: Vec<_> = clients
        .iter()
        .zip([&reusable, &bob_key])
        .map(|(client, key)| client.up(&url, key, LONG))
        .collect();
    for (up, client) in ups.into_iter().zip(&clients) {
        let run = up.finish(LONG + SHORT);
        assert!(
            run.ok,
            "{}: up against Go headscale failed: {run}",
            client.name
        );
        client.wait_state("Running", LONG);
    }
    wait_peers_online(&clients[0], &["desk"]);
    wait_peers_online(&clients[1], &["laptop"]);
    let before = identities(&go.json(&["nodes", "list"]));
    assert_eq!(before.len(), 2, "{before:?}");
    let ips_before: Vec<Value> = clients
        .iter()
        .map(|c| c.status()["TailscaleIPs"].clone())
        .collect();
    let sqlite = ours.data_dir().join("db.sqlite");
    let sqlite_before = std::fs::read(&sqlite).unwrap();

    // The switch: headscale stops, ours starts on the same config, data dir and Noise key.
    let switch = Instant::now();
    go.stop();
    ours.spawn();
    ours.wait_healthy();
    let import_line = ours
        .log()
        .lines()
        .find(|l| l.contains("import"))
        .unwrap_or_else(|| panic!("no import log line: {}", ours.log()))
        .to_string();
    assert!(import_line.contains("2"), "{import_line}");

    // Every client stays Running and sees the other again through our server, never asked
    // to log in.
    let mut seen_states = Vec::new();
    for (client, other) in [(&clients[0], "desk"), (&clients[1], "laptop")] {
        wait_until(
            LONG,
            &format!("{} Running and {other} online", client.name),
            || {
                let status = client.status();
                let state = status["BackendState"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                seen_states.push(state.clone());
                let online = status["Peer"].as_object().is_some_and(|peers| {
                    peers
                        .values()
                        .any(|p| p["HostName"] == other && p["Online"] == true)
                });
                (state == "Running" && online).then_some(())
            },
        );
    }
    let back = switch.elapsed();
    assert!(
        seen_states.iter().all(|s| s == "Running"),
        "a client left Running during the switch: {seen_states:?}"
    );
    let ips_after: Vec<Value> = clients
        .iter()
        .map(|c| c.status()["TailscaleIPs"].clone())
        .collect();
    assert_eq!(ips_before, ips_after, "addresses changed across the switch");

    // headscale's API key works against us, and lists the same ids and addresses.
    let (status, listed) = api_get(port, "/api/v1/node", &api_key);
    assert_eq!(status, 200, "headscale's API key refused: {listed}");
    assert_eq!(identities(&listed["nodes"]), before);
    // Nobody re-authenticated: the log has the import and no new registrations.
    let events = ours.json(&["events", "list"]);
    let kinds: Vec<String> = events
        .as_array()
        .or(events["events"].as_array())
        .into_iter()
        .flatten()
        .map(|e| {
            e["kind"]
                .as_str()
                .or(e["type"].as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for forbidden in ["NodeRegistered", "NodeReauthenticated"] {
        assert!(
            !kinds.iter().any(|k| k == forbidden),
            "{forbidden} after the switch: {kinds:?}"
        );
    }

    // They talk again, and headscale's reusable key still registers a new node.
    let ping = clients[0].run(
        &[
            "ping",
            "--c=10",
            "--timeout=5s",
            "--until-direct=false",
            &clients[1].ipv4(),
        ],
        LONG,
    );
    assert!(ping.ok && ping.stdout.contains("pong"), "{ping}");
    let third = Client::start("tablet", Version::Newest, &none);
    let run = third.up(&url, &reusable, LONG).finish(LONG + SHORT);
    assert!(run.ok, "headscale's reusable key refused by us: {run}");
    third.wait_state("Running", LONG);
    wait_peers_online(&third, &["laptop", "desk"]);
    let (_, listed) = api_get(port, "/api/v1/node", &api_key);
    let tablet_id = identities(&listed["nodes"])
        .into_iter()
        .find(|(name, _, _)| name == "tablet")
        .map(|(_, id, _)| id)
        .unwrap();
    assert!(
        tablet_id > before.iter().map(|(_, id, _)| *id).max().unwrap(),
        "new node id {tablet_id} reuses an imported one"
    );

    // headscale's database was only read; a restart ignores it and says so.
    assert_eq!(
        std::fs::read(&sqlite).unwrap(),
        sqlite_before,
        "db.sqlite was changed"
    );
    ours.stop();
    ours.spawn();
    ours.wait_healthy();
    assert!(
        ours.log().lines().filter(|l| l.contains("import")).count() >= 2,
        "the second start does not say the old database is ignored: {}",
        ours.log()
    );
    eprintln!("  switch: clients Running with peers online {back:.1?} after headscale stopped");
}
