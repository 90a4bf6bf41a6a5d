//! The scenarios: each starts its own server and clients, asserts through `headscale` CLI and
//! `tailscale status --json`, and panics on failure. `default_list` runs on every `cargo test`;
//! `pending_list` holds scenarios written ahead of the features they need; they run only
//! when named.

use crate::server::{Server, BASE_DOMAIN};
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::time::Duration;

pub struct Scenario {
    pub name: String,
    pub run: Box<dyn Fn()>,
}

fn scenario(name: &str, run: impl Fn() + 'static) -> Scenario {
    Scenario {
        name: name.to_string(),
        run: Box::new(run),
    }
}

/// One scenario per client version: `<name>/<version>`.
fn per_version(list: &mut Vec<Scenario>, name: &str, run: fn(Version)) {
    for version in Version::ALL {
        list.push(scenario(&format!("{name}/{}", version.tag()), move || {
            run(version)
        }));
    }
}

/// Every scenario of the default run.
pub fn default_list() -> Vec<Scenario> {
    let mut list = Vec::new();
    per_version(&mut list, "register_with_key", register_with_key);
    per_version(&mut list, "bad_key_refused", bad_key_refused);
    per_version(&mut list, "interactive_login", interactive_login);
    per_version(&mut list, "device_approval", device_approval);
    per_version(&mut list, "oidc_login", crate::oidc::oidc_login);
    per_version(
        &mut list,
        "oidc_relogin_and_tags",
        crate::oidc::oidc_relogin_and_tags,
    );
    list.push(scenario("oidc_over_https", crate::oidc::oidc_over_https));
    list.push(scenario("nothing_leaves", nothing_leaves));
    list.push(scenario("three_nodes_running", three_nodes_running));
    list.push(scenario("live_admin_actions", live_admin_actions));
    list.push(scenario("ping_direct_and_derp", ping_direct_and_derp));
    list.push(scenario("tcp_through_tailnet", tcp_through_tailnet));
    list.push(scenario("server_restart", server_restart));
    list.push(scenario("running_over_https", running_over_https));
    per_version(
        &mut list,
        "auth_key_semantics",
        crate::lifecycle::auth_key_semantics,
    );
    list.push(scenario(
        "logout_and_ephemeral_nodes",
        crate::lifecycle::logout_and_ephemeral_nodes,
    ));
    list.push(scenario(
        "key_expiry_controls",
        crate::lifecycle::key_expiry_controls,
    ));
    list.push(scenario(
        "live_tag_and_move",
        crate::lifecycle::live_tag_and_move,
    ));
    list.push(scenario(
        "down_up_five_times",
        crate::lifecycle::down_up_five_times,
    ));
    per_version(&mut list, "advertise_tags", crate::policy::advertise_tags);
    list.push(scenario(
        "subnet_failover_and_exit_node",
        crate::policy::subnet_failover_and_exit_node,
    ));
    list.push(scenario(
        "acl_enforced_live",
        crate::policy::acl_enforced_live,
    ));
    list.push(scenario(
        "online_for_three_minutes",
        crate::lifecycle::online_for_three_minutes,
    ));
    list.push(scenario(
        "magic_dns_and_extra_records",
        crate::dns::magic_dns_and_extra_records,
    ));
    list.push(scenario(
        "migrate_from_go_headscale",
        crate::migration::migrate_from_go_headscale,
    ));
    list.push(scenario(
        "ha_two_instances_and_a_kill",
        crate::ha::two_instances_and_a_kill,
    ));
    list
}

/// Scenarios written ahead of the server features they need (none today); run them by
/// name or with `REAL_CLIENTS=pending`.
pub fn pending_list() -> Vec<Scenario> {
    Vec::new()
}

pub const SHORT: Duration = Duration::from_secs(20);
pub const LONG: Duration = Duration::from_secs(60);

/// `tailscale up --auth-key` registers the node: it shows in `nodes list` with its user,
/// hostname and one IPv4 + one IPv6 from the tailnet ranges, under the client's node key.
/// (`up` itself cannot reach Running until map streams exist; it runs in the background.)
fn register_with_key(version: Version) {
    let server = Server::start();
    server.create_user("alice");
    let key = server.pre_auth_key("alice", &[]);
    let client = Client::start("laptop", version, &Options::default());
    let _up = client.up(&server.url(), &key, LONG);
    let node = wait_until(SHORT, "laptop in nodes list", || server.node("laptop"));
    assert_eq!(node["user"]["name"], "alice", "{node}");
    assert_eq!(node["givenName"], "laptop", "{node}");
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_AUTH_KEY", "{node}");
    let ips: Vec<IpAddr> = node["ipAddresses"]
        .as_array()
        .unwrap_or_else(|| panic!("no ipAddresses: {node}"))
        .iter()
        .map(|ip| ip.as_str().unwrap().parse().unwrap())
        .collect();
    let cgnat: ipnet::IpNet = "100.64.0.0/10".parse().unwrap();
    let ula: ipnet::IpNet = "fd7a:115c:a1e0::/48".parse().unwrap();
    assert_eq!(ips.len(), 2, "{node}");
    assert!(ips.iter().any(|ip| cgnat.contains(ip)), "{node}");
    assert!(ips.iter().any(|ip| ula.contains(ip)), "{node}");
    assert_eq!(server.nodes().len(), 1);
}

/// `tailscale up` without a key: the client shows an AuthURL whose page names the command;
/// the admin runs `nodes register` and the waiting client reaches Running at once.
fn interactive_login(version: Version) {
    let server = Server::start();
    server.create_user("alice");
    let (client, _up, id) = waiting_login(&server, "desk", version);
    let url = client.status()["AuthURL"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(url, format!("{}/register/{id}", server.url()));
    let page = get_text(server.port, &format!("/register/{id}"));
    assert!(
        page.contains(&format!(
            "headscale nodes register --user USERNAME --key {id}"
        )),
        "{page}"
    );
    assert!(
        server.nodes().is_empty(),
        "registered before the admin said so"
    );
    // Not an id at all: headscale's wording; a well-formed id nobody is waiting on: ours.
    let wrong = server.fails(&["nodes", "register", "--user", "alice", "--key", "nope"]);
    assert!(wrong.contains("auth ID has invalid prefix"), "{wrong}");
    let unknown = server.fails(&[
        "nodes",
        "register",
        "--user",
        "alice",
        "--key",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
    ]);
    assert!(unknown.contains("no pending registration"), "{unknown}");

    let approved = std::time::Instant::now();
    server.ok(&["nodes", "register", "--user", "alice", "--key", &id]);
    client.wait_state("Running", SHORT);
    println!(
        "  {}: nodes register -> Running in {} ms",
        version.tag(),
        approved.elapsed().as_millis()
    );
    let node = server.node("desk").expect("desk registered");
    assert_eq!(node["user"]["name"], "alice", "{node}");
    assert_eq!(node["registerMethod"], "REGISTER_METHOD_CLI", "{node}");

    // headscale 0.29's spelling: `auth reject` refuses a waiting login, `auth register`
    // completes one.
    let (rogue, rogue_up, rogue_id) = waiting_login(&server, "rogue", version);
    server.ok(&["auth", "reject", "--auth-id", &rogue_id]);
    let refused = rogue_up.finish(SHORT);
    assert!(!refused.ok, "{refused}");
    assert!(refused.stderr.contains("rejected"), "{refused}");
    assert_ne!(rogue.backend_state(), "Running");
    let (guest, _guest_up, guest_id) = waiting_login(&server, "guest", version);
    server.ok(&[
        "auth",
        "register",
        "--auth-id",
        &guest_id,
        "--user",
        "alice",
    ]);
    guest.wait_state("Running", SHORT);
    assert!(server.node("rogue").is_none());
}

/// With `node.require_approval`, a key that is not pre-approved leaves the client in
/// `NeedsMachineAuth` until `nodes approve`; a pre-approved key goes straight to Running.
fn device_approval(version: Version) {
    let server = Server::start_with_env(&[("HEADSCALE_NODE_REQUIRE_APPROVAL", "true")]);
    server.create_user("alice");
    let key = server.pre_auth_key("alice", &[]);
    let client = Client::start("kiosk", version, &Options::default());
    let _up = client.up(&server.url(), &key, LONG);
    client.wait_state("NeedsMachineAuth", SHORT);
    let node = server.node("kiosk").expect("kiosk registered");
    assert_eq!(node["authorized"], false, "{node}");
    let id = node["id"].as_str().unwrap().to_string();
    let approved = std::time::Instant::now();
    server.ok(&["nodes", "approve", "--id", &id]);
    client.wait_state("Running", SHORT);
    println!(
        "  {}: nodes approve -> Running in {} ms",
        version.tag(),
        approved.elapsed().as_millis()
    );
    let trusted = server.pre_auth_key("alice", &["--pre-approved"]);
    let other = Client::start("badge", version, &Options::default());
    let _up = other.up(&server.url(), &trusted, LONG);
    other.wait_state("Running", SHORT);
}

/// A client started with `up` and no key, and the registration id of its AuthURL.
fn waiting_login(
    server: &Server,
    name: &str,
    version: Version,
) -> (Client, crate::tailscale::Background, String) {
    let client = Client::start(name, version, &Options::default());
    let up = client.spawn(&[
        "up",
        &format!("--login-server={}", server.url()),
        &format!("--hostname={name}"),
        &format!("--timeout={}s", SHORT.as_secs()),
    ]);
    let url = wait_until(SHORT, "an AuthURL", || {
        client.status()["AuthURL"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(String::from)
    });
    let id = url.rsplit('/').next().unwrap_or_default().to_string();
    (client, up, id)
}

/// The whole response to a plain `GET path` on the server's listener.
fn get_text(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A wrong key: `up` fails saying so, the client stays in NeedsLogin, no node is created.
fn bad_key_refused(version: Version) {
    let server = Server::start();
    server.create_user("alice");
    let client = Client::start("intruder", version, &Options::default());
    let wrong = "hskey-auth-aaaaaaaaaaaa-0123456789abcdefghijklmnopqrstuvwxyz";
    let run = client.up(&server.url(), wrong, SHORT).finish(SHORT * 2);
    assert!(!run.ok, "up with a wrong key succeeded: {run}");
    let said = format!("{}{}", run.stdout, run.stderr).to_lowercase();
    assert!(
        said.contains("auth key"),
        "up did not mention the key: {run}"
    );
    client.wait_state("NeedsLogin", SHORT);
    assert!(server.nodes().is_empty(), "{:?}", server.nodes());
}

/// The namespace has only loopback and its own veth pair, the outside is unreachable, the trap is armed and saw
/// nothing while a client registered, and every socket in the namespace is on loopback.
fn nothing_leaves() {
    // (`ip`, not /sys/class/net: sysfs still shows the host's interfaces.)
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let interfaces: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect();
    let (a, b, _) = crate::namespace::VETH;
    assert_eq!(
        interfaces,
        ["lo", b, a],
        "the namespace has other interfaces"
    );
    let outside = TcpStream::connect_timeout(&"192.0.2.1:80".parse().unwrap(), SHORT / 10);
    assert!(outside.is_err(), "reached 192.0.2.1 from the namespace");

    // The trap answers and records (so an empty record means something).
    let trap = crate::trap();
    let mut probe = TcpStream::connect(trap.url.trim_start_matches("http://")).unwrap();
    probe
        .write_all(b"GET http://example.invalid/ HTTP/1.1\r\nHost: example.invalid\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    probe.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(trap.take(), ["GET http://example.invalid/ HTTP/1.1"]);

    let server = Server::start();
    server.create_user("alice");
    let key = server.pre_auth_key("alice", &[]);
    let client = Client::start(
        "sealed",
        Version::Newest,
        &Options {
            socks5: true,
            ..Options::default()
        },
    );
    // The daemon really has the trap as its proxy.
    let environ = std::fs::read(format!("/proc/{}/environ", client.pid())).unwrap();
    let proxy = format!("HTTPS_PROXY={}", trap.url);
    assert!(
        environ.split(|b| *b == 0).any(|v| v == proxy.as_bytes()),
        "tailscaled runs without {proxy}"
    );
    let _up = client.up(&server.url(), &key, LONG);
    wait_until(SHORT, "sealed in nodes list", || server.node("sealed"));
    let seen = trap.take();
    assert!(seen.is_empty(), "requests went to the proxy: {seen:?}");
    // The daemon keeps to its own dirs (TS_LOGS_DIR is honoured only if it exists).
    let log = client.log();
    assert!(!log.contains("/var/lib/tailscale"), "{log}");
    for table in ["tcp", "tcp6", "udp", "udp6"] {
        for (local, remote) in sockets(table) {
            for address in [local, remote] {
                assert!(
                    is_local(address),
                    "a {table} socket in the namespace uses {address}"
                );
            }
        }
    }
}

/// (local, remote) addresses of every socket in `/proc/net/<table>`.
fn sockets(table: &str) -> Vec<(IpAddr, IpAddr)> {
    let text = std::fs::read_to_string(format!("/proc/net/{table}")).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (proc_address(fields[1]), proc_address(fields[2]))
        })
        .collect()
}

/// `0100007F:1F90` or 32 hex digits + port: 32-bit words in host (little-endian) order.
fn proc_address(field: &str) -> IpAddr {
    let hex = field.split(':').next().unwrap();
    let words: Vec<[u8; 4]> = (0..hex.len() / 8)
        .map(|i| {
            u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16)
                .unwrap()
                .to_le_bytes()
        })
        .collect();
    if words.len() == 1 {
        IpAddr::V4(Ipv4Addr::from(words[0]))
    } else {
        IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(words.concat()).unwrap(),
        ))
    }
}

fn is_local(address: IpAddr) -> bool {
    let address = match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(address),
        v4 => v4,
    };
    let veth = |a: IpAddr| matches!(a, IpAddr::V4(v4) if v4.octets()[..3] == [10, 254, 254]);
    address.is_loopback() || address.is_unspecified() || veth(address)
}

/// Users, keys and running clients: `(name, user, version, options)` each.
pub fn tailnet(server: &Server, nodes: &[(&str, &str, Version, Options)]) -> Vec<Client> {
    let mut users: Vec<&str> = nodes.iter().map(|n| n.1).collect();
    users.sort();
    users.dedup();
    for user in users {
        server.create_user(user);
    }
    tailnet_existing(server, nodes)
}

/// Clients for users that already exist, each `up` with a fresh key of its user, all Running.
pub fn tailnet_existing(server: &Server, nodes: &[(&str, &str, Version, Options)]) -> Vec<Client> {
    let clients: Vec<Client> = nodes
        .iter()
        .map(|(name, _, version, options)| Client::start(name, *version, options))
        .collect();
    let ups: Vec<_> = clients
        .iter()
        .zip(nodes)
        .map(|(client, node)| {
            let key = server.pre_auth_key(node.1, &[]);
            client.up(&server.url(), &key, LONG)
        })
        .collect();
    for (up, client) in ups.into_iter().zip(&clients) {
        let run = up.finish(LONG + SHORT);
        assert!(run.ok, "{}: up failed: {run}", client.name);
    }
    for client in &clients {
        client.wait_state("Running", LONG);
    }
    clients
}

/// Waits until `client` sees every node in `names` as an online peer under the base domain.
pub fn wait_peers_online(client: &Client, names: &[&str]) -> Value {
    wait_until(
        LONG,
        &format!("{} to see {names:?} online", client.name),
        || {
            let status = client.status();
            let peers: Vec<&Value> = status["Peer"].as_object()?.values().collect();
            let all = names.iter().all(|name| {
                peers.iter().any(|peer| {
                    peer["HostName"] == *name
                        && peer["Online"] == true
                        && peer["DNSName"]
                            .as_str()
                            .is_some_and(|d| d.ends_with(&format!(".{BASE_DOMAIN}.")))
                })
            });
            all.then_some(status)
        },
    )
}

/// The peer entry (from `status --json`) whose `HostName` is `name`, once `ready` holds.
pub fn wait_peer(client: &Client, name: &str, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    wait_until(SHORT, &format!("{}: {name} {what}", client.name), || {
        let status = client.status();
        let peer = status["Peer"]
            .as_object()?
            .values()
            .find(|p| p["HostName"] == name)?
            .clone();
        ready(&peer).then_some(peer)
    })
}

/// Admin actions reach live clients without restarts: a rename (which survives the
/// client's own hostname change), an expiry, and the delete of an online node.
fn live_admin_actions() {
    let server = Server::start();
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("watcher", "alice", Version::Newest, none.clone()),
            ("subject", "alice", Version::Oldest, none),
        ],
    );
    wait_peers_online(&clients[0], &["subject"]);
    let id = server.node("subject").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let timed = |what: &str, start: std::time::Instant| {
        println!(
            "  {what} reached the peer in {} ms",
            start.elapsed().as_millis()
        );
    };

    let start = std::time::Instant::now();
    server.ok(&["nodes", "rename", "--id", &id, "renamed"]);
    wait_peer(&clients[0], "subject", "renamed", |p| {
        p["DNSName"] == format!("renamed.{BASE_DOMAIN}.").as_str()
    });
    timed("rename", start);
    // The client changes its own hostname: the admin's name stays.
    let set = clients[1].run(&["set", "--hostname=other-host"], SHORT);
    assert!(set.ok, "{set}");
    wait_peer(&clients[0], "other-host", "with its new hostname", |_| true);
    let node = server.node("other-host").expect("hostname recorded");
    assert_eq!(node["givenName"], "renamed", "{node}");

    let start = std::time::Instant::now();
    server.ok(&["nodes", "expire", "--id", &id]);
    wait_peer(&clients[0], "other-host", "expired", |p| {
        p["Expired"] == true
    });
    timed("expire", start);

    let start = std::time::Instant::now();
    server.ok(&["nodes", "delete", "--id", &id]);
    wait_until(SHORT, "the deleted node to leave the peer list", || {
        let status = clients[0].status();
        let peers = status["Peer"].as_object().map(|p| p.len()).unwrap_or(0);
        (peers == 0).then_some(())
    });
    timed("delete", start);
    assert!(server.nodes().iter().all(|n| n["id"] != id.as_str()));
    clients[0].check_alive();
    server.ok(&["nodes", "list"]);
}

/// Three nodes of two users and both client versions reach Running and see each other.
fn three_nodes_running() {
    let server = Server::start();
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("alpha", "alice", Version::Newest, none.clone()),
            ("beta", "alice", Version::Oldest, none.clone()),
            ("gamma", "bob", Version::Newest, none),
        ],
    );
    let names = ["alpha", "beta", "gamma"];
    for client in &clients {
        let others: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != client.name)
            .collect();
        let status = wait_peers_online(client, &others);
        let own = status["Self"]["DNSName"].as_str().unwrap_or_default();
        assert_eq!(own, format!("{}.{BASE_DOMAIN}.", client.name), "{status}");
    }
}

/// `tailscale ping` between two nodes; with direct UDP forbidden on both, it goes via DERP.
fn ping_direct_and_derp() {
    let server = Server::start();
    let none = Options::default();
    let relayed = Options {
        never_direct: true,
        ..Options::default()
    };
    let clients = tailnet(
        &server,
        &[
            ("near", "alice", Version::Newest, none.clone()),
            ("far", "alice", Version::Oldest, none),
            ("relay-a", "alice", Version::Newest, relayed.clone()),
            ("relay-b", "alice", Version::Oldest, relayed),
        ],
    );
    let ping = |from: &Client, to: &Client| {
        wait_peers_online(from, &[to.name.as_str()]);
        let run = from.run(
            &[
                "ping",
                "--c=10",
                "--timeout=5s",
                "--until-direct=false",
                &to.ipv4(),
            ],
            LONG,
        );
        assert!(run.ok && run.stdout.contains("pong"), "{run}");
        run.stdout
    };
    ping(&clients[0], &clients[1]);
    let relayed = ping(&clients[2], &clients[3]);
    assert!(relayed.contains("via DERP"), "not relayed: {relayed}");
}

/// TCP from one node to a listener behind another (netstack forwards inbound to the host's
/// loopback at the same port), through the first node's SOCKS5 proxy.
fn tcp_through_tailnet() {
    let server = Server::start();
    let clients = tailnet(
        &server,
        &[
            (
                "caller",
                "alice",
                Version::Newest,
                Options {
                    socks5: true,
                    ..Options::default()
                },
            ),
            ("callee", "bob", Version::Oldest, Options::default()),
        ],
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"hello through the tailnet\n");
        }
    });
    wait_peers_online(&clients[0], &["callee"]);
    let target: Ipv4Addr = clients[1].ipv4().parse().unwrap();
    let greeting = wait_until(LONG, "a greeting through SOCKS5", || {
        let mut stream = socks5_connect(clients[0].socks_port.unwrap(), target, port).ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(greeting, "hello through the tailnet\n");
}

/// A SOCKS5 CONNECT (no authentication) to `target:port` through the proxy on `proxy_port`.
pub fn socks5_connect(proxy_port: u16, target: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let refused = |what: &str| std::io::Error::other(format!("socks5: {what}"));
    let mut stream = TcpStream::connect(("127.0.0.1", proxy_port))?;
    stream.set_read_timeout(Some(SHORT))?;
    stream.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(refused("no-auth refused"));
    }
    let mut request = vec![5, 1, 0, 1];
    request.extend(target.octets());
    request.extend(port.to_be_bytes());
    stream.write_all(&request)?;
    let mut reply = [0u8; 10];
    stream.read_exact(&mut reply)?;
    if reply[1] != 0 {
        return Err(refused(&format!("CONNECT failed with code {}", reply[1])));
    }
    Ok(stream)
}

/// SIGKILL the server and start it again on the same data dir: the clients come back to
/// Running with the same IPs and see each other online again.
fn server_restart() {
    let mut server = Server::start();
    let none = Options::default();
    let clients = tailnet(
        &server,
        &[
            ("steady", "alice", Version::Newest, none.clone()),
            ("sturdy", "alice", Version::Oldest, none),
        ],
    );
    wait_peers_online(&clients[0], &["sturdy"]);
    let before: Vec<Value> = clients
        .iter()
        .map(|c| c.status()["TailscaleIPs"].clone())
        .collect();
    let ids = node_ids(&server);
    server.kill();
    server.restart();
    for (client, other) in [(&clients[0], "sturdy"), (&clients[1], "steady")] {
        client.wait_state("Running", LONG);
        wait_peers_online(client, &[other]);
    }
    let after: Vec<Value> = clients
        .iter()
        .map(|c| c.status()["TailscaleIPs"].clone())
        .collect();
    assert_eq!(before, after);
    assert_eq!(
        ids,
        node_ids(&server),
        "node ids changed across the restart"
    );
    // And they talk again.
    let run = clients[0].run(
        &[
            "ping",
            "--c=10",
            "--timeout=5s",
            "--until-direct=false",
            &clients[1].ipv4(),
        ],
        LONG,
    );
    assert!(run.ok && run.stdout.contains("pong"), "{run}");
}

/// `(givenName, id)` of every node, from the server's CLI.
fn node_ids(server: &Server) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = server
        .nodes()
        .iter()
        .map(|n| (n["givenName"].to_string(), n["id"].to_string()))
        .collect();
    ids.sort();
    ids
}

/// The production path: `https://` control with a certificate from a test CA the clients
/// trust through `SSL_CERT_FILE`, DERP over TLS (no plain-HTTP knob); both versions reach
/// Running and see each other.
fn running_over_https() {
    let server = Server::start_tls();
    let trusting = Options {
        trust: server.ca.clone(),
        ..Options::default()
    };
    let clients = tailnet(
        &server,
        &[
            ("secure-a", "alice", Version::Newest, trusting.clone()),
            ("secure-b", "alice", Version::Oldest, trusting),
        ],
    );
    wait_peers_online(&clients[0], &["secure-b"]);
    wait_peers_online(&clients[1], &["secure-a"]);
}
