//! `headscale state diff --from A --to B` and `GET /api/v1/state/diff`: users, keys, nodes
//! (names, routes, deletion) and the policy added, removed and changed between two points,
//! each with the events responsible; bad points are one clear line.

mod common;

use common::TestServer;
use serde_json::Value;

fn json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = server.ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn head(server: &TestServer) -> String {
    json(server, &["state", "show"])["seq"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The change of `kind` (users, nodes, ...) about entity `id`.
fn change<'a>(diff: &'a Value, kind: &str, id: &str) -> &'a Value {
    diff[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {kind} change for {id}: {diff}"))
}

fn event_types(change: &Value) -> Vec<String> {
    change["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_diff_lists_what_changed_with_the_events_responsible() {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["users", "create", "bob"]);
    server.ok(&["debug", "create-node", "--name", "laptop", "-u", "alice"]);
    server.ok(&["debug", "create-node", "--name", "phone", "-u", "alice"]);
    server.ok(&[
        "debug",
        "create-node",
        "--name",
        "router",
        "-u",
        "bob",
        "-r",
        "10.0.0.0/24",
    ]);
    let a = head(&server);

    server.ok(&["users", "create", "carol"]);
    server.ok(&["nodes", "rename", "-i", "1", "web"]);
    let middle = head(&server);
    server.ok(&["nodes", "delete", "-i", "2", "--force"]);
    server.ok(&["nodes", "approve-routes", "-i", "3", "-r", "10.0.0.0/24"]);
    server.ok(&["preauthkeys", "create", "--user", "alice"]);
    let policy = server.dir.path().join("policy.hujson");
    std::fs::write(
        &policy,
        "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}\n  ]\n}\n",
    )
    .unwrap();
    server.ok(&["policy", "set", "-f", policy.to_str().unwrap()]);
    let b = head(&server);

    let diff = json(&server, &["state", "diff", "--from", &a]);
    assert_eq!(diff["from"], a.as_str());
    assert_eq!(diff["to"], b.as_str());
    assert_eq!(diff["eventsListed"], true);
    let count: u64 = b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap();
    assert_eq!(diff["eventCount"], count);

    let carol = change(&diff, "users", "3");
    assert_eq!(carol["change"], "added");
    assert_eq!(carol["name"], "carol");
    assert_eq!(event_types(carol), vec!["UserCreated"]);
    assert_eq!(carol["events"][0]["actor"], "admin (local socket)");
    assert_eq!(diff["users"].as_array().unwrap().len(), 1, "{diff}");

    let web = change(&diff, "nodes", "1");
    assert_eq!(web["change"], "changed");
    assert_eq!(
        web["fields"],
        serde_json::json!([{"field": "name", "from": "laptop", "to": "web"}])
    );
    assert_eq!(event_types(web), vec!["NodeRenamed"]);
    let phone = change(&diff, "nodes", "2");
    assert_eq!(phone["change"], "removed");
    assert_eq!(event_types(phone), vec!["NodeDeleted"]);
    let router = change(&diff, "nodes", "3");
    assert_eq!(
        router["fields"],
        serde_json::json!([{"field": "approvedRoutes", "from": [], "to": ["10.0.0.0/24"]}])
    );
    assert_eq!(event_types(router), vec!["RoutesApproved"]);

    let keys = diff["preAuthKeys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["change"], "added");
    assert_eq!(event_types(&keys[0]), vec!["PreAuthKeyCreated"]);

    assert_eq!(diff["policy"]["change"], "added");
    let unified = diff["policy"]["unified"].as_str().unwrap();
    assert!(
        unified.contains(&format!("+++ policy at seq {b}")),
        "{unified}"
    );
    assert!(unified.contains("+  \"acls\": ["), "{unified}");
    assert_eq!(event_types(&diff["policy"]), vec!["PolicyReplaced"]);

    // Up to a middle point: only what happened by then.
    let early = json(&server, &["state", "diff", "--from", &a, "--to", &middle]);
    assert_eq!(early["nodes"].as_array().unwrap().len(), 1, "{early}");
    assert!(early.get("policy").is_none(), "{early}");
    assert!(early["preAuthKeys"].as_array().unwrap().is_empty());

    // Nothing between a point and itself.
    let same = server.ok(&["state", "diff", "--from", &b, "--to", &b]);
    assert!(same.contains("no differences"), "{same}");

    // For humans: sections with +/-/~ lines and the events under each.
    let human = server.ok(&["state", "diff", "--from", &a]);
    let header = format!("State diff: seq {a} (");
    assert!(human.starts_with(&header), "{human}");
    for part in [
        "Users:\n  + 3 carol: name carol",
        "Nodes:\n  ~ 1 web: name: laptop -> web\n      seq ",
        "NodeRenamed by admin (local socket) at ",
        "  - 2 phone: ",
        "  ~ 3 router: approvedRoutes: [] -> [10.0.0.0/24]",
        "Pre-auth keys:\n  + 1 ",
        "Policy (added):",
        "  +{",
    ] {
        assert!(human.contains(part), "{part:?} missing from:\n{human}");
    }
    let yaml = server.ok(&["state", "diff", "--from", &a, "-o", "yaml"]);
    assert!(yaml.contains("eventsListed: true"), "{yaml}");
}

#[test]
fn bad_points_are_one_clear_line() {
    let server = TestServer::start();
    server.ok(&["users", "create", "alice"]);
    server.ok(&["users", "create", "bob"]);
    let line = server.fails(&["state", "diff", "--from", "9999"]);
    assert!(
        line.contains("--from 9999 is beyond the end of the log"),
        "{line}"
    );
    let line = server.fails(&["state", "diff", "--from", "2", "--to", "1"]);
    assert!(
        line.contains("--from 2 (seq 2) is after --to (seq 1)"),
        "{line}"
    );
    let line = server.fails(&["state", "diff", "--from", "last week"]);
    assert!(line.contains("is not a point in the log"), "{line}");
    // Times and durations work as everywhere else.
    let diff = json(&server, &["state", "diff", "--from", "1h"]);
    assert_eq!(diff["from"], "0");
    assert_eq!(diff["users"].as_array().unwrap().len(), 2);
}
