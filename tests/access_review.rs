//! `policy who-can-reach` / `policy what-can` end to end: a small tailnet (users, nodes made
//! with `debug create-node`, a tag, a subnet route), a policy set and then widened; the
//! answers at two points, the timeline between them, and the refusals.

mod common;

use common::TestServer;
use serde_json::Value;
use std::collections::BTreeSet;

const FIRST: &str = r#"{
    "groups": {"group:eng": ["alice@"]},
    "tagOwners": {"tag:db": ["alice@"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"]},
        {"action": "accept", "src": ["bob@"], "dst": ["10.1.0.0/16:443"], "proto": "tcp"}
    ]
}"#;

/// The same, with bob in group:eng.
const SECOND: &str = r#"{
    "groups": {"group:eng": ["alice@", "bob@"]},
    "tagOwners": {"tag:db": ["alice@"]},
    "acls": [
        {"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"]},
        {"action": "accept", "src": ["bob@"], "dst": ["10.1.0.0/16:443"], "proto": "tcp"}
    ]
}"#;

fn set_policy(server: &TestServer, text: &str) {
    let file = server.dir.path().join("policy.hujson");
    std::fs::write(&file, text).unwrap();
    server.ok(&["policy", "set", "-f", file.to_str().unwrap()]);
}

fn review(server: &TestServer, args: &[&str]) -> Value {
    let mut all = vec!["policy"];
    all.extend(args);
    all.extend(["-o", "json"]);
    let out = server.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The source nodes of an answer, by name.
fn sources(answer: &Value) -> BTreeSet<String> {
    answer["entries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["resolvesTo"].as_array().unwrap().iter())
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// alice: laptop; bob: desktop and router (serving 10.1.0.0/16); db: alice's, then tag:db.
/// Returns (seq with no policy, seq after the first policy, seq after the second).
fn story(server: &TestServer) -> (String, String, String) {
    server.create_user("alice");
    server.create_user("bob");
    server.ok(&["debug", "create-node", "--name", "laptop", "-u", "alice"]);
    server.ok(&["debug", "create-node", "--name", "desktop", "-u", "bob"]);
    server.ok(&["debug", "create-node", "--name", "db", "-u", "alice"]);
    let router = server.json(&[
        "debug",
        "create-node",
        "--name",
        "router",
        "-u",
        "bob",
        "-r",
        "10.1.0.0/16",
    ]);
    let router_id = router["id"].as_str().unwrap().to_string();
    server.ok(&[
        "nodes",
        "approve-routes",
        "-i",
        &router_id,
        "-r",
        "10.1.0.0/16",
    ]);
    let none = review(server, &["who-can-reach", "db"])["seq"]
        .as_str()
        .unwrap()
        .to_string();
    set_policy(server, FIRST);
    let db = server
        .nodes()
        .into_iter()
        .find(|n| n["givenName"] == "db")
        .unwrap();
    server.ok(&[
        "nodes",
        "tag",
        "-i",
        db["id"].as_str().unwrap(),
        "-t",
        "tag:db",
    ]);
    let first = review(server, &["who-can-reach", "db"])["seq"]
        .as_str()
        .unwrap()
        .to_string();
    set_policy(server, SECOND);
    let second = review(server, &["who-can-reach", "db"])["seq"]
        .as_str()
        .unwrap()
        .to_string();
    (none, first, second)
}

#[test]
fn who_can_reach_and_what_can_at_two_points_and_the_timeline_between() {
    let server = TestServer::start();
    let (none, first, second) = story(&server);

    // Before any policy: everyone, by the allow-all default, said so.
    let open = review(&server, &["who-can-reach", "db:5432", "--at", &none]);
    assert_eq!(sources(&open), names(&["laptop", "desktop", "router"]));
    assert_eq!(open["entries"][0]["rule"]["rule"], "(no policy: allow all)");
    assert!(open["notes"][0].as_str().unwrap().contains("allows all"));

    // The first policy: group:eng (alice) on 5432 only, by acl[0].
    let at_first = review(&server, &["who-can-reach", "db:5432/tcp", "--at", &first]);
    assert_eq!(sources(&at_first), names(&["laptop"]));
    let entry = &at_first["entries"][0];
    assert_eq!(entry["source"], "group:eng");
    assert_eq!(entry["rule"]["rule"], "acl[0]");
    assert_eq!(entry["rule"]["text"], "accept group:eng -> tag:db:5432");
    assert_eq!(entry["ports"], serde_json::json!(["5432"]));
    let wrong_port = review(&server, &["who-can-reach", "db:22", "--at", &first]);
    assert!(wrong_port["entries"].as_array().unwrap().is_empty());

    // A routed address is reached through its router, by bob only, on tcp/443.
    let routed = review(
        &server,
        &["who-can-reach", "10.1.2.3:443/tcp", "--at", &first],
    );
    assert_eq!(sources(&routed), names(&["desktop", "router"]));
    assert_eq!(routed["entries"][0]["destination"]["name"], "router");
    assert_eq!(routed["entries"][0]["through"], "subnet");
    assert_eq!(routed["entries"][0]["rule"]["rule"], "acl[1]");

    // The second policy adds bob's nodes; now (no --at) is the second point.
    let now = review(&server, &["who-can-reach", "db:5432"]);
    assert_eq!(now["seq"], second.as_str());
    assert_eq!(sources(&now), names(&["laptop", "desktop", "router"]));

    // what-can: the laptop reaches db on 5432 at both points, desktop only after.
    let laptop = review(&server, &["what-can", "laptop", "--at", &first]);
    let reached: Vec<(String, String)> = laptop["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["destination"]["name"].as_str().unwrap().to_string(),
                e["rule"]["rule"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reached, vec![("db".to_string(), "acl[0]".to_string())]);
    let desktop_before = review(&server, &["what-can", "desktop", "--at", &first]);
    let before: BTreeSet<&str> = desktop_before["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["destination"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(before, BTreeSet::from(["router"]));
    let desktop_after = review(&server, &["what-can", "desktop"]);
    assert!(desktop_after["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["destination"]["name"] == "db" && e["ports"] == serde_json::json!(["5432"])));

    // The timeline between the two points: bob's two nodes gained access by the
    // second PolicyReplaced, done by the admin on the socket.
    let walk = review(
        &server,
        &[
            "who-can-reach",
            "db:5432",
            "--since",
            &first,
            "--until",
            &second,
        ],
    );
    let changes = walk["timeline"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    for change in changes {
        assert_eq!(change["change"], "gained");
        assert_eq!(change["seq"], second.as_str());
        assert_eq!(change["eventType"], "PolicyReplaced");
        assert_eq!(change["actor"], "admin (local socket)");
        assert_eq!(change["rule"]["rule"], "acl[0]");
    }
    let gained: BTreeSet<&str> = changes
        .iter()
        .map(|c| c["node"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(gained, BTreeSet::from(["desktop", "router"]));
    assert!(changes[0]["line"]
        .as_str()
        .unwrap()
        .starts_with("+ group:eng (node "));

    // From the start of the log: everyone had it by default, then the first policy took it
    // from bob's nodes, tagging db kept the laptop, and the second gave it back.
    let whole = review(&server, &["who-can-reach", "db:5432", "--until", &second]);
    let events: Vec<(String, String)> = whole["timeline"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["eventType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        events.contains(&("lost".into(), "PolicyReplaced".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("gained".into(), "NodeTagsSet".into())),
        "{events:?}"
    );
    assert!(
        events.contains(&("gained".into(), "NodeRegistered".into())),
        "{events:?}"
    );

    // Human output: a table with the rule, then the changes one per line.
    let human = server.ok(&[
        "policy",
        "who-can-reach",
        "db:5432",
        "--since",
        &first,
        "--until",
        &second,
    ]);
    assert!(human.contains("Source"), "{human}");
    assert!(
        human.contains("acl[0]: accept group:eng -> tag:db:5432"),
        "{human}"
    );
    assert!(
        human.contains("(PolicyReplaced by admin (local socket))"),
        "{human}"
    );
    let yaml = server.ok(&["policy", "what-can", "laptop", "-o", "yaml"]);
    assert!(yaml.contains("entries:"), "{yaml}");
}

#[test]
fn refusals_are_one_clear_line() {
    let server = TestServer::start();
    server.create_user("alice");
    server.ok(&["debug", "create-node", "--name", "laptop", "-u", "alice"]);
    let missing = server.fails(&["policy", "who-can-reach", "nosuch"]);
    assert!(missing.contains("no node \"nosuch\""), "{missing}");
    let missing = server.fails(&["policy", "what-can", "nosuch"]);
    assert!(missing.contains("no node \"nosuch\""), "{missing}");
    let cidr = server.fails(&["policy", "who-can-reach", "10.0.0.0/24"]);
    assert!(cidr.contains("not a CIDR"), "{cidr}");
    let port = server.fails(&["policy", "who-can-reach", "100.64.0.1:99999"]);
    assert!(port.contains("is not a port"), "{port}");
    let proto = server.fails(&["policy", "who-can-reach", "100.64.0.1:22/bogus"]);
    assert!(proto.contains("unknown protocol"), "{proto}");
    let point = server.fails(&["policy", "who-can-reach", "laptop", "--at", "yesterday"]);
    assert!(point.contains("is not a point in the log"), "{point}");
    let beyond = server.fails(&[
        "policy", "what-can", "laptop", "--since", "0", "--until", "999999",
    ]);
    assert!(beyond.contains("beyond the end of the log"), "{beyond}");
    let both = server.cli(&["policy", "what-can", "laptop", "--at", "1", "--since", "0"]);
    assert!(!both.status.success());
    // An address nothing carries: an empty answer that says why.
    let nowhere = review(&server, &["who-can-reach", "192.0.2.1"]);
    assert!(nowhere["entries"].as_array().unwrap().is_empty());
    assert!(nowhere["notes"][0]
        .as_str()
        .unwrap()
        .contains("nothing in the tailnet"));
}

/// A walk asked by node name follows the node by id: the name as it is at the walk's end,
/// else as it was at its start, so a rename along the way is not a loss and a gain.
#[test]
fn a_walk_follows_a_renamed_node_by_id() {
    let server = TestServer::start();
    let (_, _, second) = story(&server);
    let db = server
        .nodes()
        .into_iter()
        .find(|n| n["givenName"] == "db")
        .unwrap();
    server.ok(&[
        "nodes",
        "rename",
        "-i",
        db["id"].as_str().unwrap(),
        "database",
    ]);
    // "database" only at the end, "db" only at the start: the same node either way.
    for name in ["database:5432", "db:5432"] {
        let walk = review(&server, &["who-can-reach", name, "--since", &second]);
        assert_eq!(walk["timeline"]["recomputed"], 1, "{walk}");
        assert!(
            walk["timeline"]["changes"].as_array().unwrap().is_empty(),
            "{name}: {walk}"
        );
        assert_eq!(
            sources(&walk),
            names(&["laptop", "desktop", "router"]),
            "{name}"
        );
    }
}
