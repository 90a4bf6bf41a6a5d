//! Map streams against the real server binary, driven by our own control client
//! (`headscale::client`): the full map, then deltas as peers join, move, go offline, are
//! renamed and deleted; keep-alives; stream replacement; the one-shot map; refusals; and bad
//! peers (garbage, oversized frames, silence, truncation, a reader that stops) that must get
//! a clean close while everyone else's streams keep working.

mod common;

use common::{join, join_with_routes, Machine, TestServer};
use headscale::client::wire::MapResponseIn;
use headscale::client::{self, ClientError, ControlClient, MapStream, Netmap};
use headscale::tailcfg::RegisterRequest;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use x25519_dalek::StaticSecret;

const TUNING: &str =
    "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n  node_offline_grace: 1s\n";
const CAPVER: u16 = 145;
const WAIT: Duration = Duration::from_secs(10);

fn start() -> (TestServer, String) {
    let server = TestServer::start_with(TUNING);
    server.ok(&["users", "create", "alice"]);
    let key = server.pre_auth_key("alice", &["--reusable"]);
    (server, key)
}

/// Whether a non-keep-alive message carries nothing at all (the server must never send one).
fn is_empty(m: &MapResponseIn) -> bool {
    m.node.is_none()
        && m.derp_map.is_none()
        && m.peers.as_ref().is_none_or(Vec::is_empty)
        && m.peers_changed.as_ref().is_none_or(Vec::is_empty)
        && m.peers_removed.as_ref().is_none_or(Vec::is_empty)
        && m.peers_changed_patch.as_ref().is_none_or(Vec::is_empty)
        && m.online_change.as_ref().is_none_or(|c| c.is_empty())
        && m.peer_seen_change.as_ref().is_none_or(|c| c.is_empty())
        && m.dns_config.is_none()
        && m.domain.is_empty()
        && m.packet_filters.is_none()
        && m.packet_filter.is_none()
        && m.user_profiles.as_ref().is_none_or(Vec::is_empty)
        && m.ssh_policy.is_none()
}

/// A map stream and what its client believes.
struct Watch {
    stream: MapStream,
    netmap: Netmap,
}

impl Watch {
    async fn open(machine: &Machine) -> (Watch, MapResponseIn) {
        let request = machine.client.stream_request(
            &machine.node_key,
            &machine.disco_key,
            vec!["192.0.2.10:41641".into()],
        );
        let stream = machine.client.map_stream(&request).await.unwrap();
        let mut watch = Watch {
            stream,
            netmap: Netmap::new(),
        };
        let first = watch.next().await.expect("a first message");
        (watch, first)
    }

    async fn next(&mut self) -> Option<MapResponseIn> {
        let message = self.stream.next_within(WAIT).await?.unwrap();
        if !message.response.keep_alive {
            assert!(
                !is_empty(&message.response),
                "empty message: {}",
                String::from_utf8_lossy(&message.raw.json)
            );
        }
        self.netmap.apply(&message.response).unwrap();
        Some(message.response)
    }

    /// Applies messages until `done` holds for the netmap; returns the messages it took.
    async fn until(&mut self, what: &str, done: impl Fn(&Netmap) -> bool) -> Vec<MapResponseIn> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while !done(&self.netmap) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            match self.next().await {
                Some(message) => seen.push(message),
                None => panic!("stream ended while waiting for {what}"),
            }
        }
        seen
    }

    /// The stream ends (cleanly or with an error) within the wait.
    async fn ends(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "stream did not end");
            match tokio::time::timeout(WAIT, self.stream.next_raw()).await {
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => continue,
                Err(_) => panic!("stream did not end"),
            }
        }
    }
}

fn id_of(netmap: &Netmap) -> u64 {
    netmap.self_node.as_ref().unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_map_then_every_kind_of_peer_change() {
    let (server, key) = start();
    let a = join(&server, &key, "alpha").await;
    let (mut watch_a, first) = Watch::open(&a).await;

    // The full map.
    let me = first.node.as_ref().expect("self node");
    assert!(me.machine_authorized);
    assert!(!me.addresses.is_empty());
    assert!(me.name.ends_with(".tailnet.example."), "{}", me.name);
    assert!(me.name.starts_with("alpha"), "{}", me.name);
    assert!(first.derp_map.is_some() && first.dns_config.is_some());
    assert!(first.control_time.is_some());
    let allow_all = serde_json::json!([{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}]);
    assert_eq!(
        serde_json::to_value(&watch_a.netmap.packet_filters["base"]).unwrap(),
        allow_all
    );
    assert!(watch_a.netmap.user_profiles.contains_key(&me.user));
    assert!(watch_a.netmap.peers.is_empty());

    // A second node registers: PeersChanged; its stream opens: Online.
    let b = join(&server, &key, "bravo").await;
    let seen = watch_a
        .until("bravo as a peer", |n| n.peers.len() == 1)
        .await;
    assert!(seen
        .iter()
        .any(|m| m.peers_changed.as_ref().is_some_and(|p| p.len() == 1)));
    let (mut watch_b, first_b) = Watch::open(&b).await;
    let b_id = first_b.node.as_ref().unwrap().id;
    assert_eq!(
        first_b.peers.as_ref().map(Vec::len),
        Some(1),
        "alpha is bravo's peer"
    );
    watch_a
        .until("bravo online", |n| n.peers[&b_id].online == Some(true))
        .await;
    // The admin sees it online too (volatile presence, not a fact in the log).
    let listed = |id: u64| {
        let nodes = server.json(&["nodes", "list"]);
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id.to_string().as_str())
            .cloned()
            .unwrap()
    };
    assert_eq!(listed(b_id)["online"], true);
    assert!(listed(b_id)["discoKey"]
        .as_str()
        .unwrap()
        .starts_with("discokey:"));
    let peer_user = watch_a.netmap.peers[&b_id].user;
    assert!(watch_a.netmap.user_profiles.contains_key(&peer_user));

    // A lite update reaches the peer as a patch with the new endpoints.
    b.client
        .lite_update(
            &b.node_key,
            vec!["198.51.100.7:41641".into(), "[2001:db8::7]:41641".into()],
            &b.disco_key,
            None,
        )
        .await
        .unwrap();
    let seen = watch_a
        .until("bravo's new endpoints", |n| {
            n.peers[&b_id].endpoints == ["198.51.100.7:41641", "[2001:db8::7]:41641"]
        })
        .await;
    assert!(seen.iter().any(|m| m
        .peers_changed_patch
        .as_ref()
        .is_some_and(|p| p.iter().any(|c| c.node_id == b_id && c.endpoints.is_some()))));

    // The admin renames bravo: a PeersChanged with the new name.
    server.ok(&["nodes", "rename", "-i", &b_id.to_string(), "charlie"]);
    let seen = watch_a
        .until("the new name", |n| {
            n.peers[&b_id].name.starts_with("charlie.")
        })
        .await;
    assert!(seen.iter().any(|m| m.peers_changed.is_some()));
    watch_b
        .until("its own new name", |n| {
            n.self_node.as_ref().unwrap().name.starts_with("charlie.")
        })
        .await;

    // Bravo's stream closes: offline after the grace, as a patch.
    drop(watch_b);
    let closed = Instant::now();
    let seen = watch_a
        .until("bravo offline", |n| n.peers[&b_id].online == Some(false))
        .await;
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "offline before the grace"
    );
    let offline = listed(b_id);
    assert_eq!(offline["online"], false);
    assert!(offline["lastSeen"].is_string(), "{offline}");
    assert!(seen
        .iter()
        .any(|m| m.peers_changed_patch.as_ref().is_some_and(|p| p
            .iter()
            .any(|c| c.node_id == b_id && c.online == Some(false)))));

    // Deleting bravo: removed from alpha's peers, and its own (new) stream ends.
    let (mut watch_b, _) = Watch::open(&b).await;
    watch_a
        .until("bravo online again", |n| {
            n.peers[&b_id].online == Some(true)
        })
        .await;
    server.ok(&["nodes", "delete", "-i", &b_id.to_string()]);
    let seen = watch_a.until("bravo removed", |n| n.peers.is_empty()).await;
    assert!(seen
        .iter()
        .any(|m| m.peers_removed.as_ref().is_some_and(|r| r == &[b_id])));
    watch_b.ends().await;
    assert_eq!(id_of(&watch_a.netmap), me.id);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_replacement_and_one_shot_maps() {
    let (server, key) = start();
    let a = join(&server, &key, "alpha").await;
    let b = join(&server, &key, "bravo").await;
    let (mut first, _) = Watch::open(&a).await;

    // A quiet stream gets exactly {"KeepAlive":true} (interval 2 s in this config).
    let message = first.stream.next_within(WAIT).await.unwrap().unwrap();
    assert_eq!(message.raw.json, br#"{"KeepAlive":true}"#);

    // A second stream for the same node replaces the first, which ends.
    let (second, full) = Watch::open(&a).await;
    assert!(full.node.is_some() && full.peers.as_ref().is_some_and(|p| p.len() == 1));
    first.ends().await;
    drop(second);

    // Stream:false, OmitPeers:false: exactly one full map, then the end.
    let mut request = b.client.stream_request(&b.node_key, &b.disco_key, vec![]);
    request.stream = false;
    let mut once = b.client.map_stream(&request).await.unwrap();
    let only = once.next_within(WAIT).await.unwrap().unwrap();
    assert!(only.response.node.is_some());
    assert_eq!(only.response.peers.as_ref().map(Vec::len), Some(1));
    assert!(
        once.next_within(WAIT).await.is_none(),
        "one message, then the end"
    );

    // An unknown node key is a 404; a capability version below 113 is refused.
    let (unknown, _) = client::random_key("nodekey:");
    let request = a.client.stream_request(&unknown, &a.disco_key, vec![]);
    match a.client.map_stream(&request).await {
        Err(ClientError::Status { status: 404, .. }) => {}
        Err(other) => panic!("expected 404, got {other}"),
        Ok(_) => panic!("expected 404, got a stream"),
    }
    let old = ControlClient::connect(
        &server.url(),
        StaticSecret::random_from_rng(rand::rngs::OsRng),
        112,
    )
    .await
    .unwrap();
    let mut request = old.stream_request(&a.node_key, &a.disco_key, vec![]);
    request.version = 112;
    match old.map_stream(&request).await {
        Err(ClientError::Status { status: 400, body }) => {
            assert!(body.contains("too old"), "{body}")
        }
        Err(other) => panic!("expected 400, got {other}"),
        Ok(_) => panic!("expected a refusal, got a stream"),
    }
    assert!(!server.log().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_renames_are_neither_missed_nor_repeated() {
    let (server, key) = start();
    let a = join(&server, &key, "alpha").await;
    let b = join(&server, &key, "bravo").await;
    let (mut watch, first) = Watch::open(&a).await;
    let b_id = first.peers.as_ref().unwrap()[0].id;
    let id = b_id.to_string();
    for n in 0..20 {
        server.ok(&["nodes", "rename", "-i", &id, &format!("name-{n}")]);
    }
    watch
        .until("the last name", |n| {
            n.peers[&b_id].name.starts_with("name-19.")
        })
        .await;
    // Nothing more than keep-alives after the final state: no repeats.
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), watch.stream.next_raw()).await {
            Ok(Some(Ok(raw))) => assert_eq!(raw.json, br#"{"KeepAlive":true}"#),
            Ok(other) => panic!(
                "stream ended: {other:?}",
                other = other.map(|r| r.map(|_| ()))
            ),
            Err(_) => {}
        }
    }
    drop(b);
}

/// Reads until EOF or error; `true` if the peer closed within the wait.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_get_a_clean_close_and_others_keep_working() {
    let (server, key) = start();
    let a = join(&server, &key, "alpha").await;
    let b = join(&server, &key, "bravo").await;
    let (mut watch, first) = Watch::open(&a).await;
    let b_id = first.peers.as_ref().unwrap()[0].id;
    let address = format!("127.0.0.1:{}", server.port);
    let server_key = client::fetch_server_key(&server.url(), CAPVER)
        .await
        .unwrap();

    // Garbage instead of HTTP, and an upgrade whose initiation is garbage.
    let mut garbage = tokio::net::TcpStream::connect(&address).await.unwrap();
    garbage.write_all(&[0xde; 300]).await.unwrap();
    assert!(
        closed_within(&mut garbage, WAIT).await,
        "garbage bytes: no close"
    );
    use base64::Engine as _;
    let bogus = base64::engine::general_purpose::STANDARD.encode([7u8; 101]);
    let mut upgrade = tokio::net::TcpStream::connect(&address).await.unwrap();
    upgrade
        .write_all(format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {bogus}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(
        closed_within(&mut upgrade, WAIT).await,
        "garbage initiation: no close"
    );

    // After a good handshake: an oversized Noise frame, and a cut HTTP/2 preface.
    let machine = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let mut noise = client::noise_connect(&server.url(), &machine, server_key, CAPVER)
        .await
        .unwrap();
    let raw = noise.get_mut();
    raw.write_all(&[4, 0xff, 0xff]).await.unwrap();
    raw.write_all(&[0u8; 5000]).await.unwrap();
    assert!(closed_within(raw, WAIT).await, "oversized frame: no close");
    let mut noise = client::noise_connect(&server.url(), &machine, server_key, CAPVER)
        .await
        .unwrap();
    noise
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04")
        .await
        .unwrap();
    noise.flush().await.unwrap();
    noise.get_mut().shutdown().await.unwrap();
    assert!(
        closed_within(noise.get_mut(), WAIT).await,
        "truncated HTTP/2: no close"
    );

    // A silent connection (never sends its upgrade) is held by nobody's expense, nor is
    // one that finishes the Noise handshake and never starts HTTP/2.
    let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut mute = client::noise_connect(&server.url(), &machine, server_key, CAPVER)
        .await
        .unwrap();

    // A client that stops reading its map stream while lots happens.
    let c = join(&server, &key, "stalled").await;
    let request = c.client.stream_request(&c.node_key, &c.disco_key, vec![]);
    let stalled = c.client.map_stream(&request).await.unwrap();
    for n in 0..40 {
        server.ok(&[
            "nodes",
            "rename",
            "-i",
            &b_id.to_string(),
            &format!("busy-{n}"),
        ]);
    }

    // Everyone else is still served.
    watch
        .until("bravo's last name", |n| {
            n.peers[&b_id].name.starts_with("busy-39.")
        })
        .await;
    b.client
        .lite_update(
            &b.node_key,
            vec!["198.51.100.9:1".into()],
            &b.disco_key,
            None,
        )
        .await
        .unwrap();
    watch
        .until("bravo's endpoints", |n| {
            n.peers[&b_id].endpoints == ["198.51.100.9:1"]
        })
        .await;
    let d = join(&server, &key, "delta").await;
    let (_watch_d, first_d) = Watch::open(&d).await;
    assert_eq!(first_d.peers.as_ref().map(Vec::len), Some(3));
    drop(stalled);
    assert!(
        closed_within(&mut silent, Duration::from_secs(15)).await,
        "a silent connection is never closed"
    );
    assert!(
        closed_within(mute.get_mut(), Duration::from_secs(5)).await,
        "a peer that never sends the HTTP/2 preface is never closed"
    );
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A registered node's id, from `nodes list`.
fn node_id(server: &TestServer, name: &str) -> u64 {
    server
        .json(&["nodes", "list"])
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in nodes list"))["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// `tailscale logout`: a register request with an expiry in the past.
async fn logout(machine: &Machine) -> headscale::tailcfg::RegisterResponse {
    machine
        .client
        .register(&RegisterRequest {
            version: CAPVER.into(),
            node_key: machine.node_key.clone(),
            expiry: Some("1970-01-01T00:02:03Z".into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

/// The hub's clocks and logout: an ephemeral node that reconnects within
/// `node.ephemeral.inactivity_timeout` is kept, one that stays away (or never connects) is
/// deleted by the system; logout deletes an ephemeral node and expires any other; a key
/// expiry that passes reaches peers as `Expired` with no admin action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_inactivity_logout_and_expiry_timers() {
    let server = TestServer::start_with(&format!(
        "{TUNING}node:\n  ephemeral:\n    inactivity_timeout: 2s\n"
    ));
    server.ok(&["users", "create", "alice"]);
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let ephemeral = server
        .ok(&[
            "preauthkeys",
            "create",
            "-u",
            "alice",
            "--reusable",
            "--ephemeral",
        ])
        .trim()
        .to_string();
    let a = join(&server, &key, "alpha").await;
    let (mut watch_a, _) = Watch::open(&a).await;

    // Away for less than the timeout, twice: kept.
    let e1 = join(&server, &ephemeral, "eph-one").await;
    let (watch, _) = Watch::open(&e1).await;
    let e1_id = id_of(&watch.netmap);
    watch_a
        .until("eph-one", |n| n.peers.contains_key(&e1_id))
        .await;
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let (again, _) = Watch::open(&e1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(again);
    }
    drop(watch);
    assert_eq!(
        node_id(&server, "eph-one"),
        e1_id,
        "kept while it came back in time"
    );
    // Now it stays away: deleted about 2 s after its last disconnect.
    let away = Instant::now();
    watch_a
        .until("the inactive ephemeral node to go", |n| {
            !n.peers.contains_key(&e1_id)
        })
        .await;
    let took = away.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "deleted after {took:?}"
    );
    println!(
        "inactive ephemeral node deleted {} ms after it left",
        took.as_millis()
    );
    let story = server.json(&["events", "list", "--node", &e1_id.to_string()]);
    let last = story.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "NodeDeleted", "{story}");
    assert_eq!(last["actor"], "system", "{story}");

    // Registered but never connected: deleted too.
    let e2 = join(&server, &ephemeral, "eph-two").await;
    let e2_id = node_id(&server, "eph-two");
    watch_a
        .until("eph-two", |n| n.peers.contains_key(&e2_id))
        .await;
    watch_a
        .until("the never-connected ephemeral node to go", |n| {
            !n.peers.contains_key(&e2_id)
        })
        .await;
    assert!(server
        .json(&["nodes", "list"])
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["id"] != e2_id.to_string().as_str()));
    drop(e2);

    // Logout: an ephemeral node is deleted at once, any other node expires.
    let e3 = join(&server, &ephemeral, "eph-three").await;
    let (_w3, _) = Watch::open(&e3).await;
    let e3_id = node_id(&server, "eph-three");
    watch_a
        .until("eph-three online", |n| {
            n.peers.get(&e3_id).is_some_and(|p| p.online == Some(true))
        })
        .await;
    let answer = logout(&e3).await;
    assert!(answer.node_key_expired, "{answer:?}");
    watch_a
        .until("the logged-out ephemeral node to go", |n| {
            !n.peers.contains_key(&e3_id)
        })
        .await;
    let b = join(&server, &key, "bravo").await;
    let b_id = node_id(&server, "bravo");
    let answer = logout(&b).await;
    assert!(answer.node_key_expired, "{answer:?}");
    watch_a
        .until("bravo expired", |n| {
            n.peers.get(&b_id).is_some_and(|p| p.expired)
        })
        .await;
    let listed = server.json(&["nodes", "list"]);
    let bravo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "bravo")
        .unwrap();
    assert_eq!(bravo["expired"], true, "{bravo}");

    // A scheduled expiry passes: peers are told, with no event and no admin.
    let c = join(&server, &key, "charlie").await;
    let c_id = node_id(&server, "charlie");
    watch_a
        .until("charlie", |n| n.peers.contains_key(&c_id))
        .await;
    let at = (std::time::SystemTime::now() + Duration::from_secs(2))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = headscale::core::time::Timestamp(at as i64 * 1000).to_rfc3339();
    server.ok(&["nodes", "expire", "-i", &c_id.to_string(), "--expiry", &at]);
    watch_a
        .until("charlie's new expiry", |n| {
            n.peers[&c_id].key_expiry.as_deref() == Some(at.as_str())
        })
        .await;
    assert!(!watch_a.netmap.peers[&c_id].expired);
    let seq_before = server.json(&["events", "list"]).as_array().unwrap().len();
    watch_a
        .until("charlie expired", |n| n.peers[&c_id].expired)
        .await;
    let seq_after = server.json(&["events", "list"]).as_array().unwrap().len();
    assert_eq!(seq_before, seq_after, "expiry passing appends nothing");
    drop(c);
    assert!(!server.log().contains("panicked"));
}

/// The policy decides who sees whom and what each node accepts, live: `autogroup:self`
/// keeps users apart (filters name only the user's own nodes), a policy edit brings the
/// other user's node in as a delta, and an invalid policy is refused with the old one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_decides_peers_and_filters_live() {
    let server = TestServer::start_with(TUNING);
    for user in ["alice", "bob"] {
        server.ok(&["users", "create", user]);
    }
    let key = |user: &str| server.pre_auth_key(user, &["--reusable"]);
    let (alice_key, bob_key) = (key("alice"), key("bob"));
    let policy_file = |name: &str, text: &str| {
        let path = server.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let own_only = policy_file(
        "self.hujson",
        "// users see only their own devices\n{\"acls\": [{\"action\": \"accept\", \
         \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self:*\"],},],}\n",
    );
    server.ok(&["policy", "set", "-f", &own_only]);

    let a1 = join(&server, &alice_key, "a-one").await;
    let a2 = join(&server, &alice_key, "a-two").await;
    let b1 = join(&server, &bob_key, "b-one").await;
    let (mut watch_a1, first) = Watch::open(&a1).await;
    let (mut watch_b1, first_b) = Watch::open(&b1).await;
    let (_watch_a2, first_a2) = Watch::open(&a2).await;
    let a2_id = first_a2.node.as_ref().unwrap().id;
    let b1_id = first_b.node.as_ref().unwrap().id;
    let a2_addresses = first_a2.node.as_ref().unwrap().addresses.clone();
    assert!(
        first.peers.as_ref().is_some_and(|p| p.len() == 1),
        "alice sees only a-two"
    );
    assert_eq!(
        watch_a1.netmap.peers.keys().copied().collect::<Vec<_>>(),
        [a2_id]
    );
    assert!(watch_b1.netmap.peers.is_empty(), "bob sees nobody");
    let filter = serde_json::to_string(&watch_a1.netmap.packet_filters["base"]).unwrap();
    let a2_ip = a2_addresses[0].split('/').next().unwrap();
    assert!(filter.contains(a2_ip), "{filter}");
    let b1_addresses = first_b.node.as_ref().unwrap().addresses.clone();
    let b1_ip = b1_addresses[0].split('/').next().unwrap();
    assert!(!filter.contains(b1_ip), "{filter}");
    let bob_filter = serde_json::to_string(&watch_b1.netmap.packet_filters["base"]).unwrap();
    let a1_addresses = first.node.as_ref().unwrap().addresses.clone();
    let a1_ip = a1_addresses[0].split('/').next().unwrap();
    assert!(
        !bob_filter.contains(a1_ip),
        "bob accepts nothing from alice: {bob_filter}"
    );

    // Invalid: refused with a line that names the entry; the policy in force stays.
    let bad = policy_file(
        "bad.hujson",
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"tag:ghost\"], \"dst\": [\"*:*\"]}]}",
    );
    let out = server.cli(&["policy", "set", "-f", &bad]);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("tag not found: \"tag:ghost\""), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(server.ok(&["policy", "get"]).contains("autogroup:self"));

    // Everyone may reach bob's node on 22: it joins alice's peers as a delta.
    let open = policy_file(
        "open.hujson",
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:member\"], \
         \"dst\": [\"autogroup:self:*\"]}, {\"action\": \"accept\", \"src\": [\"alice@\"], \
         \"dst\": [\"bob@:22\"]}]}",
    );
    let edited = Instant::now();
    server.ok(&["policy", "set", "-f", &open]);
    let seen = watch_a1
        .until("b-one as a peer", |n| n.peers.contains_key(&b1_id))
        .await;
    println!(
        "policy edit reached a viewer in {} ms",
        edited.elapsed().as_millis()
    );
    assert!(
        seen.iter().all(|m| m.peers.is_none()),
        "a delta, not a full peer list"
    );
    watch_b1
        .until("bob's filter to accept alice on 22", |n| {
            serde_json::to_string(&n.packet_filters["base"])
                .unwrap()
                .contains("\"First\":22")
        })
        .await;
    assert!(
        watch_b1.netmap.peers.len() == 2,
        "bob now sees both of alice's nodes"
    );
    assert!(!server.log().contains("panicked"));
}

/// HA subnet routers: one primary per subnet among the online routers; when it goes
/// offline the standby takes over, and it does not take the subnet back when it returns.
/// An approved exit node's default routes are in its `AllowedIPs`, never `PrimaryRoutes`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_subnet_routers_fail_over_without_flap_back() {
    let (server, key) = start();
    let subnet = "10.9.0.0/24";
    let watcher = join(&server, &key, "watcher").await;
    let r1 = join_with_routes(&server, &key, "router-one", &[subnet]).await;
    let r2 = join_with_routes(&server, &key, "router-two", &[subnet]).await;
    let exit = join_with_routes(&server, &key, "exit", &["0.0.0.0/0", "::/0"]).await;
    let enabled = server.ok(&["routes", "enable", "--route", subnet]);
    assert!(
        enabled.contains("router-one") && enabled.contains("router-two"),
        "{enabled}"
    );
    server.ok(&["routes", "enable", "--route", "0.0.0.0/0"]);
    let (mut watch, _) = Watch::open(&watcher).await;
    let (w1, first1) = Watch::open(&r1).await;
    let (_w2, first2) = Watch::open(&r2).await;
    let (_we, first_exit) = Watch::open(&exit).await;
    let (id1, id2, exit_id) = (
        first1.node.as_ref().unwrap().id,
        first2.node.as_ref().unwrap().id,
        first_exit.node.as_ref().unwrap().id,
    );
    let primary = |n: &Netmap, id: u64| {
        n.peers
            .get(&id)
            .is_some_and(|p| p.primary_routes == [subnet])
    };
    watch
        .until("router-one primary", |n| {
            primary(n, id1) && !primary(n, id2)
        })
        .await;
    assert!(watch.netmap.peers[&id1]
        .allowed_ips
        .contains(&subnet.to_string()));
    assert!(!watch.netmap.peers[&id2]
        .allowed_ips
        .contains(&subnet.to_string()));
    watch
        .until("the exit node's default routes", |n| {
            n.peers.get(&exit_id).is_some_and(|p| {
                p.allowed_ips.contains(&"0.0.0.0/0".to_string())
                    && p.allowed_ips.contains(&"::/0".to_string())
                    && p.primary_routes.is_empty()
            })
        })
        .await;

    // The primary goes away: after the offline grace the standby carries the subnet.
    drop(w1);
    let gone = Instant::now();
    watch
        .until("router-two to take over", |n| {
            primary(n, id2) && !primary(n, id1)
        })
        .await;
    println!(
        "failover after {} ms (offline grace 1 s)",
        gone.elapsed().as_millis()
    );
    // It comes back: router-two keeps the subnet.
    let (_w1, _) = Watch::open(&r1).await;
    watch
        .until("router-one online again", |n| {
            n.peers[&id1].online == Some(true)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = tokio::time::timeout(Duration::from_millis(300), watch.next()).await;
    assert!(
        primary(&watch.netmap, id2) && !primary(&watch.netmap, id1),
        "flap-back"
    );

    // A policy that does not let the watcher use the subnet hides it from the watcher's
    // view of the router; allowing it brings it back.
    let write = |name: &str, text: &str| {
        let path = server.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let members =
        r#"{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:member:*"]}"#;
    let closed = write("closed.hujson", &format!(r#"{{"acls": [{members}]}}"#));
    server.ok(&["policy", "set", "-f", &closed]);
    watch
        .until("the subnet hidden from the watcher", |n| {
            n.peers.get(&id2).is_some_and(|p| {
                p.primary_routes.is_empty() && !p.allowed_ips.contains(&subnet.to_string())
            })
        })
        .await;
    let open = write(
        "open.hujson",
        &format!(
            r#"{{"acls": [{members}, {{"action": "accept", "src": ["autogroup:member"], "dst": ["{subnet}:*"]}}]}}"#
        ),
    );
    server.ok(&["policy", "set", "-f", &open]);
    watch
        .until("the subnet visible again", |n| primary(n, id2))
        .await;
    assert!(!server.log().contains("panicked"));
}

/// `autoApprovers` approve announced routes with no admin: at registration (a subnet under
/// an approved prefix for a tag, exit routes for a user), and when a policy change covers
/// routes already announced; what they do not cover stays unapproved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approvers_at_registration_and_policy_change() {
    let server = TestServer::start_with(TUNING);
    server.ok(&["users", "create", "alice"]);
    let write = |name: &str, text: &str| {
        let path = server.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let first = write(
        "first.hujson",
        r#"{"tagOwners": {"tag:router": ["alice@"]},
            "autoApprovers": {"routes": {"10.20.0.0/16": ["tag:router"]}, "exitNode": ["alice@"]},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    );
    server.ok(&["policy", "set", "-f", &first]);
    let tagged = server
        .ok(&[
            "preauthkeys",
            "create",
            "-u",
            "alice",
            "--tags",
            "tag:router",
        ])
        .trim()
        .to_string();
    let plain = server.pre_auth_key("alice", &["--reusable"]);
    join_with_routes(
        &server,
        &tagged,
        "router",
        &["10.20.1.0/24", "10.40.0.0/24"],
    )
    .await;
    join_with_routes(&server, &plain, "exit", &["0.0.0.0/0", "::/0"]).await;
    join_with_routes(&server, &plain, "laptop", &["10.30.0.0/24"]).await;
    let approved = |name: &str| -> Vec<String> {
        let nodes = server.json(&["nodes", "list"]);
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .unwrap()
            .clone();
        let mut routes: Vec<String> = node["approvedRoutes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        routes.sort();
        routes
    };
    assert_eq!(
        approved("router"),
        ["10.20.1.0/24"],
        "only the covered subnet"
    );
    assert_eq!(approved("exit"), ["0.0.0.0/0", "::/0"]);
    assert!(approved("laptop").is_empty());

    // A policy change that covers the laptop's subnet approves it at once.
    let second = write(
        "second.hujson",
        r#"{"tagOwners": {"tag:router": ["alice@"]},
            "autoApprovers": {"routes": {"10.20.0.0/16": ["tag:router"], "10.30.0.0/16": ["alice@"]}},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    );
    server.ok(&["policy", "set", "-f", &second]);
    assert_eq!(approved("laptop"), ["10.30.0.0/24"]);
    let story = server.json(&["events", "list", "--type", "RoutesApproved"]);
    assert_eq!(story.as_array().unwrap().len(), 1, "{story}");
    assert!(!server.log().contains("panicked"));
}
