//! The policy with real clients: an ACL is enforced on real TCP through the tailnet (one
//! direction only), peers the policy keeps apart never appear in `status --json`, and a live
//! policy edit flips the outcome without restarts.

use crate::scenarios::{socks5_connect, tailnet_existing, wait_peers_online, LONG, SHORT};
use crate::server::Server;
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

/// Writes `text` as the policy and sets it through the CLI.
fn set_policy(server: &Server, text: &str) {
    let path = server.dir.path().join("policy.hujson");
    std::fs::write(&path, text).unwrap();
    server.ok(&["policy", "set", "-f", path.to_str().unwrap()]);
}

/// The greeting from `target:port` through `client`'s SOCKS5 proxy, if the connection goes
/// through within `limit`.
fn greeting(client: &Client, target: &str, port: u16, limit: Duration) -> Option<String> {
    let target: Ipv4Addr = target.parse().unwrap();
    let mut stream = socks5_connect(client.socks_port.unwrap(), target, port).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    (!text.is_empty()).then_some(text)
}

fn peer_names(client: &Client) -> Vec<String> {
    let status = client.status();
    let mut names: Vec<String> = status["Peer"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|p| p["HostName"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// alice may reach bob's port, not the other way round; carol is nobody's peer. Then the
/// policy is edited live: bob may reach alice, alice may no longer reach bob, carol joins.
pub fn acl_enforced_live() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(b"hello through the policy\n");
        }
    });
    let server = Server::start();
    for user in ["alice", "bob", "carol"] {
        server.create_user(user);
    }
    set_policy(
        &server,
        &format!(
            "// alice -> bob:{port} only\n{{\"acls\": [{{\"action\": \"accept\", \
             \"src\": [\"alice@\"], \"dst\": [\"bob@:{port}\"]}},],}}\n"
        ),
    );
    let socks = Options {
        socks5: true,
        ..Options::default()
    };
    let clients = tailnet_existing(
        &server,
        &[
            ("alpha", "alice", Version::Newest, socks.clone()),
            ("beta", "bob", Version::Oldest, socks.clone()),
            ("gamma", "carol", Version::Newest, socks.clone()),
        ],
    );
    let (alpha, beta, gamma) = (&clients[0], &clients[1], &clients[2]);
    wait_peers_online(alpha, &["beta"]);
    wait_peers_online(beta, &["alpha"]);
    assert_eq!(peer_names(alpha), ["beta"]);
    assert_eq!(peer_names(beta), ["alpha"]);
    assert!(peer_names(gamma).is_empty(), "{:?}", peer_names(gamma));

    let (alpha_ip, beta_ip) = (alpha.ipv4(), beta.ipv4());
    let allowed = wait_until(LONG, "alpha -> beta through the tailnet", || {
        greeting(alpha, &beta_ip, port, SHORT)
    });
    assert_eq!(allowed, "hello through the policy\n");
    assert_eq!(
        greeting(beta, &alpha_ip, port, Duration::from_secs(3)),
        None,
        "beta reached alpha against the policy"
    );

    // The edit: bob -> alice instead, and carol may reach alice too.
    let edited = Instant::now();
    set_policy(
        &server,
        &format!(
            "{{\"acls\": [{{\"action\": \"accept\", \"src\": [\"bob@\", \"carol@\"], \
             \"dst\": [\"alice@:{port}\"]}}]}}"
        ),
    );
    wait_until(LONG, "beta -> alpha after the edit", || {
        greeting(beta, &alpha_ip, port, Duration::from_secs(3))
    });
    println!(
        "  policy edit -> traffic flips in {} ms",
        edited.elapsed().as_millis()
    );
    wait_peers_online(gamma, &["alpha"]);
    wait_until(SHORT, "alpha to see beta and gamma", || {
        (peer_names(alpha) == ["beta", "gamma"]).then_some(())
    });
    // beta and gamma have consecutive addresses: alpha's filter holds them as one range
    // (`100.64.0.2-100.64.0.3`, as Tailscale sends sources); both ends must get through.
    wait_until(LONG, "gamma -> alpha after the edit", || {
        greeting(gamma, &alpha_ip, port, Duration::from_secs(3))
    });
    assert_eq!(
        greeting(alpha, &beta_ip, port, Duration::from_secs(3)),
        None,
        "alpha still reached beta after the edit"
    );
}

/// `tailscale up --advertise-tags`: a tag the user owns in `tagOwners` makes the node a
/// tagged one (no owner, no expiry); a tag the user does not own is refused with a message
/// naming the requested tags, and the client stays logged out.
pub fn advertise_tags(version: Version) {
    let server = Server::start_with_env(&[("HEADSCALE_NODE_EXPIRY", "24h")]);
    for user in ["alice", "bob"] {
        server.create_user(user);
    }
    set_policy(
        &server,
        "{\"tagOwners\": {\"tag:server\": [\"alice@\"]}, \
         \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
    );
    let up = |client: &Client, user: &str| {
        let key = server.pre_auth_key(user, &[]);
        client
            .spawn(&[
                "up",
                &format!("--login-server={}", server.url()),
                &format!("--auth-key={key}"),
                &format!("--hostname={}", client.name),
                "--advertise-tags=tag:server",
                "--timeout=20s",
            ])
            .finish(LONG)
    };
    let owner = Client::start("tagged", version, &Options::default());
    let run = up(&owner, "alice");
    assert!(run.ok, "{run}");
    owner.wait_state("Running", SHORT);
    let node = server.node("tagged").expect("registered");
    assert_eq!(node["tags"], serde_json::json!(["tag:server"]), "{node}");
    assert!(
        node["user"]["name"] == "tagged-devices" && node["expiry"].is_null(),
        "{node}"
    );

    let stranger = Client::start("refused", version, &Options::default());
    let run = up(&stranger, "bob");
    assert!(!run.ok, "{run}");
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains("requested tags"), "{run}");
    stranger.wait_state("NeedsLogin", SHORT);
    assert!(server.node("refused").is_none());
}

/// Subnet routers and exit nodes with real clients: of two routers announcing the same
/// subnet, the approved primary shows in its peers' `PrimaryRoutes`/`AllowedIPs`; when it
/// runs `tailscale down` the standby takes over; an approved exit node is an
/// `ExitNodeOption`.
pub fn subnet_failover_and_exit_node() {
    let server = Server::start_with_env(&[("HEADSCALE_TUNING_NODE_OFFLINE_GRACE", "1s")]);
    server.create_user("alice");
    let subnet = "10.77.0.0/24";
    let clients: Vec<Client> = [
        ("watcher", Version::Newest, None),
        (
            "router-a",
            Version::Newest,
            Some(format!("--advertise-routes={subnet}")),
        ),
        (
            "router-b",
            Version::Oldest,
            Some(format!("--advertise-routes={subnet}")),
        ),
        (
            "exit",
            Version::Oldest,
            Some("--advertise-exit-node".to_string()),
        ),
    ]
    .into_iter()
    .map(|(name, version, flag)| {
        let client = Client::start(name, version, &Options::default());
        let key = server.pre_auth_key("alice", &[]);
        let mut args = vec![
            "up".to_string(),
            format!("--login-server={}", server.url()),
            format!("--auth-key={key}"),
            format!("--hostname={name}"),
            "--timeout=30s".to_string(),
        ];
        args.extend(flag);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = client.spawn(&args).finish(LONG);
        assert!(run.ok, "{name}: {run}");
        client
    })
    .collect();
    let watcher = &clients[0];
    wait_peers_online(watcher, &["router-a", "router-b", "exit"]);
    // Approve router-a first, then router-b: router-a is the primary.
    let id = |name: &str| {
        server.node(name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    server.ok(&[
        "routes",
        "enable",
        "--route",
        subnet,
        "--id",
        &id("router-a"),
    ]);
    let peer = |name: &str| -> serde_json::Value {
        let status = watcher.status();
        status["Peer"]
            .as_object()
            .and_then(|m| m.values().find(|p| p["HostName"] == name).cloned())
            .unwrap_or_default()
    };
    let carries = |p: &serde_json::Value| {
        p["PrimaryRoutes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == subnet))
            && p["AllowedIPs"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == subnet))
    };
    wait_until(SHORT, "router-a to carry the subnet", || {
        carries(&peer("router-a")).then_some(())
    });
    server.ok(&[
        "routes",
        "enable",
        "--route",
        subnet,
        "--id",
        &id("router-b"),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(carries(&peer("router-a")) && !carries(&peer("router-b")));

    let run = clients[1].run(&["down"], SHORT);
    assert!(run.ok, "{run}");
    let down = Instant::now();
    wait_until(SHORT, "router-b to take over", || {
        (carries(&peer("router-b")) && !carries(&peer("router-a"))).then_some(())
    });
    println!(
        "  standby took over {} ms after the primary went down",
        down.elapsed().as_millis()
    );
    let listed = server.json(&["routes", "list"]);
    assert!(listed.to_string().contains(subnet), "{listed}");

    server.ok(&[
        "routes",
        "enable",
        "--route",
        "0.0.0.0/0",
        "--id",
        &id("exit"),
    ]);
    wait_until(SHORT, "the exit node as an option", || {
        (peer("exit")["ExitNodeOption"] == true).then_some(())
    });
}
