//! Writes the seed corpora under `fuzz/corpus/<target>/` from the public API: encoded records
//! of every event kind, snapshots of small states, signed checkpoints and config variants,
//! plus truncated and bit-flipped copies. Does nothing unless `REGENERATE_FUZZ_CORPUS=1`;
//! it only (re)writes `seed-*` files, so kept crash inputs survive.

use ed25519_dalek::SigningKey;
use headscale::core::event::{
    Allocation, CoreConfig, NodeHostinfo, NodeRegistration, RegisterMethod,
};
use headscale::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::{Actor, Envelope, Event, State, Timestamp};
use headscale::store::record::{encode_snapshot, sha256};
use headscale::store::{Checkpoint, StoredRecord};
use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

/// Truncated and bit-flipped copies of `bytes`, written beside it.
fn write_variants(target: &str, name: &str, bytes: &[u8], flips: &[usize]) {
    write(
        target,
        &format!("{name}-trunc-half"),
        &bytes[..bytes.len() / 2],
    );
    write(
        target,
        &format!("{name}-trunc-1"),
        &bytes[..bytes.len() - 1],
    );
    let mut longer = bytes.to_vec();
    longer.push(0);
    write(target, &format!("{name}-trailing"), &longer);
    for &at in flips {
        if at < bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[at] ^= 0x80;
            write(target, &format!("{name}-flip-{at}"), &flipped);
        }
    }
}

fn hostinfo(hostname: &str) -> NodeHostinfo {
    NodeHostinfo {
        hostname: hostname.into(),
        os: "linux".into(),
        os_version: "6.8".into(),
        client_version: "1.80.0".into(),
        advertised_routes: vec![
            "10.1.0.0/16".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
            "::/0".parse().unwrap(),
        ],
        requested_tags: vec!["tag:router".into()],
        ssh_host_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA".into()],
    }
}

/// One event of every kind, with a mix of actors and edge values.
fn events() -> Vec<(&'static str, Actor, Event)> {
    let user = UserId(1);
    let node = NodeId(1);
    let registration = NodeRegistration {
        id: node,
        machine_key: MachineKey([0x11; 32]),
        node_key: NodeKey([0x22; 32]),
        user: Some(user),
        tags: vec![],
        given_name: "laptop".into(),
        hostinfo: hostinfo("laptop"),
        ipv4: Some("100.64.0.1".parse().unwrap()),
        ipv6: Some("fd7a:115c:a1e0::1".parse().unwrap()),
        expiry: Some(Timestamp(1_800_000_000_000)),
        register_method: RegisterMethod::AuthKey,
        auth_key: Some(PreAuthKeyId(1)),
        ephemeral: false,
        authorized: true,
        approved_routes: vec!["10.1.0.0/16".parse().unwrap()],
    };
    let tagged = NodeRegistration {
        id: NodeId(u64::MAX - 1),
        machine_key: MachineKey([0xff; 32]),
        node_key: NodeKey([0; 32]),
        user: None,
        tags: vec!["tag:server".into(), "tag:ünïcode".into()],
        given_name: String::new(),
        hostinfo: NodeHostinfo::default(),
        ipv4: None,
        ipv6: None,
        expiry: None,
        register_method: RegisterMethod::Oidc,
        auth_key: None,
        ephemeral: true,
        authorized: false,
        approved_routes: vec![],
    };
    vec![
        (
            "server-started",
            Actor::System,
            Event::ServerStarted {
                version: "0.1.0".into(),
            },
        ),
        (
            "config-applied",
            Actor::System,
            Event::ConfigApplied {
                hash: Digest([0xc0; 32]),
                core: CoreConfig {
                    prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
                    prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
                    allocation: Allocation::Sequential,
                    base_domain: "tailnet.example".into(),
                    node_expiry_secs: 0,
                    ephemeral_inactivity_secs: 1800,
                    require_approval: false,
                },
                netmap_json: r#"{"dns":{"magic_dns":true}}"#.into(),
            },
        ),
        (
            "config-applied-random",
            Actor::LocalSocket,
            Event::ConfigApplied {
                hash: Digest::default(),
                core: CoreConfig {
                    prefix_v4: None,
                    prefix_v6: Some("fd7a:115c:a1e0:ab12::/64".parse().unwrap()),
                    allocation: Allocation::Random,
                    base_domain: String::new(),
                    node_expiry_secs: u64::MAX,
                    ephemeral_inactivity_secs: 0,
                    require_approval: true,
                },
                netmap_json: String::new(),
            },
        ),
        (
            "user-created",
            Actor::LocalSocket,
            Event::UserCreated {
                id: user,
                name: "alice".into(),
                display_name: "Alice Ö".into(),
                email: "alice@example.com".into(),
            },
        ),
        (
            "user-created-2",
            Actor::ApiKey(ApiKeyId(1)),
            Event::UserCreated {
                id: UserId(2),
                name: "bob".into(),
                display_name: String::new(),
                email: String::new(),
            },
        ),
        (
            "user-renamed",
            Actor::ApiKey(ApiKeyId(1)),
            Event::UserRenamed {
                id: UserId(2),
                name: "robert".into(),
            },
        ),
        (
            "pre-auth-key-created",
            Actor::LocalSocket,
            Event::PreAuthKeyCreated {
                id: PreAuthKeyId(1),
                user: Some(user),
                prefix: "hskey-auth-abcdef".into(),
                secret_hash: Digest([0x5e; 32]),
                reusable: false,
                ephemeral: false,
                pre_approved: true,
                tags: vec![],
                expiration: Timestamp(1_700_003_600_000),
            },
        ),
        (
            "pre-auth-key-created-tagged",
            Actor::LocalSocket,
            Event::PreAuthKeyCreated {
                id: PreAuthKeyId(2),
                user: None,
                prefix: "hskey-auth-012345".into(),
                secret_hash: Digest([0x01; 32]),
                reusable: true,
                ephemeral: true,
                pre_approved: false,
                tags: vec!["tag:server".into()],
                expiration: Timestamp(i64::MAX),
            },
        ),
        (
            "api-key-created",
            Actor::LocalSocket,
            Event::ApiKeyCreated {
                id: ApiKeyId(1),
                prefix: "hskey-api-qwerty".into(),
                secret_hash: Digest([0xa9; 32]),
                expiration: Timestamp(1_707_776_000_000),
            },
        ),
        (
            "node-registered",
            Actor::Machine(MachineKey([0x11; 32])),
            Event::NodeRegistered(Box::new(registration)),
        ),
        (
            "pre-auth-key-used",
            Actor::Machine(MachineKey([0x11; 32])),
            Event::PreAuthKeyUsed {
                id: PreAuthKeyId(1),
                node,
            },
        ),
        (
            "node-registered-tagged",
            Actor::Machine(MachineKey([0xff; 32])),
            Event::NodeRegistered(Box::new(tagged)),
        ),
        (
            "node-reauthenticated",
            Actor::Node(node),
            Event::NodeReauthenticated {
                id: node,
                node_key: NodeKey([0x33; 32]),
                expiry: None,
                auth_key: None,
                register_method: RegisterMethod::Cli,
            },
        ),
        (
            "node-key-rotated",
            Actor::Node(node),
            Event::NodeKeyRotated {
                id: node,
                node_key: NodeKey([0x44; 32]),
            },
        ),
        (
            "node-hostinfo-changed",
            Actor::Node(node),
            Event::NodeHostinfoChanged {
                id: node,
                hostinfo: hostinfo("laptop-2"),
            },
        ),
        (
            "node-renamed",
            Actor::LocalSocket,
            Event::NodeRenamed {
                id: node,
                given_name: "work-laptop".into(),
                by_admin: true,
            },
        ),
        (
            "node-moved",
            Actor::LocalSocket,
            Event::NodeMoved {
                id: node,
                user: UserId(2),
            },
        ),
        (
            "node-tags-set",
            Actor::ApiKey(ApiKeyId(1)),
            Event::NodeTagsSet {
                id: NodeId(u64::MAX - 1),
                tags: vec!["tag:a".into(), "tag:b".into()],
            },
        ),
        (
            "node-approved",
            Actor::LocalSocket,
            Event::NodeApproved {
                id: NodeId(u64::MAX - 1),
            },
        ),
        (
            "node-expiry-changed",
            Actor::System,
            Event::NodeExpiryChanged {
                id: node,
                expiry: Some(Timestamp(i64::MIN)),
            },
        ),
        (
            "routes-approved",
            Actor::LocalSocket,
            Event::RoutesApproved {
                id: node,
                routes: vec![
                    "10.1.0.0/16".parse().unwrap(),
                    "0.0.0.0/0".parse().unwrap(),
                    "::/0".parse().unwrap(),
                ],
            },
        ),
        (
            "policy-replaced",
            Actor::ApiKey(ApiKeyId(1)),
            Event::PolicyReplaced {
                policy: r#"{"acls":[{"action":"accept","src":["*"],"dst":["*:*"]}]}"#.into(),
            },
        ),
        (
            "pre-auth-key-expired",
            Actor::System,
            Event::PreAuthKeyExpired {
                id: PreAuthKeyId(2),
                at: Timestamp(1_700_000_100_000),
            },
        ),
        (
            "api-key-expired",
            Actor::LocalSocket,
            Event::ApiKeyExpired {
                id: ApiKeyId(1),
                at: Timestamp(1_700_000_100_000),
            },
        ),
        (
            "node-deleted",
            Actor::System,
            Event::NodeDeleted {
                id: NodeId(u64::MAX - 1),
            },
        ),
        (
            "pre-auth-key-deleted",
            Actor::LocalSocket,
            Event::PreAuthKeyDeleted {
                id: PreAuthKeyId(2),
            },
        ),
        (
            "api-key-deleted",
            Actor::LocalSocket,
            Event::ApiKeyDeleted { id: ApiKeyId(1) },
        ),
        (
            "user-deleted",
            Actor::LocalSocket,
            Event::UserDeleted { id: UserId(2) },
        ),
    ]
}

/// The events as a chained log, seq 1.., one second apart.
fn envelopes() -> Vec<(&'static str, Envelope)> {
    events()
        .into_iter()
        .enumerate()
        .map(|(i, (name, actor, event))| {
            let seq = i as u64 + 1;
            let envelope = Envelope {
                seq,
                at: Timestamp(1_700_000_000_000 + 1000 * seq as i64),
                actor,
                event,
            };
            (name, envelope)
        })
        .collect()
}

fn event_records() {
    let mut prev = Digest::default();
    for (i, (name, envelope)) in envelopes().into_iter().enumerate() {
        let record = StoredRecord::encode(&envelope, prev).unwrap();
        prev = record.hash();
        let bytes = record.to_bytes();
        let name = format!("{:02}-{name}", i + 1);
        write("event_record", &name, &bytes);
        // A few records also get broken copies: header, hash and payload damage.
        if i % 6 == 0 {
            write_variants("event_record", &name, &bytes, &[0, 40, 66, bytes.len() - 1]);
        }
    }
    // A record with an envelope that is not the whole payload, and one at a huge seq.
    let envelope = Envelope {
        seq: u64::MAX,
        at: Timestamp(-1),
        actor: Actor::System,
        event: Event::ServerStarted {
            version: String::new(),
        },
    };
    let record = StoredRecord::encode(&envelope, Digest([0xee; 32])).unwrap();
    write("event_record", "max-seq", &record.to_bytes());
    let mut record = record;
    record.payload.extend_from_slice(b"junk");
    record.payload_hash = sha256(&record.payload);
    write("event_record", "trailing-payload", &record.to_bytes());
    write("event_record", "empty", b"");
    write("event_record", "header-only", &[0u8; 65]);
}

fn snapshots() {
    let log = envelopes();
    let mut state = State::default();
    let mut points = vec![(0usize, state.clone())];
    for (i, (_, envelope)) in log.iter().enumerate() {
        state.apply(envelope);
        points.push((i + 1, state.clone()));
    }
    for (seq, state) in points.iter().step_by(3) {
        let bytes = encode_snapshot(state).unwrap();
        write("snapshot", &format!("at-{seq:02}"), &bytes);
    }
    let (seq, full) = points[points.len() / 2].clone();
    let bytes = encode_snapshot(&full).unwrap();
    write_variants(
        "snapshot",
        &format!("at-{seq:02}"),
        &bytes,
        &[0, 1, 9, 40, 200],
    );
    let mut wrong_version = bytes.clone();
    wrong_version[0] = 1;
    write("snapshot", "wrong-version", &wrong_version);
    write("snapshot", "empty", b"");
}

fn checkpoints() {
    let cases = [
        (
            [7u8; 32],
            1u64,
            Digest([1; 32]),
            Timestamp(1_700_000_000_000),
        ),
        ([8u8; 32], 42, Digest([0xab; 32]), Timestamp(0)),
        ([9u8; 32], u64::MAX, Digest::default(), Timestamp(i64::MIN)),
        ([1u8; 32], 1 << 40, Digest([0x55; 32]), Timestamp(i64::MAX)),
    ];
    for (i, (key, seq, hash, at)) in cases.into_iter().enumerate() {
        let key = SigningKey::from_bytes(&key);
        let checkpoint = Checkpoint::sign(&key, seq, hash, at);
        let bytes = checkpoint.to_bytes();
        write("checkpoint", &format!("signed-{i}"), &bytes);
        if i == 0 {
            write_variants("checkpoint", "signed-0", &bytes, &[0, 5, 60, 75]);
        }
    }
    let mut short_signature = Checkpoint::sign(
        &SigningKey::from_bytes(&[7u8; 32]),
        3,
        Digest([3; 32]),
        Timestamp(3),
    );
    short_signature.signature.truncate(10);
    write("checkpoint", "short-signature", &short_signature.to_bytes());
    let mut long_signature = short_signature;
    long_signature.signature = vec![0xaa; 300];
    write("checkpoint", "long-signature", &long_signature.to_bytes());
    write("checkpoint", "empty", b"");
}

/// The example config, with `from` replaced by `to` (which must occur).
fn edit(example: &str, from: &str, to: &str) -> String {
    assert!(
        example.contains(from),
        "{from:?} is not in examples/config.yaml"
    );
    example.replacen(from, to, 1)
}

fn configs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config.yaml");
    let example = std::fs::read_to_string(path).unwrap();
    // The variants drop the relative policy path, so they load from any working directory
    // and reach the check they are about.
    let portable = edit(&example, "path: ./examples/policy.hujson", "path:");
    let ex = portable.as_str();
    let port = "listen_addr: 127.0.0.1:8080";
    let cases: Vec<(&str, String)> = vec![
        ("example", example.clone()),
        ("empty", String::new()),
        ("null", "~\n".into()),
        ("top-level-list", "- a\n- b\n".into()),
        ("top-level-scalar", "42\n".into()),
        ("syntax-error", "server_url: [unclosed\n".into()),
        ("tab-indent", "noise:\n\tprivate_key_path: x\n".into()),
        ("unknown-key", format!("{ex}\nfavourite_colour: blue\n")),
        ("unknown-nested-key", edit(ex, "  magic_dns: true", "  magic_dns: true\n  bogus: 1")),
        ("non-string-key", format!("{ex}\n? [1, 2]\n: x\n42: answer\n")),
        ("removed-key", format!("{ex}\nacl_policy_path: acl.hujson\n")),
        ("removed-nested-key", edit(ex, "  magic_dns: true", "  magic_dns: true\n  use_username_in_magic_dns: true")),
        ("unsupported-keys", format!("{ex}\ngrpc_listen_addr: 0.0.0.0:50443\nacme_url: x\noidc:\n  issuer: x\ntuning:\n  a: 1\n")),
        ("deprecated-key", format!("{ex}\nephemeral_node_inactivity_timeout: 5m\n")),
        ("deprecated-key-null", format!("{ex}\nephemeral_node_inactivity_timeout:\n")),
        ("server-url-no-scheme", edit(ex, "server_url: http://127.0.0.1:8080", "server_url: 127.0.0.1:8080")),
        ("server-url-userinfo", edit(ex, "server_url: http://127.0.0.1:8080", "server_url: https://u:p@[::1]:443/x/")),
        ("server-url-in-base-domain", edit(ex, "server_url: http://127.0.0.1:8080", "server_url: https://hs.tailnet.example")),
        ("listen-v6-unbracketed", edit(ex, port, "listen_addr: ::1:8080")),
        ("listen-bad-port", edit(ex, port, "listen_addr: \"[::1]:99999\"")),
        ("listen-unclosed-bracket", edit(ex, port, "listen_addr: \"[::1:80\"")),
        ("listen-unicode-host", edit(ex, port, "listen_addr: \"hôst:80\"")),
        ("socket-permission-number", edit(ex, "unix_socket_permission: \"0770\"", "unix_socket_permission: 770")),
        ("socket-permission-bad", edit(ex, "unix_socket_permission: \"0770\"", "unix_socket_permission: \"0o99999\"")),
        ("prefix-bad", edit(ex, "  v4: 100.64.0.0/10", "  v4: 100.64.0.0/33")),
        ("prefix-outside-range", edit(ex, "  v4: 100.64.0.0/10", "  v4: 10.0.0.0/8")),
        ("prefixes-none", edit(ex, "  v4: 100.64.0.0/10\n  v6: fd7a:115c:a1e0::/48", "  v4: \"\"\n  v6:")),
        ("allocation-bad", edit(ex, "allocation: sequential", "allocation: shuffled")),
        ("database-sqlite", edit(ex, "  type: sled", "  type: sqlite\n  sqlite:\n    path: db.sqlite")),
        ("section-as-scalar", edit(ex, "noise:\n  private_key_path: ./data/noise_private.key", "noise: 5")),
        ("derp-region-zero", edit(ex, "region_id: 999", "region_id: 0")),
        ("derp-region-negative", edit(ex, "region_id: 999", "region_id: -1")),
        ("derp-region-huge", edit(ex, "region_id: 999", "region_id: 18446744073709551616")),
        ("derp-url-bad", edit(ex, "  urls: []", "  urls: [ftp://x, 5]")),
        ("update-frequency-zero", edit(ex, "auto_update_enabled: false\n  update_frequency: 3h", "auto_update_enabled: true\n  update_frequency: 0")),
        ("update-frequency-bare", edit(ex, "update_frequency: 3h", "update_frequency: 180")),
        ("update-frequency-huge", edit(ex, "update_frequency: 3h", "update_frequency: 99999999999999999999d")),
        ("policy-database", edit(&example, "mode: file", "mode: database")),
        ("policy-missing-file", edit(&example, "path: ./examples/policy.hujson", "path: /nonexistent/policy.hujson")),
        ("magic-dns-no-base", edit(ex, "base_domain: tailnet.example", "base_domain: \"  .\"")),
        ("override-dns-no-servers", edit(ex, "override_local_dns: false", "override_local_dns: true")),
        ("nameservers", edit(ex, "    global: []\n", "    global: [1.1.1.1, \"https://dns.example/q\", nope]\n")),
        ("split-dns-bad", edit(ex, "split: {}", "split: {corp.example: [10.0.0.53, x]}")),
        ("extra-records", edit(ex, "  extra_records: []", "  extra_records:\n    - { name: a.tailnet.example, type: A, value: 100.64.0.3 }\n    - { name: b, type: AAAA, value: 100.64.0.3 }\n    - { name: \"\", type: MX, value: x }")),
        ("extra-records-and-path", edit(ex, "  extra_records: []", "  extra_records: [{name: a, type: A, value: 1.2.3.4}]\n  extra_records_path: /tmp/x.json")),
        ("node-expiry-number", edit(ex, "  expiry: 0", "  expiry: 30")),
        ("node-expiry-text", edit(ex, "  expiry: 0", "  expiry: 1h30m")),
        ("inactivity-short", edit(ex, "inactivity_timeout: 30m", "inactivity_timeout: 1s")),
        ("inactivity-float", edit(ex, "inactivity_timeout: 30m", "inactivity_timeout: 1.5e300")),
        ("log-level-bad", edit(ex, "  level: info", "  level: loud")),
        ("log-format-bad", edit(ex, "  format: text", "  format: xml")),
        ("bool-as-string", edit(ex, "taildrop:\n  enabled: true", "taildrop:\n  enabled: \"yes\"")),
        ("tls-half", format!("{ex}\ntls_cert_path: /etc/cert.pem\n")),
        ("trusted-proxies", format!("{ex}\ntrusted_proxies: [10.0.0.0/8, 192.168.1.1, not-an-ip]\n")),
        ("anchors", format!("{ex}\nx: &a [1, 2, 3]\ny: *a\n")),
        ("tagged-value", edit(ex, "listen_addr: 127.0.0.1:8080", "listen_addr: !custom 1.2.3.4:5")),
        ("duplicate-key", format!("{ex}\nserver_url: https://other.example\n")),
        ("deep-nesting", format!("dns:\n  nameservers:\n    split: {}{}\n", "[".repeat(40), "]".repeat(40))),
        ("multi-document", format!("{ex}\n---\nserver_url: x\n")),
    ];
    for (name, text) in cases {
        write("config", &format!("{name}.yaml"), text.as_bytes());
    }
}

#[test]
fn regenerate_corpus() {
    if std::env::var("REGENERATE_FUZZ_CORPUS").as_deref() != Ok("1") {
        eprintln!("set REGENERATE_FUZZ_CORPUS=1 to rewrite fuzz/corpus/*/seed-*");
        return;
    }
    event_records();
    snapshots();
    checkpoints();
    configs();
    derp_frames();
    stun_requests();
}

/// DERP frame streams: a client's login and traffic, the relay's replies, and bad lengths.
fn derp_frames() {
    use headscale::derp::frame::{kind, ClientFrame, PeerGoneReason, ServerFrame, DISCO_MAGIC};
    let mut disco = DISCO_MAGIC.to_vec();
    disco.extend_from_slice(&[0x5a; 60]);
    let client = [
        ClientFrame::ClientInfo {
            key: [1; 32],
            nonce: [2; 24],
            sealed: &[3; 48],
        }
        .encode(),
        ClientFrame::NotePreferred(true).encode(),
        ClientFrame::SendPacket {
            dst: [4; 32],
            packet: &disco,
        }
        .encode(),
        ClientFrame::SendPacket {
            dst: [5; 32],
            packet: &[0x11; 200],
        }
        .encode(),
        ClientFrame::Ping(*b"12345678").encode(),
        ClientFrame::Other(kind::WATCH_CONNS).encode(),
    ]
    .concat();
    write("derp_frame", "client-stream", &client);
    write_variants("derp_frame", "client-stream", &client, &[0, 3, 60]);
    let server = [
        ServerFrame::ServerKey([6; 32]).encode(),
        ServerFrame::ServerInfo {
            nonce: [7; 24],
            sealed: &[8; 32],
        }
        .encode(),
        ServerFrame::RecvPacket {
            src: [9; 32],
            packet: &[0x22; 100],
        }
        .encode(),
        ServerFrame::KeepAlive.encode(),
        ServerFrame::PeerGone {
            key: [10; 32],
            reason: PeerGoneReason::NotHere,
        }
        .encode(),
        ServerFrame::Pong(*b"abcdefgh").encode(),
    ]
    .concat();
    write("derp_frame", "server-stream", &server);
    write_variants("derp_frame", "server-stream", &server, &[0, 4, 20]);
    write("derp_frame", "oversized", &[kind::SEND_PACKET, 0xff, 0xff, 0xff, 0xff]);
    write("derp_frame", "long-ping", &[&[kind::PING, 0, 0, 0, 20][..], &[1; 20]].concat());
}

/// STUN datagrams: a Tailscale binding request and damaged copies.
fn stun_requests() {
    let request = headscale::derp::stun::binding_request(b"0123456789ab");
    write("stun", "binding-request", &request);
    write_variants("stun", "binding-request", &request, &[0, 4, 25, 39]);
    let mut padded = request.clone();
    padded.extend_from_slice(&[0; 16]);
    write("stun", "binding-request-trailing", &padded);
}

#[test]
fn regenerate_derp_corpus() {
    if std::env::var("REGENERATE_FUZZ_CORPUS").as_deref() != Ok("1") {
        return;
    }
    derp_frames();
    stun_requests();
}
