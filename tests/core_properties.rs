//! Property tests of the pure core and the record layer: every event variant round-trips
//! through hash-chained bincode records and the JSON twin; replay from any snapshot (directly
//! and through the in-memory store) equals the full fold; `decide` agrees with a naive
//! reference model; and the state's invariants hold after every step of random commands.

use headscale::core::command::normalize_routes;
use headscale::core::event::{
    Allocation, CoreConfig, ImportSummary, ImportedApiKey, ImportedNode, ImportedPreAuthKey,
    ImportedUser, NodeHostinfo, NodeRegistration, RegisterMethod, SecretHash,
};
use headscale::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::roles::Role;
use headscale::core::state::fold;
use headscale::core::{
    decide, Actor, Command, Envelope, Event, ExpiryChange, RegisterAuth, Rejection, State,
    Timestamp,
};
use headscale::store::memory::MemoryStore;
use headscale::store::record::{
    decode_snapshot, encode_chain, encode_snapshot, sha256, DecodeError, StoredRecord,
    RECORD_HEADER_LEN,
};
use headscale::store::replay::{load_state, load_state_with, verify_chain};
use headscale::store::snapshot_sig;
use headscale::store::EventStore;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

/// `cases` runs (or `PROPTEST_CASES` for a deeper search), and no regression files left
/// next to the test.
fn config(cases: u32) -> ProptestConfig {
    let default = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        failure_persistence: None,
        ..default
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Arbitrary events and envelopes.
// ---------------------------------------------------------------------------------------------

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    any::<i64>().prop_map(Timestamp)
}

/// Mostly plausible names, sometimes arbitrary Unicode (quotes, control characters, ...).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9.:@-]{0,12}", 1 => any::<String>()]
}

fn ipv4net() -> impl Strategy<Value = Ipv4Net> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a), len).unwrap())
}

fn ipv6net() -> impl Strategy<Value = Ipv6Net> {
    (any::<u128>(), 0u8..=128).prop_map(|(a, len)| Ipv6Net::new(Ipv6Addr::from(a), len).unwrap())
}

fn ipnet() -> impl Strategy<Value = IpNet> {
    prop_oneof![ipv4net().prop_map(IpNet::V4), ipv6net().prop_map(IpNet::V6)]
}

fn allocation() -> impl Strategy<Value = Allocation> {
    prop_oneof![Just(Allocation::Sequential), Just(Allocation::Random)]
}

fn register_method() -> impl Strategy<Value = RegisterMethod> {
    prop_oneof![
        Just(RegisterMethod::AuthKey),
        Just(RegisterMethod::Cli),
        Just(RegisterMethod::Oidc)
    ]
}

fn core_config() -> impl Strategy<Value = CoreConfig> {
    (
        option::of(ipv4net()),
        option::of(ipv6net()),
        allocation(),
        text(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(prefix_v4, prefix_v6, allocation, base_domain, node_expiry_secs, eph, approval)| {
                CoreConfig {
                    prefix_v4,
                    prefix_v6,
                    allocation,
                    base_domain,
                    node_expiry_secs,
                    ephemeral_inactivity_secs: eph,
                    require_approval: approval,
                }
            },
        )
}

fn hostinfo() -> impl Strategy<Value = NodeHostinfo> {
    (
        text(),
        text(),
        text(),
        text(),
        vec(ipnet(), 0..4),
        vec(text(), 0..3),
        vec(text(), 0..3),
    )
        .prop_map(
            |(hostname, os, os_version, client_version, routes, tags, ssh)| NodeHostinfo {
                hostname,
                os,
                os_version,
                client_version,
                advertised_routes: routes,
                requested_tags: tags,
                ssh_host_keys: ssh,
            },
        )
}

fn registration() -> impl Strategy<Value = NodeRegistration> {
    (
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            option::of(any::<u64>()),
            vec(text(), 0..3),
            text(),
            hostinfo(),
        ),
        (
            option::of(any::<u32>()),
            option::of(any::<u128>()),
            option::of(timestamp()),
            register_method(),
            option::of(any::<u64>()),
            any::<bool>(),
            any::<bool>(),
            vec(ipnet(), 0..4),
        ),
    )
        .prop_map(
            |(
                (id, machine, node, user, tags, given_name, hostinfo),
                (v4, v6, expiry, method, auth_key, ephemeral, authorized, routes),
            )| NodeRegistration {
                id: NodeId(id),
                machine_key: MachineKey(machine),
                node_key: NodeKey(node),
                user: user.map(UserId),
                tags,
                given_name,
                hostinfo,
                ipv4: v4.map(Ipv4Addr::from),
                ipv6: v6.map(Ipv6Addr::from),
                expiry,
                register_method: method,
                auth_key: auth_key.map(PreAuthKeyId),
                ephemeral,
                authorized,
                approved_routes: routes,
            },
        )
}

/// Every `Event` variant (checked against `Event::KINDS` below).
fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        text().prop_map(|version| Event::ServerStarted { version }),
        (digest(), core_config(), text()).prop_map(|(hash, core, netmap_json)| {
            Event::ConfigApplied {
                hash,
                core,
                netmap_json,
            }
        }),
        (any::<u64>(), text(), text(), text()).prop_map(|(id, name, display_name, email)| {
            Event::UserCreated {
                id: UserId(id),
                name,
                display_name,
                email,
            }
        }),
        (any::<u64>(), text()).prop_map(|(id, name)| Event::UserRenamed {
            id: UserId(id),
            name
        }),
        any::<u64>().prop_map(|id| Event::UserDeleted { id: UserId(id) }),
        (
            (any::<u64>(), option::of(any::<u64>()), text(), digest()),
            (
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                vec(text(), 0..3),
                timestamp()
            ),
        )
            .prop_map(
                |(
                    (id, user, prefix, secret_hash),
                    (reusable, ephemeral, pre_approved, tags, exp),
                )| {
                    Event::PreAuthKeyCreated {
                        id: PreAuthKeyId(id),
                        user: user.map(UserId),
                        prefix,
                        secret_hash,
                        reusable,
                        ephemeral,
                        pre_approved,
                        tags,
                        expiration: exp,
                    }
                }
            ),
        (any::<u64>(), any::<u64>()).prop_map(|(id, node)| Event::PreAuthKeyUsed {
            id: PreAuthKeyId(id),
            node: NodeId(node)
        }),
        (any::<u64>(), timestamp()).prop_map(|(id, at)| Event::PreAuthKeyExpired {
            id: PreAuthKeyId(id),
            at
        }),
        any::<u64>().prop_map(|id| Event::PreAuthKeyDeleted {
            id: PreAuthKeyId(id)
        }),
        (any::<u64>(), text(), digest(), timestamp()).prop_map(
            |(id, prefix, secret_hash, expiration)| Event::ApiKeyCreated {
                id: ApiKeyId(id),
                prefix,
                secret_hash,
                expiration,
            }
        ),
        (any::<u64>(), timestamp()).prop_map(|(id, at)| Event::ApiKeyExpired {
            id: ApiKeyId(id),
            at
        }),
        any::<u64>().prop_map(|id| Event::ApiKeyDeleted { id: ApiKeyId(id) }),
        registration().prop_map(|reg| Event::NodeRegistered(Box::new(reg))),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            option::of(timestamp()),
            option::of(any::<u64>()),
            register_method(),
        )
            .prop_map(|(id, key, expiry, auth_key, method)| {
                Event::NodeReauthenticated {
                    id: NodeId(id),
                    node_key: NodeKey(key),
                    expiry,
                    auth_key: auth_key.map(PreAuthKeyId),
                    register_method: method,
                }
            }),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(id, key)| Event::NodeKeyRotated {
            id: NodeId(id),
            node_key: NodeKey(key)
        }),
        (any::<u64>(), hostinfo()).prop_map(|(id, hostinfo)| Event::NodeHostinfoChanged {
            id: NodeId(id),
            hostinfo
        }),
        (any::<u64>(), text(), any::<bool>()).prop_map(|(id, given_name, by_admin)| {
            Event::NodeRenamed {
                id: NodeId(id),
                given_name,
                by_admin,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, user)| Event::NodeMoved {
            id: NodeId(id),
            user: UserId(user)
        }),
        (any::<u64>(), vec(text(), 0..4)).prop_map(|(id, tags)| Event::NodeTagsSet {
            id: NodeId(id),
            tags
        }),
        any::<u64>().prop_map(|id| Event::NodeApproved { id: NodeId(id) }),
        (any::<u64>(), option::of(timestamp())).prop_map(|(id, expiry)| {
            Event::NodeExpiryChanged {
                id: NodeId(id),
                expiry,
            }
        }),
        any::<u64>().prop_map(|id| Event::NodeDeleted { id: NodeId(id) }),
        (any::<u64>(), vec(ipnet(), 0..5)).prop_map(|(id, routes)| Event::RoutesApproved {
            id: NodeId(id),
            routes
        }),
        text().prop_map(|policy| Event::PolicyReplaced { policy }),
        (any::<u64>(), text(), text(), text()).prop_map(
            |(id, display_name, email, picture_url)| Event::UserProfileChanged {
                id: UserId(id),
                display_name,
                email,
                picture_url,
            }
        ),
        // --- import (headscale databases): the import events ---
        (any::<u64>(), text(), text(), timestamp(), text(), text()).prop_map(
            |(id, name, email, created_at, provider, provider_identifier)| {
                Event::UserImported(Box::new(ImportedUser {
                    id: UserId(id),
                    display_name: name.clone(),
                    name,
                    email,
                    picture_url: String::new(),
                    created_at,
                    provider,
                    provider_identifier,
                }))
            }
        ),
        (
            (
                any::<u64>(),
                option::of(any::<u64>()),
                text(),
                secret_hash()
            ),
            (
                any::<[bool; 3]>(),
                option::of(any::<u64>()),
                vec(text(), 0..3)
            ),
            (timestamp(), option::of(timestamp())),
        )
            .prop_map(
                |(
                    (id, user, prefix, hash),
                    ([reusable, ephemeral, used], used_by, tags),
                    (created_at, expiration),
                )| {
                    Event::PreAuthKeyImported(Box::new(ImportedPreAuthKey {
                        id: PreAuthKeyId(id),
                        user: user.map(UserId),
                        prefix,
                        hash,
                        reusable,
                        ephemeral,
                        used,
                        used_by: used_by.map(NodeId),
                        tags,
                        created_at,
                        expiration,
                    }))
                }
            ),
        (
            any::<u64>(),
            text(),
            secret_hash(),
            timestamp(),
            option::of(timestamp())
        )
            .prop_map(|(id, prefix, hash, created_at, expiration)| {
                Event::ApiKeyImported(Box::new(ImportedApiKey {
                    id: ApiKeyId(id),
                    prefix,
                    hash,
                    created_at,
                    expiration,
                }))
            }),
        (
            registration(),
            timestamp(),
            option::of(timestamp()),
            any::<bool>()
        )
            .prop_map(
                |(registration, created_at, last_seen, given_name_by_admin)| {
                    Event::NodeImported(Box::new(ImportedNode {
                        registration,
                        created_at,
                        last_seen,
                        given_name_by_admin,
                    }))
                }
            ),
        (text(), any::<[u64; 5]>(), any::<[u64; 4]>(), any::<bool>()).prop_map(
            |(schema, [users, nodes, pre_auth_keys, api_keys, skipped], next, policy)| {
                Event::Imported(Box::new(ImportSummary {
                    source: "sqlite".into(),
                    schema,
                    users,
                    nodes,
                    pre_auth_keys,
                    api_keys,
                    policy,
                    skipped,
                    next_user: next[0],
                    next_node: next[1],
                    next_pre_auth_key: next[2],
                    next_api_key: next[3],
                }))
            }
        ),
        // --- OIDC logins ---
        (any::<u64>(), text(), text()).prop_map(|(id, provider, provider_identifier)| {
            Event::UserIdentityLinked {
                id: UserId(id),
                provider,
                provider_identifier,
            }
        }),
        (text(), text(), text()).prop_map(|(identity, email, reason)| {
            Event::OidcLoginRefused {
                identity,
                email,
                reason,
            }
        }),
        // webhooks
        (any::<u64>(), text(), vec(text(), 0..3))
            .prop_map(|(id, url, kinds)| Event::WebhookCreated { id, url, kinds }),
        any::<u64>().prop_map(|id| Event::WebhookDeleted { id }),
        // user roles
        (any::<u64>(), 0..Role::ALL.len()).prop_map(|(id, role)| Event::UserRoleChanged {
            id: UserId(id),
            role: Role::ALL[role],
        }),
    ]
}

/// Either hash kind of a key secret (import).
fn secret_hash() -> impl Strategy<Value = SecretHash> {
    prop_oneof![
        digest().prop_map(SecretHash::Sha256),
        text().prop_map(SecretHash::Bcrypt),
    ]
}

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        Just(Actor::LocalSocket),
        any::<u64>().prop_map(|id| Actor::ApiKey(ApiKeyId(id))),
        any::<u64>().prop_map(|id| Actor::Node(NodeId(id))),
        any::<[u8; 32]>().prop_map(|key| Actor::Machine(MachineKey(key))),
        Just(Actor::System),
        text().prop_map(Actor::Oidc),
    ]
}

/// The variant name of an actor; an exhaustive match, so a new variant must be covered here.
fn actor_kind(actor: &Actor) -> &'static str {
    match actor {
        Actor::LocalSocket => "LocalSocket",
        Actor::ApiKey(_) => "ApiKey",
        Actor::Node(_) => "Node",
        Actor::Machine(_) => "Machine",
        Actor::System => "System",
        Actor::Oidc(_) => "Oidc",
    }
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), timestamp(), actor(), event()).prop_map(|(seq, at, actor, event)| Envelope {
        seq,
        at,
        actor,
        event,
    })
}

fn sample<S: Strategy>(strategy: &S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..count)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect()
}

#[test]
fn generators_cover_every_event_and_actor_variant() {
    let kinds: BTreeSet<&str> = sample(&event(), 2000).iter().map(Event::kind).collect();
    let expected: BTreeSet<&str> = Event::KINDS.iter().copied().collect();
    assert_eq!(kinds, expected);
    assert_eq!(Event::KINDS.len(), expected.len(), "KINDS has duplicates");

    let actors: BTreeSet<&str> = sample(&actor(), 200).iter().map(actor_kind).collect();
    assert_eq!(actors.len(), 6, "{actors:?}");
}

proptest! {
    #![proptest_config(config(256))]

    /// bincode record round trip, with the chain hash stable across encode and decode.
    #[test]
    fn record_round_trips_every_envelope(env in envelope(), prev in digest()) {
        let record = StoredRecord::encode(&env, prev).unwrap();
        prop_assert_eq!(record.seq, env.seq);
        prop_assert_eq!(record.prev_hash, prev);
        let bytes = record.to_bytes();
        prop_assert_eq!(bytes.len(), RECORD_HEADER_LEN + record.payload.len());
        let back = StoredRecord::from_bytes(env.seq, &bytes).unwrap();
        prop_assert_eq!(&back, &record);
        prop_assert_eq!(back.hash(), record.hash());
        prop_assert_eq!(back.envelope().unwrap(), env.clone());
        // Stored under another seq, the envelope is refused rather than silently renumbered.
        let other = env.seq.wrapping_add(1);
        let misplaced = StoredRecord::from_bytes(other, &bytes).unwrap();
        prop_assert_eq!(
            misplaced.envelope(),
            Err(DecodeError::SeqMismatch { expected: other, found: env.seq })
        );
    }

    /// The readable twin: JSON text round trip of the same envelopes.
    #[test]
    fn json_round_trips_every_envelope(env in envelope()) {
        let json = serde_json::to_string(&env).unwrap();
        let back: Envelope = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, env);
    }

    /// Any flipped bit of a stored record is caught: in the payload or its hash by
    /// `from_bytes`, in `prev_hash` by the chain hash; a forger who rehashes the payload
    /// still changes the chain hash.
    #[test]
    fn flipped_bytes_are_detected(
        env in envelope(),
        prev in digest(),
        at in any::<Index>(),
        mask in 1u8..=255,
    ) {
        let record = StoredRecord::encode(&env, prev).unwrap();
        let mut bytes = record.to_bytes();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        let decoded = StoredRecord::from_bytes(env.seq, &bytes);
        if i == 0 {
            prop_assert_eq!(decoded, Err(DecodeError::UnknownVersion(mask)));
        } else if i < 33 {
            let decoded = decoded.unwrap();
            prop_assert_ne!(decoded.prev_hash, record.prev_hash);
            prop_assert_ne!(decoded.hash(), record.hash());
            prop_assert_eq!(&decoded.envelope().unwrap(), &env);
        } else {
            prop_assert_eq!(decoded, Err(DecodeError::PayloadHashMismatch));
        }

        let j = at.index(record.payload.len());
        let mut forged = record.clone();
        forged.payload[j] ^= mask;
        forged.payload_hash = sha256(&forged.payload);
        prop_assert_ne!(forged.payload_hash, record.payload_hash);
        prop_assert_ne!(forged.hash(), record.hash());
        let reread = StoredRecord::from_bytes(env.seq, &forged.to_bytes()).unwrap();
        prop_assert_ne!(reread.hash(), record.hash());
    }
}

// ---------------------------------------------------------------------------------------------
// Random command sequences: abstract operations over small pools of ids and names, turned
// into `Command`s at the time they run (so key expirations are relative to "now").
// ---------------------------------------------------------------------------------------------

const T0: i64 = 1_700_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const BASE_DOMAIN: &str = "tailnet.example";
/// 9999-12-31T00:00:00Z, the expiry a modified client asks for to never re-authenticate (M4).
const YEAR_9999: i64 = 253_402_214_400_000;

/// User names and whether they are valid.
const USER_NAMES: &[(&str, bool)] = &[
    ("alice", true),
    ("bob", true),
    ("carol", true),
    ("dave@example.com", true),
    ("erin", true),
    ("frank.smith", true),
    ("x", false),
    ("9lives", false),
    ("al ice", false),
];

/// Tags and whether they are valid.
const TAGS: &[(&str, bool)] = &[
    ("tag:web", true),
    ("tag:db", true),
    ("tag:ops-1", true),
    ("web", false),
    ("tag:", false),
];

/// Client hostnames and the DNS label each becomes (worked out by hand).
const HOSTS: &[(&str, &str)] = &[
    ("laptop", "laptop"),
    ("Laptop", "laptop"),
    ("web server", "web-server"),
    ("", "node"),
    ("db.local", "db-local"),
    ("laptop-1", "laptop-1"),
];

/// Names an admin may give a node, and whether they are valid labels.
const NODE_NAMES: &[(&str, bool)] = &[
    ("laptop", true),
    ("laptop-1", true),
    ("web-server", true),
    ("db-2", true),
    ("Bad Name", false),
    ("", false),
    ("-x", false),
];

const ROUTES: &[&str] = &[
    "10.0.0.0/8",
    "192.168.1.0/24",
    "0.0.0.0/0",
    "::/0",
    "fd00::/64",
    "10.1.2.3/8",
];

const POLICIES: &[&str] = &[
    "{}",
    "{\"acls\":[]}",
    "",
    // Real policies, so access changes (who sees whom, filters) are part of the sequences.
    r#"{"acls":[{"action":"accept","src":["autogroup:member"],"dst":["autogroup:self:*"]}]}"#,
    r#"{"tagOwners":{"tag:web":["alice@"],"tag:db":["alice@"]},
        "acls":[{"action":"accept","src":["alice@","tag:web"],"dst":["tag:db:5432"]},
                {"action":"accept","src":["bob@"],"dst":["tag:web:80,443"]}]}"#,
    r#"{"groups":{"group:ops":["carol@","erin@"]},"tagOwners":{"tag:ops-1":["group:ops"]},
        "grants":[{"src":["group:ops"],"dst":["*"],"ip":["*"]},
                  {"src":["tag:ops-1"],"dst":["autogroup:member"],"ip":["tcp:22"]}],
        "ssh":[{"action":"accept","src":["group:ops"],"dst":["tag:ops-1"],"users":["root"]}],
        "nodeAttrs":[{"target":["autogroup:member"],"attr":["funnel"]}]}"#,
    // IPv6-only nodes (`disable-ipv4`): one user's and one tag's, then every node.
    r#"{"tagOwners":{"tag:web":["alice@"]},
        "nodeAttrs":[{"target":["bob@","tag:web"],"attr":["disable-ipv4"]}]}"#,
    r#"{"disableIPv4":true}"#,
];

fn prefix_v4() -> Ipv4Net {
    "100.64.0.0/10".parse().unwrap()
}

fn prefix_v6() -> Ipv6Net {
    "fd7a:115c:a1e0::/48".parse().unwrap()
}

fn route(i: usize) -> IpNet {
    ROUTES[i].parse().unwrap()
}

/// An id inside an operation: a live entity of the right kind, chosen when the operation runs
/// (so most operations hit something), or a literal id that may be gone or never existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    Live(usize),
    Raw(u64),
}

impl Pick {
    fn resolve(self, live: &[u64]) -> Pick {
        match self {
            Pick::Live(i) if !live.is_empty() => Pick::Raw(live[i % live.len()]),
            Pick::Live(_) => Pick::Raw(0),
            raw => raw,
        }
    }

    fn id(self) -> u64 {
        match self {
            Pick::Raw(id) => id,
            Pick::Live(_) => unreachable!("operations are resolved before they run"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Auth {
    Admin(Pick),
    Key(Pick),
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    Now,
    In(i64),
    Never,
}

#[derive(Debug, Clone)]
enum Op {
    Config {
        variant: u8,
    },
    CreateUser {
        name: usize,
    },
    RenameUser {
        id: Pick,
        name: usize,
    },
    DeleteUser {
        id: Pick,
        force: bool,
    },
    CreateKey {
        user: Option<Pick>,
        reusable: bool,
        ephemeral: bool,
        pre_approved: bool,
        tags: Vec<usize>,
        expires_in: i64,
    },
    ExpireKey {
        id: Pick,
    },
    DeleteKey {
        id: Pick,
    },
    CreateApiKey {
        expires_in: i64,
    },
    ExpireApiKey {
        id: Pick,
    },
    Register {
        machine: u8,
        node_key: u8,
        host: usize,
        auth: Auth,
        requested_expiry: Option<i64>,
        entropy: u64,
    },
    DeleteNode {
        id: Pick,
    },
    ExpireNode {
        id: Pick,
        change: Expiry,
    },
    RenameNode {
        id: Pick,
        name: usize,
    },
    MoveNode {
        id: Pick,
        user: Pick,
    },
    SetTags {
        id: Pick,
        tags: Vec<usize>,
    },
    ApproveNode {
        id: Pick,
    },
    Logout {
        id: Pick,
    },
    ApproveRoutes {
        id: Pick,
        routes: Vec<usize>,
    },
    EnableRoute {
        route: usize,
        node: Option<Pick>,
    },
    DisableRoute {
        route: usize,
        node: Option<Pick>,
    },
    UpdateHostinfo {
        id: Pick,
        host: usize,
        routes: Vec<usize>,
    },
    RotateNodeKey {
        id: Pick,
        node_key: u8,
    },
    ReplacePolicy {
        text: usize,
    },
}

impl Op {
    /// The same operation with every `Pick::Live` replaced by a live id from `state`.
    fn resolve(&self, state: &State) -> Op {
        let users: Vec<u64> = state.users.keys().map(|i| i.0).collect();
        let keys: Vec<u64> = state.pre_auth_keys.keys().map(|i| i.0).collect();
        let api_keys: Vec<u64> = state.api_keys.keys().map(|i| i.0).collect();
        let nodes: Vec<u64> = state.nodes.keys().map(|i| i.0).collect();
        let mut op = self.clone();
        match &mut op {
            Op::RenameUser { id, .. } | Op::DeleteUser { id, .. } => *id = id.resolve(&users),
            Op::CreateKey { user, .. } => *user = user.map(|u| u.resolve(&users)),
            Op::ExpireKey { id } | Op::DeleteKey { id } => *id = id.resolve(&keys),
            Op::ExpireApiKey { id } => *id = id.resolve(&api_keys),
            Op::Register { auth, .. } => {
                *auth = match *auth {
                    Auth::Admin(user) => Auth::Admin(user.resolve(&users)),
                    Auth::Key(key) => Auth::Key(key.resolve(&keys)),
                }
            }
            Op::DeleteNode { id }
            | Op::ExpireNode { id, .. }
            | Op::RenameNode { id, .. }
            | Op::SetTags { id, .. }
            | Op::ApproveNode { id }
            | Op::Logout { id }
            | Op::ApproveRoutes { id, .. }
            | Op::UpdateHostinfo { id, .. }
            | Op::RotateNodeKey { id, .. } => *id = id.resolve(&nodes),
            Op::MoveNode { id, user } => {
                *id = id.resolve(&nodes);
                *user = user.resolve(&users);
            }
            Op::EnableRoute { node, .. } | Op::DisableRoute { node, .. } => {
                *node = node.map(|n| n.resolve(&nodes))
            }
            Op::Config { .. }
            | Op::CreateUser { .. }
            | Op::CreateApiKey { .. }
            | Op::ReplacePolicy { .. } => {}
        }
        op
    }
}

fn config_command(variant: u8) -> Command {
    Command::ApplyConfig {
        hash: Digest([variant.wrapping_add(1); 32]),
        core: CoreConfig {
            prefix_v4: Some(prefix_v4()),
            prefix_v6: Some(prefix_v6()),
            allocation: if variant & 1 == 0 {
                Allocation::Sequential
            } else {
                Allocation::Random
            },
            base_domain: BASE_DOMAIN.into(),
            node_expiry_secs: if variant & 4 == 0 { 0 } else { 7 * 24 * 3600 },
            ephemeral_inactivity_secs: 0,
            require_approval: variant & 2 != 0,
        },
        netmap_json: format!("{{\"variant\":{variant}}}"),
    }
}

fn tag_list(tags: &[usize]) -> Vec<String> {
    tags.iter().map(|&t| TAGS[t].0.to_string()).collect()
}

fn hostinfo_for(host: usize, routes: &[usize]) -> NodeHostinfo {
    NodeHostinfo {
        hostname: HOSTS[host].0.into(),
        os: "linux".into(),
        advertised_routes: routes.iter().map(|&r| route(r)).collect(),
        ..NodeHostinfo::default()
    }
}

/// The command a resolved operation stands for at `now`, and who issues it.
fn command(op: &Op, now: Timestamp) -> (Actor, Command) {
    let admin = Actor::LocalSocket;
    let at = |offset: i64| Timestamp(now.0 + offset);
    let user = |pick: &Pick| UserId(pick.id());
    let node = |pick: &Pick| NodeId(pick.id());
    let command = match op {
        Op::Config { variant } => return (Actor::System, config_command(*variant)),
        Op::CreateUser { name } => Command::CreateUser {
            name: USER_NAMES[*name].0.into(),
            display_name: String::new(),
            email: String::new(),
            picture_url: String::new(),
        },
        Op::RenameUser { id, name } => Command::RenameUser {
            id: user(id),
            new_name: USER_NAMES[*name].0.into(),
        },
        Op::DeleteUser { id, force } => Command::DeleteUser {
            id: user(id),
            force: *force,
        },
        Op::CreateKey {
            user: owner,
            reusable,
            ephemeral,
            pre_approved,
            tags,
            expires_in,
        } => Command::CreatePreAuthKey {
            user: owner.as_ref().map(user),
            reusable: *reusable,
            ephemeral: *ephemeral,
            pre_approved: *pre_approved,
            tags: tag_list(tags),
            expiration: at(*expires_in),
            prefix: format!("hskey-auth-{}", now.0),
            secret_hash: sha256(&now.0.to_be_bytes()),
        },
        Op::ExpireKey { id } => Command::ExpirePreAuthKey {
            id: PreAuthKeyId(id.id()),
        },
        Op::DeleteKey { id } => Command::DeletePreAuthKey {
            id: PreAuthKeyId(id.id()),
        },
        Op::CreateApiKey { expires_in } => Command::CreateApiKey {
            expiration: at(*expires_in),
            prefix: format!("hskey-api-{}", now.0),
            secret_hash: sha256(&now.0.to_le_bytes()),
        },
        Op::ExpireApiKey { id } => Command::ExpireApiKey {
            id: ApiKeyId(id.id()),
        },
        Op::Register {
            machine,
            node_key,
            host,
            auth,
            requested_expiry,
            entropy,
        } => {
            let command = Command::RegisterNode {
                machine_key: MachineKey([*machine; 32]),
                node_key: NodeKey([*node_key; 32]),
                hostinfo: hostinfo_for(*host, &[]),
                auth: match auth {
                    Auth::Admin(owner) => RegisterAuth::Admin { user: user(owner) },
                    Auth::Key(key) => RegisterAuth::PreAuthKey(PreAuthKeyId(key.id())),
                },
                requested_expiry: requested_expiry.map(at),
                ephemeral: false,
                entropy: *entropy,
            };
            return (Actor::Machine(MachineKey([*machine; 32])), command);
        }
        Op::DeleteNode { id } => Command::DeleteNode { id: node(id) },
        Op::ExpireNode { id, change } => Command::ExpireNode {
            id: node(id),
            change: match change {
                Expiry::Now => ExpiryChange::Now,
                Expiry::In(offset) => ExpiryChange::At(at(*offset)),
                Expiry::Never => ExpiryChange::Never,
            },
        },
        Op::RenameNode { id, name } => Command::RenameNode {
            id: node(id),
            new_name: NODE_NAMES[*name].0.into(),
        },
        Op::MoveNode { id, user: owner } => Command::MoveNode {
            id: node(id),
            user: user(owner),
        },
        Op::SetTags { id, tags } => Command::SetNodeTags {
            id: node(id),
            tags: tag_list(tags),
        },
        Op::ApproveNode { id } => Command::ApproveNode { id: node(id) },
        Op::Logout { id } => Command::LogoutNode { id: node(id) },
        Op::ApproveRoutes { id, routes } => Command::ApproveRoutes {
            id: node(id),
            routes: routes.iter().map(|&r| route(r)).collect(),
        },
        Op::EnableRoute { route: r, node: n } => Command::EnableRoute {
            route: route(*r),
            node: n.as_ref().map(node),
        },
        Op::DisableRoute { route: r, node: n } => Command::DisableRoute {
            route: route(*r),
            node: n.as_ref().map(node),
        },
        Op::UpdateHostinfo { id, host, routes } => {
            let command = Command::UpdateHostinfo {
                id: node(id),
                hostinfo: hostinfo_for(*host, routes),
            };
            return (Actor::Node(node(id)), command);
        }
        Op::RotateNodeKey { id, node_key } => {
            let command = Command::RotateNodeKey {
                id: node(id),
                node_key: NodeKey([*node_key; 32]),
            };
            return (Actor::Node(node(id)), command);
        }
        Op::ReplacePolicy { text } => Command::ReplacePolicy {
            text: POLICIES[*text].into(),
        },
    };
    (admin, command)
}

/// Mostly a live entity; sometimes a literal id below `raw` (often deleted or unborn).
fn pick(raw: u64) -> impl Strategy<Value = Pick> {
    prop_oneof![
        5 => any::<usize>().prop_map(Pick::Live),
        1 => (0..raw).prop_map(Pick::Raw),
    ]
}

fn user_pick() -> impl Strategy<Value = Pick> {
    pick(8)
}

fn key_pick() -> impl Strategy<Value = Pick> {
    pick(10)
}

fn node_pick() -> impl Strategy<Value = Pick> {
    pick(12)
}

fn user_name() -> impl Strategy<Value = usize> {
    0..USER_NAMES.len()
}

/// Tag lists, mostly of valid tags.
fn tags() -> impl Strategy<Value = Vec<usize>> {
    let valid = TAGS.iter().filter(|t| t.1).count();
    vec(prop_oneof![4 => 0..valid, 1 => valid..TAGS.len()], 0..3)
}

fn routes() -> impl Strategy<Value = Vec<usize>> {
    vec(0..ROUTES.len(), 0..3)
}

/// Key lifetimes: sometimes in the past, often short, sometimes around the 90-day limit.
fn expires_in() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => -HOUR..=0,
        4 => 1..=3 * DAY,
        1 => 85 * DAY..=95 * DAY,
    ]
}

fn register_op() -> impl Strategy<Value = Op> {
    (
        0u8..4,
        0u8..4,
        0..HOSTS.len(),
        prop_oneof![
            1 => user_pick().prop_map(Auth::Admin),
            2 => key_pick().prop_map(Auth::Key)
        ],
        option::of(prop_oneof![9 => -DAY..30 * DAY, 1 => Just(YEAR_9999 - T0)]),
        any::<u64>(),
    )
        .prop_map(
            |(machine, node_key, host, auth, requested_expiry, entropy)| Op::Register {
                machine,
                node_key,
                host,
                auth,
                requested_expiry,
                entropy,
            },
        )
}

fn create_key_op() -> impl Strategy<Value = Op> {
    (
        option::weighted(0.8, user_pick()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![3 => Just(vec![]), 1 => tags()],
        expires_in(),
    )
        .prop_map(
            |(user, reusable, ephemeral, pre_approved, tags, expires_in)| Op::CreateKey {
                user,
                reusable,
                ephemeral,
                pre_approved,
                tags,
                expires_in,
            },
        )
}

fn expiry_change() -> impl Strategy<Value = Expiry> {
    prop_oneof![
        Just(Expiry::Now),
        (-DAY..DAY).prop_map(Expiry::In),
        Just(Expiry::Never)
    ]
}

/// The operations the reference model understands.
fn model_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => user_name().prop_map(|name| Op::CreateUser { name }),
        1 => (user_pick(), user_name()).prop_map(|(id, name)| Op::RenameUser { id, name }),
        1 => (user_pick(), any::<bool>()).prop_map(|(id, force)| Op::DeleteUser { id, force }),
        4 => create_key_op(),
        1 => key_pick().prop_map(|id| Op::ExpireKey { id }),
        1 => key_pick().prop_map(|id| Op::DeleteKey { id }),
        8 => register_op(),
        1 => node_pick().prop_map(|id| Op::DeleteNode { id }),
        1 => (node_pick(), expiry_change()).prop_map(|(id, change)| Op::ExpireNode { id, change }),
        2 => (node_pick(), 0..NODE_NAMES.len()).prop_map(|(id, name)| Op::RenameNode { id, name }),
        1 => (node_pick(), user_pick()).prop_map(|(id, user)| Op::MoveNode { id, user }),
        1 => (node_pick(), tags()).prop_map(|(id, tags)| Op::SetTags { id, tags }),
    ]
}

/// Every operation, for replay and invariants.
fn any_op() -> impl Strategy<Value = Op> {
    let node_or_all = || option::of(node_pick());
    prop_oneof![
        16 => model_op(),
        1 => (0u8..8).prop_map(|variant| Op::Config { variant }),
        1 => expires_in().prop_map(|expires_in| Op::CreateApiKey { expires_in }),
        1 => pick(4).prop_map(|id| Op::ExpireApiKey { id }),
        1 => node_pick().prop_map(|id| Op::ApproveNode { id }),
        1 => node_pick().prop_map(|id| Op::Logout { id }),
        1 => (node_pick(), routes()).prop_map(|(id, routes)| Op::ApproveRoutes { id, routes }),
        1 => (0..ROUTES.len(), node_or_all())
            .prop_map(|(route, node)| Op::EnableRoute { route, node }),
        1 => (0..ROUTES.len(), node_or_all())
            .prop_map(|(route, node)| Op::DisableRoute { route, node }),
        2 => (node_pick(), 0..HOSTS.len(), routes())
            .prop_map(|(id, host, routes)| Op::UpdateHostinfo { id, host, routes }),
        1 => (node_pick(), 0u8..4).prop_map(|(id, node_key)| Op::RotateNodeKey { id, node_key }),
        1 => (0..POLICIES.len()).prop_map(|text| Op::ReplacePolicy { text }),
    ]
}

/// Time passing before an operation: often none or a moment, sometimes up to two days.
fn delay() -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0i64), 1 => 1i64..=1000, 1 => 1..=2 * DAY]
}

fn steps(op: impl Strategy<Value = Op>, max: usize) -> impl Strategy<Value = Vec<(i64, Op)>> {
    vec((delay(), op), 0..max)
}

/// Runs commands through `decide` and `apply`, as the engine does, keeping every envelope.
struct Driver {
    state: State,
    envelopes: Vec<Envelope>,
    now: Timestamp,
}

impl Driver {
    /// A log that starts with the configuration `variant`.
    fn new(variant: u8) -> Driver {
        let mut driver = Driver {
            state: State::default(),
            envelopes: Vec::new(),
            now: Timestamp(T0),
        };
        let applied = driver.execute(Actor::System, &config_command(variant));
        assert_eq!(applied.map(|n| n > 0), Ok(true));
        driver
    }

    fn execute(&mut self, actor: Actor, command: &Command) -> Result<usize, Rejection> {
        let events = decide(&self.state, command, self.now)?;
        let count = events.len();
        for event in events {
            let envelope = Envelope {
                seq: self.state.last_seq + 1,
                at: self.now,
                actor: actor.clone(),
                event,
            };
            self.state.apply(&envelope);
            self.envelopes.push(envelope);
        }
        Ok(count)
    }

    /// Lets `delay` ms pass, then runs `op`; returns it resolved, with the outcome.
    fn step(&mut self, delay: i64, op: &Op) -> (Op, Result<usize, Rejection>) {
        self.now = Timestamp(self.now.0 + delay);
        let op = op.resolve(&self.state);
        let (actor, command) = command(&op, self.now);
        let outcome = self.execute(actor, &command);
        (op, outcome)
    }
}

fn run(variant: u8, steps: &[(i64, Op)]) -> Driver {
    let mut driver = Driver::new(variant);
    for (delay, op) in steps {
        let _ = driver.step(*delay, op);
    }
    driver
}

// ---------------------------------------------------------------------------------------------
// 2. Replay equivalence.
// ---------------------------------------------------------------------------------------------

/// Appends the envelopes to a fresh memory store in batches of the given sizes.
fn store_of(envelopes: &[Envelope], batch_sizes: &[usize]) -> MemoryStore {
    let store = MemoryStore::new();
    let records = encode_chain(envelopes, Digest::default()).unwrap();
    let mut rest = &records[..];
    let mut sizes = batch_sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(size);
        store.append(batch).unwrap();
        rest = tail;
    }
    let last = records.last().map(StoredRecord::hash).unwrap_or_default();
    assert_eq!(store.head().hash, last);
    store
}

proptest! {
    #![proptest_config(config(128))]

    /// fold(all) == fold(tail, decode(encode(fold(prefix)))) for any split, and the state's
    /// JSON twin reads back to the same state.
    #[test]
    fn replay_from_a_snapshot_equals_the_full_fold(
        variant in 0u8..8,
        steps in steps(any_op(), 60),
        split in any::<Index>(),
    ) {
        let driver = run(variant, &steps);
        let all = &driver.envelopes;
        let full = fold(State::default(), all);
        prop_assert_eq!(&full, &driver.state);
        prop_assert_eq!(full.last_seq, all.len() as u64);

        let k = split.index(all.len() + 1);
        let prefix = fold(State::default(), &all[..k]);
        let bytes = encode_snapshot(&prefix).unwrap();
        let restored = decode_snapshot(&bytes).unwrap();
        prop_assert_eq!(&restored, &prefix);
        // The derived lookups are not serialised: decoding rebuilds them.
        prop_assert!(restored.index_is_consistent());
        prop_assert_eq!(&fold(restored, &all[k..]), &full);

        let json: State = serde_json::from_value(full.canonical_json()).unwrap();
        prop_assert_eq!(&json, &full);
        prop_assert!(json.index_is_consistent());
    }

    /// The same through the memory store: batched appends with a proper prev_hash chain, a
    /// snapshot somewhere (signed, as the engine writes them), then `load_state_with` the key
    /// at the head and at every seq, and `verify_chain`.
    #[test]
    fn store_replay_equals_the_fold(
        variant in 0u8..8,
        steps in steps(any_op(), 50),
        batch_sizes in vec(1usize..8, 1..6),
        snapshot_at in any::<Index>(),
        second_snapshot in option::of(any::<Index>()),
        unreadable_snapshot in option::of(any::<Index>()),
    ) {
        let driver = run(variant, &steps);
        let all = &driver.envelopes;
        let n = all.len();
        let store = store_of(all, &batch_sizes);
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let trusted = key.verifying_key();
        let signed = |seq: u64, bytes: &[u8]| {
            let head = store.read(seq).unwrap().unwrap().hash();
            snapshot_sig::sign(&key, seq, head, bytes)
        };
        let load = |upto| load_state_with(&store, upto, Some(&trusted)).unwrap().state;
        let mut snapshots: Vec<usize> = vec![snapshot_at.index(n) + 1];
        snapshots.extend(second_snapshot.map(|i| i.index(n) + 1));
        for &seq in &snapshots {
            let state = fold(State::default(), &all[..seq]);
            let value = signed(seq as u64, &encode_snapshot(&state).unwrap());
            store.put_snapshot(seq as u64, &value).unwrap();
        }
        // A snapshot that no longer decodes (an older `State` shape, damage) is only a cache
        // miss: loading replays the log instead.
        if let Some(i) = unreadable_snapshot {
            let mut bytes = encode_snapshot(&State::default()).unwrap();
            bytes.truncate(bytes.len() / 2);
            bytes.push(0xff);
            let seq = i.index(n) as u64 + 1;
            store.put_snapshot(seq, &signed(seq, &bytes)).unwrap();
        }

        let full = fold(State::default(), all);
        prop_assert_eq!(&load_state(&store, None).unwrap(), &full);
        prop_assert_eq!(&load(None), &full);
        prop_assert_eq!(&load(Some(n as u64 + 5)), &full);
        let mut expected = State::default();
        for k in 0..=n {
            if k > 0 {
                expected.apply(&all[k - 1]);
            }
            let loaded = load(Some(k as u64));
            prop_assert_eq!(&loaded, &expected, "load_state_with at {} of {}", k, n);
        }

        let report = verify_chain(&store, None).unwrap();
        prop_assert_eq!(report.events, n as u64);
        prop_assert_eq!(report.head_hash, store.head().hash);
        prop_assert_eq!(report.checkpoints_verified, 0);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. A naive reference model of users, pre-auth keys and nodes.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct ModelKey {
    user: Option<u64>,
    tags: BTreeSet<String>,
    reusable: bool,
    expires: i64,
    /// The node a one-off key was spent on.
    spent_on: Option<u64>,
}

#[derive(Debug, Clone)]
struct ModelNode {
    machine: u8,
    node_key: u8,
    user: Option<u64>,
    tags: BTreeSet<String>,
    name: String,
}

/// What a headscale admin expects, written from the documentation rather than from `decide`.
#[derive(Debug)]
struct Model {
    next_user: u64,
    users: BTreeMap<u64, String>,
    next_key: u64,
    keys: BTreeMap<u64, ModelKey>,
    next_node: u64,
    nodes: BTreeMap<u64, ModelNode>,
}

impl Model {
    fn new() -> Model {
        Model {
            next_user: 1,
            users: BTreeMap::new(),
            next_key: 1,
            keys: BTreeMap::new(),
            next_node: 1,
            nodes: BTreeMap::new(),
        }
    }

    fn name_taken(&self, name: &str) -> bool {
        self.users.values().any(|n| n == name)
    }

    fn tag_set(tags: &[usize]) -> Option<BTreeSet<String>> {
        tags.iter()
            .map(|&t| TAGS[t].1.then(|| TAGS[t].0.to_string()))
            .collect()
    }

    /// `wanted`, or `wanted-1`, `wanted-2`, ... whichever is free first.
    fn free_node_name(&self, wanted: &str) -> String {
        let taken: HashSet<&str> = self.nodes.values().map(|n| n.name.as_str()).collect();
        std::iter::once(wanted.to_string())
            .chain((1..).map(|i| format!("{wanted}-{i}")))
            .find(|c| !taken.contains(c.as_str()))
            .unwrap()
    }

    /// Applies `op` at `now`; whether it was accepted.
    fn step(&mut self, op: &Op, now: i64) -> bool {
        match op {
            Op::CreateUser { name } => {
                let (name, valid) = USER_NAMES[*name];
                if !valid || self.name_taken(name) {
                    return false;
                }
                self.users.insert(self.next_user, name.into());
                self.next_user += 1;
                true
            }
            Op::RenameUser { id, name } => {
                let id = &id.id();
                let (name, valid) = USER_NAMES[*name];
                let Some(current) = self.users.get(id) else {
                    return false;
                };
                if !valid || (current != name && self.name_taken(name)) {
                    return false;
                }
                self.users.insert(*id, name.into());
                true
            }
            Op::DeleteUser { id, force } => {
                let id = &id.id();
                if !self.users.contains_key(id) {
                    return false;
                }
                let owns = self.nodes.values().any(|n| n.user == Some(*id));
                if owns && !force {
                    return false;
                }
                self.nodes.retain(|_, n| n.user != Some(*id));
                self.keys.retain(|_, k| k.user != Some(*id));
                self.users.remove(id);
                true
            }
            Op::CreateKey {
                user,
                reusable,
                tags,
                expires_in,
                ..
            } => {
                let user = user.map(Pick::id);
                if user.is_some_and(|u| !self.users.contains_key(&u)) {
                    return false;
                }
                let Some(tags) = Self::tag_set(tags) else {
                    return false;
                };
                if user.is_none() && tags.is_empty() {
                    return false;
                }
                if *expires_in <= 0 || *expires_in > 90 * DAY {
                    return false;
                }
                let key = ModelKey {
                    user,
                    tags,
                    reusable: *reusable,
                    expires: now + expires_in,
                    spent_on: None,
                };
                self.keys.insert(self.next_key, key);
                self.next_key += 1;
                true
            }
            Op::ExpireKey { id } => match self.keys.get_mut(&id.id()) {
                Some(key) => {
                    key.expires = key.expires.min(now);
                    true
                }
                None => false,
            },
            Op::DeleteKey { id } => self.keys.remove(&id.id()).is_some(),
            Op::Register {
                machine,
                node_key,
                host,
                auth,
                ..
            } => self.register(*machine, *node_key, HOSTS[*host].1, *auth, now),
            Op::DeleteNode { id } => self.nodes.remove(&id.id()).is_some(),
            Op::ExpireNode { id, .. } => self.nodes.contains_key(&id.id()),
            Op::RenameNode { id, name } => {
                let id = &id.id();
                let (name, valid) = NODE_NAMES[*name];
                if !valid || !self.nodes.contains_key(id) {
                    return false;
                }
                if self
                    .nodes
                    .iter()
                    .any(|(n, node)| n != id && node.name == name)
                {
                    return false;
                }
                self.nodes.get_mut(id).unwrap().name = name.into();
                true
            }
            Op::MoveNode { id, user } => {
                let (id, user) = (&id.id(), &user.id());
                if !self.users.contains_key(user) {
                    return false;
                }
                match self.nodes.get_mut(id) {
                    Some(node) => {
                        node.user = Some(*user);
                        node.tags.clear();
                        true
                    }
                    None => false,
                }
            }
            Op::SetTags { id, tags } => {
                let id = &id.id();
                let Some(tags) = Self::tag_set(tags) else {
                    return false;
                };
                if tags.is_empty() {
                    return false;
                }
                match self.nodes.get_mut(id) {
                    Some(node) => {
                        node.tags = tags;
                        node.user = None;
                        true
                    }
                    None => false,
                }
            }
            other => unreachable!("not a model operation: {other:?}"),
        }
    }

    fn register(&mut self, machine: u8, node_key: u8, label: &str, auth: Auth, now: i64) -> bool {
        let (user, tags, key) = match auth {
            Auth::Admin(user) => {
                let user = user.id();
                if !self.users.contains_key(&user) {
                    return false;
                }
                (Some(user), BTreeSet::new(), None)
            }
            Auth::Key(id) => {
                let id = id.id();
                let Some(key) = self.keys.get(&id) else {
                    return false;
                };
                if key.expires <= now {
                    return false;
                }
                if key.tags.is_empty() {
                    (key.user, BTreeSet::new(), Some(id))
                } else {
                    (None, key.tags.clone(), Some(id))
                }
            }
        };
        // The same machine logging in again as the same identity keeps its node (the newest,
        // should there be several).
        let existing = self
            .nodes
            .iter()
            .rev()
            .find(|(_, n)| n.machine == machine && n.user == user && n.tags == tags)
            .map(|(id, _)| *id);
        if let Some(key) = key.map(|id| &self.keys[&id]) {
            // A spent one-off key only lets the node it was spent on log in again.
            if !key.reusable && key.spent_on.is_some() && key.spent_on != existing {
                return false;
            }
        }
        // A node key belongs to one node: no other node may hold it (M1).
        if self
            .nodes
            .iter()
            .any(|(id, n)| n.node_key == node_key && Some(*id) != existing)
        {
            return false;
        }
        let node = match existing {
            Some(id) => {
                self.nodes.get_mut(&id).unwrap().node_key = node_key;
                id
            }
            None => {
                let name = self.free_node_name(label);
                let id = self.next_node;
                self.next_node += 1;
                self.nodes.insert(
                    id,
                    ModelNode {
                        machine,
                        node_key,
                        user,
                        tags,
                        name,
                    },
                );
                id
            }
        };
        if let Some(key) = key.and_then(|id| self.keys.get_mut(&id)) {
            if !key.reusable && key.spent_on.is_none() {
                key.spent_on = Some(node);
            }
        }
        true
    }
}

type NodeView = BTreeMap<u64, (Option<u64>, BTreeSet<String>, String)>;

fn compare(model: &Model, state: &State, now: Timestamp) -> Result<(), TestCaseError> {
    let real_users: BTreeMap<u64, String> = state
        .users
        .values()
        .map(|u| (u.id.0, u.name.clone()))
        .collect();
    prop_assert_eq!(&real_users, &model.users, "users");

    let real_nodes: NodeView = state
        .nodes
        .values()
        .map(|n| {
            let tags = n.tags.iter().cloned().collect();
            (n.id.0, (n.user.map(|u| u.0), tags, n.given_name.clone()))
        })
        .collect();
    let model_nodes: NodeView = model
        .nodes
        .iter()
        .map(|(id, n)| (*id, (n.user, n.tags.clone(), n.name.clone())))
        .collect();
    prop_assert_eq!(&real_nodes, &model_nodes, "nodes (owner, tags, given name)");
    for node in state.nodes.values() {
        let machine = model.nodes[&node.id.0].machine;
        prop_assert_eq!(node.machine_key, MachineKey([machine; 32]));
        let node_key = model.nodes[&node.id.0].node_key;
        prop_assert_eq!(node.node_key, NodeKey([node_key; 32]));
    }

    let real_keys: BTreeMap<u64, (bool, bool)> = state
        .pre_auth_keys
        .values()
        .map(|k| (k.id.0, (k.used, k.is_expired(now))))
        .collect();
    let model_keys: BTreeMap<u64, (bool, bool)> = model
        .keys
        .iter()
        .map(|(id, k)| (*id, (k.spent_on.is_some(), k.expires <= now.0)))
        .collect();
    prop_assert_eq!(&real_keys, &model_keys, "pre-auth keys (used, expired)");
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn decide_agrees_with_the_reference_model(
        variant in 0u8..8,
        steps in steps(model_op(), 60),
    ) {
        let mut driver = Driver::new(variant);
        let mut model = Model::new();
        let mut invariants = Invariants::default();
        for (i, (delay, op)) in steps.iter().enumerate() {
            let (op, real) = driver.step(*delay, op);
            let expected = model.step(&op, driver.now.0);
            prop_assert_eq!(
                real.is_ok(),
                expected,
                "step {}: {:?} gave {:?}, the model says {}",
                i,
                op,
                real,
                if expected { "accept" } else { "reject" }
            );
            compare(&model, &driver.state, driver.now)?;
            invariants.check(&driver)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Invariants after every step.
// ---------------------------------------------------------------------------------------------

/// Ids of one kind: live at the last check, and ever seen.
#[derive(Default)]
struct Ids {
    live: BTreeSet<u64>,
    seen: BTreeSet<u64>,
}

impl Ids {
    /// Every id now live is below `next` and either was live last time or is brand new.
    fn check(
        &mut self,
        current: impl Iterator<Item = u64>,
        next: u64,
        what: &str,
    ) -> Result<(), TestCaseError> {
        let current: BTreeSet<u64> = current.collect();
        for id in &current {
            prop_assert!(
                *id >= 1 && *id < next,
                "{} id {} not below next {}",
                what,
                id,
                next
            );
            prop_assert!(
                self.live.contains(id) || !self.seen.contains(id),
                "{} id {} was reused",
                what,
                id
            );
        }
        self.seen.extend(current.iter().copied());
        self.live = current;
        Ok(())
    }
}

/// State that must hold after every step, with memory of ids and times seen so far.
#[derive(Default)]
struct Invariants {
    users: Ids,
    nodes: Ids,
    keys: Ids,
    api_keys: Ids,
    last_at: Timestamp,
    /// Envelopes looked at so far.
    seen: usize,
    /// Nodes whose expiry an admin set with `ExpireNode` since they were last tagged.
    admin_expiry: BTreeSet<NodeId>,
}

impl Invariants {
    fn check(&mut self, driver: &Driver) -> Result<(), TestCaseError> {
        let state = &driver.state;
        prop_assert_eq!(state.last_seq, driver.envelopes.len() as u64);
        prop_assert!(state.last_at >= self.last_at);
        self.last_at = state.last_at;
        for envelope in &driver.envelopes[self.seen..] {
            // A client-requested expiry never outlives the configured node expiry (M4). The
            // config is the state's: a config change is a step of its own.
            let limit = state.config.core.node_expiry_secs;
            let granted = match &envelope.event {
                Event::NodeRegistered(reg) => Some(reg.expiry),
                Event::NodeReauthenticated { expiry, .. } => Some(*expiry),
                _ => None,
            };
            if let Some(granted) = granted.filter(|_| limit > 0) {
                let latest = envelope.at.0 + limit as i64 * 1000;
                prop_assert!(
                    granted.is_none_or(|t| t.0 <= latest),
                    "expiry {:?} granted at {:?} beyond node.expiry",
                    granted,
                    envelope.at
                );
            }
            match &envelope.event {
                Event::NodeExpiryChanged { id, expiry } if expiry.is_some() => {
                    self.admin_expiry.insert(*id);
                }
                Event::NodeExpiryChanged { id, .. }
                | Event::NodeTagsSet { id, .. }
                | Event::NodeDeleted { id } => {
                    self.admin_expiry.remove(id);
                }
                _ => {}
            }
        }
        self.seen = driver.envelopes.len();

        for (id, user) in &state.users {
            prop_assert_eq!(*id, user.id);
        }
        for (id, node) in &state.nodes {
            prop_assert_eq!(*id, node.id);
        }
        for (id, key) in &state.pre_auth_keys {
            prop_assert_eq!(*id, key.id);
            if let Some(user) = key.user {
                prop_assert!(state.users.contains_key(&user), "key {} of gone user", id);
            }
        }
        for (id, key) in &state.api_keys {
            prop_assert_eq!(*id, key.id);
        }
        let next = &state.next_ids;
        self.users
            .check(state.users.keys().map(|i| i.0), next.user, "user")?;
        self.nodes
            .check(state.nodes.keys().map(|i| i.0), next.node, "node")?;
        let keys = state.pre_auth_keys.keys().map(|i| i.0);
        self.keys.check(keys, next.pre_auth_key, "pre-auth key")?;
        let api_keys = state.api_keys.keys().map(|i| i.0);
        self.api_keys.check(api_keys, next.api_key, "api key")?;

        // A node key belongs to at most one node (M1), and the derived lookups agree with
        // the maps.
        prop_assert!(state.index_is_consistent(), "the state's index drifted");
        let mut node_keys = HashSet::new();
        for node in state.nodes.values() {
            prop_assert!(
                node_keys.insert(node.node_key),
                "node key {} held twice",
                node.node_key
            );
            prop_assert_eq!(
                state.node_by_node_key(&node.node_key).map(|n| n.id),
                Some(node.id)
            );
        }
        let mut names = HashSet::new();
        let mut v4 = HashSet::new();
        let mut v6 = HashSet::new();
        for node in state.nodes.values() {
            if let Some(user) = node.user {
                prop_assert!(
                    state.users.contains_key(&user),
                    "node {} of gone user",
                    node.id
                );
            }
            prop_assert!(
                node.user.is_some() != node.is_tagged(),
                "node {} must have exactly one of an owner and tags: {:?}",
                node.id,
                node
            );
            // Tagging clears the expiry; only an admin's later `ExpireNode` may set one again
            // (ARCHITECTURE.md, deliberate differences).
            if node.is_tagged() && !self.admin_expiry.contains(&node.id) {
                prop_assert_eq!(node.expiry, None, "tagged node {} expires", node.id);
            }
            prop_assert!(
                names.insert(node.given_name.clone()),
                "name {}",
                node.given_name
            );
            prop_assert_eq!(
                &normalize_routes(&node.approved_routes),
                &node.approved_routes
            );
            let ipv4 = node.ipv4.expect("both prefixes are configured");
            let ipv6 = node.ipv6.expect("both prefixes are configured");
            prop_assert!(prefix_v4().contains(&ipv4), "{} outside the prefix", ipv4);
            prop_assert!(prefix_v6().contains(&ipv6), "{} outside the prefix", ipv6);
            prop_assert!(v4.insert(ipv4), "{} given twice", ipv4);
            prop_assert!(v6.insert(ipv6), "{} given twice", ipv6);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn invariants_hold_after_every_step(
        variant in 0u8..8,
        steps in steps(any_op(), 60),
    ) {
        let mut driver = Driver::new(variant);
        let mut invariants = Invariants::default();
        invariants.check(&driver)?;
        for (delay, op) in &steps {
            let before = driver.envelopes.len();
            match driver.step(*delay, op).1 {
                Ok(count) => prop_assert_eq!(driver.envelopes.len(), before + count),
                Err(_) => prop_assert_eq!(driver.envelopes.len(), before),
            }
            invariants.check(&driver)?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Netmap sessions: deltas bring a client exactly to the full map, never repeating.
// ---------------------------------------------------------------------------------------------

/// A presence change between steps: node (picked live), online, endpoint port, home DERP.
type PresenceChange = (Pick, bool, u16, u32);

/// What a real client believes after applying messages (protocol notes §5.4 order).
#[derive(Debug, Default)]
struct ClientModel {
    node: Option<serde_json::Value>,
    peers: BTreeMap<u64, serde_json::Value>,
    profiles: BTreeMap<u64, serde_json::Value>,
    derp: Option<serde_json::Value>,
    dns: Option<serde_json::Value>,
    filter: Option<serde_json::Value>,
}

/// Fields the comparison leaves out: `DERP` (legacy, never patched), `LastSeen` of an online
/// node (a patch cannot clear it; clients show it only when offline) and `Expired` (derived
/// from time, which the client computes itself from `KeyExpiry`).
fn normalized(node: &serde_json::Value) -> serde_json::Value {
    let mut node = node.clone();
    let object = node.as_object_mut().unwrap();
    object.remove("DERP");
    object.remove("Expired");
    if object.get("Online") == Some(&serde_json::Value::Bool(true)) {
        object.remove("LastSeen");
    }
    node
}

/// The self node without presence: a node's own endpoints, home DERP and online state come
/// from itself, so a change there is not sent back to it.
fn self_normalized(node: &serde_json::Value) -> serde_json::Value {
    let mut node = normalized(node);
    let object = node.as_object_mut().unwrap();
    for key in ["Endpoints", "HomeDERP", "DiscoKey", "Online", "LastSeen"] {
        object.remove(key);
    }
    node
}

impl ClientModel {
    fn apply(&mut self, message: &serde_json::Value) -> Result<(), TestCaseError> {
        if let Some(node) = message.get("Node") {
            self.node = Some(node.clone());
        }
        let list = |key: &str| message.get(key).and_then(|v| v.as_array()).cloned();
        if let Some(peers) = list("Peers").filter(|p| !p.is_empty()) {
            self.peers = peers
                .into_iter()
                .map(|p| (p["ID"].as_u64().unwrap(), p))
                .collect();
        } else {
            for id in list("PeersRemoved").unwrap_or_default() {
                let id = id.as_u64().unwrap();
                prop_assert!(
                    self.peers.remove(&id).is_some(),
                    "removed unknown peer {}",
                    id
                );
            }
            for peer in list("PeersChanged").unwrap_or_default() {
                let id = peer["ID"].as_u64().unwrap();
                let before = self.peers.insert(id, peer.clone());
                prop_assert!(
                    before.as_ref() != Some(&peer),
                    "peer {} sent again unchanged",
                    id
                );
            }
            for patch in list("PeersChangedPatch").unwrap_or_default() {
                let id = patch["NodeID"].as_u64().unwrap();
                let peer = self.peers.get_mut(&id);
                prop_assert!(peer.is_some(), "patch for unknown peer {}", id);
                let peer = peer.unwrap().as_object_mut().unwrap();
                let before = peer.clone();
                for (from, to) in [
                    ("DERPRegion", "HomeDERP"),
                    ("Endpoints", "Endpoints"),
                    ("DiscoKey", "DiscoKey"),
                    ("Online", "Online"),
                    ("LastSeen", "LastSeen"),
                ] {
                    if let Some(value) = patch.get(from) {
                        peer.insert(to.into(), value.clone());
                    }
                }
                if peer.get("HomeDERP") == Some(&serde_json::json!(0)) {
                    peer.remove("HomeDERP");
                }
                if peer.get("Endpoints") == Some(&serde_json::json!([])) {
                    peer.remove("Endpoints");
                }
                prop_assert!(*peer != before, "empty patch for {}", id);
            }
        }
        for profile in list("UserProfiles").unwrap_or_default() {
            self.profiles
                .insert(profile["ID"].as_u64().unwrap(), profile.clone());
        }
        if let Some(derp) = message.get("DERPMap") {
            self.derp = Some(derp.clone());
        }
        if let Some(dns) = message.get("DNSConfig") {
            self.dns = Some(dns.clone());
        }
        if let Some(filter) = message.get("PacketFilters") {
            self.filter = Some(filter.clone());
        }
        Ok(())
    }

    /// The model equals what a fresh full map would say.
    fn check(&self, full: &serde_json::Value) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            self.node.as_ref().map(self_normalized),
            Some(self_normalized(&full["Node"]))
        );
        let expected: BTreeMap<u64, serde_json::Value> = full
            .get("Peers")
            .and_then(|p| p.as_array())
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p["ID"].as_u64().unwrap(), normalized(&p)))
            .collect();
        let believed: BTreeMap<u64, serde_json::Value> = self
            .peers
            .iter()
            .map(|(id, p)| (*id, normalized(p)))
            .collect();
        prop_assert_eq!(believed, expected);
        for profile in full["UserProfiles"].as_array().unwrap() {
            let id = profile["ID"].as_u64().unwrap();
            prop_assert_eq!(self.profiles.get(&id), Some(profile));
        }
        prop_assert_eq!(self.derp.as_ref(), full.get("DERPMap"));
        prop_assert_eq!(self.dns.as_ref(), full.get("DNSConfig"));
        prop_assert_eq!(self.filter.as_ref(), full.get("PacketFilters"));
        Ok(())
    }
}

fn netmap_context() -> headscale::core::netmap::NetmapContext {
    use headscale::tailcfg::SharedJson;
    headscale::core::netmap::NetmapContext {
        derp_map: SharedJson::new(&serde_json::json!({"Regions": {}})).unwrap(),
        dns_config: SharedJson::new(&serde_json::json!({"Proxied": true})).unwrap(),
        access: std::sync::Arc::new(headscale::core::netmap::Access::for_state(
            &headscale::core::State::default(),
            "http://127.0.0.1:8080",
        )),
        domain: BASE_DOMAIN.into(),
        self_caps: std::collections::BTreeMap::from([(
            "https://tailscale.com/cap/file-sharing".to_string(),
            Vec::new(),
        )]),
        log_tail: false,
        ranking: Default::default(),
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// After any sequence of changes (facts and presence), every session's client, having
    /// applied only deltas since its full map, believes exactly what a fresh full map says;
    /// no delta repeats what the client has or patches a peer it does not know.
    #[test]
    fn deltas_converge_to_the_full_map(
        variant in 0u8..8,
        steps in steps(any_op(), 40),
        presence in vec(option::of((node_pick(), any::<bool>(), 1u16..4, 0u32..3)), 40),
    ) {
        use headscale::core::netmap::{Delta, NodePresence, PeerCache, SessionView};
        let mut context = netmap_context();
        let mut driver = Driver::new(variant);
        let mut table: BTreeMap<NodeId, NodePresence> = BTreeMap::new();
        let mut cache = PeerCache::default();
        let mut sessions: BTreeMap<NodeId, (SessionView, ClientModel)> = BTreeMap::new();
        let mut seen = driver.state.clone();

        for ((delay, op), change) in steps.iter().zip(presence.iter().chain(std::iter::repeat(&None))) {
            let _ = driver.step(*delay, op);
            let state = driver.state.clone();
            let mut dirty: BTreeSet<NodeId> = seen
                .nodes
                .diff(&state.nodes)
                .map(|item| match item {
                    imbl::ordmap::DiffItem::Add(id, _) => *id,
                    imbl::ordmap::DiffItem::Update { new: (id, _), .. } => *id,
                    imbl::ordmap::DiffItem::Remove(id, _) => *id,
                })
                .collect();
            let mut everything = seen.users != state.users;
            // As the hub does: a new access view when the policy or the topology changes.
            let topology = headscale::core::policy::Topology::from_state(&state);
            // A topology change alone only changes edges of the nodes that changed (they are
            // in `dirty`): their own sessions re-examine every peer, the others only them.
            // Only a policy change re-examines every pair for everyone.
            let policy_changed = seen.policy != state.policy;
            let mut access_changed = false;
            if policy_changed || **context.access.topology() != topology || sessions.is_empty() {
                context.access = std::sync::Arc::new(
                    headscale::core::netmap::Access::for_state(&state, "http://127.0.0.1:8080"),
                );
                everything |= policy_changed || sessions.is_empty();
                access_changed = true;
            }
            let change: Option<PresenceChange> = *change;
            if let Some((pick, online, port, derp)) = change {
                let live: Vec<u64> = state.nodes.keys().map(|n| n.0).collect();
                if let Pick::Raw(id) = pick.resolve(&live) {
                    let id = NodeId(id);
                    if state.nodes.contains_key(&id) {
                        let entry = table.entry(id).or_default();
                        entry.online = online;
                        entry.endpoints = vec![format!("127.0.0.1:{port}")];
                        entry.home_derp = derp;
                        entry.last_seen = (!online).then_some(driver.now);
                        dirty.insert(id);
                    }
                }
            }
            table.retain(|id, _| state.nodes.contains_key(id));
            seen = state.clone();
            let lookup = |id: NodeId| table.get(&id).cloned().unwrap_or_default();
            if everything {
                cache.refresh_all(&state, &context.access, &lookup, driver.now).unwrap();
            } else {
                cache.refresh(&state, &context.access, &lookup, dirty.iter().copied(), driver.now).unwrap();
            }

            // Deltas to every open session; a deleted viewer's session ends.
            let changed: Vec<NodeId> = dirty.iter().copied().collect();
            let mut ended = Vec::new();
            for (viewer, (view, client)) in sessions.iter_mut() {
                let own_changed = access_changed && dirty.contains(viewer);
                match view.delta(&changed, everything || own_changed, &state, &cache, &context, driver.now) {
                    Delta::Nothing => {}
                    Delta::Message(message) => client.apply(&serde_json::to_value(&*message).unwrap())?,
                    Delta::ViewerGone => ended.push(*viewer),
                }
            }
            for viewer in ended {
                prop_assert!(!state.nodes.contains_key(&viewer));
                sessions.remove(&viewer);
            }
            // New nodes open a session (a full map from the same point the deltas start).
            for id in state.nodes.keys() {
                if !sessions.contains_key(id) {
                    let (view, full) = SessionView::full(*id, &state, &cache, &context, driver.now).unwrap();
                    let mut client = ClientModel::default();
                    client.apply(&serde_json::to_value(&full).unwrap())?;
                    sessions.insert(*id, (view, client));
                }
            }
            // Every client now believes what a freshly built full map says.
            let mut fresh = PeerCache::default();
            fresh.refresh_all(&state, &context.access, &lookup, driver.now).unwrap();
            for (viewer, (_, client)) in &sessions {
                let (_, full) = SessionView::full(*viewer, &state, &fresh, &context, driver.now).unwrap();
                client.check(&serde_json::to_value(&full).unwrap())?;
                // M3: an expired or unapproved viewer knows nothing of the tailnet.
                if state.nodes[viewer].is_revoked(driver.now) {
                    prop_assert!(client.peers.is_empty(), "revoked {} sees peers", viewer);
                    prop_assert_eq!(
                        client.filter.as_ref(),
                        Some(&serde_json::json!({"base": []})),
                        "revoked {} has a filter",
                        viewer
                    );
                    prop_assert_eq!(client.dns.as_ref(), Some(&serde_json::json!({})));
                }
            }
        }
    }
}
