//! The pure core's cost on the single writer at 10,000 nodes: `decide` + `apply` of 10,000
//! registrations into one `State` (unique hostnames, one shared hostname, random allocation),
//! and a policy replace against the 10,000-node tailnet (`check_for_state` alone, then the
//! whole `decide`, which also runs `autoApprovers` over every node). The writer does exactly
//! this work per command, so a registration that costs O(N) shows up here as O(N²).
//! Run: `cargo bench --bench decide` (results: benches/BENCHMARKS.md, "Core on the writer").

use headscale::core::command::{Command, RegisterAuth};
use headscale::core::event::{Actor, Allocation, CoreConfig, NodeHostinfo};
use headscale::core::ids::UserId;
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::{decide, Envelope, State, Timestamp};
use std::time::{Duration, Instant};

const NODES: u64 = 10_000;
const USERS: u64 = 20;
const NOW: Timestamp = Timestamp(1_800_000_000_000);

/// Users own tags and approve routes (`route_approver` approves 10.0.0.0/8), so registration
/// runs the tag and `autoApprovers` checks as it would in a real tailnet.
fn policy(route_approver: &str) -> String {
    format!(
        r#"{{
  "groups": {{"group:ops": ["user0@", "user1@"]}},
  "tagOwners": {{"tag:web": ["group:ops"], "tag:db": ["user2@"]}},
  "autoApprovers": {{
    "routes": {{"10.0.0.0/8": ["{route_approver}", "tag:web"]}},
    "exitNode": ["user3@"],
  }},
  "acls": [
    {{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}},
    {{"action": "accept", "src": ["group:ops"], "dst": ["tag:web:443", "tag:db:5432"]}},
  ],
  "tests": [
    {{"src": "user0@", "accept": ["tag:web:443"], "deny": ["tag:db:22"]}},
  ],
}}"#
    )
}

/// Decides `command` and applies its events, as the engine's writer does.
fn execute(state: &mut State, command: Command) -> usize {
    let events = decide(state, &command, NOW).unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let count = events.len();
    for event in events {
        let seq = state.last_seq + 1;
        state.apply(&Envelope {
            seq,
            at: NOW,
            actor: Actor::System,
            event,
        });
    }
    count
}

fn base(allocation: Allocation, users: u64) -> State {
    let mut state = State::default();
    execute(
        &mut state,
        Command::ApplyConfig {
            hash: Digest([1; 32]),
            core: CoreConfig {
                prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
                prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
                allocation,
                base_domain: "tailnet.example".into(),
                node_expiry_secs: 0,
                ephemeral_inactivity_secs: 1800,
                require_approval: false,
            },
            netmap_json: "{}".into(),
        },
    );
    for u in 0..users {
        execute(
            &mut state,
            Command::CreateUser {
                name: format!("user{u}"),
                display_name: String::new(),
                email: format!("user{u}@bench.example"),
                picture_url: String::new(),
            },
        );
    }
    execute(
        &mut state,
        Command::ReplacePolicy {
            text: policy("group:ops"),
        },
    );
    state
}

fn register(i: u64, hostname: &str, users: u64) -> Command {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&i.to_le_bytes());
    let mut node_key = key;
    node_key[31] = 1;
    Command::RegisterNode {
        machine_key: MachineKey(key),
        node_key: NodeKey(node_key),
        hostinfo: NodeHostinfo {
            hostname: hostname.to_string(),
            os: "linux".into(),
            // Every tenth node announces a subnet its owner may auto-approve.
            advertised_routes: if i.is_multiple_of(10) {
                vec![format!("10.{}.0.0/16", i % 256).parse().unwrap()]
            } else {
                vec![]
            },
            ..Default::default()
        },
        auth: RegisterAuth::Admin {
            user: UserId(1 + i % users),
        },
        requested_expiry: None,
        ephemeral: false,
        entropy: i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Registers `NODES` nodes; prints the total and the cost of the last thousand (where an
/// O(N) registration is at its slowest).
fn registrations(
    name: &str,
    allocation: Allocation,
    users: u64,
    hostname: impl Fn(u64) -> String,
) -> State {
    let mut state = base(allocation, users);
    let start = Instant::now();
    let mut last_thousand = Instant::now();
    for i in 0..NODES {
        if i == NODES - 1000 {
            last_thousand = Instant::now();
        }
        execute(&mut state, register(i, &hostname(i), users));
    }
    let total = start.elapsed();
    let tail = last_thousand.elapsed();
    assert_eq!(state.nodes.len() as u64, NODES);
    println!(
        "| {name} | {} | {:.1} µs |",
        ms(total),
        tail.as_secs_f64() * 1e6 / 1000.0
    );
    state
}

/// Replaces the policy with one whose `autoApprovers` approve every member's routes, so
/// each node announcing one gets a `RoutesApproved`.
fn replace_policy(name: &str, state: &State) {
    let text = policy("autogroup:member");
    let start = Instant::now();
    headscale::core::policy::check_for_state(&text, state).expect("valid policy");
    let check = start.elapsed();
    let start = Instant::now();
    let events = decide(state, &Command::ReplacePolicy { text }, NOW).expect("accepted");
    println!(
        "| {name} | {} | {} ({} events) |",
        ms(check),
        ms(start.elapsed()),
        events.len()
    );
}

fn main() {
    println!("\n### Core on the writer: {NODES} registrations\n");
    println!("| registrations | total (decide + apply) | per registration, last 1,000 |");
    println!("|---|---|---|");
    let state = registrations(
        "sequential, unique hostnames, 20 users",
        Allocation::Sequential,
        USERS,
        |i| format!("loadgen-{i}"),
    );
    registrations(
        "sequential, one shared hostname, 20 users",
        Allocation::Sequential,
        USERS,
        |_| "node".to_string(),
    );
    registrations(
        "random, unique hostnames, 20 users",
        Allocation::Random,
        USERS,
        |i| format!("loadgen-{i}"),
    );
    let crowd = registrations(
        "sequential, unique hostnames, a user per node",
        Allocation::Sequential,
        NODES,
        |i| format!("loadgen-{i}"),
    );

    println!("\n| policy replace at {NODES} nodes | `check_for_state` | `decide(ReplacePolicy)` |");
    println!("|---|---|---|");
    replace_policy("20 users", &state);
    replace_policy("a user per node", &crowd);
}
