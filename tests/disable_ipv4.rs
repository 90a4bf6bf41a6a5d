//! `disable-ipv4` against the real server binary, seen through our own control client: a
//! policy edit that gives bob's node the attribute reaches connected clients as deltas (bob's
//! node is IPv6-only to alice's, bob's is told itself and alice's node IPv6-only, its
//! `CapMap` carries the attribute), `nodes netmap` shows it now and not `--at` a point before
//! the edit, and removing it brings IPv4 back — the address was never given up.

mod common;

use common::{join, Machine, TestServer};
use headscale::client::{MapStream, Netmap};
use serde_json::Value;
use std::time::{Duration, Instant};

const TUNING: &str = "tuning:\n  batch_change_delay: 50ms\n  map_keepalive_interval: 2s\n";
const WAIT: Duration = Duration::from_secs(10);

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
        watch
            .until("a first message", |n| n.self_node.is_some())
            .await;
        watch
    }

    /// Applies messages until `done` holds; returns how many carried a full peer list.
    async fn until(&mut self, what: &str, done: impl Fn(&Netmap) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        let mut full = 0;
        while !done(&self.netmap) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let message = self
                .stream
                .next_within(WAIT)
                .await
                .unwrap_or_else(|| panic!("stream ended while waiting for {what}"))
                .unwrap();
            full += usize::from(message.response.peers.is_some());
            self.netmap.apply(&message.response).unwrap();
        }
        full
    }

    fn own_addresses(&self) -> Vec<String> {
        self.netmap.self_node.as_ref().unwrap().addresses.clone()
    }

    /// The addresses of its only peer.
    fn peer_addresses(&self) -> Vec<String> {
        let peers: Vec<_> = self.netmap.peers.values().collect();
        assert_eq!(peers.len(), 1);
        peers[0].addresses.clone()
    }
}

fn set_policy(server: &TestServer, text: &str) {
    let path = server.dir.path().join("policy.hujson");
    std::fs::write(&path, text).unwrap();
    server.ok(&["policy", "set", "-f", path.to_str().unwrap()]);
}

/// `nodes netmap` (now, or `--at`): the addresses of `node`'s only peer.
fn netmap_peer_addresses(server: &TestServer, node: &str, at: Option<&str>) -> Vec<String> {
    let mut args = vec!["nodes", "netmap", "--node", node, "-o", "json"];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    let answer: Value = serde_json::from_str(&server.ok(&args)).unwrap();
    let peers = answer["netmap"]["Peers"].as_array().unwrap();
    assert_eq!(peers.len(), 1, "{answer}");
    peers[0]["Addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn is_v6_only(addresses: &[String]) -> bool {
    addresses.len() == 1 && addresses[0].contains(':')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_ipv4_policy_edit_reaches_live_clients_and_the_netmap_history() {
    let server = TestServer::start_with(TUNING);
    for user in ["alice", "bob"] {
        server.ok(&["users", "create", user]);
    }
    let alice = join(&server, &server.pre_auth_key("alice", &[]), "a-one").await;
    let bob = join(&server, &server.pre_auth_key("bob", &[]), "b-one").await;
    let mut watch_a = Watch::open(&alice).await;
    let mut watch_b = Watch::open(&bob).await;
    watch_a.until("bob's node", |n| n.peers.len() == 1).await;
    watch_b.until("alice's node", |n| n.peers.len() == 1).await;
    assert_eq!(watch_a.peer_addresses().len(), 2);
    assert_eq!(watch_b.own_addresses().len(), 2);
    let before: Value =
        serde_json::from_str(&server.ok(&["nodes", "netmap", "--node", "a-one", "-o", "json"]))
            .unwrap();
    let before = before["seq"].as_str().unwrap().to_string();

    set_policy(
        &server,
        r#"{"nodeAttrs": [{"target": ["bob@"], "attr": ["disable-ipv4"]}]}"#,
    );
    let full = watch_a
        .until("bob's node IPv6-only", |n| {
            n.peers.values().all(|p| is_v6_only(&p.addresses))
        })
        .await;
    assert_eq!(full, 0, "a delta, not a full peer list");
    watch_b
        .until("itself and alice's node IPv6-only", |n| {
            let own = n.self_node.as_ref().unwrap();
            is_v6_only(&own.addresses)
                && is_v6_only(&own.allowed_ips)
                && n.peers.values().all(|p| is_v6_only(&p.addresses))
        })
        .await;
    let caps = &watch_b.netmap.self_node.as_ref().unwrap().cap_map;
    assert!(caps.contains_key("disable-ipv4"), "{caps:?}");
    let caps = &watch_a.netmap.self_node.as_ref().unwrap().cap_map;
    assert!(!caps.contains_key("disable-ipv4"), "{caps:?}");
    assert_eq!(watch_a.own_addresses().len(), 2, "alice's node keeps IPv4");

    // The history shows the same: IPv6-only now, both addresses before the edit.
    assert!(is_v6_only(&netmap_peer_addresses(&server, "a-one", None)));
    assert_eq!(
        netmap_peer_addresses(&server, "a-one", Some(&before)).len(),
        2
    );
    assert!(is_v6_only(&netmap_peer_addresses(&server, "b-one", None)));

    // The attribute goes: IPv4 comes back, the same address as before.
    set_policy(&server, "{}");
    watch_a
        .until("bob's node with IPv4 again", |n| {
            n.peers.values().all(|p| p.addresses.len() == 2)
        })
        .await;
    watch_b
        .until("IPv4 again", |n| {
            n.self_node.as_ref().unwrap().addresses.len() == 2
                && n.peers.values().all(|p| p.addresses.len() == 2)
        })
        .await;
    assert!(!server.log().contains("panicked"));
}
