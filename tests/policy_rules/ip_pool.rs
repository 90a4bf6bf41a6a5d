//! `ip_pool`: see `src/core/policy/RULES.md` ("### ipPool"): where a new node's IPv4 address
//! comes from when a `nodeAttrs` entry with `ipPool` targets it. Run through the pure core
//! (`decide` and `apply`), as the server does.

use headscale::core::command::{Command, RegisterAuth, Rejection};
use headscale::core::event::{Allocation, CoreConfig, NodeHostinfo};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::roles::Role;
use headscale::core::state::fold;
use headscale::core::{decide, Actor, Envelope, Event, State, Timestamp};
use std::net::Ipv4Addr;

/// A tailnet being built: the state and every envelope so far.
#[derive(Default)]
struct Tailnet {
    state: State,
    log: Vec<Envelope>,
}

impl Tailnet {
    /// `prefixes.v4` as given, the usual IPv6 prefix, users alice (1) and bob (2).
    fn new(prefix_v4: &str) -> Tailnet {
        let mut tailnet = Tailnet::default();
        tailnet
            .run(Command::ApplyConfig {
                hash: Digest([1; 32]),
                core: CoreConfig {
                    prefix_v4: Some(prefix_v4.parse().unwrap()),
                    prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
                    allocation: Allocation::Sequential,
                    base_domain: "tailnet.example".into(),
                    ..CoreConfig::default()
                },
                netmap_json: "{}".into(),
            })
            .unwrap();
        for name in ["alice", "bob"] {
            tailnet
                .run(Command::CreateUser {
                    name: name.into(),
                    display_name: String::new(),
                    email: format!("{name}@example.com"),
                    picture_url: String::new(),
                })
                .unwrap();
        }
        tailnet
    }

    fn run(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        let now = Timestamp(1_767_225_600_000 + self.log.len() as i64 * 1000);
        let events = decide(&self.state, &command, now)?;
        for event in &events {
            let envelope = Envelope {
                seq: self.state.last_seq + 1,
                at: now,
                actor: Actor::LocalSocket,
                event: event.clone(),
            };
            self.state.apply(&envelope);
            self.log.push(envelope);
        }
        Ok(events)
    }

    fn policy(&mut self, node_attrs: &str) -> Result<Vec<Event>, Rejection> {
        self.run(Command::ReplacePolicy {
            text: format!(
                r#"{{"tagOwners": {{"tag:server": ["alice@"]}}, "nodeAttrs": {node_attrs}}}"#
            ),
        })
    }

    /// Registers machine `machine` for user `user` (an admin registration).
    fn register(&mut self, machine: u8, user: u64) -> Result<NodeId, Rejection> {
        let events = self.run(Command::RegisterNode {
            machine_key: MachineKey([machine; 32]),
            node_key: NodeKey([machine; 32]),
            hostinfo: NodeHostinfo {
                hostname: format!("host-{machine}"),
                ..NodeHostinfo::default()
            },
            auth: RegisterAuth::Admin { user: UserId(user) },
            requested_expiry: None,
            ephemeral: false,
            entropy: 7,
        })?;
        Ok(events
            .iter()
            .find_map(|e| match e {
                Event::NodeRegistered(reg) => Some(reg.id),
                Event::NodeReauthenticated { id, .. } => Some(*id),
                _ => None,
            })
            .unwrap())
    }

    fn ipv4(&self, node: NodeId) -> Ipv4Addr {
        self.state.nodes[&node].ipv4.unwrap()
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

#[test]
fn a_new_node_in_the_target_gets_its_address_from_the_pool() {
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    let node = tailnet.register(1, 1).unwrap();
    assert_eq!(tailnet.ipv4(node), ip("100.81.0.1"));
    // IPv6 is not affected.
    assert_eq!(
        tailnet.state.nodes[&node].ipv6,
        Some("fd7a:115c:a1e0::1".parse().unwrap())
    );
}

#[test]
fn a_policy_change_does_not_readdress_existing_nodes() {
    // Captures nodeattrs-ippool-g1/g2/g3: every existing node keeps its 100.64.0.x.
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    let before = tailnet.register(1, 1).unwrap();
    let events = tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    assert!(matches!(&events[..], [Event::PolicyReplaced { .. }]));
    assert_eq!(tailnet.ipv4(before), ip("100.64.0.1"));
    let after = tailnet.register(2, 1).unwrap();
    assert_eq!(tailnet.ipv4(after), ip("100.81.0.1"));
}

#[test]
fn re_registration_keeps_its_address() {
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    let node = tailnet.register(1, 1).unwrap();
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    assert_eq!(tailnet.register(1, 1).unwrap(), node);
    assert_eq!(tailnet.ipv4(node), ip("100.64.0.1"));
}

#[test]
fn a_node_outside_the_target_uses_the_configured_prefix() {
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    let bobs = tailnet.register(1, 2).unwrap();
    assert_eq!(tailnet.ipv4(bobs), ip("100.64.0.1"));
    // ... and never an address in a pool, even after the pool's nodes (kept for the target).
    tailnet.register(2, 1).unwrap();
    let next = tailnet.register(3, 2).unwrap();
    assert_eq!(tailnet.ipv4(next), ip("100.64.0.2"));
}

#[test]
fn the_first_pool_with_room_wins() {
    // Policy order: alice's /30 (two addresses) first, then the pool for everyone.
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(
            r#"[{"target": ["*"], "attr": ["funnel"]},
                {"target": ["alice@"], "ipPool": ["100.81.0.0/30"]},
                {"target": ["autogroup:member"], "ipPool": ["100.82.0.0/24"]}]"#,
        )
        .unwrap();
    let got: Vec<Ipv4Addr> = (1..=3)
        .map(|m| {
            let node = tailnet.register(m, 1).unwrap();
            tailnet.ipv4(node)
        })
        .collect();
    assert_eq!(got, [ip("100.81.0.1"), ip("100.81.0.2"), ip("100.82.0.1")]);
}

#[test]
fn an_exhausted_pool_refuses_registration() {
    // No silent fallback to prefixes.v4: the admin asked for the pool.
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/30"]}]"#)
        .unwrap();
    tailnet.register(1, 1).unwrap();
    tailnet.register(2, 1).unwrap();
    let refused = tailnet.register(3, 1).unwrap_err();
    assert_eq!(
        refused,
        Rejection::AddressSpaceExhausted("100.81.0.0/30".into())
    );
    assert_eq!(refused.to_string(), "no free address left in 100.81.0.0/30");
}

#[test]
fn a_pool_outside_the_configured_prefix_is_refused() {
    let mut tailnet = Tailnet::new("100.64.0.0/16");
    let refused = tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "invalid policy: nodeAttrs[0]: ipPool 100.81.0.0/16 is outside the configured prefixes.v4 (100.64.0.0/16)"
    );
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.64.128.0/17"]}]"#)
        .unwrap();
}

#[test]
fn a_role_target_follows_the_users_role() {
    // Capture nodeattrs-ippool-g1 (`autogroup:admin`), for nodes registered afterwards.
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(r#"[{"target": ["autogroup:admin"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    let member = tailnet.register(1, 1).unwrap();
    tailnet
        .run(Command::SetUserRole {
            id: UserId(1),
            role: Role::Admin,
        })
        .unwrap();
    let admin = tailnet.register(2, 1).unwrap();
    assert_eq!(tailnet.ipv4(member), ip("100.64.0.1"));
    assert_eq!(tailnet.ipv4(admin), ip("100.81.0.1"));
}

#[test]
fn pool_allocation_replays_identically() {
    let mut tailnet = Tailnet::new("100.64.0.0/10");
    tailnet
        .policy(r#"[{"target": ["alice@"], "ipPool": ["100.81.0.0/16"]}]"#)
        .unwrap();
    tailnet.register(1, 1).unwrap();
    tailnet.register(2, 2).unwrap();
    // The policy changes later: replay applies the recorded addresses, never re-allocates.
    tailnet
        .policy(r#"[{"target": ["*"], "ipPool": ["100.90.0.0/16"]}]"#)
        .unwrap();
    let replayed = fold(State::default(), &tailnet.log);
    assert_eq!(replayed, tailnet.state);
    assert_eq!(replayed.nodes[&NodeId(1)].ipv4, Some(ip("100.81.0.1")));
    assert_eq!(replayed.nodes[&NodeId(2)].ipv4, Some(ip("100.64.0.1")));
}
