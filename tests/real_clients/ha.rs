//! Two instances of our server on one PostgreSQL log with real clients (issue #15): each
//! client logs in through its own TCP proxy over both instances, which prefers a different
//! instance (a balancer with sticky sessions), so the two land on different instances. DERP:
//! the instances' embedded DERP servers are not meshed, so every instance's `server_url` is
//! the proxy preferring instance 0, and all DERP traffic meets there. The two ping across
//! instances (presence is shared). Instance 1 is killed: its client comes back through its
//! proxy on instance 0, stays `Running`, and the two ping again.

use crate::ha_cluster::{Cluster, ClusterOptions, Proxy};
use crate::scenarios::{wait_peer, LONG, SHORT};
use crate::server::BASE_DOMAIN;
use crate::tailscale::{Client, Options, Version};
use crate::wait_until;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Instance `index`'s DNS, DERP (embedded, region 999, its own STUN port) and policy.
fn sections(index: usize, data: &Path) -> String {
    let stun = crate::common::free_udp_port();
    format!(
        "dns:\n  magic_dns: true\n  base_domain: {BASE_DOMAIN}\n  override_local_dns: false\n\
         derp:\n  server:\n    enabled: true\n    region_id: 999\n    verify_clients: true\n\
         \x20   stun_listen_addr: 127.0.0.1:{stun}\n    private_key_path: {data}/derp-{index}.key\n\
         \x20   automatically_add_embedded_derp_region: true\n  urls: []\n  paths: []\n\
         policy:\n  mode: database\n\
         log:\n  level: info\n",
        data = data.display()
    )
}

/// `client`'s `tailscale ping` to `other` until a pong (via DERP or direct), retried while
/// the peer is not yet in the client's engine ("unknown peer" right after it shows in status).
fn pings(client: &Client, other: &Client) {
    let ip = other.ipv4();
    crate::wait_until(
        LONG,
        &format!("{} to ping {}", client.name, other.name),
        || {
            let run = client.run(
                &["ping", "--c=5", "--timeout=5s", "--until-direct=false", &ip],
                LONG,
            );
            println!("  {} ping {}: {run}", client.name, other.name);
            (run.ok && run.stdout.contains("pong")).then_some(())
        },
    );
}

pub fn two_instances_and_a_kill() {
    let mut cluster = Cluster::start_with(ClusterOptions {
        instances: 2,
        sections: Arc::new(sections),
        ..Default::default()
    });
    // Client "east" (and DERP) through the front proxy, which prefers instance 0; client
    // "west" through a second proxy preferring instance 1.
    cluster.front.prefer(0);
    let west_proxy = Proxy::to(&[
        ([127, 0, 0, 1], cluster.instance(0).port).into(),
        ([127, 0, 0, 1], cluster.instance(1).port).into(),
    ]);
    west_proxy.prefer(1);
    let admin = cluster.instance(0);
    admin.create_user("alice");
    let east = Client::start("east", Version::Newest, &Options::default());
    let west = Client::start("west", Version::Newest, &Options::default());
    let ups = [
        east.up(&cluster.url(), &admin.pre_auth_key("alice", &[]), LONG),
        west.up(&west_proxy.url(), &admin.pre_auth_key("alice", &[]), LONG),
    ];
    for (up, client) in ups.into_iter().zip([&east, &west]) {
        let run = up.finish(LONG + SHORT);
        assert!(run.ok, "{}: up failed: {run}", client.name);
        client.wait_state("Running", LONG);
    }
    // On different instances: west's control connection is held by instance 1.
    assert!(west_proxy.live(1) > 0, "west is not on instance 1");
    assert_eq!(west_proxy.live(0), 0, "west also talks to instance 0");
    assert!(cluster.front.live(0) > 0 && cluster.front.live(1) == 0);
    for (client, other) in [(&east, "west"), (&west, "east")] {
        wait_peer(client, other, "as a peer", |_| true);
    }
    // Clients on different instances ping: each one's disco key and endpoints reach the
    // other instance through the shared presence tables.
    pings(&east, &west);

    // An admin change on instance 0 reaches west on instance 1.
    let east_id = cluster
        .instance(1)
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "east")
        .and_then(|n| n["id"].as_str().map(String::from))
        .expect("instance 1 lists east");
    let start = Instant::now();
    admin.ok(&["nodes", "rename", "--id", &east_id, "renamed-east"]);
    wait_peer(&west, "east", "renamed on another instance", |p| {
        p["DNSName"] == format!("renamed-east.{BASE_DOMAIN}.").as_str()
    });
    println!(
        "  rename on instance 0 reached the client on instance 1 in {} ms",
        start.elapsed().as_millis()
    );

    // Kill west's instance: west reconnects through its proxy to instance 0, stays Running.
    let start = Instant::now();
    cluster.kill(1);
    wait_until(LONG, "west back on instance 0", || {
        (west_proxy.live(0) > 0).then_some(())
    });
    west.wait_state("Running", LONG);
    wait_peer(&west, "east", "after the failover", |p| {
        p["DNSName"] == format!("renamed-east.{BASE_DOMAIN}.").as_str()
    });
    pings(&west, &east);
    println!(
        "  west back through the proxy on instance 0 and pinging in {} ms",
        start.elapsed().as_millis()
    );
    // And it stays Running on the survivor.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(west.backend_state(), "Running");
    assert_eq!(east.backend_state(), "Running");
}
