//! Replays policy cases captured from Tailscale's own control plane
//! (`../shared/compat/policy`, see its README) through our policy engine and compares, per
//! node, the packet filter, the visible peers (with `Addresses`, `AllowedIPs`,
//! `PrimaryRoutes`, `Tags`) and the SSH policy.
//!
//! ```text
//! cargo run --release --example policy_compat -- ../shared/compat/policy [FILE|DIR ...]
//! # and the further scenarios headscale keeps (its Go module, `.hujson` captures):
//! cargo run --release --example policy_compat -- ../shared/compat/policy \
//!     "$(go env GOMODCACHE)/github.com/juanfont/headscale@v0.29.2/hscontrol/policy/v2/testdata"
//! ```
//!
//! Prints one line per failing case with its first difference, a pass rate per category,
//! and ends with `N passed, M failed`. `tests/policy_compat.rs` runs the same check.
//!
//! Comparison rules (decided per field, see ARCHITECTURE.md "Policy compatibility"):
//! - packet filters are compared by meaning: every (protocol, destination, ports) maps to
//!   the set of source addresses allowed, so rule grouping and order, `a-b` ranges versus
//!   CIDRs, and `IP` versus `IP/32` do not matter; capability grants are compared as sets;
//! - peers by hostname, with their address lists as sets;
//! - SSH rules in order, principals as sets;
//! - the captured self `CapMap` holds hosted-only capabilities (`is-owner`,
//!   `tailnet-display-name`, ...); only capabilities the policy's `nodeAttrs` name are
//!   compared;
//! - addresses are rendered by the server's own helper (`netmap::node_addresses`, with
//!   `Compiled::shows_ipv4` for `disable-ipv4`), for peers and, where the capture has them,
//!   for the node itself (`self_addresses`, and its own addresses among
//!   `self_allowed_ips`: the routes there are Tailscale's every approved route, not
//!   compared);
//! - a route approved only by `autoApprovers` (absent from the topology's
//!   `approved_routes`) can be caught mid-propagation: when some viewers list it in the
//!   router's `PrimaryRoutes` and other viewers list the router without it, those others
//!   may see the router without that route (`undelivered_routes`; only `acl-k03` needs
//!   it: its viewers disagree where `acl-a02`, with fewer sources, shows the route to
//!   exactly the viewers k03 lacks it for — no access rule yields both).
//! - `is-owner`/`is-admin` on a user's untagged node give that user the Owner or Admin role
//!   in the topology (what the role autogroups resolve by).

#[path = "policy_compat/headscale_format.rs"]
pub mod headscale_format;

use headscale::core::netmap::node_addresses;
use headscale::core::policy::{Compiled, Policy, Topology, TopologyNode, TopologyUser};
use headscale::core::roles::Role;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The result of one run.
#[derive(Debug, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: Vec<(String, String)>,
    /// category → (passed, total)
    pub categories: BTreeMap<String, (usize, usize)>,
    /// The ids of the cases judged, so a second set can leave out what the first had.
    pub ids: BTreeSet<String>,
}

/// Every case file under `paths`, sorted within each path, paths in the order given.
pub fn case_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for path in paths {
        let mut files = Vec::new();
        if path.is_dir() {
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|e| e == "json" || e == "hujson") {
                        files.push(p);
                    }
                }
            }
        } else {
            files.push(path.clone());
        }
        files.sort();
        all.extend(files);
    }
    all
}

pub fn run(paths: &[PathBuf]) -> Summary {
    run_except(paths, &BTreeSet::new())
}

/// [`run`], leaving out cases whose id is in `known` (and repeats of an id within `paths`).
pub fn run_except(paths: &[PathBuf], known: &BTreeSet<String>) -> Summary {
    let mut summary = Summary::default();
    for file in case_files(paths) {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                summary
                    .failed
                    .push((file.display().to_string(), format!("unreadable: {e}")));
                continue;
            }
        };
        let parsed = if file.extension().is_some_and(|e| e == "hujson") {
            headscale_format::case(&text)
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        let case: Value = match parsed {
            Ok(v) => v,
            Err(e) => {
                summary
                    .failed
                    .push((file.display().to_string(), format!("not JSON: {e}")));
                continue;
            }
        };
        let category = case["category"].as_str().unwrap_or("?").to_string();
        let name = case["id"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| file_stem(&file));
        if known.contains(&name) || !summary.ids.insert(name.clone()) {
            continue;
        }
        let entry = summary.categories.entry(category.clone()).or_default();
        entry.1 += 1;
        match check_case(&case) {
            Ok(()) => {
                summary.passed += 1;
                entry.0 += 1;
            }
            Err(why) => summary.failed.push((format!("{category}/{name}"), why)),
        }
    }
    summary
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The captured tailnet as our topology: node ids in hostname order.
fn topology(case: &Value) -> Topology {
    let users: Vec<TopologyUser> = case["topology"]["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| TopologyUser {
            id: u["id"].as_u64().unwrap_or(0),
            name: u["name"].as_str().unwrap_or_default().into(),
            email: u["email"].as_str().unwrap_or_default().into(),
            provider_identifier: String::new(),
            role: captured_role(case, u["name"].as_str().unwrap_or_default()),
        })
        .collect();
    let mut nodes = Vec::new();
    if let Some(map) = case["topology"]["nodes"].as_object() {
        let mut names: Vec<&String> = map.keys().collect();
        names.sort();
        for (i, name) in names.into_iter().enumerate() {
            let n = &map[name];
            let strings = |v: &Value| -> Vec<String> {
                v.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            };
            let announced = strings(&n["routable_ips"]);
            let routes = strings(&n["approved_routes"])
                .into_iter()
                .filter(|r| announced.contains(r))
                .filter_map(|r| r.parse().ok())
                .collect();
            let tags = strings(&n["tags"]);
            let user = n["user"]
                .as_str()
                .and_then(|u| users.iter().find(|x| x.name == u))
                .map(|u| u.id);
            nodes.push(TopologyNode {
                id: i as u64 + 1,
                name: name.clone(),
                user: if tags.is_empty() { user } else { None },
                tags,
                ipv4: n["ipv4"].as_str().and_then(|s| s.parse().ok()),
                ipv6: n["ipv6"].as_str().and_then(|s| s.parse().ok()),
                routes,
            });
        }
    }
    Topology { users, nodes }
}

/// A user's role as the capture shows it: Tailscale gives the self `CapMap` of a user's
/// untagged nodes `is-owner` (the Owner) or `is-admin` (an Admin; the Owner has both).
/// Tagged nodes carry their creator's capabilities, so they say nothing about a user.
fn captured_role(case: &Value, user: &str) -> Role {
    let mut role = Role::Member;
    for (name, node) in case["topology"]["nodes"].as_object().into_iter().flatten() {
        let untagged = node["tags"].as_array().is_none_or(|t| t.is_empty());
        if !untagged || node["user"].as_str() != Some(user) {
            continue;
        }
        let caps = &case["expected"][name.as_str()]["self_cap_map"];
        if caps.get("https://tailscale.com/cap/is-owner").is_some() {
            return Role::Owner;
        }
        if caps.get("https://tailscale.com/cap/is-admin").is_some() {
            role = Role::Admin;
        }
    }
    role
}

/// Every node's announced routes, in topology order.
fn announced_routes(case: &Value, topology: &Topology) -> Vec<Vec<ipnet::IpNet>> {
    topology
        .nodes
        .iter()
        .map(|node| {
            case["topology"]["nodes"][node.name.as_str()]["routable_ips"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str()?.parse().ok())
                .collect()
        })
        .collect()
}

fn check_case(case: &Value) -> Result<(), String> {
    let text = match &case["policy"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let accepted = case["accepted"].as_bool().unwrap_or(true);
    let topology = topology(case);
    let parsed = if text.trim().is_empty() {
        Ok(Policy::allow_all())
    } else {
        Policy::parse(&text).and_then(|p| {
            headscale::core::policy::policy_tests::run(&p, &topology)?;
            Ok(p)
        })
    };
    let policy = match (parsed, accepted) {
        (Ok(p), true) => p,
        (Err(e), true) => return Err(format!("rejected a policy Tailscale accepts: {e}")),
        (Ok(_), false) => {
            return Err(format!(
                "accepted a policy Tailscale rejects ({})",
                case["error"]["message"].as_str().unwrap_or("?")
            ))
        }
        // Rejected as Tailscale did: what clients see is the policy in force before.
        (Err(_), false) => Policy::allow_all(),
    };
    // What the captured tailnet's autoApprovers approved is not always in
    // `approved_routes`: apply them as the server does.
    let mut topology = topology;
    let announced = announced_routes(case, &topology);
    let snapshot = topology.clone();
    for (node, announced) in topology.nodes.iter_mut().zip(announced) {
        let candidate = headscale::core::policy::auto_approve::Candidate {
            user: node.user,
            tags: &node.tags,
            ips: node.ips().collect(),
        };
        for route in headscale::core::policy::auto_approve::approved(
            &policy, &snapshot, &candidate, &announced,
        ) {
            if !node.routes.contains(&route) {
                node.routes.push(route);
            }
        }
    }
    let topology = std::sync::Arc::new(topology);
    let compiled = Compiled::new(std::sync::Arc::new(policy), topology.clone());
    let expected = case["expected"].as_object().ok_or("no expected section")?;
    let index: BTreeMap<&str, usize> = topology
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let primaries = primary_routes(&topology, case);
    let undelivered = undelivered_routes(case);
    for (host, want) in expected {
        let &i = index
            .get(host.as_str())
            .ok_or_else(|| format!("{host}: not in topology"))?;
        // Packet filter.
        let ours = serde_json::to_value(compiled.filter(i)).unwrap();
        let theirs = if want["packet_filter_rules"].is_null() {
            Value::Array(Vec::new())
        } else {
            want["packet_filter_rules"].clone()
        };
        let (a, b) = (filter_meaning(&ours)?, filter_meaning(&theirs)?);
        if a != b {
            return Err(format!(
                "{host}: packet filter differs: {}",
                first_difference(&a, &b)
            ));
        }
        // Peers.
        let our_peers: BTreeMap<String, Value> = compiled
            .peers(i)
            .into_iter()
            .map(|p| {
                let name = topology.nodes[p].name.clone();
                (name, peer_view(&compiled, i, &topology, p, &primaries))
            })
            .collect();
        let their_peers: BTreeMap<String, Value> = want["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    normalise_peer(p),
                )
            })
            .collect();
        let ours_names: BTreeSet<&String> = our_peers.keys().collect();
        let theirs_names: BTreeSet<&String> = their_peers.keys().collect();
        if ours_names != theirs_names {
            let extra: Vec<_> = ours_names.difference(&theirs_names).collect();
            let missing: Vec<_> = theirs_names.difference(&ours_names).collect();
            return Err(format!(
                "{host}: peers differ: we add {extra:?}, we miss {missing:?}"
            ));
        }
        for (name, theirs) in &their_peers {
            let ours = &our_peers[name];
            let not_yet = undelivered.get(&(host.clone(), name.clone()));
            let delivered_later = not_yet.is_some_and(|routes| without(ours, routes) == *theirs);
            if ours != theirs && !delivered_later {
                return Err(format!("{host}: peer {name}: ours {ours}, theirs {theirs}"));
            }
        }
        // Its own addresses, where the capture has them: in `Addresses`, and among its
        // `AllowedIPs` (only the addresses: there Tailscale lists every approved route of
        // the node, we the ones it is primary for).
        let node = &topology.nodes[i];
        let ours = string_set(&serde_json::json!(node_addresses(
            node.ipv4,
            node.ipv6,
            compiled.shows_ipv4(i, i)
        )));
        let own = string_set(&serde_json::json!(node_addresses(
            node.ipv4, node.ipv6, true
        )));
        for field in ["self_addresses", "self_allowed_ips"] {
            if want.get(field).is_none_or(Value::is_null) {
                continue;
            }
            let theirs: BTreeSet<String> = string_set(&want[field])
                .into_iter()
                .filter(|a| own.contains(a))
                .collect();
            if ours != theirs {
                return Err(format!("{host}: {field}: ours {ours:?}, theirs {theirs:?}"));
            }
        }
        // SSH.
        let ours = compiled
            .ssh(i, "https://unused")
            .map(|p| serde_json::to_value(p).unwrap())
            .unwrap_or(Value::Null);
        let (a, b) = (normalise_ssh(&ours), normalise_ssh(&want["ssh_policy"]));
        if a != b {
            return Err(format!("{host}: ssh policy: ours {a}, theirs {b}"));
        }
        // Capabilities from nodeAttrs.
        let ours_caps = compiled.node_caps(i);
        for (cap, values) in &ours_caps {
            let theirs = &want["self_cap_map"][cap.as_str()];
            let theirs_values = theirs.as_array().cloned().unwrap_or_default();
            if theirs.is_null() && want["self_cap_map"].get(cap.as_str()).is_none() {
                return Err(format!(
                    "{host}: we give capability {cap}, Tailscale does not"
                ));
            }
            if *values != theirs_values {
                return Err(format!(
                    "{host}: capability {cap}: ours {values:?}, theirs {theirs_values:?}"
                ));
            }
        }
    }
    Ok(())
}

/// One primary router per subnet route. Which of several routers won Tailscale's election
/// depends on the order they came up in, which a capture does not record; so the winners
/// are read from the capture (any viewer's `PrimaryRoutes`), the lowest id otherwise.
fn primary_routes(topology: &Topology, case: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for view in case["expected"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        for peer in view["peers"].as_array().into_iter().flatten() {
            let Some(node) = topology
                .nodes
                .iter()
                .find(|n| peer["name"] == n.name.as_str())
            else {
                continue;
            };
            for route in peer["PrimaryRoutes"].as_array().into_iter().flatten() {
                if let Some(route) = route.as_str() {
                    out.insert(route.to_string(), node.id);
                }
            }
        }
    }
    for node in &topology.nodes {
        for route in node.subnet_routes() {
            out.entry(route.to_string()).or_insert(node.id);
        }
    }
    out
}

/// Routes approved only by `autoApprovers` that some viewers were shown on a router while
/// others, who list the router, were not: (viewer, router) → those routes. Captures take
/// every viewer's map one after the other, and an approval made when the policy was set
/// can reach some viewers before the capture and others after it.
fn undelivered_routes(case: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let Some(views) = case["expected"].as_object() else {
        return out;
    };
    let Some(nodes) = case["topology"]["nodes"].as_object() else {
        return out;
    };
    for (router, node) in nodes {
        let approved = string_set(&node["approved_routes"]);
        for route in string_set(&node["routable_ips"]).difference(&approved) {
            // (viewer, whether its view of the router lists the route as primary)
            let seen: Vec<(&String, bool)> = views
                .iter()
                .filter_map(|(viewer, view)| {
                    let peer = view["peers"]
                        .as_array()?
                        .iter()
                        .find(|p| p["name"] == router.as_str())?;
                    Some((viewer, string_set(&peer["PrimaryRoutes"]).contains(route)))
                })
                .collect();
            if !seen.iter().any(|(_, listed)| *listed) {
                continue;
            }
            for (viewer, _) in seen.iter().filter(|(_, listed)| !listed) {
                out.entry((viewer.to_string(), router.clone()))
                    .or_default()
                    .insert(route.clone());
            }
        }
    }
    out
}

/// A normalised peer without `routes`.
fn without(peer: &Value, routes: &BTreeSet<String>) -> Value {
    let mut peer = peer.clone();
    for field in ["AllowedIPs", "PrimaryRoutes"] {
        if let Some(list) = peer[field].as_array_mut() {
            list.retain(|r| r.as_str().is_none_or(|r| !routes.contains(r)));
        }
    }
    peer
}

fn string_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// A peer as the viewer `i` gets it: a subnet in `AllowedIPs`/`PrimaryRoutes` where it
/// carries it for that viewer (the primary, or under `via` the first via router, ranked
/// primary first then by id: every captured node is online), exit routes where the policy
/// lets the viewer use them.
fn peer_view(
    compiled: &Compiled,
    viewer: usize,
    topology: &Topology,
    router: usize,
    primaries: &BTreeMap<String, u64>,
) -> Value {
    let node = &topology.nodes[router];
    let addresses: BTreeSet<String> =
        node_addresses(node.ipv4, node.ipv6, compiled.shows_ipv4(viewer, router))
            .into_iter()
            .collect();
    let primary: BTreeSet<String> = node
        .subnet_routes()
        .filter(|r| {
            let ranked = ranked_routers(topology, r, primaries);
            compiled.shows_route(viewer, router, r, &ranked)
        })
        .map(|r| r.to_string())
        .collect();
    let mut allowed = addresses.clone();
    allowed.extend(primary.iter().cloned());
    if node.is_exit_node() {
        for route in node.routes.iter().filter(|r| r.prefix_len() == 0) {
            if compiled.shows_route(viewer, router, route, &[]) {
                allowed.insert(route.to_string());
            }
        }
    }
    let tags: BTreeSet<String> = node.tags.iter().cloned().collect();
    serde_json::json!({
        "Addresses": addresses,
        "AllowedIPs": allowed,
        "PrimaryRoutes": primary,
        "Tags": tags,
    })
}

/// The routers of `route` (node indices), its primary first, then the others by id.
fn ranked_routers(
    topology: &Topology,
    route: &ipnet::IpNet,
    primaries: &BTreeMap<String, u64>,
) -> Vec<usize> {
    let primary = primaries.get(&route.to_string());
    let mut ranked: Vec<usize> = topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.subnet_routes().any(|r| r == route))
        .map(|(i, _)| i)
        .collect();
    ranked.sort_by_key(|&i| (Some(&topology.nodes[i].id) != primary, topology.nodes[i].id));
    ranked
}

fn normalise_peer(peer: &Value) -> Value {
    let set = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    serde_json::json!({
        "Addresses": set(&peer["Addresses"]),
        "AllowedIPs": set(&peer["AllowedIPs"]),
        "PrimaryRoutes": set(&peer["PrimaryRoutes"]),
        "Tags": set(&peer["Tags"]),
    })
}

fn normalise_ssh(policy: &Value) -> Value {
    let Some(rules) = policy.get("rules").and_then(Value::as_array) else {
        return Value::Null;
    };
    let rules: Vec<Value> = rules
        .iter()
        .map(|r| {
            let principals: BTreeSet<String> = r["principals"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p.to_string())
                .collect();
            serde_json::json!({
                "principals": principals,
                "sshUsers": r["sshUsers"],
                "action": r["action"],
                "acceptEnv": r.get("acceptEnv").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    Value::Array(rules)
}

/// Inclusive address ranges per family, merged.
type Ranges = BTreeSet<(u8, u128, u128)>;

fn to_range(text: &str) -> Result<(u8, u128, u128), String> {
    let parse_ip = |s: &str| -> Result<(u8, u128), String> {
        match s
            .parse::<IpAddr>()
            .map_err(|_| format!("bad address {s:?}"))?
        {
            IpAddr::V4(v4) => Ok((4, u128::from(u32::from(v4)))),
            IpAddr::V6(v6) => Ok((6, u128::from(v6))),
        }
    };
    if let Some((a, b)) = text.split_once('-') {
        let (fa, x) = parse_ip(a)?;
        let (_, y) = parse_ip(b)?;
        return Ok((fa, x, y));
    }
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        let (family, start, end) = match net.trunc() {
            ipnet::IpNet::V4(n) => (
                4,
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            ),
            ipnet::IpNet::V6(n) => (6, u128::from(n.network()), u128::from(n.broadcast())),
        };
        return Ok((family, start, end));
    }
    let (family, x) = parse_ip(text)?;
    Ok((family, x, x))
}

fn merge(ranges: Ranges) -> Ranges {
    let mut out: Vec<(u8, u128, u128)> = Vec::new();
    for (f, a, b) in ranges {
        if let Some(last) = out.last_mut() {
            if last.0 == f && a <= last.2.saturating_add(1) {
                last.2 = last.2.max(b);
                continue;
            }
        }
        out.push((f, a, b));
    }
    out.into_iter().collect()
}

/// Meaning of a filter: (protocols, destination, ports) → allowed sources; plus the
/// capability grants as a set.
type Meaning = (BTreeMap<String, Ranges>, BTreeSet<String>);

fn filter_meaning(rules: &Value) -> Result<Meaning, String> {
    let mut ip: BTreeMap<String, Ranges> = BTreeMap::new();
    let mut caps = BTreeSet::new();
    for rule in rules.as_array().into_iter().flatten() {
        let mut sources = Ranges::new();
        let mut any_source = false;
        for src in rule["SrcIPs"].as_array().into_iter().flatten() {
            let s = src.as_str().unwrap_or_default();
            if s == "*" {
                any_source = true;
            } else {
                sources.insert(to_range(s)?);
            }
        }
        if any_source {
            sources.insert((0, 0, 0));
        }
        let sources = merge(sources);
        if let Some(grants) = rule["CapGrant"].as_array() {
            for grant in grants {
                let dsts: BTreeSet<(u8, u128, u128)> = grant["Dsts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| to_range(d.as_str().unwrap_or_default()))
                    .collect::<Result<_, _>>()?;
                caps.insert(format!(
                    "src={sources:?} dsts={dsts:?} caps={}",
                    grant["CapMap"]
                ));
            }
        }
        let mut protos: Vec<i64> = rule["IPProto"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_i64)
            .collect();
        protos.sort();
        for dst in rule["DstPorts"].as_array().into_iter().flatten() {
            let target = dst["IP"].as_str().unwrap_or_default();
            let target = if target == "*" {
                "*".to_string()
            } else {
                format!("{:?}", to_range(target)?)
            };
            let key = format!(
                "proto={protos:?} dst={target} ports={}-{}",
                dst["Ports"]["First"], dst["Ports"]["Last"]
            );
            let entry = ip.entry(key).or_default();
            entry.extend(sources.iter().copied());
            *entry = merge(std::mem::take(entry));
        }
    }
    Ok((ip, caps))
}

fn first_difference(ours: &Meaning, theirs: &Meaning) -> String {
    for (key, ranges) in &ours.0 {
        match theirs.0.get(key) {
            None => return format!("we allow {key} from {}", show(ranges)),
            Some(t) if t != ranges => {
                return format!("{key}: sources ours {}, theirs {}", show(ranges), show(t))
            }
            _ => {}
        }
    }
    for (key, ranges) in &theirs.0 {
        if !ours.0.contains_key(key) {
            return format!("we miss {key} from {}", show(ranges));
        }
    }
    let extra: Vec<_> = ours.1.difference(&theirs.1).collect();
    let missing: Vec<_> = theirs.1.difference(&ours.1).collect();
    format!("cap grants: we add {extra:?}, we miss {missing:?}")
}

fn show(ranges: &Ranges) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(f, a, b)| {
            let ip = |x: u128| -> String {
                if f == 4 {
                    std::net::Ipv4Addr::from(x as u32).to_string()
                } else if f == 6 {
                    std::net::Ipv6Addr::from(x).to_string()
                } else {
                    "*".into()
                }
            };
            if a == b {
                ip(a)
            } else {
                format!("{}-{}", ip(a), ip(b))
            }
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

#[allow(dead_code)]
fn main() {
    let mut paths: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        paths.push(PathBuf::from("../shared/compat/policy"));
    }
    // Later paths add only the scenarios earlier ones lack (`.hujson`: headscale's layout).
    let summary = run(&paths);
    for (name, why) in &summary.failed {
        println!("FAIL {name}: {why}");
    }
    for (category, (passed, total)) in &summary.categories {
        println!(
            "category {category}: {passed}/{total} ({:.1} %)",
            100.0 * *passed as f64 / (*total).max(1) as f64
        );
    }
    println!("{} passed, {} failed", summary.passed, summary.failed.len());
}
