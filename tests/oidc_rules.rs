//! OIDC login rules as `decide` applies them (issue #13), pure: who a login is (issuer and
//! subject, also for users imported from headscale), what a first and a later login record,
//! what a refusal records, and how a confirmed login registers its machine (method, owner,
//! token expiry, device approval, re-login). The provider side is in `tests/oidc.rs`.

use headscale::core::event::{CoreConfig, ImportedUser, NodeHostinfo, RegisterMethod};
use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{Digest, MachineKey, NodeKey};
use headscale::core::oidc::{Claims, LoginRules};
use headscale::core::{decide, Actor, Command, Envelope, Event, RegisterAuth, State, Timestamp};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const ISSUER: &str = "http://localhost:9998/";

struct Tailnet {
    state: State,
}

impl Tailnet {
    fn new(require_approval: bool) -> Tailnet {
        let mut net = Tailnet {
            state: State::default(),
        };
        net.run(Command::ApplyConfig {
            hash: Digest([1; 32]),
            core: CoreConfig {
                prefix_v4: Some("100.64.0.0/10".parse().unwrap()),
                base_domain: "tailnet.example".into(),
                node_expiry_secs: 180 * 24 * 3600,
                require_approval,
                ..CoreConfig::default()
            },
            netmap_json: "{}".into(),
        });
        net
    }

    fn run(&mut self, command: Command) -> Vec<Event> {
        let events = decide(&self.state, &command, T0).expect("decided");
        for event in &events {
            self.state.apply(&Envelope {
                seq: self.state.last_seq + 1,
                at: T0,
                actor: Actor::Oidc("test".into()),
                event: event.clone(),
            });
        }
        events
    }

    fn login(&mut self, claims: &Claims, rules: &LoginRules) -> Vec<Event> {
        self.run(Command::OidcLogin {
            claims: claims.clone(),
            rules: rules.clone(),
        })
    }

    fn register(&mut self, machine: u8, user: UserId, expiry: Option<Timestamp>) -> Vec<Event> {
        self.run(Command::RegisterNode {
            machine_key: MachineKey([machine; 32]),
            node_key: NodeKey([machine; 32]),
            hostinfo: NodeHostinfo {
                hostname: format!("host{machine}"),
                ..NodeHostinfo::default()
            },
            auth: RegisterAuth::Oidc { user, expiry },
            requested_expiry: None,
            ephemeral: false,
            entropy: 0,
        })
    }
}

fn claims(subject: &str, username: &str, email: &str) -> Claims {
    Claims {
        issuer: ISSUER.into(),
        subject: subject.into(),
        name: format!("{username} Example"),
        preferred_username: username.into(),
        email: email.into(),
        email_verified: true,
        ..Claims::default()
    }
}

fn open_rules() -> LoginRules {
    LoginRules {
        email_verified_required: true,
        ..LoginRules::default()
    }
}

fn names(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(Event::kind).collect()
}

#[test]
fn a_first_login_creates_the_user_with_its_identity_and_a_later_one_updates_it() {
    let mut net = Tailnet::new(false);
    let events = net.login(&claims("id1", "alice", "alice@example.com"), &open_rules());
    assert_eq!(names(&events), ["UserCreated", "UserIdentityLinked"]);
    let user = net
        .state
        .user_by_identity("http://localhost:9998/id1")
        .expect("found by issuer/subject")
        .clone();
    assert_eq!(
        (
            user.name.as_str(),
            user.email.as_str(),
            user.display_name.as_str()
        ),
        ("alice", "alice@example.com", "alice Example")
    );
    assert_eq!(net.state.extras.identities[&user.id].provider, "oidc");

    // Same person, nothing changed: nothing recorded.
    assert!(net
        .login(&claims("id1", "alice", "alice@example.com"), &open_rules())
        .is_empty());
    // New profile and username: the same user, renamed and updated.
    let mut newer = claims("id1", "alice2", "alice@new.example");
    newer.picture = "https://pics.example/a.png".into();
    let events = net.login(&newer, &open_rules());
    assert_eq!(names(&events), ["UserRenamed", "UserProfileChanged"]);
    let again = &net.state.users[&user.id];
    assert_eq!(again.name, "alice2");
    assert_eq!(again.email, "alice@new.example");
    assert_eq!(again.picture_url, "https://pics.example/a.png");
    assert_eq!(net.state.users.len(), 1);
}

#[test]
fn an_unverified_email_neither_counts_nor_replaces_a_known_one() {
    let mut net = Tailnet::new(false);
    net.login(&claims("id1", "alice", "alice@example.com"), &open_rules());
    let mut unverified = claims("id1", "alice", "other@evil.example");
    unverified.email_verified = false;
    assert!(net.login(&unverified, &open_rules()).is_empty());
    assert_eq!(net.state.users[&UserId(1)].email, "alice@example.com");
}

#[test]
fn taken_or_invalid_usernames_fall_back_to_a_unique_valid_name() {
    let mut net = Tailnet::new(false);
    net.run(Command::CreateUser {
        name: "alice".into(),
        display_name: String::new(),
        email: String::new(),
        picture_url: String::new(),
    });
    // "alice" is a CLI user: the OIDC alice gets her email as name.
    net.login(&claims("id1", "alice", "alice@example.com"), &open_rules());
    assert_eq!(net.state.users[&UserId(2)].name, "alice@example.com");
    // No usable username or email: a stable oidc-… name.
    let mut bare = claims("id2", "1-not-a-name", "");
    bare.email_verified = false;
    net.login(&bare, &open_rules());
    let name = net.state.users[&UserId(3)].name.clone();
    assert!(name.starts_with("oidc-"), "{name}");
    // A later login whose username is taken by someone else keeps the old name.
    let events = net.login(&claims("id2", "alice", ""), &open_rules());
    assert!(!names(&events).contains(&"UserRenamed"), "{events:?}");
    assert_eq!(net.state.users[&UserId(3)].name, name);
}

#[test]
fn a_refusal_is_recorded_with_the_identity_and_creates_nobody() {
    let mut net = Tailnet::new(false);
    let rules = LoginRules {
        allowed_domains: vec!["example.com".into()],
        ..open_rules()
    };
    let events = net.login(&claims("id9", "mallory", "m@evil.example"), &rules);
    assert_eq!(
        events,
        [Event::OidcLoginRefused {
            identity: "http://localhost:9998/id9".into(),
            email: "m@evil.example".into(),
            reason: "unauthorised domain".into(),
        }]
    );
    assert!(net.state.users.is_empty());
    let mut unverified = claims("id9", "mallory", "m@example.com");
    unverified.email_verified = false;
    let events = net.login(&unverified, &rules);
    assert!(
        matches!(&events[..], [Event::OidcLoginRefused { reason, .. }] if reason == "unverified email")
    );
}

#[test]
fn a_user_imported_from_headscale_logs_in_as_themself() {
    let mut net = Tailnet::new(false);
    let imported = Event::UserImported(Box::new(ImportedUser {
        id: UserId(7),
        name: "carol".into(),
        display_name: "Carol".into(),
        email: "carol@example.com".into(),
        picture_url: String::new(),
        created_at: T0,
        provider: "oidc".into(),
        provider_identifier: "http://localhost:9998/id3".into(),
    }));
    net.state.apply(&Envelope {
        seq: net.state.last_seq + 1,
        at: T0,
        actor: Actor::System,
        event: imported,
    });
    let mut carol = claims("id3", "carol", "carol@example.com");
    carol.name = "Carol".into();
    assert!(net.login(&carol, &open_rules()).is_empty());
    assert_eq!(net.state.users.len(), 1);
    let events = net.register(1, UserId(7), None);
    assert!(matches!(&events[0], Event::NodeRegistered(reg) if reg.user == Some(UserId(7))));
}

#[test]
fn a_confirmed_login_registers_with_its_method_expiry_and_approval() {
    let mut net = Tailnet::new(true);
    net.login(&claims("id1", "alice", "alice@example.com"), &open_rules());
    let token_expiry = Timestamp(T0.0 + 3600 * 1000);
    let events = net.register(1, UserId(1), Some(token_expiry));
    let Event::NodeRegistered(reg) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(reg.register_method, RegisterMethod::Oidc);
    assert_eq!(reg.user, Some(UserId(1)));
    assert_eq!(reg.expiry, Some(token_expiry), "use_expiry_from_token");
    assert!(!reg.authorized, "device approval still waits for an admin");
    // Without the token's expiry, node.expiry applies (180 days).
    let events = net.register(2, UserId(1), None);
    let Event::NodeRegistered(reg) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(reg.expiry, Some(Timestamp(T0.0 + 180 * 24 * 3600 * 1000)));
    // The same machine logging in again keeps its node.
    let events = net.register(1, UserId(1), None);
    assert!(
        matches!(&events[0], Event::NodeReauthenticated { id, register_method: RegisterMethod::Oidc, .. } if *id == NodeId(1)),
        "{events:?}"
    );
}

#[test]
fn an_oidc_user_may_request_the_tags_the_policy_gives_their_identity_or_email() {
    let mut net = Tailnet::new(false);
    net.run(Command::ReplacePolicy {
        text: r#"{"tagOwners": {"tag:ci": ["http://localhost:9998/id1@"], "tag:web": ["alice@example.com"]},
                  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#
            .into(),
    });
    net.login(&claims("id1", "alice", "alice@example.com"), &open_rules());
    for (machine, tag) in [(1u8, "tag:ci"), (2, "tag:web")] {
        let events = net.run(Command::RegisterNode {
            machine_key: MachineKey([machine; 32]),
            node_key: NodeKey([machine; 32]),
            hostinfo: NodeHostinfo {
                hostname: format!("ci{machine}"),
                requested_tags: vec![tag.into()],
                ..NodeHostinfo::default()
            },
            auth: RegisterAuth::Oidc {
                user: UserId(1),
                expiry: None,
            },
            requested_expiry: None,
            ephemeral: false,
            entropy: 0,
        });
        assert!(
            matches!(&events[0], Event::NodeRegistered(reg) if reg.tags == [tag] && reg.user.is_none()),
            "{events:?}"
        );
    }
}
