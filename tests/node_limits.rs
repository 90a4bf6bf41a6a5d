//! What a node or an anonymous client can send, against the real server binary through our
//! own control client: registrations over the named limits (`core::limits`) are refused with
//! a readable error, map requests over them are cut, and what peers receive stays within
//! them; hostinfo events are rate-limited per node (latest wins); full-map and stream-reopen
//! floods get 429 while other nodes' deltas keep flowing; pending interactive logins are
//! bounded per source and per machine and are never evicted by a flood.

mod common;

use common::{join, Machine, TestServer, CLIENT_CAPVER};
use headscale::client::{self, ClientError, ControlClient, MapStream, Netmap};
use headscale::core::limits;
use headscale::tailcfg::{Hostinfo, RegisterAuth, RegisterRequest};
use serde_json::json;
use std::time::{Duration, Instant};

const TUNING: &str =
    "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n  node_offline_grace: 1s\n";
const WAIT: Duration = Duration::from_secs(15);

fn start() -> (TestServer, String) {
    let server = TestServer::start_with(TUNING);
    server.ok(&["users", "create", "alice"]);
    let key = server.pre_auth_key("alice", &["--reusable"]);
    (server, key)
}

/// A map stream and what its client believes.
struct Watch {
    stream: MapStream,
    netmap: Netmap,
}

impl Watch {
    async fn open(machine: &Machine) -> Watch {
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
        watch.next().await;
        watch
    }

    async fn next(&mut self) {
        let message = self.stream.next_within(WAIT).await.unwrap().unwrap();
        self.netmap.apply(&message.response).unwrap();
    }

    /// Applies messages until `done` holds for the netmap.
    async fn until(&mut self, what: &str, done: impl Fn(&Netmap) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.netmap) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.next().await;
        }
    }
}

async fn anonymous(server: &TestServer) -> ControlClient {
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    ControlClient::connect(&server.url(), machine, CLIENT_CAPVER)
        .await
        .unwrap()
}

fn register_request(auth_key: Option<&str>, hostinfo: Hostinfo) -> RegisterRequest {
    RegisterRequest {
        version: CLIENT_CAPVER.into(),
        node_key: client::random_key("nodekey:").0,
        auth: auth_key.map(|k| RegisterAuth { auth_key: k.into() }),
        hostinfo: Some(hostinfo),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_registrations_are_refused_with_the_field_named() {
    let (server, key) = start();
    let base = || Hostinfo {
        hostname: "box".into(),
        os: "linux".into(),
        ..Default::default()
    };
    let cases: Vec<(&str, Hostinfo)> = vec![
        (
            "Hostname",
            Hostinfo {
                hostname: "h".repeat(limits::MAX_HOSTNAME_BYTES + 1),
                ..base()
            },
        ),
        (
            "OSVersion",
            Hostinfo {
                os_version: "v".repeat(limits::MAX_SHORT_STRING_BYTES + 1),
                ..base()
            },
        ),
        (
            "RequestTags",
            Hostinfo {
                request_tags: Some(
                    (0..=limits::MAX_TAGS)
                        .map(|i| format!("tag:t{i}"))
                        .collect(),
                ),
                ..base()
            },
        ),
        (
            "sshHostKeys",
            Hostinfo {
                ssh_host_keys: Some(vec![String::new(); 10_000]),
                ..base()
            },
        ),
        (
            "RoutableIPs",
            Hostinfo {
                routable_ips: Some(
                    (0..=limits::MAX_ROUTES)
                        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
                        .collect(),
                ),
                ..base()
            },
        ),
    ];
    let client = anonymous(&server).await;
    for (field, hostinfo) in cases {
        // With a valid key (nothing recorded) and without one (no pending login kept).
        for auth in [Some(key.as_str()), None] {
            let answer = client
                .register(&register_request(auth, hostinfo.clone()))
                .await
                .unwrap();
            assert!(
                answer.error.contains(field) && answer.error.contains("at most"),
                "{field}: {:?}",
                answer.error
            );
            assert!(answer.auth_url.is_empty());
        }
    }
    assert!(server.nodes().is_empty(), "nothing was registered");
    // Within the limits the same client registers.
    let answer = client
        .register(&register_request(Some(&key), base()))
        .await
        .unwrap();
    assert!(answer.error.is_empty(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_map_requests_are_cut_and_peers_get_at_most_the_limits() {
    let (server, key) = start();
    let viewer = join(&server, &key, "viewer").await;
    let noisy = join(&server, &key, "noisy").await;
    let mut watch = Watch::open(&viewer).await;
    watch.until("the noisy peer", |n| !n.peers.is_empty()).await;

    let hostname = format!("noisy{}", "x".repeat(1000));
    let endpoints: Vec<String> = std::iter::once("not an endpoint".to_string())
        .chain((0..500).map(|i| format!("192.0.2.7:{}", 1000 + i)))
        .collect();
    let hostinfo = json!({
        "Hostname": hostname,
        "OS": "linux",
        "RequestTags": (0..200).map(|i| format!("tag:t{i}")).collect::<Vec<_>>(),
        "sshHostKeys": (0..100).map(|i| format!("ssh-ed25519 AAAA{i}")).collect::<Vec<_>>(),
        "RoutableIPs": (0..3000).map(|i| format!("10.{}.{}.0/24", i / 256, i % 256)).collect::<Vec<_>>(),
        "NetInfo": {"PreferredDERP": 1},
    });
    noisy
        .client
        .lite_update(&noisy.node_key, endpoints, &noisy.disco_key, Some(hostinfo))
        .await
        .unwrap();

    watch
        .until("the noisy peer's new endpoints", |n| {
            n.peers.values().any(|p| p.endpoints.len() > 1)
        })
        .await;
    let peer = watch
        .netmap
        .peers
        .values()
        .find(|p| p.endpoints.len() > 1)
        .unwrap();
    assert_eq!(peer.endpoints.len(), limits::MAX_ENDPOINTS);
    assert!(peer.endpoints.iter().all(|e| e.starts_with("192.0.2.7:")));
    let shown = serde_json::to_vec(&peer.hostinfo).unwrap();
    assert!(
        shown.len() <= limits::MAX_HOSTINFO_JSON_BYTES,
        "{}",
        shown.len()
    );
    let shown_name = peer.hostinfo["Hostname"].as_str().unwrap_or_default();
    assert!(
        shown_name.len() <= limits::MAX_HOSTNAME_BYTES,
        "{}",
        shown_name.len()
    );
    assert!(shown_name.starts_with("noisy"));
    for (field, limit) in [
        ("RequestTags", limits::MAX_TAGS),
        ("sshHostKeys", limits::MAX_SSH_HOST_KEYS),
        ("RoutableIPs", limits::MAX_ROUTES),
    ] {
        let count = peer.hostinfo[field].as_array().map_or(0, Vec::len);
        assert!(count <= limit, "{field}: {count}");
    }

    // The recorded facts are within the limits too.
    let deadline = Instant::now() + WAIT;
    loop {
        let nodes = server.nodes();
        let noisy = nodes
            .iter()
            .find(|n| n["name"].as_str().is_some_and(|h| h.starts_with("noisy")))
            .unwrap_or_else(|| panic!("no noisy node in {nodes:?}"));
        let name = noisy["name"].as_str().unwrap();
        if name.len() > 10 {
            assert!(name.len() <= limits::MAX_HOSTNAME_BYTES, "{}", name.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hostinfo never recorded: {noisy}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `NodeHostinfoChanged` events recorded for node `id`.
fn hostinfo_events(server: &TestServer, id: u64) -> usize {
    let story = server.json(&["events", "list", "--node", &id.to_string()]);
    story
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "NodeHostinfoChanged")
        .count()
}

/// The recorded hostname (`name` in `nodes list`) of node `id`.
fn recorded_name(server: &TestServer, id: u64) -> String {
    let nodes = server.nodes();
    let node = nodes
        .iter()
        .find(|n| n["id"].as_str() == Some(&id.to_string()) || n["id"].as_u64() == Some(id));
    node.and_then(|n| n["name"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_hostname_adds_a_bounded_number_of_events_and_the_latest_wins() {
    let (server, key) = start();
    let viewer = join(&server, &key, "viewer").await;
    let flapper = join(&server, &key, "flapper").await;
    let mut watch = Watch::open(&viewer).await;
    watch.until("the flapper", |n| !n.peers.is_empty()).await;
    let id = *watch.netmap.peers.keys().next().unwrap();
    let before = hostinfo_events(&server, id);

    let started = Instant::now();
    for i in 0..1000 {
        let name = if i == 999 {
            "flap-final".to_string()
        } else {
            format!("flap-{}", i % 2)
        };
        let hostinfo = json!({"Hostname": name, "OS": "linux"});
        flapper
            .client
            .lite_update(
                &flapper.node_key,
                vec!["192.0.2.8:41641".into()],
                &flapper.disco_key,
                Some(hostinfo),
            )
            .await
            .unwrap();
    }
    // Peers see the newest hostname from presence (coalesced, not rate-limited by the log).
    watch
        .until("the latest hostname", |n| {
            n.peers
                .get(&id)
                .is_some_and(|p| p.hostinfo["Hostname"] == "flap-final")
        })
        .await;
    // The recorded facts catch up within one refill period.
    let deadline = Instant::now() + Duration::from_secs(limits::HOSTINFO_EVENT_PERIOD_SECS + 10);
    while recorded_name(&server, id) != "flap-final" {
        assert!(
            Instant::now() < deadline,
            "the latest hostname was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed().as_secs();
    let added = hostinfo_events(&server, id) - before;
    eprintln!("{added} hostinfo events for 1000 hostname changes in {elapsed} s");
    let allowed =
        limits::HOSTINFO_EVENT_BURST as u64 + elapsed / limits::HOSTINFO_EVENT_PERIOD_SECS + 1;
    assert!(
        added as u64 <= allowed,
        "{added} events in {elapsed} s (at most {allowed})"
    );
    assert!(added >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_map_and_stream_reopen_floods_get_429_while_other_deltas_flow() {
    let (server, key) = start();
    let viewer = join(&server, &key, "viewer").await;
    let other = join(&server, &key, "other").await;
    let flooder = join(&server, &key, "flooder").await;
    let mut watch = Watch::open(&viewer).await;
    watch.until("both peers", |n| n.peers.len() == 2).await;

    // Non-streaming full maps.
    let mut one_shot = flooder
        .client
        .stream_request(&flooder.node_key, &flooder.disco_key, vec![]);
    one_shot.stream = false;
    let started = Instant::now();
    let (mut served, mut refused) = (0u64, 0u64);
    for _ in 0..20 {
        match flooder.client.map_stream(&one_shot).await {
            Ok(_) => served += 1,
            Err(error) if is_status(&error, 429) => refused += 1,
            Err(error) => panic!("{error}"),
        }
    }
    let allowed = u64::from(limits::FULL_MAP_BURST)
        + started.elapsed().as_secs() / limits::FULL_MAP_PERIOD_SECS
        + 1;
    assert!(
        served >= 1 && served <= allowed,
        "{served} full maps served"
    );
    assert!(refused >= 20 - allowed, "{refused} refused");

    // Stream (re)opens; each new stream replaces the previous one.
    let streaming = flooder
        .client
        .stream_request(&flooder.node_key, &flooder.disco_key, vec![]);
    let started = Instant::now();
    let (mut opened, mut refused) = (0u64, 0u64);
    let mut streams = Vec::new();
    for _ in 0..40 {
        match flooder.client.map_stream(&streaming).await {
            Ok(stream) => {
                opened += 1;
                streams.push(stream);
            }
            Err(error) if is_status(&error, 429) => refused += 1,
            Err(error) => panic!("{error}"),
        }
    }
    let allowed = u64::from(limits::STREAM_OPEN_BURST)
        + started.elapsed().as_secs() / limits::STREAM_OPEN_PERIOD_SECS
        + 1;
    assert!(opened >= 1 && opened <= allowed, "{opened} streams opened");
    assert!(refused >= 40 - allowed, "{refused} refused");

    // Meanwhile another node's change reaches the viewer.
    other
        .client
        .lite_update(
            &other.node_key,
            vec!["198.51.100.9:41641".into()],
            &other.disco_key,
            None,
        )
        .await
        .unwrap();
    watch
        .until("the other node's new endpoint", |n| {
            n.peers
                .values()
                .any(|p| p.endpoints.iter().any(|e| e == "198.51.100.9:41641"))
        })
        .await;
    // The viewer's own stream is unaffected by the flooder's budget.
    let again = viewer
        .client
        .stream_request(&viewer.node_key, &viewer.disco_key, vec![]);
    assert!(viewer.client.map_stream(&again).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_floods_are_coalesced_and_the_newest_endpoints_win() {
    let (server, key) = start();
    let viewer = join(&server, &key, "viewer").await;
    let chatty = join(&server, &key, "chatty").await;
    let mut watch = Watch::open(&viewer).await;
    watch
        .until("the chatty peer", |n| !n.peers.is_empty())
        .await;
    let id = *watch.netmap.peers.keys().next().unwrap();

    // 300 endpoint changes as fast as one connection sends them, the viewer reading along.
    let sender = tokio::spawn(async move {
        for i in 0..300u32 {
            let endpoint = format!("203.0.113.5:{}", 10_000 + i);
            chatty
                .client
                .lite_update(&chatty.node_key, vec![endpoint], &chatty.disco_key, None)
                .await
                .unwrap();
        }
        chatty
    });
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let last = "203.0.113.5:10299".to_string();
    while !seen.contains(&last) {
        assert!(
            started.elapsed() < WAIT,
            "the newest endpoint never arrived"
        );
        watch.next().await;
        if let Some(peer) = watch.netmap.peers.get(&id) {
            seen.extend(peer.endpoints.iter().cloned());
        }
    }
    let _chatty = sender.await.unwrap();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let allowed = elapsed_ms / limits::PRESENCE_UPDATE_PERIOD_MS + 2;
    eprintln!(
        "{} distinct endpoint sets seen of 300 in {elapsed_ms} ms",
        seen.len()
    );
    assert!(
        (seen.len() as u64) <= allowed,
        "{} presence updates in {elapsed_ms} ms (at most {allowed})",
        seen.len()
    );
}

/// The registration id at the end of an AuthURL.
fn registration_id(answer: &headscale::tailcfg::RegisterResponse) -> String {
    assert!(answer.error.is_empty(), "{answer:?}");
    answer.auth_url.rsplit('/').next().unwrap().to_string()
}

fn interactive(node_key: &str, hostname: &str) -> RegisterRequest {
    RegisterRequest {
        version: CLIENT_CAPVER.into(),
        node_key: node_key.into(),
        hostinfo: Some(Hostinfo {
            hostname: hostname.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_login_flood_is_refused_and_evicts_no_genuine_login() {
    let (server, _key) = start();
    let genuine = anonymous(&server).await;
    let genuine_key = client::random_key("nodekey:").0;
    let first = genuine
        .register(&interactive(&genuine_key, "genuine"))
        .await
        .unwrap();
    let id = registration_id(&first);

    // A flood from one source: fresh machines, fresh node keys (the test's connections all
    // come from 127.0.0.1, one source).
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..10 {
        let flooder = anonymous(&server).await;
        for _ in 0..limits::MAX_PENDING_LOGINS_PER_MACHINE {
            let answer = flooder
                .register(&interactive(&client::random_key("nodekey:").0, "flood"))
                .await
                .unwrap();
            if answer.auth_url.is_empty() {
                assert!(answer.error.contains("too many logins"), "{answer:?}");
                refused += 1;
            } else {
                accepted += 1;
            }
        }
    }
    assert_eq!(
        accepted,
        limits::MAX_PENDING_LOGINS_PER_SOURCE - 1,
        "the genuine one counts too"
    );
    assert_eq!(
        refused,
        10 * limits::MAX_PENDING_LOGINS_PER_MACHINE - accepted
    );

    // One machine: at most 4 at once.
    let busy = anonymous(&server).await;
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(
            busy.register(&interactive(&client::random_key("nodekey:").0, "busy"))
                .await
                .unwrap(),
        );
    }
    assert!(
        answers.iter().all(|a| a.auth_url.is_empty()),
        "the source is full already"
    );

    // The genuine login is still there: its owner's follow-up is answered once approved.
    let follow_key = genuine_key.clone();
    let url = first.auth_url.clone();
    let waiting = tokio::spawn(async move {
        let mut request = interactive(&follow_key, "genuine");
        request.followup = url;
        genuine.register(&request).await.unwrap()
    });
    server.ok(&["nodes", "register", "--user", "alice", "--key", &id]);
    let answer = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(
        answer.error.is_empty() && answer.machine_authorized,
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_key_pending_elsewhere_is_refused_and_followups_are_bound_to_the_machine() {
    let (server, _key) = start();
    let victim = anonymous(&server).await;
    let victim_key = client::random_key("nodekey:").0;
    let first = victim
        .register(&interactive(&victim_key, "victim"))
        .await
        .unwrap();
    let id = registration_id(&first);

    // Another machine asks for a login with the victim's node key (read off the page or a
    // netmap): refused, so approving "by node key" can only ever mean the victim's login.
    let attacker = anonymous(&server).await;
    let copy = attacker
        .register(&interactive(&victim_key, "victim"))
        .await
        .unwrap();
    assert!(copy.auth_url.is_empty());
    assert!(
        copy.error
            .contains("already waiting for approval from another machine"),
        "{copy:?}"
    );
    // Nor does the attacker learn anything by presenting the victim's URL.
    let mut spy = interactive(&client::random_key("nodekey:").0, "spy");
    spy.followup = first.auth_url.clone();
    let spied = attacker.register(&spy).await.unwrap();
    assert!(
        spied.auth_url.is_empty() && !spied.error.is_empty(),
        "{spied:?}"
    );

    // The public page opens by id only, and shows where the login came from.
    let (status, _) = common::http(server.port, "GET", &format!("/register/{victim_key}"), None);
    assert_eq!(status, 404, "a node key must not reveal the registration");
    let page = reqwest_page(server.port, &id);
    assert!(page.contains("127.0.0.1"), "{page}");
    assert!(page.contains(&victim.machine_key().short()), "{page}");

    // Approval by node key finds exactly the victim's login.
    server.ok(&["nodes", "register", "--user", "alice", "--key", &victim_key]);
    let nodes = server.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["machineKey"], victim.machine_key().to_string());

    // A follow-up that arrives after the approval gets the outcome, not "expired" (P10).
    let mut late = interactive(&victim_key, "victim");
    late.followup = first.auth_url.clone();
    let answer = victim.register(&late).await.unwrap();
    assert!(
        answer.error.is_empty() && answer.machine_authorized,
        "{answer:?}"
    );
}

/// The body of `GET /register/<id>` (plain HTTP/1.0 on the test server's port).
fn reqwest_page(port: u16, id: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /register/{id} HTTP/1.0\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
        "{out}"
    );
    out
}

/// `ClientError::Status` with this status.
fn is_status(error: &ClientError, code: u16) -> bool {
    matches!(error, ClientError::Status { status, .. } if *status == code)
}
