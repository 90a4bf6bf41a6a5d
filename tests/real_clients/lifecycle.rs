//! Node lifecycle with real clients: auth-key semantics, logout and ephemeral nodes, key
//! expiry controls, tags and moves on live nodes, `down`/`up` cycles, and a node that stays
//! online for minutes. Every scenario also checks the story `events list --node` tells.

use crate::scenarios::{tailnet, wait_peer, wait_peers_online, LONG, SHORT};
use crate::server::Server;
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use serde_json::Value;
use std::time::{Duration, Instant};

/// `nodes list` entry `name`, panicking if it is missing.
fn listed(server: &Server, name: &str) -> Value {
    server
        .node(name)
        .unwrap_or_else(|| panic!("{name} not in nodes list: {:?}", server.nodes()))
}

fn id_of(node: &Value) -> String {
    node["id"].as_str().unwrap().to_string()
}

fn addresses(node: &Value) -> Vec<String> {
    let mut ips: Vec<String> = node["ipAddresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ip| ip.as_str().unwrap().to_string())
        .collect();
    ips.sort();
    ips
}

/// The event types of node `id`'s story, oldest first.
fn story(server: &Server, id: &str) -> Vec<String> {
    server
        .json(&["events", "list", "--node", id])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// Asserts that `wanted` appear in `story` in this order (other events may sit between).
fn assert_in_order(story: &[String], wanted: &[&str]) {
    let mut rest = story.iter();
    for want in wanted {
        assert!(
            rest.any(|kind| kind == want),
            "{wanted:?} not in order in the story {story:?}"
        );
    }
}

/// `up` that must fail: the client stays logged out, and what it printed names `reason`.
fn refused(client: &Client, server: &Server, key: &str, reason: &str) {
    let run = client.up(&server.url(), key, SHORT).finish(SHORT * 2);
    assert!(!run.ok, "{}: up succeeded: {run}", client.name);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(reason),
        "{}: no {reason:?} in {run}",
        client.name
    );
    client.wait_state("NeedsLogin", SHORT);
}

/// The key semantics of the seed, as a client sees them: a one-off key is spent once used;
/// expired and revoked keys are refused with a message; a node whose key is revoked later
/// keeps working (also across a daemon restart); re-login with the same user's key keeps
/// id and addresses under a new node key; another user's key makes a new node; a tagged
/// key makes a tagged node with no owner and no expiry.
pub fn auth_key_semantics(version: Version) {
    let server = Server::start();
    server.create_user("alice");
    server.create_user("bob");
    let one_off = server.pre_auth_key("alice", &[]);
    let mut first = Client::start("first", version, &Options::default());
    let up = first.up(&server.url(), &one_off, LONG).finish(LONG);
    assert!(up.ok, "{up}");

    // The spent one-off key.
    let second = Client::start("second", version, &Options::default());
    refused(&second, &server, &one_off, "has already been used");
    // A key past its expiration.
    let short_lived = server.pre_auth_key("alice", &["--reusable", "--expiration", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    refused(&second, &server, &short_lived, "has expired");
    // A revoked key; revoking the spent key leaves its node alone.
    let keys = server.json(&["preauthkeys", "list", "--user", "alice"]);
    for key in keys.as_array().unwrap() {
        server.ok(&["preauthkeys", "expire", "--id", key["id"].as_str().unwrap()]);
    }
    let listed_keys = server.json(&["preauthkeys", "list", "--user", "alice"]);
    assert_eq!(listed_keys.as_array().unwrap().len(), 2, "{listed_keys}");
    refused(&second, &server, &short_lived, "has expired");
    assert_eq!(server.nodes().len(), 1, "{:?}", server.nodes());

    first.restart();
    first.wait_state("Running", SHORT);
    let before = listed(&server, "first");
    assert_eq!(before["user"]["name"], "alice");

    // Re-login with another key of the same user: same node, new node key.
    let again = server.pre_auth_key("alice", &[]);
    let run = first
        .spawn(&[
            "up",
            "--force-reauth",
            &format!("--login-server={}", server.url()),
            &format!("--auth-key={again}"),
            "--hostname=first",
            "--timeout=20s",
        ])
        .finish(LONG);
    assert!(run.ok, "{run}");
    first.wait_state("Running", SHORT);
    let after = listed(&server, "first");
    assert_eq!(id_of(&after), id_of(&before), "{after}");
    assert_eq!(addresses(&after), addresses(&before));
    assert_ne!(after["nodeKey"], before["nodeKey"], "a new node key");
    assert_eq!(
        first.status()["Self"]["PublicKey"].as_str(),
        after["nodeKey"].as_str()
    );
    let kinds = story(&server, &id_of(&after));
    assert_in_order(
        &kinds,
        &[
            "NodeRegistered",
            "PreAuthKeyUsed",
            "NodeReauthenticated",
            "PreAuthKeyUsed",
        ],
    );

    // Another user's key: a new node for bob; alice's stays.
    let bobs = server.pre_auth_key("bob", &[]);
    let run = first
        .spawn(&[
            "up",
            "--force-reauth",
            &format!("--login-server={}", server.url()),
            &format!("--auth-key={bobs}"),
            "--hostname=first",
            "--timeout=20s",
        ])
        .finish(LONG);
    assert!(run.ok, "{run}");
    first.wait_state("Running", SHORT);
    let nodes = server.nodes();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let bob_node = nodes
        .iter()
        .find(|n| n["user"]["name"] == "bob")
        .expect("a node for bob");
    assert_ne!(id_of(bob_node), id_of(&before));
    assert_eq!(
        first.status()["Self"]["PublicKey"].as_str(),
        bob_node["nodeKey"].as_str()
    );

    // A tagged key: the node is its tags, with no owner and no expiry.
    let tagged = server.pre_auth_key("alice", &["--tags", "tag:server"]);
    let tagger = Client::start("tagger", version, &Options::default());
    let run = tagger.up(&server.url(), &tagged, LONG).finish(LONG);
    assert!(run.ok, "{run}");
    let node = listed(&server, "tagger");
    assert_eq!(node["tags"], serde_json::json!(["tag:server"]), "{node}");
    // Tagged: no owner; listed, as headscale does, under its `tagged-devices` user.
    assert_eq!(node["user"]["name"], "tagged-devices", "{node}");
    assert!(node["expiry"].is_null(), "{node}");
    let me = tagger.status()["Self"].clone();
    assert_eq!(me["Tags"], serde_json::json!(["tag:server"]), "{me}");
    assert!(me.get("KeyExpiry").is_none(), "{me}");
}

/// `tailscale logout`: an ordinary node expires (peers see `Expired`, the client needs a
/// login, and a new `up` with its user's key brings the same node back); an ephemeral node
/// is deleted. An ephemeral node that restarts within `node.ephemeral.inactivity_timeout` is
/// kept; one that stays away is deleted by the server.
pub fn logout_and_ephemeral_nodes() {
    let server = Server::start_with_env(&[
        ("HEADSCALE_NODE_EPHEMERAL_INACTIVITY_TIMEOUT", "4s"),
        ("HEADSCALE_TUNING_NODE_OFFLINE_GRACE", "1s"),
    ]);
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("watcher", "alice", Version::Newest, none.clone()),
            ("leaver", "alice", Version::Oldest, none.clone()),
        ],
    );
    let ephemeral = server.pre_auth_key("alice", &["--reusable", "--ephemeral"]);
    let mut transient = Vec::new();
    for (name, version) in [("eph-new", Version::Newest), ("eph-old", Version::Oldest)] {
        let client = Client::start(name, version, &none);
        let run = client.up(&server.url(), &ephemeral, LONG).finish(LONG);
        assert!(run.ok, "{run}");
        assert_eq!(listed(&server, name)["ephemeral"], true);
        transient.push(client);
    }
    let watcher = &clients[0];
    wait_peers_online(watcher, &["leaver", "eph-new", "eph-old"]);

    // An ordinary node logs out: expired, not deleted; logging in again keeps it.
    let leaver = listed(&server, "leaver");
    let run = clients[1].run(&["logout"], SHORT);
    assert!(run.ok, "{run}");
    clients[1].wait_state("NeedsLogin", SHORT);
    assert_eq!(listed(&server, "leaver")["expired"], true);
    wait_peer(watcher, "leaver", "expired", |p| p["Expired"] == true);
    let key = server.pre_auth_key("alice", &[]);
    let run = clients[1].up(&server.url(), &key, LONG).finish(LONG);
    assert!(run.ok, "{run}");
    let back = listed(&server, "leaver");
    assert_eq!(id_of(&back), id_of(&leaver));
    assert_eq!(addresses(&back), addresses(&leaver));
    assert_eq!(back["expired"], false, "{back}");
    wait_peer(watcher, "leaver", "back", |p| {
        p["Online"] == true && p.get("Expired").is_none_or(|e| e == false)
    });
    assert_in_order(
        &story(&server, &id_of(&back)),
        &["NodeRegistered", "NodeExpiryChanged", "NodeReauthenticated"],
    );

    // An ephemeral node logs out: deleted at once.
    let gone = listed(&server, "eph-new");
    let run = transient[0].run(&["logout"], SHORT);
    assert!(run.ok, "{run}");
    assert!(server.node("eph-new").is_none(), "{:?}", server.nodes());
    wait_until(SHORT, "eph-new to leave the watcher's peers", || {
        let status = watcher.status();
        let peers = status["Peer"].as_object()?;
        (!peers.values().any(|p| p["HostName"] == "eph-new")).then_some(())
    });
    assert_in_order(
        &story(&server, &id_of(&gone)),
        &["NodeRegistered", "NodeDeleted"],
    );

    // An ephemeral node whose daemon restarts within the timeout is kept...
    let survivor = id_of(&listed(&server, "eph-old"));
    transient[1].restart();
    transient[1].wait_state("Running", SHORT);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(id_of(&listed(&server, "eph-old")), survivor);
    // ...and deleted once it stays away for longer.
    transient[1].kill();
    let away = Instant::now();
    wait_until(SHORT, "the inactive ephemeral node to be deleted", || {
        server.node("eph-old").is_none().then_some(())
    });
    println!(
        "  inactive ephemeral node deleted {} ms after its daemon died (timeout 4 s, grace 1 s)",
        away.elapsed().as_millis()
    );
    let events = server.json(&["events", "list", "--node", &survivor]);
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "NodeDeleted", "{events}");
    assert_eq!(last["actor"], "system", "{events}");
    wait_until(SHORT, "eph-old to leave the watcher's peers", || {
        let status = watcher.status();
        let peers = status["Peer"].as_object()?;
        (!peers.values().any(|p| p["HostName"] == "eph-old")).then_some(())
    });
}

/// `KeyExpiry` as an RFC 3339 string, or `None` if absent or Go's zero time.
fn key_expiry(node: &Value) -> Option<String> {
    node.get("KeyExpiry")
        .and_then(Value::as_str)
        .filter(|t| !t.starts_with("0001-"))
        .map(String::from)
}

/// Seconds since the epoch of an RFC 3339 time, rounded to the nearest second as
/// `tailscale status` shows `KeyExpiry` (the server keeps milliseconds).
fn epoch_seconds(text: &str) -> i64 {
    let ms = headscale::core::time::Timestamp::parse_rfc3339(text)
        .unwrap_or_else(|| panic!("not a time: {text}"))
        .unix_ms();
    (ms + 500).div_euclid(1000)
}

/// RFC 3339 for `seconds` from now.
fn from_now(seconds: u64) -> String {
    let at = std::time::SystemTime::now() + Duration::from_secs(seconds);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    headscale::core::time::Timestamp(secs as i64 * 1000).to_rfc3339()
}

/// Key expiry: the `node.expiry` default, unchanged by a daemon or server restart;
/// `nodes expire --expiry T` and `--disable` reach the node and its peers; a passing
/// expiry shows as `Expired` on peers; tagged nodes never expire.
pub fn key_expiry_controls() {
    let mut server = Server::start_with_env(&[("HEADSCALE_NODE_EXPIRY", "24h")]);
    let none = Options::default();
    let mut clients = tailnet(
        &server,
        &[
            ("watcher", "alice", Version::Newest, none.clone()),
            ("subject", "alice", Version::Oldest, none),
        ],
    );
    wait_peers_online(&clients[0], &["subject"]);
    let node = listed(&server, "subject");
    let id = id_of(&node);
    let expiry = node["expiry"]
        .as_str()
        .expect("a default expiry")
        .to_string();
    let in_a_day = epoch_seconds(&from_now(24 * 3600));
    assert!(
        (epoch_seconds(&expiry) - in_a_day).abs() < 120,
        "{expiry} is not about 24 h away"
    );
    let own = key_expiry(&clients[1].status()["Self"]).expect("Self.KeyExpiry");
    assert_eq!(
        epoch_seconds(&own),
        epoch_seconds(&expiry),
        "client {own}, server {expiry}"
    );

    // Restarts leave the expiry alone.
    clients[1].restart();
    clients[1].wait_state("Running", SHORT);
    assert_eq!(listed(&server, "subject")["expiry"], expiry.as_str());
    server.stop();
    server.restart();
    clients[1].wait_state("Running", LONG);
    wait_peers_online(&clients[0], &["subject"]);
    assert_eq!(listed(&server, "subject")["expiry"], expiry.as_str());

    // An admin-set expiry reaches the node and its peers.
    let later = from_now(3600);
    server.ok(&["nodes", "expire", "--id", &id, "--expiry", &later]);
    wait_until(SHORT, "the node's own new expiry", || {
        let own = key_expiry(&clients[1].status()["Self"])?;
        (epoch_seconds(&own) == epoch_seconds(&later)).then_some(())
    });
    wait_peer(&clients[0], "subject", "with the new expiry", |p| {
        key_expiry(p).is_some_and(|t| epoch_seconds(&t) == epoch_seconds(&later))
    });
    // Disabled: no expiry anywhere.
    server.ok(&["nodes", "expire", "--id", &id, "--disable"]);
    assert!(listed(&server, "subject")["expiry"].is_null());
    wait_until(SHORT, "the node's expiry to go", || {
        key_expiry(&clients[1].status()["Self"])
            .is_none()
            .then_some(())
    });
    wait_peer(&clients[0], "subject", "without expiry", |p| {
        key_expiry(p).is_none()
    });
    // An expiry that passes: peers see Expired without anyone acting.
    let soon = from_now(3);
    server.ok(&["nodes", "expire", "--id", &id, "--expiry", &soon]);
    wait_peer(&clients[0], "subject", "expired by time", |p| {
        p["Expired"] == true
    });
    assert_eq!(listed(&server, "subject")["expired"], true);
    assert_in_order(
        &story(&server, &id),
        &[
            "NodeRegistered",
            "NodeExpiryChanged",
            "NodeExpiryChanged",
            "NodeExpiryChanged",
        ],
    );
    clients[1].kill();

    // Tagged nodes never expire, whatever node.expiry says.
    let tagged = server.pre_auth_key("alice", &["--tags", "tag:server"]);
    let tagger = Client::start("tagger", Version::Newest, &Options::default());
    let run = tagger.up(&server.url(), &tagged, LONG).finish(LONG);
    assert!(run.ok, "{run}");
    assert!(listed(&server, "tagger")["expiry"].is_null());
    assert!(key_expiry(&tagger.status()["Self"]).is_none());
}

/// `nodes tag` and `nodes move` on a live node: its peers and the node itself see the new
/// tags and owner at once, without restarts.
pub fn live_tag_and_move() {
    let server = Server::start();
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("watcher", "alice", Version::Newest, none.clone()),
            ("subject", "alice", Version::Oldest, none.clone()),
        ],
    );
    server.create_user("bob");
    wait_peers_online(&clients[0], &["subject"]);
    let id = id_of(&listed(&server, "subject"));

    let start = Instant::now();
    server.ok(&["nodes", "tag", "--id", &id, "--tags", "tag:server"]);
    wait_peer(&clients[0], "subject", "tagged", |p| {
        p["Tags"] == serde_json::json!(["tag:server"])
    });
    println!(
        "  tag reached the peer in {} ms",
        start.elapsed().as_millis()
    );
    wait_until(SHORT, "the node's own tags", || {
        (clients[1].status()["Self"]["Tags"] == serde_json::json!(["tag:server"])).then_some(())
    });
    let node = listed(&server, "subject");
    assert!(
        node["user"]["name"] == "tagged-devices" && node["expiry"].is_null(),
        "{node}"
    );

    let start = Instant::now();
    server.ok(&["nodes", "move", "--id", &id, "--user", "bob"]);
    let peer = wait_peer(&clients[0], "subject", "moved to bob", |p| {
        p.get("Tags")
            .is_none_or(|t| t.as_array().is_none_or(Vec::is_empty))
    });
    println!(
        "  move reached the peer in {} ms",
        start.elapsed().as_millis()
    );
    // `status --json` of 1.102 keeps the User map of the last full netmap, so ask `whois`,
    // which reads the profiles delivered with the delta.
    let address = peer["TailscaleIPs"][0].as_str().unwrap().to_string();
    let whois = clients[0].run(&["whois", "--json", &address], SHORT);
    assert!(whois.ok, "{whois}");
    let whois: Value = serde_json::from_str(&whois.stdout).unwrap();
    assert_eq!(whois["UserProfile"]["LoginName"], "bob", "{whois}");
    assert_eq!(whois["UserProfile"]["ID"], peer["UserID"], "{whois}");
    assert_eq!(listed(&server, "subject")["user"]["name"], "bob");
    assert_in_order(
        &story(&server, &id),
        &["NodeRegistered", "NodeTagsSet", "NodeMoved"],
    );
}

/// `tailscale down` then `up`, five times: each time the peer sees the node go offline and
/// come back, and traffic flows again.
pub fn down_up_five_times() {
    let server = Server::start_with_env(&[("HEADSCALE_TUNING_NODE_OFFLINE_GRACE", "1s")]);
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("steady", "alice", Version::Newest, none.clone()),
            ("flappy", "alice", Version::Oldest, none.clone()),
        ],
    );
    wait_peers_online(&clients[0], &["flappy"]);
    let target = clients[1].ipv4();
    for round in 1..=5 {
        let run = clients[1].run(&["down"], SHORT);
        assert!(run.ok, "round {round}: {run}");
        clients[1].wait_state("Stopped", SHORT);
        let down = Instant::now();
        wait_peer(&clients[0], "flappy", "offline", |p| p["Online"] == false);
        let offline_ms = down.elapsed().as_millis();
        assert!(!listed(&server, "flappy")["online"].as_bool().unwrap());

        let up = Instant::now();
        let run = clients[1].run(
            &[
                "up",
                &format!("--login-server={}", server.url()),
                "--hostname=flappy",
                "--timeout=20s",
            ],
            LONG,
        );
        assert!(run.ok, "round {round}: {run}");
        wait_peer(&clients[0], "flappy", "online", |p| p["Online"] == true);
        let online_ms = up.elapsed().as_millis();
        let ping = clients[0].run(&["ping", "--c=10", "--timeout=3s", &target], SHORT);
        assert!(
            ping.ok && ping.stdout.contains("pong"),
            "round {round}: {ping}"
        );
        assert_eq!(listed(&server, "flappy")["online"], true);
        println!("  round {round}: offline seen in {offline_ms} ms, online again in {online_ms} ms, ping ok");
    }
}

/// How long `online_for_three_minutes` watches.
const WATCH: Duration = Duration::from_secs(180);

/// Three nodes stay up for three minutes (past several keep-alives): every peer reports
/// every other one online at every look, and `nodes list` agrees.
pub fn online_for_three_minutes() {
    let server = Server::start();
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("one", "alice", Version::Newest, none.clone()),
            ("two", "alice", Version::Oldest, none.clone()),
            ("three", "bob", Version::Newest, none.clone()),
        ],
    );
    let names = ["one", "two", "three"];
    for client in &clients {
        let others: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != client.name)
            .collect();
        wait_peers_online(client, &others);
    }
    let start = Instant::now();
    let mut looks = 0;
    while start.elapsed() < WATCH {
        for client in &clients {
            let status = client.status();
            assert_eq!(status["BackendState"], "Running", "{}", client.name);
            let peers = status["Peer"].as_object().expect("peers");
            assert_eq!(peers.len(), 2, "{}: {status}", client.name);
            for peer in peers.values() {
                assert_eq!(
                    peer["Online"],
                    true,
                    "{} sees {} offline after {:?}",
                    client.name,
                    peer["HostName"],
                    start.elapsed()
                );
            }
        }
        assert!(server.nodes().iter().all(|n| n["online"] == true));
        looks += 1;
        std::thread::sleep(Duration::from_secs(5));
    }
    println!(
        "  {looks} looks over {:?}: every peer online every time",
        WATCH
    );
}
