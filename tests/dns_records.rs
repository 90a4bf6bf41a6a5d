//! `dns.extra_records_path` against the real server binary, seen through our own control
//! client: the file's records are in the first map, a rewrite (renamed into place or written
//! in place) reaches every connected client as a new `DNSConfig`, a broken rewrite changes
//! nothing and leaves the server up, and a bad file at start stops the server with one line.

mod common;

use common::TestServer;
use headscale::client::{ClientError, ControlClient, MapStream};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);
const TUNING: &str = "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n";

fn record(name: &str, record_type: &str, value: &str) -> Value {
    json!({"name": name, "type": record_type, "value": value})
}

/// How a script should replace the file: write a sibling, then rename it over.
fn replace(path: &Path, text: &str) {
    let staged = path.with_extension("tmp");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// A server whose config names `records.json` in its temp dir, written with `initial`.
fn start(initial: &str) -> (TestServer, PathBuf, String) {
    let mut server = TestServer::new(TUNING);
    let path = server.dir.path().join("records.json");
    std::fs::write(&path, initial).unwrap();
    server.env.push((
        "HEADSCALE_DNS_EXTRA_RECORDS_PATH".into(),
        path.display().to_string(),
    ));
    server.spawn();
    server.ok(&["users", "create", "alice"]);
    let key = server
        .ok(&["preauthkeys", "create", "-u", "alice", "--reusable"])
        .trim()
        .to_string();
    (server, path, key)
}

/// A registered node's open map stream, after its first (full) map.
struct Node {
    _client: ControlClient,
    stream: MapStream,
    extra_records: Value,
}

impl Node {
    async fn join(server: &TestServer, key: &str, hostname: &str) -> Node {
        let machine = common::join(server, key, hostname).await;
        let request = machine
            .client
            .stream_request(&machine.node_key, &machine.disco_key, vec![]);
        let mut stream = machine.client.map_stream(&request).await.unwrap();
        let first = stream.next_within(WAIT).await.unwrap().unwrap().response;
        let dns = first.dns_config.expect("the full map has a DNSConfig");
        Node {
            _client: machine.client,
            stream,
            extra_records: extra_records(&dns),
        }
    }

    /// Reads messages until a `DNSConfig` arrives; returns its `ExtraRecords`.
    async fn next_dns(&mut self) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.stream.next_within(left).await {
                Some(Ok(message)) => message.response,
                Some(Err(ClientError::Timeout)) => panic!("no DNSConfig within {WAIT:?}"),
                other => panic!("stream ended: {other:?}"),
            };
            if let Some(dns) = message.dns_config {
                self.extra_records = extra_records(&dns);
                return self.extra_records.clone();
            }
        }
    }

    /// Reads messages for `quiet`; panics if one carries a `DNSConfig`.
    async fn no_dns_for(&mut self, quiet: Duration) {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.stream.next_within(left).await {
                Some(Ok(message)) => assert!(
                    message.response.dns_config.is_none(),
                    "unexpected DNSConfig: {:?}",
                    message.response.dns_config
                ),
                Some(Err(ClientError::Timeout)) => return,
                other => panic!("stream ended: {other:?}"),
            }
        }
    }
}

/// `ExtraRecords` of a `DNSConfig`, `[]` when absent (omitted when empty).
fn extra_records(dns: &Value) -> Value {
    dns.get("ExtraRecords").cloned().unwrap_or(json!([]))
}

fn wire(name: &str, record_type: &str, value: &str) -> Value {
    json!({"Name": name, "Type": record_type, "Value": value})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_reach_connected_clients_and_broken_ones_change_nothing() {
    let grafana = record("grafana.tailnet.example", "A", "100.64.0.3");
    let (server, path, key) = start(&json!([grafana]).to_string());
    let mut alpha = Node::join(&server, &key, "alpha").await;
    let mut bravo = Node::join(&server, &key, "bravo").await;
    let first = json!([wire("grafana.tailnet.example", "A", "100.64.0.3")]);
    assert_eq!(alpha.extra_records, first);
    assert_eq!(bravo.extra_records, first);

    // Renamed into place: both clients get the new list.
    let wiki = record("wiki.tailnet.example", "AAAA", "fd7a:115c:a1e0::9");
    let written = Instant::now();
    replace(&path, &json!([grafana, wiki]).to_string());
    let second = json!([
        wire("grafana.tailnet.example", "A", "100.64.0.3"),
        wire("wiki.tailnet.example", "AAAA", "fd7a:115c:a1e0::9"),
    ]);
    assert_eq!(alpha.next_dns().await, second);
    eprintln!(
        "rename into place -> client in {} ms",
        written.elapsed().as_millis()
    );
    assert_eq!(bravo.next_dns().await, second);

    // Written in place (truncate, then write).
    let written = Instant::now();
    std::fs::write(&path, json!([wiki]).to_string()).unwrap();
    let third = json!([wire("wiki.tailnet.example", "AAAA", "fd7a:115c:a1e0::9")]);
    assert_eq!(alpha.next_dns().await, third);
    eprintln!(
        "in-place write -> client in {} ms",
        written.elapsed().as_millis()
    );
    assert_eq!(bravo.next_dns().await, third);

    // Broken: a bad address. Nothing is sent, the server stays up and says why, once.
    replace(
        &path,
        &json!([wiki, record("bad.tailnet.example", "A", "100.64.0.300")]).to_string(),
    );
    alpha.no_dns_for(Duration::from_secs(3)).await;
    assert_eq!(common::http(server.port, "GET", "/health", None).0, 200);
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("entry 1: \"100.64.0.300\" is not a valid A record value"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("keeping the records in force (1)"),
        "{log}"
    );
    // A node joining now gets the records still in force.
    let charlie = Node::join(&server, &key, "charlie").await;
    assert_eq!(charlie.extra_records, third);

    // Not JSON at all, then a vanished file: still nothing sent.
    replace(&path, "[{\"name\": ");
    std::fs::remove_file(&path).unwrap();
    bravo.no_dns_for(Duration::from_secs(3)).await;
    assert!(server.log().contains("cannot be read"), "{}", server.log());

    // Back with a valid list: served again.
    replace(&path, "[]");
    assert_eq!(alpha.next_dns().await, json!([]));
    assert_eq!(bravo.next_dns().await, json!([]));
    let listed = server.nodes();
    assert_eq!(listed.len(), 3);
}

/// `headscale serve` with `path` as the extra-records file: its exit status and stderr.
fn serve_once(path: &Path) -> (bool, String) {
    let server = TestServer::new("");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "-c"])
        .arg(&server.config)
        .env("HEADSCALE_DNS_EXTRA_RECORDS_PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_file_at_start_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        json!([record("a.example", "A", "100.64.0.1"), {"name": "b.example", "type": "TXT", "value": "x"}])
            .to_string(),
    )
    .unwrap();
    for (path, expected) in [
        (missing.as_path(), "cannot read"),
        (
            bad.as_path(),
            "entry 1: type \"TXT\" is not supported (A or AAAA)",
        ),
        (dir.path(), "is a directory, not a file"),
    ] {
        let (ok, stderr) = serve_once(path);
        assert!(!ok, "started with {}", path.display());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("Error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains("dns.extra_records_path")
                && errors[0].contains(&path.display().to_string())
                && errors[0].contains(expected),
            "{stderr}"
        );
    }
}
