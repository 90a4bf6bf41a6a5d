//! What admin tools written for older headscale releases (0.23–0.28) send us, and what tools
//! that gate features on headscale's version read: `/version` reports an API level ≥ 0.28; an
//! empty policy clears the policy (the Terraform provider's delete); every older request shape
//! either works or fails loudly (4xx naming the field), never a silent 200 that does nothing;
//! and every refused request leaves an info line in the server's log.

mod common;

use common::TestServer;
use serde_json::Value;
use std::io::{Read, Write};

/// One HTTP/1.1 request over the daemon's unix socket (local trust): status and JSON body.
fn call(server: &TestServer, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut stream = std::os::unix::net::UnixStream::connect(server.socket()).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (_, payload) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(payload).unwrap_or(Value::Null))
}

/// The log as text: the terminal colour sequences the log writer may add removed.
fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `vMAJOR.MINOR.PATCH[-pre][+build]` → (major, minor, patch), as semver parsers read it.
fn semver(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.strip_prefix('v').unwrap_or(text);
    let core = core.split('+').next()?.split('-').next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

#[test]
fn version_reports_the_headscale_api_level_we_implement() {
    let server = TestServer::start();
    let (status, body) = common::http(server.port, "GET", "/version", None);
    assert_eq!(status, 200);
    let version = body["version"].as_str().unwrap();
    let (major, minor, patch) = semver(version).unwrap_or_else(|| panic!("{version}"));
    assert!((major, minor) >= (0, 28), "{version}");
    assert_eq!((major, minor, patch), (0, 29, 2), "{version}");
    // Ours rides along as semver build metadata, which comparisons ignore.
    assert_eq!(
        version.split_once('+').map(|(_, build)| build),
        Some(format!("headscale-rs.{}", env!("CARGO_PKG_VERSION")).as_str())
    );
}

#[test]
fn an_empty_policy_clears_the_policy() {
    let server = TestServer::start();
    let policy = serde_json::json!({ "policy": "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}" });
    let (status, _) = call(&server, "PUT", "/api/v1/policy", Some(&policy.to_string()));
    assert_eq!(status, 200);
    assert_eq!(call(&server, "GET", "/api/v1/policy", None).0, 200);
    // The Terraform provider deletes a policy with `{}`; headscale 0.29 clears it.
    let (status, body) = call(&server, "PUT", "/api/v1/policy", Some("{}"));
    assert_eq!((status, &body), (200, &serde_json::json!({ "policy": "" })));
    let (status, body) = call(&server, "GET", "/api/v1/policy", None);
    assert_eq!(status, 404, "{body}");
    // Clearing nothing is fine too, and an empty string means the same.
    assert_eq!(call(&server, "PUT", "/api/v1/policy", Some("{}")).0, 200);
    assert_eq!(
        call(&server, "PUT", "/api/v1/policy", Some("{\"policy\": \"\"}")).0,
        200
    );
    let events = server.json(&["events", "list", "--type", "PolicyReplaced"]);
    assert_eq!(
        events.as_array().unwrap().len(),
        2,
        "set, cleared: {events}"
    );
}

/// The state of pre-auth key `id` as listed (`active`, `expired`, …), or None when gone.
fn key_state(server: &TestServer, id: &str) -> Option<String> {
    let (_, body) = call(server, "GET", "/api/v1/preauthkey", None);
    body["preAuthKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .map(|k| k["state"].as_str().unwrap().to_string())
}

fn create_key(server: &TestServer, user: &str) -> (String, String) {
    let (status, body) = call(
        server,
        "POST",
        "/api/v1/preauthkey",
        Some(&format!("{{\"user\": \"{user}\", \"reusable\": true}}")),
    );
    assert_eq!(status, 200, "{body}");
    let key = &body["preAuthKey"];
    (
        key["id"].as_str().unwrap().to_string(),
        key["key"].as_str().unwrap().to_string(),
    )
}

#[test]
fn older_request_shapes_work_or_fail_loudly() {
    let mut server = TestServer::new("");
    server.env.push(("RUST_LOG".into(), "info".into()));
    server.spawn();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["users", "create", "bob"]);

    // ExpirePreAuthKey before 0.28: `{user, key}` (Headplane below 0.6 sends it) — honoured,
    // with the full key or as listed, the user by id or (before 0.26) by name.
    let (id, full) = create_key(&server, "1");
    let body = serde_json::json!({ "user": "1", "key": full }).to_string();
    assert_eq!(
        call(&server, "POST", "/api/v1/preauthkey/expire", Some(&body)).0,
        200
    );
    assert_eq!(key_state(&server, &id).as_deref(), Some("expired"));
    let (id, full) = create_key(&server, "1");
    let listed = format!(
        "{}-***",
        &full[..full.len() - full.rsplit('-').next().unwrap().len() - 1]
    );
    let body = serde_json::json!({ "user": "alice", "key": listed }).to_string();
    assert_eq!(
        call(&server, "POST", "/api/v1/preauthkey/expire", Some(&body)).0,
        200
    );
    assert_eq!(key_state(&server, &id).as_deref(), Some("expired"));
    let body = serde_json::json!({ "user": 1, "key": full }).to_string();
    assert_eq!(
        call(&server, "POST", "/api/v1/preauthkey/expire", Some(&body)).0,
        200
    );

    // …but never silently: a wrong owner, an unknown key, a key that is no key, a user alone,
    // or an id that names another key are refused, and nothing changes.
    let (id, full) = create_key(&server, "1");
    let secret = full.rsplit('-').next().unwrap().to_string();
    for (body, status, field) in [
        (serde_json::json!({ "user": "2", "key": full }), 400, "user"),
        (
            serde_json::json!({ "user": "bob", "key": full }),
            400,
            "user",
        ),
        (
            serde_json::json!({ "user": "1", "key": "hskey-auth-nosuchprefix-secret" }),
            404,
            "hskey-auth-nosuchprefix-***",
        ),
        (
            serde_json::json!({ "user": "1", "key": "0123456789abcdef" }),
            400,
            "key",
        ),
        (serde_json::json!({ "user": "1" }), 400, "user"),
        (
            serde_json::json!({ "id": "1", "key": full }),
            400,
            "id and key",
        ),
    ] {
        let (got, answer) = call(
            &server,
            "POST",
            "/api/v1/preauthkey/expire",
            Some(&body.to_string()),
        );
        assert_eq!(got, status, "{body} → {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(field), "{body} → {message}");
        assert!(!message.contains(&secret), "{message}");
    }
    assert_eq!(key_state(&server, &id).as_deref(), Some("active"));

    // DeletePreAuthKey by key in the query, the same way; a user alone is refused.
    let (status, _) = call(&server, "DELETE", "/api/v1/preauthkey?user=1", None);
    assert_eq!(status, 400);
    let (status, body) = call(
        &server,
        "DELETE",
        &format!("/api/v1/preauthkey?user=1&key={full}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(key_state(&server, &id), None);

    // User names where ids are expected now (RenameUser/DeleteUser before 0.26): 400 naming
    // the id, as headscale 0.29 answers; nothing renamed or deleted.
    for (method, path) in [
        ("POST", "/api/v1/user/alice/rename/carol"),
        ("DELETE", "/api/v1/user/alice"),
        ("GET", "/api/v1/preauthkey?user=alice"),
        ("POST", "/api/v1/preauthkey"),
    ] {
        let body = (path == "/api/v1/preauthkey").then_some("{\"user\": \"alice\"}");
        let (status, answer) = call(&server, method, path, body);
        assert_eq!(status, 400, "{method} {path} → {answer}");
        assert!(
            answer["message"]
                .as_str()
                .unwrap()
                .contains("invalid user id"),
            "{answer}"
        );
    }
    assert_eq!(
        server
            .json(&["users", "list", "-n", "alice"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // MoveNode before 0.28 sent the new owner in the query; a body and a query that disagree
    // are refused.
    server.ok(&["debug", "create-node", "--name", "n1", "-u", "alice"]);
    let (status, body) = call(&server, "POST", "/api/v1/node/1/user?user=bob", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node"]["user"]["name"], "bob");
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/node/1/user?user=bob",
        Some("{\"user\": \"alice\"}"),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("user"), "{body}");

    // The routes API before 0.26 (route ids) and GetUser by name (0.23) are gone: a JSON
    // 404 (or 501 for a method the path lacks, as headscale's gateway answers), never a quiet
    // success.
    for (method, path) in [
        ("GET", "/api/v1/user/alice"),
        ("GET", "/api/v1/node/1/routes"),
        ("POST", "/api/v1/routes/1/enable"),
        ("POST", "/api/v1/routes/1/disable"),
        ("DELETE", "/api/v1/routes/1"),
    ] {
        let (status, answer) = call(&server, method, path, None);
        assert!(
            (400..500).contains(&status) || status == 501,
            "{method} {path} → {status} {answer}"
        );
        assert!(answer["code"].is_number(), "a JSON error: {answer}");
    }

    // Every refusal is in the log at info: method, path (never the query), status, reason,
    // actor.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = without_colours(&server.log());
        if let Some(line) = log.lines().find(|l| {
            l.contains("API request refused") && l.contains("/api/v1/user/alice/rename/carol")
        }) {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal logged: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains("method=POST") && line.contains("status=400"),
        "{line}"
    );
    assert!(line.contains("invalid user id"), "{line}");
    assert!(line.contains("admin (local socket)"), "{line}");
    let log = server.log();
    assert!(!log.contains(&secret), "a key's secret reached the log");
}
