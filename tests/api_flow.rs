//! One tailnet's life driven through the REST API alone, with a Bearer key over TCP: create a
//! user and a pre-auth key, register a node with our own control client, approve its route,
//! list, expire, delete — then the audit log must tell exactly that story, attributed to
//! the API key (and to the node for what the node did).

mod common;

use common::TestServer;
use serde_json::{json, Value};

/// One HTTP/1.1 request with an optional JSON body; status and JSON answer.
fn call(port: u16, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    (status, serde_json::from_str(text).unwrap_or(Value::Null))
}

fn ok(port: u16, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, value) = call(port, key, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {value}");
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lifecycle_through_the_api_alone() {
    let server = TestServer::start_with("tuning:\n  batch_change_delay: 50ms\n");
    let api_key = server.ok(&["apikeys", "create"]).trim().to_string();
    let port = server.port;
    let head = |v: &Value| -> u64 {
        v["events"]
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e["seq"].as_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let before = head(&ok(port, &api_key, "GET", "/api/v1/events", None));

    let user = ok(
        port,
        &api_key,
        "POST",
        "/api/v1/user",
        Some(json!({"name": "flow"})),
    );
    let user_id = user["user"]["id"].as_str().unwrap().to_string();
    let created = ok(
        port,
        &api_key,
        "POST",
        "/api/v1/preauthkey",
        Some(json!({"user": user_id, "reusable": false, "ephemeral": false})),
    );
    let auth_key = created["preAuthKey"]["key"].as_str().unwrap().to_string();

    // The node registers with our own control client, announcing a subnet.
    let _router =
        common::join_with_routes(&server, &auth_key, "flow-router", &["10.20.0.0/24"]).await;

    let nodes = ok(port, &api_key, "GET", "/api/v1/node?user=flow", None);
    let node = &nodes["nodes"][0];
    let node_id = node["id"].as_str().unwrap().to_string();
    assert_eq!(node["availableRoutes"], json!(["10.20.0.0/24"]), "{node}");
    assert_eq!(node["approvedRoutes"], json!([]));
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_AUTH_KEY");

    let approved = ok(
        port,
        &api_key,
        "POST",
        &format!("/api/v1/node/{node_id}/approve_routes"),
        Some(json!({"routes": ["10.20.0.0/24"]})),
    );
    assert_eq!(approved["node"]["subnetRoutes"], json!(["10.20.0.0/24"]));
    // The one-off key is spent.
    let keys = ok(
        port,
        &api_key,
        "GET",
        &format!("/api/v1/preauthkey?user={user_id}"),
        None,
    );
    assert_eq!(keys["preAuthKeys"][0]["used"], true, "{keys}");

    let expired = ok(
        port,
        &api_key,
        "POST",
        &format!("/api/v1/node/{node_id}/expire"),
        None,
    );
    assert!(expired["node"]["expiry"].is_string(), "{expired}");
    ok(
        port,
        &api_key,
        "DELETE",
        &format!("/api/v1/node/{node_id}"),
        None,
    );
    let (status, _) = call(
        port,
        &api_key,
        "GET",
        &format!("/api/v1/node/{node_id}"),
        None,
    );
    assert_eq!(status, 404);

    // The audit log tells exactly this story, in order, with who did what.
    let events = ok(
        port,
        &api_key,
        "GET",
        &format!("/api/v1/events?since={before}"),
        None,
    );
    let story: Vec<(String, String)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let admin = "admin (api key 1)";
    let types: Vec<&str> = story.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "UserCreated",
            "PreAuthKeyCreated",
            "NodeRegistered",
            "PreAuthKeyUsed",
            "RoutesApproved",
            "NodeExpiryChanged",
            "NodeDeleted",
        ],
        "{story:?}"
    );
    for (kind, actor) in &story {
        match kind.as_str() {
            "NodeRegistered" | "PreAuthKeyUsed" => {
                assert!(!actor.contains("api key"), "{kind} by {actor}")
            }
            _ => assert_eq!(actor, admin, "{kind}"),
        }
    }
    // And the past is still there: the node as it was before the delete.
    let last = head(&events);
    let then = ok(
        port,
        &api_key,
        "GET",
        &format!("/api/v1/node?at={}", last - 1),
        None,
    );
    assert_eq!(then["nodes"][0]["givenName"], "flow-router", "{then}");
}

#[test]
fn a_users_picture_is_kept() {
    let server = TestServer::start();
    server.ok(&[
        "users",
        "create",
        "pia",
        "--picture-url",
        "https://example.com/pia.png",
        "--display-name",
        "Pia",
    ]);
    let users = server.json(&["users", "list"]);
    assert_eq!(users[0]["profilePicUrl"], "https://example.com/pia.png");
    assert_eq!(users[0]["displayName"], "Pia");
    // Recorded as its own event right after the creation, in the same commit.
    let events = server.json(&["events", "list", "--user", "pia"]);
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["UserCreated", "UserProfileChanged"]);
    // Without one, nothing extra.
    server.ok(&["users", "create", "quin"]);
    let events = server.json(&["events", "list", "--user", "quin"]);
    assert_eq!(events.as_array().unwrap().len(), 1);
}
