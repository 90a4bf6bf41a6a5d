//! `autogroup:internet` and capability grants without sources: see
//! `src/core/policy/RULES.md` ("grants").

use crate::support::*;
use headscale::core::policy::Topology;

/// The shared tailnet with `server` made an exit node.
fn with_exit_node() -> Topology {
    let mut topology = tailnet();
    let i = index(&topology, "server");
    topology.nodes[i].routes = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
    topology
}

#[test]
fn autogroup_internet_is_public_addresses_only_not_the_exit_nodes_lan() {
    let topology = with_exit_node();
    let exit = index(&topology, "server");
    let compiled = compile(
        &with_tags(
            r#""acls": [{"action": "accept", "src": ["odin@example.com"], "dst": ["autogroup:internet:*"]}]"#,
        ),
        topology,
    );
    let dsts: Vec<String> = compiled
        .filter(exit)
        .iter()
        .flat_map(|rule| rule.dst_ports.iter().map(|d| d.ip.clone()))
        .collect();
    // Tailscale's set (captures routes-b17/b18): IPv4 but 10/8, 100.64/10, 169.254/16,
    // 172.16/12 and 192.168/16; IPv6 global unicast.
    assert_eq!(
        dsts,
        [
            "0.0.0.0-9.255.255.255",
            "11.0.0.0-100.63.255.255",
            "100.128.0.0-169.253.255.255",
            "169.255.0.0-172.15.255.255",
            "172.32.0.0-192.167.255.255",
            "192.169.0.0-255.255.255.255",
            "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ]
    );
}

#[test]
fn an_app_grant_naming_no_source_sends_no_capability() {
    // grant-h4: `"src": []` gives nothing; a source that resolves to nobody (an empty
    // group) still sends the grant, with no source addresses.
    let topology = tailnet();
    let server = index(&topology, "server");
    let none = compile(
        &with_tags(
            r#""grants": [{"src": [], "dst": ["*"], "app": {"example.com/cap/test": [{}]}}]"#,
        ),
        topology.clone(),
    );
    assert!(none.filter(server).is_empty());
    let empty_group = compile(
        &with_tags(
            r#""groups": {"group:empty": []}, "grants": [{"src": ["group:empty"], "dst": ["*"], "app": {"example.com/cap/test": [{}]}}]"#,
        ),
        topology,
    );
    assert_eq!(empty_group.filter(server).len(), 1);
}
