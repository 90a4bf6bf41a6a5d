//! `GET /api/v1/events?follow=true` (server-sent events) and `headscale events list --follow`
//! against the real binary: history first, then new events as they are appended, filtered,
//! resumable with `Last-Event-ID`; without a daemon, one clear line.

mod common;

use common::{TestServer, BIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Reads SSE blocks from a raw HTTP/1.1 stream until `want` events have arrived.
fn sse_events(port: u16, path: &str, extra_header: &str, want: usize) -> Vec<(u64, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra_header}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let mut events = Vec::new();
    while events.len() < want {
        let n = stream
            .read(&mut buf)
            .expect("more events before the timeout");
        assert!(n > 0, "stream ended early: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        events = text
            .split("\n\n")
            .filter_map(|block| {
                let id = block.lines().find_map(|l| l.strip_prefix("id: "))?;
                let kind = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                Some((id.trim().parse().ok()?, kind.trim().to_string()))
            })
            .collect();
    }
    assert!(text.contains("text/event-stream"), "{text}");
    events
}

#[test]
fn the_api_streams_history_then_new_events() {
    let mut server = TestServer::new("");
    let key_server = {
        server.spawn();
        server.ok(&["apikeys", "create"]).trim().to_string()
    };
    server.ok(&["users", "create", "ann"]);
    let port = server.port;
    let auth = format!("Authorization: Bearer {key_server}\r\n");
    let reader = {
        let auth = auth.clone();
        std::thread::spawn(move || {
            sse_events(
                port,
                "/api/v1/events?follow=true&type=UserCreated",
                &auth,
                3,
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    server.ok(&["users", "create", "bob"]);
    server.ok(&["nodes", "list"]); // not an event
    server.ok(&["users", "create", "cyd"]);
    let events = reader.join().unwrap();
    let kinds: Vec<&str> = events.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(kinds, ["UserCreated"; 3]);
    assert!(events.windows(2).all(|w| w[0].0 < w[1].0), "{events:?}");

    // A reconnecting client resumes after the last id it saw.
    let resumed = sse_events(
        port,
        "/api/v1/events?follow=true&type=UserCreated",
        &format!("{auth}Last-Event-ID: {}\r\n", events[1].0),
        1,
    );
    assert_eq!(resumed[0].0, events[2].0);

    // follow has no end: until/limit are refused.
    let (status, body) = common::http(
        port,
        "GET",
        "/api/v1/events?follow=true&limit=5",
        Some(&key_server),
    );
    assert_eq!(status, 400, "{body}");
    server.stop();
}

#[test]
fn the_cli_follows_the_log() {
    let server = TestServer::start();
    server.ok(&["users", "create", "ann"]);
    let mut child = Command::new(BIN)
        .args(["-c"])
        .arg(&server.config)
        .args([
            "events",
            "list",
            "--follow",
            "--type",
            "UserCreated,UserRenamed",
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "UserCreated");
    assert_eq!(first["data"]["name"], "ann");
    server.ok(&["users", "rename", "--name", "ann", "--new-name", "anne"]);
    let second: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(second["type"], "UserRenamed", "{second}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn following_needs_a_daemon() {
    let mut server = TestServer::start();
    server.ok(&["users", "create", "ann"]);
    server.stop();
    let line = server.fails(&["events", "list", "--follow"]);
    assert!(line.contains("running headscale daemon"), "{line}");
}
