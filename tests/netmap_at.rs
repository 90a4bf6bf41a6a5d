//! `headscale nodes netmap --node N --at P` and `GET /api/v1/node/{id}/netmap`: the map a
//! node was given at a past point differs from today's exactly as a policy change implies,
//! matches what a live map stream sends a connected node, works offline, and refuses a node
//! that did not exist at the point with a message naming the point.

mod common;

use common::{join, TestServer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const ALICE_ONLY: &str =
    r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*"]}]}"#;
const ALICE_TO_BOB: &str =
    r#"{"acls": [{"action": "accept", "src": ["alice@"], "dst": ["alice@:*", "bob@:*"]}]}"#;

fn set_policy(server: &TestServer, text: &str) {
    let path = server.dir.path().join("policy.hujson");
    std::fs::write(&path, text).unwrap();
    server.ok(&["policy", "set", "-f", path.to_str().unwrap()]);
}

/// `nodes netmap` as JSON (the whole answer: node, seq, note, netmap).
fn netmap(server: &TestServer, node: &str, at: Option<&str>) -> Value {
    let mut args = vec!["nodes", "netmap", "--node", node, "-o", "json"];
    if let Some(at) = at {
        args.extend(["--at", at]);
    }
    let out = server.ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn peer_names(answer: &Value) -> BTreeSet<String> {
    answer["netmap"]["Peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["Name"].as_str().unwrap();
            name.split('.').next().unwrap().to_string()
        })
        .collect()
}

/// Every destination address of the node's packet filter.
fn filter_destinations(map: &Value) -> BTreeSet<String> {
    map["PacketFilters"]["base"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["DstPorts"].as_array().cloned().unwrap_or_default())
        .map(|dst| dst["IP"].as_str().unwrap().to_string())
        .collect()
}

fn address_of(server: &TestServer, name: &str) -> String {
    let nodes = server.nodes();
    let node = nodes
        .iter()
        .find(|n| n["givenName"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {nodes:?}"));
    node["ipAddresses"][0].as_str().unwrap().to_string()
}

/// A small tailnet: alice's laptop and phone, bob's server; a policy where alice reaches only
/// her own devices, then one where she reaches bob's too.
fn tailnet() -> (TestServer, String) {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["users", "create", "bob"]);
    server.ok(&["debug", "create-node", "--name", "laptop", "-u", "alice"]);
    server.ok(&["debug", "create-node", "--name", "phone", "-u", "alice"]);
    server.ok(&["debug", "create-node", "--name", "server", "-u", "bob"]);
    set_policy(&server, ALICE_ONLY);
    let before = netmap(&server, "laptop", None)["seq"]
        .as_str()
        .unwrap()
        .to_string();
    set_policy(&server, ALICE_TO_BOB);
    (server, before)
}

#[test]
fn the_netmap_at_an_earlier_seq_differs_exactly_as_the_policy_change_implies() {
    let (server, before) = tailnet();
    let server_ip = address_of(&server, "server");

    let then = netmap(&server, "laptop", Some(&before));
    let now = netmap(&server, "laptop", None);
    assert_eq!(then["seq"], before.as_str());
    assert_eq!(then["nodeName"], "laptop");
    assert_eq!(peer_names(&then), BTreeSet::from(["phone".to_string()]));
    assert_eq!(
        peer_names(&now),
        BTreeSet::from(["phone".to_string(), "server".to_string()])
    );
    // Filters are inbound: the laptop's own filter did not change (alice could reach it
    // before and after).
    assert_eq!(
        then["netmap"]["PacketFilters"],
        now["netmap"]["PacketFilters"]
    );

    // Bob's server: nobody could reach it before (no peers, an empty filter); alice's
    // devices since, and its filter now admits them to its own addresses.
    let (then, now) = (
        netmap(&server, "server", Some(&before)),
        netmap(&server, "3", None),
    );
    assert!(peer_names(&then).is_empty(), "{then}");
    assert_eq!(
        then["netmap"]["PacketFilters"]["base"],
        serde_json::json!([])
    );
    assert_eq!(
        peer_names(&now),
        BTreeSet::from(["laptop".to_string(), "phone".to_string()])
    );
    let now_dst = filter_destinations(&now["netmap"]);
    assert!(now_dst.contains(&server_ip), "{now_dst:?}");
    let sources = now["netmap"]["PacketFilters"]["base"][0]["SrcIPs"].to_string();
    assert!(sources.contains("100.64.0.1"), "{sources}");

    // Presence is admitted, not invented.
    assert!(then["note"].as_str().unwrap().contains("presence"));
    for peer in now["netmap"]["Peers"].as_array().unwrap() {
        assert!(peer.get("Online").is_none(), "{peer}");
    }

    // The summary for humans: self, peers, filter, SSH, DNS.
    let human = server.ok(&["nodes", "netmap", "--node", "laptop", "--at", &before]);
    for part in [
        "Netmap of node 1 (laptop) at seq",
        "note: presence is not in the log",
        "Self:    laptop.tailnet.example.",
        "Peers (1):",
        "phone.tailnet.example.",
        "Packet filter (1 rules):",
        "SSH policy",
        "DNS:     MagicDNS",
    ] {
        assert!(human.contains(part), "{part:?} missing from:\n{human}");
    }
    assert!(!human.contains("server.tailnet.example."), "{human}");

    // By id, as yaml.
    let yaml = server.ok(&[
        "nodes", "netmap", "--node", "1", "--at", &before, "-o", "yaml",
    ]);
    assert!(yaml.contains("netmap:"), "{yaml}");
}

/// Without presence fields (which the log does not hold) and the self node's Hostinfo
/// (the client reports its own).
fn without_presence(node: &Value) -> Value {
    let mut node = node.clone();
    if let Some(fields) = node.as_object_mut() {
        for key in [
            "Online",
            "LastSeen",
            "Endpoints",
            "DiscoKey",
            "DERP",
            "HomeDERP",
            "Cap",
            "Hostinfo",
        ] {
            fields.remove(key);
        }
    }
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_matches_what_a_live_map_stream_sends_a_connected_node() {
    let (server, _) = tailnet();
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let machine = join(&server, &key, "joiner").await;
    let request = machine.client.stream_request(
        &machine.node_key,
        &machine.disco_key,
        vec!["192.0.2.10:41641".into()],
    );
    let mut stream = machine.client.map_stream(&request).await.unwrap();
    let first = stream
        .next_within(Duration::from_secs(10))
        .await
        .expect("a first message")
        .unwrap();
    let live: Value = serde_json::from_slice(&first.raw.json).unwrap();

    let answer = netmap(&server, "joiner", None);
    let past = &answer["netmap"];
    for key in [
        "PacketFilters",
        "SSHPolicy",
        "DNSConfig",
        "Domain",
        "DERPMap",
        "Debug",
    ] {
        assert_eq!(past[key], live[key], "{key} differs");
    }
    let by_id = |map: &Value| -> Vec<Value> {
        let mut peers: Vec<Value> = map["Peers"]
            .as_array()
            .unwrap()
            .iter()
            .map(without_presence)
            .collect();
        peers.sort_by_key(|p| p["ID"].as_u64());
        peers
    };
    assert_eq!(by_id(past), by_id(&live));
    assert_eq!(by_id(past).len(), 3, "alice reaches every node: {past}");
    assert_eq!(
        without_presence(&past["Node"]),
        without_presence(&live["Node"])
    );
}

#[test]
fn a_node_missing_at_the_point_is_a_clear_error_naming_the_point() {
    let (mut server, before) = tailnet();
    // Not registered yet at seq 1.
    let line = server.fails(&["nodes", "netmap", "--node", "2", "--at", "1"]);
    assert!(
        line.contains("node 2 did not exist at seq 1: it was not registered yet"),
        "{line}"
    );
    // Known by name now, but not at seq 1: the name still finds the id.
    let line = server.fails(&["nodes", "netmap", "--node", "phone", "--at", "1"]);
    assert!(line.contains("node 2 did not exist at seq 1"), "{line}");
    // Deleted by now.
    server.ok(&["nodes", "delete", "-i", "2", "--force"]);
    let line = server.fails(&["nodes", "netmap", "--node", "2"]);
    assert!(line.contains("it had been deleted by then"), "{line}");
    let line = server.fails(&["nodes", "netmap", "--node", "nosuch"]);
    assert!(line.contains("no node named \"nosuch\""), "{line}");
    let line = server.fails(&["nodes", "netmap", "--node", "1", "--at", "yesterday"]);
    assert!(line.contains("is not a point in the log"), "{line}");

    // Offline (no daemon): the same answer from the store, read directly.
    let online = netmap(&server, "laptop", Some(&before));
    server.stop();
    let offline = netmap(&server, "laptop", Some(&before));
    assert_eq!(offline["netmap"]["Peers"], online["netmap"]["Peers"]);
    assert_eq!(
        offline["netmap"]["PacketFilters"],
        online["netmap"]["PacketFilters"]
    );
}
