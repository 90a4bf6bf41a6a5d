//! `ipPool` and user roles end to end: a real server, roles given with `users role`, a policy
//! whose `ipPool` targets `autogroup:admin`, and nodes registered with `debug create-node`:
//! the admin's new node gets its IPv4 from the pool, a member's from `prefixes.v4`.

mod common;

use common::TestServer;
use serde_json::Value;

fn ipv4(node: &Value) -> String {
    node["ipAddresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|a| a.contains('.'))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_registered_node_gets_its_address_from_the_pool() {
    let server = TestServer::start();
    server.create_user("alice");
    server.create_user("bob");
    let before = server.json(&["debug", "create-node", "--name", "old", "-u", "alice"]);
    // Roles: alice becomes Owner (so also an Admin), then the answer in every format.
    let said = server.ok(&["users", "role", "--name", "alice", "--role", "owner"]);
    assert!(said.contains("User alice (1) is now owner"), "{said}");
    let roles = server.json(&["users", "roles"]);
    let role_of = |name: &str| {
        roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["user"]["name"] == name)
            .map(|r| r["role"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(role_of("alice"), "owner");
    assert_eq!(role_of("bob"), "member");
    let yaml = server.ok(&["users", "roles", "-o", "yaml"]);
    assert!(yaml.contains("role: owner"), "{yaml}");
    let json = server.ok(&[
        "users", "role", "--name", "bob", "--role", "auditor", "-o", "json",
    ]);
    assert!(json.contains("\"auditor\""), "{json}");
    // headscale's user JSON keeps its shape.
    let users = server.json(&["users", "list"]);
    assert!(users[0].get("role").is_none(), "{users}");

    let file = server.dir.path().join("policy.hujson");
    std::fs::write(
        &file,
        r#"{"nodeAttrs": [{"target": ["autogroup:admin"], "ipPool": ["100.81.0.0/16"]}]}"#,
    )
    .unwrap();
    server.ok(&["policy", "set", "-f", file.to_str().unwrap()]);

    let admins = server.json(&["debug", "create-node", "--name", "new", "-u", "alice"]);
    let members = server.json(&["debug", "create-node", "--name", "bobs", "-u", "bob"]);
    assert_eq!(ipv4(&admins), "100.81.0.1", "{admins}");
    assert!(ipv4(&members).starts_with("100.64."), "{members}");
    // The node alice had before the policy keeps its address.
    let nodes = server.nodes();
    let old = nodes.iter().find(|n| n["name"] == "old").unwrap();
    assert_eq!(ipv4(old), ipv4(&before));
}
