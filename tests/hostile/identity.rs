//! Identity games. A5: node-key collisions — registering or rotating into another node's
//! key, the same pending key from two machines then approval "by node key" — are refused,
//! and the victim keeps its node, its stream and its re-login. A7: a client-chosen key
//! expiry in year 9999 is capped at `node.expiry`.

use crate::common::CLIENT_CAPVER;
use crate::harness::{register_node_as, Canary, Scenario, Streaming};
use crate::{MAX_FDS, MAX_RSS_MIB};
use headscale::client::{self, ControlClient};
use headscale::tailcfg::{RegisterAuth, RegisterRequest, RegisterResponse};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

fn request(node_key: &str, old: &str, auth_key: Option<&str>, hostname: &str) -> RegisterRequest {
    RegisterRequest {
        version: CLIENT_CAPVER.into(),
        node_key: node_key.into(),
        old_node_key: old.into(),
        auth: auth_key.map(|k| RegisterAuth { auth_key: k.into() }),
        hostinfo: Some(headscale::tailcfg::Hostinfo {
            hostname: hostname.into(),
            os: "linux".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn new_client(url: &str) -> (ControlClient, x25519_dalek::StaticSecret) {
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let client = ControlClient::connect(url, machine.clone(), CLIENT_CAPVER)
        .await
        .unwrap();
    (client, machine)
}

/// Refused: an HTTP error, or an answer with an `Error` and no authorisation.
fn refused(answer: &Result<RegisterResponse, client::ClientError>) -> bool {
    match answer {
        Err(_) => true,
        Ok(a) => !a.error.is_empty() && !a.machine_authorized,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a5_node_key_games() {
    let mut s = Scenario::start("a5_node_key_games", "").await;
    let canary = Canary::start(&s).await;
    let victim_machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let (victim_key, _) = client::random_key("nodekey:");
    let victim = register_node_as(
        &s.url(),
        victim_machine,
        &s.canary_key,
        "victim",
        &victim_key,
    )
    .await
    .unwrap();
    let mut victim = Streaming::open(victim).await;

    // 1. Register a new machine with the victim's node key.
    let (thief, _) = new_client(&s.url()).await;
    let answer = thief
        .register(&request(&victim_key, "", Some(&s.attacker_key), "thief"))
        .await;
    s.check(refused(&answer), || {
        format!("registering with another node's key was accepted: {answer:?}")
    });

    // 2. Register honestly, then rotate into the victim's key.
    let (rotator, rotator_machine) = new_client(&s.url()).await;
    let (own_key, _) = client::random_key("nodekey:");
    register_node_as(
        &s.url(),
        rotator_machine,
        &s.attacker_key,
        "rotator",
        &own_key,
    )
    .await
    .unwrap();
    let answer = rotator
        .register(&request(
            &victim_key,
            &own_key,
            Some(&s.attacker_key),
            "rotator",
        ))
        .await;
    s.check(refused(&answer), || {
        format!("rotating into another node's key was accepted: {answer:?}")
    });

    // 3. The same pending node key from two machines, then approval by that key.
    let (pending_key, _) = client::random_key("nodekey:");
    let mut twins_pending = 0;
    for _ in 0..2 {
        let (machine, _) = new_client(&s.url()).await;
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            machine.register(&request(&pending_key, "", None, "twin")),
        )
        .await;
        if let Ok(Ok(answer)) = &answer {
            twins_pending += usize::from(!answer.auth_url.is_empty());
        }
    }
    let (status, body) = s
        .admin(
            "POST",
            "/api/v1/auth/register",
            Some(json!({"authId": pending_key, "user": "canary"})),
        )
        .await;
    // Either the second pending login was refused (the key is taken), or approving by a key
    // two machines wait with is refused as ambiguous.
    s.check(twins_pending < 2 || (400..500).contains(&status), || {
        format!("two machines wait with one node key and approving by that key answered {status} {body} (want a 4xx naming the ambiguity)")
    });

    // Invariant: at most one node per node key; the victim still holds its key.
    let nodes = s.server.nodes();
    let mut keys: HashMap<String, Vec<String>> = HashMap::new();
    for node in &nodes {
        keys.entry(node["nodeKey"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(node["name"].as_str().unwrap_or("").to_string());
    }
    for (key, names) in &keys {
        let (key, names) = (key.clone(), names.clone());
        s.check(names.len() <= 1, || {
            format!("node key {key} is held by {names:?}")
        });
    }
    let holder = keys.get(&victim_key).cloned().unwrap_or_default();
    s.check(holder == vec!["victim".to_string()], || {
        format!("the victim's key is held by {holder:?}")
    });

    // The victim is unaffected: its stream sees its own rename, its re-login works.
    let victim_id = victim.netmap.self_node.as_ref().unwrap().id;
    let (status, _) = s
        .admin(
            "POST",
            &format!("/api/v1/node/{victim_id}/rename/victim-renamed"),
            None,
        )
        .await;
    s.check(status == 200, || {
        format!("renaming the victim answered {status}")
    });
    let seen = victim
        .until(Duration::from_secs(2), |n| {
            n.self_node
                .as_ref()
                .is_some_and(|me| me.name.starts_with("victim-renamed."))
        })
        .await;
    s.check(seen.is_ok(), || format!("the victim's stream: {seen:?}"));
    let relogin = victim
        .machine
        .client
        .register(&request(&victim_key, "", Some(&s.canary_key), "victim"))
        .await;
    s.check(
        relogin
            .as_ref()
            .is_ok_and(|a| a.machine_authorized && a.error.is_empty()),
        || format!("the victim's re-login failed: {relogin:?}"),
    );
    let report = canary.finish().await;
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}

/// The stored expiry of node `hostname`, in seconds from now (`None`: never expires).
fn expiry_from_now(s: &Scenario, hostname: &str) -> Option<i64> {
    let nodes = s.server.nodes();
    let node = nodes.iter().find(|n| n["name"] == hostname)?;
    let expiry = node["expiry"].as_str()?;
    let at = chrono::DateTime::parse_from_rfc3339(expiry).ok()?;
    if at.timestamp() <= 0 {
        return None;
    }
    Some(at.timestamp() - chrono::Utc::now().timestamp())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a7_requested_expiry_is_capped() {
    const HOUR: i64 = 3600;
    let mut s = Scenario::start("a7_requested_expiry", "node:\n  expiry: 1h\n").await;
    let canary = Canary::start(&s).await;
    let (client, _) = new_client(&s.url()).await;
    let (node_key, _) = client::random_key("nodekey:");
    let mut far = request(&node_key, "", Some(&s.attacker_key), "far-future");
    far.expiry = Some("9999-12-31T23:59:59Z".into());
    let answer = client.register(&far).await;
    eprintln!("a7: registration asking for 9999 → {answer:?}");
    let first = expiry_from_now(&s, "far-future");
    s.check(first.is_some_and(|e| e <= HOUR + 60), || {
        format!("registration asking for year 9999 stored an expiry {first:?} s from now, cap node.expiry = 3600 s")
    });
    // Re-auth of the same node, again asking for 9999.
    let answer = client.register(&far).await;
    eprintln!("a7: re-auth asking for 9999 → {answer:?}");
    let second = expiry_from_now(&s, "far-future");
    s.check(second.is_some_and(|e| e <= HOUR + 60), || {
        format!("re-auth asking for year 9999 stored an expiry {second:?} s from now, cap 3600 s")
    });
    // Non-vacuous: a plain registration gets node.expiry.
    let plain = crate::harness::register_node(&s.url(), &s.attacker_key, "plain").await;
    s.check(plain.is_ok(), || {
        format!("plain registration: {:?}", plain.as_ref().err())
    });
    let default = expiry_from_now(&s, "plain");
    s.check(
        default.is_some_and(|e| e > HOUR - 120 && e <= HOUR + 60),
        || format!("a plain registration's expiry is {default:?} s from now, want about 3600"),
    );
    let report = canary.finish().await;
    s.finish(report, MAX_RSS_MIB, MAX_FDS);
}
