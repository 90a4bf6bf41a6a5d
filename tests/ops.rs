//! The operations surface of the real binary: `/health`, `/version`, `/robots.txt` on the main
//! listener; Prometheus `/metrics` and the `/debug/*` JSON pages on `metrics_listen_addr`,
//! checked while two nodes of our own client hold map streams.

mod common;

use common::{free_port, http, TestServer};
use headscale::client;
use std::time::{Duration, Instant};

/// A plain GET; status, content type and body text.
fn get(port: u16, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    // Chunked bodies: good enough to search in; JSON pages are parsed from the first `{`.
    (status, content_type, body.to_string())
}

fn json_of(body: &str) -> serde_json::Value {
    let start = body.find('{').expect("a JSON body");
    let end = body.rfind('}').expect("a JSON body");
    serde_json::from_str(&body[start..=end]).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// A number from the exposition, e.g. `headscale_nodes_connected`.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
}

/// A node announcing 10.9.0.0/24, registered and streaming (its full map read).
async fn join_and_stream(server: &TestServer, key: &str, hostname: &str) -> client::MapStream {
    let machine = common::join_with_routes(server, key, hostname, &["10.9.0.0/24"]).await;
    let request = machine.client.stream_request(
        &machine.node_key,
        &machine.disco_key,
        vec!["192.0.2.1:41641".into()],
    );
    let mut stream = machine.client.map_stream(&request).await.unwrap();
    stream
        .next_within(Duration::from_secs(10))
        .await
        .expect("a full map")
        .unwrap();
    stream
}

#[test]
fn health_version_and_robots_on_the_main_listener() {
    let server = TestServer::start();
    let (status, body) = http(server.port, "GET", "/health", None);
    assert_eq!((status, body["status"].as_str()), (200, Some("pass")));
    let (status, body) = http(server.port, "GET", "/version", None);
    assert_eq!(status, 200);
    // headscale's API level, ours as build metadata (tests/api_compat_old.rs checks more).
    assert_eq!(
        body["version"],
        format!("v0.29.2+headscale-rs.{}", env!("CARGO_PKG_VERSION"))
    );
    let (status, _, text) = get(server.port, "/robots.txt");
    assert_eq!(status, 200);
    assert!(text.contains("Disallow: /"), "{text}");
    // The metrics listener is off in the default test config: nothing else listens.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_debug_pages_describe_the_live_server() {
    let metrics_port = free_port();
    let mut server = TestServer::new("tuning:\n  batch_change_delay: 50ms\n");
    server.env.push((
        "HEADSCALE_METRICS_LISTEN_ADDR".into(),
        format!("127.0.0.1:{metrics_port}"),
    ));
    server.spawn();
    server.ok(&["users", "create", "alice"]);
    let key = server
        .ok(&["preauthkeys", "create", "-u", "alice", "--reusable"])
        .trim()
        .to_string();
    let mut a = join_and_stream(&server, &key, "alpha").await;
    let _b = join_and_stream(&server, &key, "beta").await;
    // alpha hears of beta: one delta.
    a.next_within(Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    server.ok(&["routes", "enable", "--route", "10.9.0.0/24", "--id", "1"]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, content_type, text) = get(metrics_port, "/metrics");
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        if sample(&text, "headscale_nodes_connected") == 2.0
            && text.contains("headscale_map_messages_total{kind=\"delta\"}")
            || Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sample(&text, "headscale_nodes_connected"), 2.0, "{text}");
    assert_eq!(
        sample(&text, "headscale_registrations_total{method=\"authkey\"}"),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "headscale_events_appended_total{type=\"UserCreated\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&text, "headscale_map_messages_total{kind=\"full\"}"),
        2.0
    );
    assert!(sample(&text, "headscale_map_messages_total{kind=\"delta\"}") >= 1.0);
    assert!(sample(&text, "headscale_map_bytes_total{kind=\"full\"}") > 100.0);
    assert!(sample(&text, "headscale_command_duration_seconds_count") >= 4.0);
    assert!(sample(&text, "headscale_log_flush_duration_seconds_count") >= 4.0);
    assert!(sample(&text, "headscale_map_fanout_duration_seconds_count") >= 1.0);
    assert!(text.contains("headscale_derp_connections"));

    let (status, _, body) = get(metrics_port, "/debug/");
    assert_eq!(status, 200);
    let index = json_of(&body);
    assert!(index["pages"].as_array().unwrap().len() >= 7, "{index}");

    let (_, _, body) = get(metrics_port, "/debug/nodes");
    let nodes = json_of(&body);
    assert_eq!(nodes["count"], 2, "{nodes}");
    assert_eq!(nodes["nodes"][0]["name"], "alpha");
    assert_eq!(nodes["nodes"][0]["online"], true);
    assert_eq!(nodes["nodes"][0]["endpoints"][0], "192.0.2.1:41641");

    let (_, _, body) = get(metrics_port, "/debug/sessions");
    let sessions = json_of(&body);
    assert_eq!(sessions["count"], 2, "{sessions}");

    let (_, _, body) = get(metrics_port, "/debug/routes");
    let routes = json_of(&body);
    assert_eq!(routes["primaries"][0]["prefix"], "10.9.0.0/24", "{routes}");
    assert_eq!(routes["primaries"][0]["node"], 1);

    let (_, _, body) = get(metrics_port, "/debug/policy");
    assert_eq!(json_of(&body)["set"], false);
    let (status, _, body) = get(metrics_port, "/debug/filter?node=1");
    assert_eq!(status, 200);
    let filter = json_of(&body);
    assert_eq!(filter["visiblePeers"], 1, "{filter}");
    assert!(filter["packetFilter"].is_array(), "{filter}");
    let (status, _, _) = get(metrics_port, "/debug/filter?node=99");
    assert_eq!(status, 404);
    let (status, _, body) = get(metrics_port, "/debug/derp");
    assert_eq!(status, 200);
    assert!(json_of(&body)["Regions"].is_object(), "{body}");
}

/// `examples/headscale.service` is a valid unit (systemd's own checker, with the binary path
/// pointed at this build). Skipped, loudly, where systemd-analyze is absent.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("note: systemd-analyze not installed; the unit was not checked");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/headscale.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/headscale serve"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("headscale.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/headscale", common::BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "{printed}"
    );
}
