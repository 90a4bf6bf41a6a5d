//! A small tailnet to check rules against, and the checks every section uses.

#![allow(dead_code)]

use headscale::core::policy::{Compiled, Policy, Topology, TopologyNode, TopologyUser};
use std::sync::Arc;

/// Users: odin@example.com (1), thor@example.org (2), freya@example.com (3).
/// Nodes, in id order: odin-laptop (odin), thor-laptop (thor), freya-phone (freya),
/// server (tag:server), router (tag:router, serves 10.33.0.0/16).
pub fn tailnet() -> Topology {
    let user = |id: u64, name: &str, email: &str| TopologyUser {
        id,
        name: name.into(),
        email: email.into(),
        provider_identifier: String::new(),
        role: Default::default(),
    };
    let node = |id: u64, name: &str, user: Option<u64>, tags: &[&str]| TopologyNode {
        id,
        name: name.into(),
        user,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ipv4: Some(format!("100.64.0.{id}").parse().unwrap()),
        ipv6: Some(format!("fd7a:115c:a1e0::{id}").parse().unwrap()),
        routes: Vec::new(),
    };
    let mut router = node(5, "router", None, &["tag:router"]);
    router.routes = vec!["10.33.0.0/16".parse().unwrap()];
    Topology {
        users: vec![
            user(1, "odin", "odin@example.com"),
            user(2, "thor", "thor@example.org"),
            user(3, "freya", "freya@example.com"),
        ],
        nodes: vec![
            node(1, "odin-laptop", Some(1), &[]),
            node(2, "thor-laptop", Some(2), &[]),
            node(3, "freya-phone", Some(3), &[]),
            node(4, "server", None, &["tag:server"]),
            router,
        ],
    }
}

/// The `tagOwners` every policy here starts from (policies are written inline, in
/// Tailscale's syntax, so each test reads as the rule it checks).
pub const TAG_OWNERS: &str =
    r#""tagOwners": {"tag:server": ["odin@example.com"], "tag:router": ["odin@example.com"]}"#;

/// `body` (the policy's other sections, without braces) with [`TAG_OWNERS`].
pub fn with_tags(body: &str) -> String {
    if body.trim().is_empty() {
        format!("{{{TAG_OWNERS}}}")
    } else {
        format!("{{{TAG_OWNERS}, {body}}}")
    }
}

/// The policy must be accepted (parsed and checked; its tests not run).
pub fn accepted(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("refused: {e}\npolicy: {text}"))
}

/// The policy must be refused, with an error ending in `wording` (Tailscale's text, or ours
/// where Tailscale's is unknown).
pub fn refused(text: &str, wording: &str) -> String {
    match Policy::parse(text) {
        Ok(_) => panic!("accepted, expected {wording:?}\npolicy: {text}"),
        Err(e) => {
            assert!(
                e.ends_with(wording),
                "error {e:?} does not end with {wording:?}"
            );
            e
        }
    }
}

/// The policy's own `tests`/`sshTests` must pass against [`tailnet`].
pub fn tests_pass(text: &str) {
    let policy = accepted(text);
    if let Err(e) = headscale::core::policy::policy_tests::run(&policy, &tailnet()) {
        panic!("tests failed: {e}\npolicy: {text}");
    }
}

/// The policy parses but its own tests must fail, with an error ending in `wording`.
pub fn tests_fail(text: &str, wording: &str) -> String {
    let policy = accepted(text);
    match headscale::core::policy::policy_tests::run(&policy, &tailnet()) {
        Ok(()) => panic!("tests passed, expected {wording:?}\npolicy: {text}"),
        Err(e) => {
            assert!(
                e.ends_with(wording),
                "error {e:?} does not end with {wording:?}"
            );
            e
        }
    }
}

/// `text` compiled against `topology`.
pub fn compile(text: &str, topology: Topology) -> Compiled {
    Compiled::new(Arc::new(accepted(text)), Arc::new(topology))
}

/// The index of the node called `name` in [`tailnet`].
pub fn index(topology: &Topology, name: &str) -> usize {
    topology
        .nodes
        .iter()
        .position(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}
