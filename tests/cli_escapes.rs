//! Human CLI output cannot be used to attack the admin's terminal (audit L2, test plan A13): a
//! node whose hostname carries ESC, CR, an OSC 52 clipboard write, an OSC 8 link, a C1 CSI and
//! bidi overrides is listed by `nodes list`, `events list` (also `--follow`) and `events show`
//! with those characters escaped, while `-o json` keeps the raw text.
//!
//! The node is written into the log before the server starts: history from before any input
//! sanitising replays as it was, so the CLI must cope with it whatever the register path does.

mod common;

use common::TestServer;
use headscale::core::event::{NodeHostinfo, NodeRegistration, RegisterMethod};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{MachineKey, NodeKey};
use headscale::core::{Actor, Envelope, Event, Timestamp};
use headscale::store::disk_store::DiskStore;
use headscale::store::record::encode_chain;
use headscale::store::EventStore;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Bidi first: `events list` cuts its details column at 100 characters.
const HOSTILE: &str = "\u{202e}gnp.exe\u{2066}x\u{9b}31m\u{7f}pwn\u{1b}]52;c;aGVsbG8=\u{7}\r\
                       \u{1b}]8;;http://evil.example/\u{1b}\\link\u{1b}]8;;\u{1b}\\";

/// What must never reach the terminal: ESC, BEL, CR, C1 CSI, DEL and the bidi marks.
const FORBIDDEN: &[char] = &[
    '\u{1b}', '\u{7}', '\r', '\u{9b}', '\u{7f}', '\u{202e}', '\u{2066}',
];

fn assert_clean(what: &str, out: &str) {
    if let Some(c) = out.chars().find(|c| FORBIDDEN.contains(c)) {
        panic!("{what} printed the raw character {c:?}: {out:?}");
    }
}

fn server_with_hostile_node() -> TestServer {
    let mut server = TestServer::new("");
    std::fs::create_dir_all(server.data_dir()).unwrap();
    {
        let store = DiskStore::open(&server.data_dir().join("db.sled"), 16 << 20).unwrap();
        let at = Timestamp::from_unix_ms(1_767_225_600_000);
        let envelope = |seq, event| Envelope {
            seq,
            at,
            actor: Actor::System,
            event,
        };
        let envelopes = vec![
            envelope(
                1,
                Event::UserCreated {
                    id: UserId(1),
                    name: "ann".into(),
                    display_name: String::new(),
                    email: String::new(),
                },
            ),
            envelope(
                2,
                Event::NodeRegistered(Box::new(NodeRegistration {
                    id: NodeId(1),
                    machine_key: MachineKey([1; 32]),
                    node_key: NodeKey([2; 32]),
                    user: Some(UserId(1)),
                    tags: vec![],
                    given_name: "evil".into(),
                    hostinfo: NodeHostinfo {
                        hostname: HOSTILE.into(),
                        os: "linux".into(),
                        ..Default::default()
                    },
                    ipv4: Some("100.64.0.1".parse().unwrap()),
                    ipv6: None,
                    expiry: None,
                    register_method: RegisterMethod::Cli,
                    auth_key: None,
                    ephemeral: false,
                    authorized: true,
                    approved_routes: vec![],
                })),
            ),
            // The same hostname again, as a hostinfo change (short details in `events list`).
            envelope(
                3,
                Event::NodeHostinfoChanged {
                    id: NodeId(1),
                    hostinfo: NodeHostinfo {
                        hostname: HOSTILE.into(),
                        ..Default::default()
                    },
                },
            ),
        ];
        let records = encode_chain(&envelopes, Default::default()).unwrap();
        store.append(&records).unwrap();
    }
    server.spawn();
    server
}

#[test]
fn hostile_hostnames_are_escaped_in_human_output_and_raw_in_json() {
    let server = server_with_hostile_node();

    let nodes = server.ok(&["nodes", "list"]);
    assert_clean("nodes list", &nodes);
    // The row is there, with the characters visible as escapes.
    assert!(
        nodes.contains(
            "\\u{202e}gnp.exe\\u{2066}x\\u{9b}31m\\u{7f}pwn\\u{1b}]52;c;aGVsbG8=\\u{7}\\u{d}"
        ),
        "{nodes}"
    );

    let events = server.ok(&["events", "list"]);
    assert_clean("events list", &events);
    assert!(events.contains("NodeHostinfoChanged"), "{events}");
    assert!(events.contains("\\u{202e}gnp.exe"), "{events}");

    let shown = server.ok(&["events", "show", "2"]);
    assert_clean("events show", &shown);
    // Still JSON, meaning exactly the stored hostname.
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown["event"]["data"]["hostinfo"]["hostname"], HOSTILE,
        "{shown}"
    );

    // Machine formats stay raw: programs get the hostname as it is.
    let json = server.json(&["nodes", "list"]);
    assert_eq!(json[0]["name"], HOSTILE, "{json}");

    // `events list --follow` prints rows one at a time; they are escaped too.
    let mut follow = Command::new(common::BIN)
        .arg("-c")
        .arg(&server.config)
        .args(["events", "list", "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut seen = String::new();
    let row = loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the follow stream ended without the node's event: {seen}"
        );
        seen.push_str(&line);
        if line.contains("NodeHostinfoChanged") {
            break line;
        }
    };
    let _ = follow.kill();
    let _ = follow.wait();
    assert_clean("events list --follow", &seen);
    assert!(row.contains("\\u{202e}gnp.exe"), "{row}");
}
