//! Presence shared between instances (issue #15): full `headscale serve` instances on one
//! PostgreSQL database, nodes driven by our own control client. A node streaming to one
//! instance is online, with its endpoints, on the others; when its instance dies it goes
//! offline there within `ha.presence_ttl` (and comes back when it reconnects elsewhere);
//! an ephemeral node held elsewhere is not deleted; and none of it touches the event log.

mod common;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;

use common::{TestServer, CLIENT_CAPVER};
use headscale::client::{self, ControlClient, MapStream, Netmap};
use headscale::tailcfg::{RegisterAuth, RegisterRequest};
use pg_cluster::PgCluster;
use std::time::{Duration, Instant};
use x25519_dalek::StaticSecret;

const TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(15);

/// An instance named `name` on `cluster`; the second and later ones share the first's
/// Noise key and checkpoint signing key (`first`), as instances of one deployment must.
fn instance(
    cluster: &PgCluster,
    name: &str,
    first: Option<&TestServer>,
    extra: &str,
) -> TestServer {
    let mut server = TestServer::on_database(
        &cluster.database_yaml(),
        &format!(
            "tuning:\n  batch_change_delay: 50ms\n  node_offline_grace: 1s\n\
             ha:\n  instance_name: {name}\n  presence_ttl: 2s\n  heartbeat_interval: 500ms\n  poll_interval: 500ms\n\
             {extra}"
        ),
    );
    if let Some(first) = first {
        let data = server.data_dir();
        std::fs::create_dir_all(&data).unwrap();
        for file in ["noise_private.key", "checkpoint_signing.key"] {
            std::fs::copy(first.data_dir().join(file), data.join(file)).unwrap();
        }
    }
    server.spawn();
    server.wait_healthy();
    server
}

/// A registered node: its machine key (to connect to any instance) and its keys.
struct Node {
    machine: StaticSecret,
    node_key: String,
    disco_key: String,
}

async fn connect(server: &TestServer, machine: &StaticSecret) -> ControlClient {
    ControlClient::connect(&server.url(), machine.clone(), CLIENT_CAPVER)
        .await
        .unwrap()
}

async fn register(server: &TestServer, auth_key: &str, hostname: &str) -> Node {
    let machine = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let (node_key, _) = client::random_key("nodekey:");
    let (disco_key, _) = client::random_key("discokey:");
    let answer = connect(server, &machine)
        .await
        .register(&RegisterRequest {
            version: CLIENT_CAPVER.into(),
            node_key: node_key.clone(),
            auth: Some(RegisterAuth {
                auth_key: auth_key.into(),
            }),
            hostinfo: Some(headscale::tailcfg::Hostinfo {
                hostname: hostname.into(),
                os: "linux".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(answer.machine_authorized, "{answer:?}");
    Node {
        machine,
        node_key,
        disco_key,
    }
}

/// A map stream held against one instance, and what its client believes.
struct Watch {
    _client: ControlClient,
    stream: MapStream,
    netmap: Netmap,
}

impl Watch {
    async fn open(server: &TestServer, node: &Node, endpoint: &str) -> Watch {
        let client = connect(server, &node.machine).await;
        let request = client.stream_request(&node.node_key, &node.disco_key, vec![endpoint.into()]);
        let stream = client.map_stream(&request).await.unwrap();
        let mut watch = Watch {
            _client: client,
            stream,
            netmap: Netmap::new(),
        };
        watch.next().await;
        watch
    }

    async fn next(&mut self) {
        let message = self
            .stream
            .next_within(WAIT)
            .await
            .expect("a message")
            .unwrap();
        self.netmap.apply(&message.response).unwrap();
    }

    /// Applies messages until `done` holds; panics after `WAIT`.
    async fn until(&mut self, what: &str, done: impl Fn(&Netmap) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.netmap) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.next().await;
        }
    }

    /// Applies messages for `span`, asserting `holds` after each.
    async fn keeps(&mut self, span: Duration, what: &str, holds: impl Fn(&Netmap) -> bool) {
        let end = tokio::time::Instant::now() + span;
        loop {
            assert!(holds(&self.netmap), "{what} stopped holding");
            match tokio::time::timeout_at(end, self.stream.next()).await {
                Err(_) => return,
                Ok(message) => {
                    let message = message.expect("the stream stays open").unwrap();
                    self.netmap.apply(&message.response).unwrap();
                }
            }
        }
    }
}

fn peer_online(netmap: &Netmap, name: &str) -> Option<bool> {
    netmap.peer_named(&fqdn(name)).and_then(|p| p.online)
}

fn fqdn(name: &str) -> String {
    format!("{name}.tailnet.example")
}

fn has_endpoint(netmap: &Netmap, name: &str, endpoint: &str) -> bool {
    netmap
        .peer_named(&fqdn(name))
        .is_some_and(|p| p.endpoints.iter().any(|e| e == endpoint))
}

/// The `online` flag of the node named `name` in `nodes list`.
fn listed_online(server: &TestServer, name: &str) -> Option<bool> {
    server
        .nodes()
        .iter()
        .find(|n| n["name"] == name || n["givenName"] == name)
        .map(|n| n["online"].as_bool().unwrap_or(false))
}

/// Polls `check` until it holds, for at most `WAIT`.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn event_count(server: &TestServer) -> usize {
    server
        .json(&["events", "list"])
        .as_array()
        .expect("a list of events")
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_follows_nodes_across_instances_and_their_deaths() {
    let cluster = PgCluster::start();
    let mut a = instance(&cluster, "a", None, "");
    let b = instance(&cluster, "b", Some(&a), "");
    a.ok(&["users", "create", "alice"]);
    let key = a.pre_auth_key("alice", &["--reusable"]);
    let one = register(&a, &key, "one").await;
    let two = register(&a, &key, "two").await;

    // (a) One streams to A, two to B: each instance shows the other's node online, and
    // two's map shows one online with the endpoint it reported to A.
    let watch_one = Watch::open(&a, &one, "192.0.2.1:41641").await;
    let mut watch_two = Watch::open(&b, &two, "192.0.2.2:41641").await;
    watch_two
        .until("one online, with its endpoint, in two's map", |n| {
            peer_online(n, "one") == Some(true) && has_endpoint(n, "one", "192.0.2.1:41641")
        })
        .await;
    eventually("one online in B's node list", || {
        listed_online(&b, "one") == Some(true)
    });
    eventually("two online in A's node list", || {
        listed_online(&a, "two") == Some(true)
    });
    let events_before = event_count(&b);

    // (b) A dies: on B, one goes offline within the TTL (plus a poll and slack) and two's
    // stream gets the delta.
    let killed = Instant::now();
    a.kill();
    drop(watch_one);
    watch_two
        .until("one offline in two's map", |n| {
            peer_online(n, "one") == Some(false)
        })
        .await;
    let took = killed.elapsed();
    eprintln!("kill → offline on the survivor: {took:?}");
    assert!(took < TTL + Duration::from_secs(3), "took {took:?}");
    assert_eq!(listed_online(&b, "one"), Some(false));

    // (c) One reconnects to B: online again, and A's stale rows do not make it flap.
    let _watch_one = Watch::open(&b, &one, "192.0.2.3:41641").await;
    watch_two
        .until("one back online in two's map", |n| {
            peer_online(n, "one") == Some(true) && has_endpoint(n, "one", "192.0.2.3:41641")
        })
        .await;
    watch_two
        .keeps(TTL * 2, "one online", |n| {
            peer_online(n, "one") == Some(true)
        })
        .await;
    assert_eq!(listed_online(&b, "one"), Some(true));

    // (e) None of it was logged.
    assert_eq!(event_count(&b), events_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ephemeral_node_held_elsewhere_is_not_deleted() {
    let cluster = PgCluster::start();
    let ephemeral = "node:\n  ephemeral:\n    inactivity_timeout: 2s\n";
    let a = instance(&cluster, "a", None, ephemeral);
    let mut b = instance(&cluster, "b", Some(&a), ephemeral);
    a.ok(&["users", "create", "alice"]);
    let key = a.pre_auth_key("alice", &["--ephemeral"]);
    let node = register(&a, &key, "fleeting").await;

    // (d) It streams to B; A (first by name: the one that deletes) keeps it.
    let _watch = Watch::open(&b, &node, "192.0.2.9:41641").await;
    eventually("fleeting online on A", || {
        listed_online(&a, "fleeting") == Some(true)
    });
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        assert_eq!(listed_online(&a, "fleeting"), Some(true), "{}", a.log());
        std::thread::sleep(Duration::from_millis(250));
    }

    // B stops cleanly: its rows go at once, and A deletes the node once inactive.
    b.stop();
    let stopped = Instant::now();
    eventually("fleeting deleted by A", || {
        listed_online(&a, "fleeting").is_none()
    });
    eprintln!(
        "clean stop of B → ephemeral node deleted by A: {:?}",
        stopped.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_is_written_in_few_batches() {
    const NODES: usize = 30;
    const UPDATES: usize = 4;
    let cluster = PgCluster::start();
    let a = instance(&cluster, "a", None, "");
    let _b = instance(&cluster, "b", Some(&a), "");
    a.ok(&["users", "create", "alice"]);
    let key = a.pre_auth_key("alice", &["--reusable"]);
    let mut nodes = Vec::new();
    for i in 0..NODES {
        nodes.push(register(&a, &key, &format!("burst{i}")).await);
    }
    // Every write batch of A ends with one notification naming it.
    let pool = headscale::ha::pool::SharedPool::new(&cluster.config()).unwrap();
    let mut hints = pool.listen(&[headscale::ha::presence::PRESENCE_CHANNEL]);
    let first = tokio::time::timeout(WAIT, hints.recv()).await.unwrap();
    assert_eq!(first, Some(headscale::ha::pool::Hint::Listening));
    let counted = tokio::spawn(async move {
        let mut batches = 0usize;
        while let Ok(Some(hint)) = tokio::time::timeout(Duration::from_secs(2), hints.recv()).await
        {
            if matches!(hint, headscale::ha::pool::Hint::Notified { ref payload, .. } if payload == "a")
            {
                batches += 1;
            }
        }
        batches
    });

    // A burst: every node opens its stream and sends a few endpoint changes at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let url_server = a.url();
        tasks.push(tokio::spawn(async move {
            let client = ControlClient::connect(&url_server, node.machine.clone(), CLIENT_CAPVER)
                .await
                .unwrap();
            let request = client.stream_request(
                &node.node_key,
                &node.disco_key,
                vec![format!("192.0.2.{i}:1")],
            );
            let stream = client.map_stream(&request).await.unwrap();
            for u in 0..UPDATES {
                client
                    .lite_update(
                        &node.node_key,
                        vec![format!("192.0.2.{i}:{}", u + 2)],
                        &node.disco_key,
                        None,
                    )
                    .await
                    .unwrap();
            }
            (client, stream)
        }));
    }
    let mut held = Vec::new();
    for task in tasks {
        held.push(task.await.unwrap());
    }
    let burst = started.elapsed();
    let batches = counted.await.unwrap();
    let changes = NODES * (UPDATES + 1);
    eprintln!(
        "{changes} presence changes from {NODES} nodes in {burst:?}: {batches} write batches"
    );
    assert!(batches > 0);
    assert!(
        batches < changes / 4,
        "{batches} batches for {changes} changes"
    );
}
