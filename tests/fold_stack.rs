//! Folding a log with many nodes fits in a default 2 MiB thread stack, in the build the tests
//! use. imbl's B-tree code is instantiated for our map values in this crate; unoptimised, one
//! `OrdMap::remove` on a map of more than 64 nodes took over 2 MiB, so any thread that folds
//! events (a test, the snapshot check, `--at` on a runtime worker) overflowed and aborted the
//! process. `[profile.dev] opt-level = 1` in Cargo.toml is what keeps this green.

use headscale::core::event::RegisterMethod;
use headscale::core::event::{Actor, Envelope, Event, NodeHostinfo, NodeRegistration};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{MachineKey, NodeKey};
use headscale::core::state::fold;
use headscale::core::{State, Timestamp};
use std::net::Ipv4Addr;

const NODES: u64 = 300;

fn log() -> Vec<Envelope> {
    let at = Timestamp::from_unix_ms(1_767_225_600_000);
    let mut seq = 0;
    let mut envelope = |event| {
        seq += 1;
        Envelope {
            seq,
            at,
            actor: Actor::System,
            event,
        }
    };
    let mut log = vec![envelope(Event::UserCreated {
        id: UserId(1),
        name: "ann".into(),
        display_name: String::new(),
        email: String::new(),
    })];
    for n in 1..=NODES {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&n.to_be_bytes());
        log.push(envelope(Event::NodeRegistered(Box::new(
            NodeRegistration {
                id: NodeId(n),
                machine_key: MachineKey(key),
                node_key: NodeKey(key),
                user: Some(UserId(1)),
                tags: vec![],
                given_name: format!("node-{n}"),
                hostinfo: NodeHostinfo {
                    hostname: format!("node-{n}"),
                    ..Default::default()
                },
                ipv4: Some(Ipv4Addr::from(0x6440_0000 + n as u32)),
                ipv6: None,
                expiry: None,
                register_method: RegisterMethod::Cli,
                auth_key: None,
                ephemeral: false,
                authorized: true,
                approved_routes: vec![],
            },
        ))));
    }
    for n in 1..=NODES {
        log.push(envelope(Event::NodeDeleted { id: NodeId(n) }));
    }
    log
}

#[test]
fn three_hundred_nodes_register_and_go_in_a_default_thread_stack() {
    let log = log();
    let state: State = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || fold(State::default(), &log))
        .unwrap()
        .join()
        .expect("the fold thread failed");
    assert!(state.nodes.is_empty());
    assert_eq!(state.users.len(), 1);
}
