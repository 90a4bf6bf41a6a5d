//! Identity rules that live in `decide` (issue #11): a node key belongs to at most one node
//! (registration, re-authentication, rotation, approval of a pending login), a
//! client-requested key expiry is capped by `node.expiry`, and the tag-owner check of
//! `SetNodeTags`. Mostly pure (`decide` + `apply` on a state built here); two tests drive the
//! real server with our own control client: the refusal as a client sees it
//! (`RegisterResponse.Error`) and as an admin approving a pending login sees it.

mod common;

use headscale::core::event::{CoreConfig, NodeHostinfo};
use headscale::core::ids::{NodeId, PreAuthKeyId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::{
    decide, Actor, Command, Envelope, Event, RegisterAuth, Rejection, State, Timestamp,
};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY_MS: i64 = 24 * 3600 * 1000;

/// A tailnet in the pure core: commands decided and applied as the engine does.
struct Tailnet {
    state: State,
    now: Timestamp,
}

impl Tailnet {
    /// Users `alice` (1) and `bob` (2), a reusable key of alice's (1); `node_expiry_days`
    /// as `node.expiry` (0: never).
    fn new(node_expiry_days: u64) -> Tailnet {
        let mut tailnet = Tailnet {
            state: State::default(),
            now: T0,
        };
        tailnet
            .run(Command::ApplyConfig {
                hash: Digest([1; 32]),
                core: CoreConfig {
                    prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
                    prefix_v6: Some("fd7a:115c:a1e0::/48".parse().unwrap()),
                    base_domain: "tailnet.example".into(),
                    node_expiry_secs: node_expiry_days * 24 * 3600,
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
                    email: String::new(),
                    picture_url: String::new(),
                })
                .unwrap();
        }
        tailnet
            .run(Command::CreatePreAuthKey {
                user: Some(UserId(1)),
                reusable: true,
                ephemeral: false,
                pre_approved: false,
                tags: vec![],
                expiration: Timestamp(T0.0 + 2 * DAY_MS),
                prefix: "hskey-auth-test".into(),
                secret_hash: Digest([2; 32]),
            })
            .unwrap();
        tailnet
    }

    fn run(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        let events = decide(&self.state, &command, self.now)?;
        for event in &events {
            let envelope = Envelope {
                seq: self.state.last_seq + 1,
                at: self.now,
                actor: Actor::System,
                event: event.clone(),
            };
            self.state.apply(&envelope);
        }
        Ok(events)
    }

    /// Registers machine `machine` with node key `key` (pre-auth key 1, or as admin for
    /// `user`), asking for `expiry`.
    fn register(
        &mut self,
        machine: u8,
        key: u8,
        auth: RegisterAuth,
        expiry: Option<Timestamp>,
    ) -> Result<Vec<Event>, Rejection> {
        self.run(Command::RegisterNode {
            machine_key: MachineKey([machine; 32]),
            node_key: NodeKey([key; 32]),
            hostinfo: NodeHostinfo {
                hostname: format!("host{machine}"),
                ..NodeHostinfo::default()
            },
            auth,
            requested_expiry: expiry,
            ephemeral: false,
            entropy: u64::from(machine),
        })
    }

    fn node(&self, id: u64) -> &headscale::core::state::Node {
        &self.state.nodes[&NodeId(id)]
    }
}

fn key_auth() -> RegisterAuth {
    RegisterAuth::PreAuthKey(PreAuthKeyId(1))
}

// ---------------------------------------------------------------------------------------------
// M1: a node key belongs to at most one node.
// ---------------------------------------------------------------------------------------------

#[test]
fn registering_with_another_nodes_key_is_refused() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    let before = net.state.clone();
    // Another machine presents the first node's key, with a valid pre-auth key.
    let refused = net.register(2, 0xa1, key_auth(), None).unwrap_err();
    assert_eq!(refused, Rejection::NodeKeyInUse(NodeKey([0xa1; 32])));
    assert!(
        refused
            .to_string()
            .contains("already in use by another node"),
        "{refused}"
    );
    // Also as an admin registering for another user (the approval of a pending login, M2).
    let refused = net
        .register(2, 0xa1, RegisterAuth::Admin { user: UserId(2) }, None)
        .unwrap_err();
    assert_eq!(refused, Rejection::NodeKeyInUse(NodeKey([0xa1; 32])));
    assert_eq!(net.state, before, "a refusal records nothing");
    assert_eq!(
        net.state
            .node_by_node_key(&NodeKey([0xa1; 32]))
            .map(|n| n.id),
        Some(NodeId(1))
    );
}

#[test]
fn the_same_machine_as_another_owner_needs_its_own_node_key() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    // The machine logs in as bob (a new node) but keeps alice's node key: refused, since two
    // nodes would carry one WireGuard key. With a fresh key (what `--force-reauth` sends)
    // it works.
    let refused = net
        .register(1, 0xa1, RegisterAuth::Admin { user: UserId(2) }, None)
        .unwrap_err();
    assert_eq!(refused, Rejection::NodeKeyInUse(NodeKey([0xa1; 32])));
    net.register(1, 0xb2, RegisterAuth::Admin { user: UserId(2) }, None)
        .unwrap();
    assert_eq!(net.state.nodes.len(), 2);
}

#[test]
fn reauthenticating_keeps_or_replaces_its_own_key_but_not_anothers() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    net.register(2, 0xb2, key_auth(), None).unwrap();
    // Node 2 logs in again with its own key, then with a new one: both fine, same node.
    let events = net.register(2, 0xb2, key_auth(), None).unwrap();
    assert!(matches!(
        events[0],
        Event::NodeReauthenticated { id: NodeId(2), .. }
    ));
    net.register(2, 0xc3, key_auth(), None).unwrap();
    assert_eq!(net.node(2).node_key, NodeKey([0xc3; 32]));
    // ...but not with node 1's key.
    let refused = net.register(2, 0xa1, key_auth(), None).unwrap_err();
    assert_eq!(refused, Rejection::NodeKeyInUse(NodeKey([0xa1; 32])));
    assert_eq!(net.node(2).node_key, NodeKey([0xc3; 32]));
}

#[test]
fn rotating_into_another_nodes_key_is_refused() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    net.register(2, 0xb2, key_auth(), None).unwrap();
    // The audit's attack: node 1 reads node 2's key from its netmap and rotates into it.
    let refused = net
        .run(Command::RotateNodeKey {
            id: NodeId(1),
            node_key: NodeKey([0xb2; 32]),
        })
        .unwrap_err();
    assert_eq!(refused, Rejection::NodeKeyInUse(NodeKey([0xb2; 32])));
    assert_eq!(
        net.state
            .node_by_node_key(&NodeKey([0xb2; 32]))
            .map(|n| n.id),
        Some(NodeId(2))
    );
    // A fresh key rotates; the old one is free again afterwards (and found by the index).
    net.run(Command::RotateNodeKey {
        id: NodeId(1),
        node_key: NodeKey([0xd4; 32]),
    })
    .unwrap();
    assert!(net.state.node_by_node_key(&NodeKey([0xa1; 32])).is_none());
    assert_eq!(
        net.state
            .node_by_node_key(&NodeKey([0xd4; 32]))
            .map(|n| n.id),
        Some(NodeId(1))
    );
    net.register(3, 0xa1, key_auth(), None).unwrap();
    assert!(net.state.index_is_consistent());
}

#[test]
fn a_deleted_nodes_key_is_free_again() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    net.run(Command::DeleteNode { id: NodeId(1) }).unwrap();
    assert!(net.state.node_by_node_key(&NodeKey([0xa1; 32])).is_none());
    net.register(2, 0xa1, key_auth(), None).unwrap();
    assert_eq!(
        net.state
            .node_by_node_key(&NodeKey([0xa1; 32]))
            .map(|n| n.id),
        Some(NodeId(2))
    );
}

/// The refusal reaches a real client as `RegisterResponse.Error`: registering with another
/// node's key through a pre-auth key, and rotating into it (`OldNodeKey`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_presenting_another_nodes_key_is_told_why() {
    use headscale::client::ControlClient;
    use headscale::tailcfg::{RegisterAuth as WireAuth, RegisterRequest};

    let server = common::TestServer::start();
    server.ok(&["users", "create", "alice"]);
    let key = server.pre_auth_key("alice", &["--reusable"]);
    let victim = common::join(&server, &key, "victim").await;
    let attacker = common::join(&server, &key, "attacker").await;

    // A third machine registers with the victim's node key.
    let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
    let intruder = ControlClient::connect(&server.url(), machine, common::CLIENT_CAPVER)
        .await
        .unwrap();
    let answer = intruder
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: victim.node_key.clone(),
            auth: Some(WireAuth {
                auth_key: key.clone(),
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        answer.error.contains("already in use by another node"),
        "{answer:?}"
    );

    // The attacker's node rotates into the victim's key.
    let answer = attacker
        .client
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: victim.node_key.clone(),
            old_node_key: attacker.node_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        answer.error.contains("already in use by another node"),
        "{answer:?}"
    );

    // Nothing changed: two nodes, each with its own key.
    let nodes = server.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let keys: Vec<&str> = nodes
        .iter()
        .map(|n| n["nodeKey"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&victim.node_key.as_str()), "{keys:?}");
    assert!(keys.contains(&attacker.node_key.as_str()), "{keys:?}");
}

// ---------------------------------------------------------------------------------------------
// M4: a client-requested key expiry is capped by `node.expiry`.
// ---------------------------------------------------------------------------------------------

/// 9999-12-31T00:00:00Z, what a modified client asks for so it never re-authenticates.
const YEAR_9999: Timestamp = Timestamp(253_402_214_400_000);

#[test]
fn a_requested_expiry_never_outlives_node_expiry() {
    let mut net = Tailnet::new(7);
    let limit = Timestamp(T0.0 + 7 * DAY_MS);
    // New node asking for year 9999: capped at now + 7 days.
    net.register(1, 0xa1, key_auth(), Some(YEAR_9999)).unwrap();
    assert_eq!(net.node(1).expiry, Some(limit));
    // A shorter life than the policy's is granted as asked.
    let sooner = Timestamp(T0.0 + DAY_MS);
    net.register(2, 0xb2, key_auth(), Some(sooner)).unwrap();
    assert_eq!(net.node(2).expiry, Some(sooner));
    // Re-authentication a day later, asking for 9999 again: capped from the new `now`.
    net.now = Timestamp(T0.0 + DAY_MS);
    let events = net.register(2, 0xb2, key_auth(), Some(YEAR_9999)).unwrap();
    assert!(matches!(events[0], Event::NodeReauthenticated { .. }));
    assert_eq!(net.node(2).expiry, Some(Timestamp(net.now.0 + 7 * DAY_MS)));
    // No request: the policy's default.
    net.register(3, 0xc3, key_auth(), None).unwrap();
    assert_eq!(net.node(3).expiry, Some(Timestamp(net.now.0 + 7 * DAY_MS)));
}

#[test]
fn without_node_expiry_the_client_may_choose() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), Some(YEAR_9999)).unwrap();
    assert_eq!(net.node(1).expiry, Some(YEAR_9999));
    net.register(2, 0xb2, key_auth(), None).unwrap();
    assert_eq!(net.node(2).expiry, None);
}

// ---------------------------------------------------------------------------------------------
// P5: `SetNodeTags` checks the policy's `tagOwners` in `decide`, whoever sends it.
// ---------------------------------------------------------------------------------------------

#[test]
fn set_tags_under_a_policy_only_takes_defined_tags() {
    let mut net = Tailnet::new(0);
    net.register(1, 0xa1, key_auth(), None).unwrap();
    // No policy: any valid tag.
    net.run(Command::SetNodeTags {
        id: NodeId(1),
        tags: vec!["tag:anything".into()],
    })
    .unwrap();
    // A policy that defines no tags leaves them to the admin too (headscale would refuse).
    net.run(Command::ReplacePolicy {
        text: r#"{"acls": []}"#.into(),
    })
    .unwrap();
    net.run(Command::SetNodeTags {
        id: NodeId(1),
        tags: vec!["tag:else".into()],
    })
    .unwrap();
    net.run(Command::ReplacePolicy {
        text: r#"{"tagOwners": {"tag:web": ["alice@"], "tag:db": []}}"#.into(),
    })
    .unwrap();
    let before = net.state.clone();
    let refused = net
        .run(Command::SetNodeTags {
            id: NodeId(1),
            tags: vec!["tag:web".into(), "tag:nope".into(), "tag:other".into()],
        })
        .unwrap_err();
    assert_eq!(
        refused,
        Rejection::RequestedTagsNotPermitted(vec!["tag:nope".into(), "tag:other".into()])
    );
    // headscale's wording (what `POST /node/{id}/tags` answered before the move).
    assert_eq!(
        refused.to_string(),
        "requested tags [tag:nope tag:other] are invalid or not permitted"
    );
    assert_eq!(net.state, before);
    // Tags the policy defines are fine, owned by someone or not (an admin sets them).
    net.run(Command::SetNodeTags {
        id: NodeId(1),
        tags: vec!["tag:web".into(), "tag:db".into()],
    })
    .unwrap();
    assert_eq!(net.node(1).tags, vec!["tag:db", "tag:web"]);
    // An unknown node is still "not found" first, an invalid tag still "invalid".
    assert_eq!(
        net.run(Command::SetNodeTags {
            id: NodeId(9),
            tags: vec!["tag:nope".into()],
        }),
        Err(Rejection::NodeNotFound(NodeId(9)))
    );
    assert!(matches!(
        net.run(Command::SetNodeTags {
            id: NodeId(1),
            tags: vec!["server".into()],
        }),
        Err(Rejection::InvalidTag(_))
    ));
}

/// M2, decide side: approving a pending login whose node key another node took in the
/// meantime is refused by the same rule (the pending table's own checks — two pending
/// logins with one key, a key already registered when the login starts — are the
/// control plane's, in `control/pending.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approving_a_login_whose_node_key_is_taken_is_refused() {
    use headscale::client::{self, ControlClient};
    use headscale::tailcfg::{RegisterAuth as WireAuth, RegisterRequest};

    let server = common::TestServer::start();
    server.ok(&["users", "create", "alice"]);
    let key = server
        .ok(&["preauthkeys", "create", "-u", "alice"])
        .trim()
        .to_string();
    let connect = || async {
        let machine = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
        ControlClient::connect(&server.url(), machine, common::CLIENT_CAPVER)
            .await
            .unwrap()
    };
    // Machine one starts an interactive login with node key K.
    let (node_key, _) = client::random_key("nodekey:");
    let waiting = connect().await;
    let answer = waiting
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: node_key.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let login = answer.auth_url.rsplit('/').next().unwrap().to_string();
    assert!(!login.is_empty(), "{answer:?}");
    // Machine two registers K with a pre-auth key before the admin approves.
    let other = connect().await;
    let answer = other
        .register(&RegisterRequest {
            version: common::CLIENT_CAPVER.into(),
            node_key: node_key.clone(),
            auth: Some(WireAuth { auth_key: key }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(answer.error.is_empty(), "{answer:?}");

    let refused = server.fails(&["auth", "register", "--auth-id", &login, "-u", "alice"]);
    assert!(
        refused.contains("already in use by another node"),
        "{refused}"
    );
    let nodes = server.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
}
