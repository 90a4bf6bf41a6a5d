//! Access review, pure: who can reach a destination and what a node can reach, with the
//! policy rule that allows each, read from the packet filters the nodes are sent
//! (`Compiled::filter_with_origins`) — so a review never disagrees with enforcement — and
//! how that answer changed along the log (`Walk`, folded event by event).
//!
//! A destination is a node (all its ports) or an address, optionally with a port and a
//! protocol: the node with that address, or the routers whose approved routes hold it
//! (a subnet router, an exit node for `autogroup:internet`), enforce the rules for it.

use super::alias::{self, Alias, AutoGroup};
use super::checked::Policy;
use super::compile::{Compiled, Origin};
use super::document::{self, Document};
use super::topology::{Topology, TopologyNode};
use crate::core::{Envelope, Event, State, Timestamp};
use crate::tailcfg::FilterRule;
use ipnet::IpNet;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Protocols a filter rule without `IPProto` accepts (Tailscale's default).
const DEFAULT_PROTOCOLS: [i32; 4] = [6, 17, 1, 58];

/// The rule shown when no policy is set: headscale then lets everyone reach everything.
pub const NO_POLICY: &str = "(no policy: allow all)";
/// The rule shown for a policy with neither `acls` nor `grants` (also allow all).
pub const EMPTY_POLICY: &str = "(policy without acls or grants: allow all)";

/// Said with every answer under an allow-all policy.
pub const ALLOW_ALL_NOTE: &str =
    "the policy allows all: every node may reach every other on every port (headscale's default)";

/// What `who-can-reach` was asked about, before the tailnet is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: Host,
    pub port: Option<u16>,
    /// The protocol as written and its number.
    pub proto: Option<(String, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A node id or given name.
    Node(String),
    Ip(IpAddr),
}

/// Parses `node`, `ip`, `ip:port`, `ip:port/proto`, `[v6]:port`, `node:port/proto`
/// (`*` as the port: any).
pub fn parse_destination(text: &str) -> Result<Destination, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(
            "the destination is empty: give a node (id or name) or ip[:port][/proto]".into(),
        );
    }
    let (head, proto) = match text.rsplit_once('/') {
        Some((head, proto)) => {
            if proto.chars().all(|c| c.is_ascii_digit()) && !head.contains(':')
                || head.parse::<std::net::Ipv6Addr>().is_ok()
            {
                return Err(format!(
                    "{text:?}: a destination is one address, not a CIDR (with a protocol, give \
                     a port too: e.g. 10.0.0.5:443/tcp or 10.0.0.5:*/icmp)"
                ));
            }
            let number = match alias::parse_protocol(proto)?.first() {
                Some(n) => *n,
                None => {
                    return Err(format!(
                        "{text:?}: name one protocol after '/' (tcp, udp, icmp, …)"
                    ))
                }
            };
            (head, Some((proto.to_ascii_lowercase(), number)))
        }
        None => (text, None),
    };
    if let Ok(ip) = head.parse::<IpAddr>() {
        return Ok(Destination {
            host: Host::Ip(ip),
            port: None,
            proto,
        });
    }
    let (host, port) = match head.strip_prefix('[').and_then(|r| r.split_once("]:")) {
        Some((address, port)) => (address, Some(port)),
        None => match head.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (head, None),
        },
    };
    let port = match port {
        None | Some("*") => None,
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(format!("{text:?}: {port:?} is not a port (1-65535 or *)")),
        },
    };
    if host.is_empty() {
        return Err(format!("{text:?}: no node or address before the port"));
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Node(host.to_string()),
    };
    Ok(Destination { host, port, proto })
}

/// A node as the review shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeRef {
    #[schema(value_type = String)]
    #[serde(with = "id_text")]
    pub id: u64,
    pub name: String,
    /// The owner's name; absent for a tagged node (its tags are its identity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub tags: Vec<String>,
    pub ips: Vec<String>,
    /// Its key has expired at this point: it is in the filters but cut off the tailnet.
    pub expired: bool,
}

/// Ids go out as text, as everywhere else in the API.
mod id_text {
    pub fn serialize<S: serde::Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }
}

/// The policy rule behind an answer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleRef {
    /// `acl[1]`, `grant[0]`, or the allow-all note when no rule applies.
    pub rule: String,
    /// `acl`, `grant` or `none`.
    pub kind: String,
    /// Its index in `acls` or `grants`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The rule in one line, e.g. `accept group:eng -> tag:db:5432`.
    pub text: String,
    /// A grant's `ip` entry this comes from.
    pub ip: Vec<String>,
    /// A grant's `app` capabilities.
    pub app: Vec<String>,
}

/// One answer row: a source (as the policy names it) reaching a destination node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The source as the rule names it (`group:eng`, `tag:ci`, `*`, `10.0.0.0/8`, …).
    pub source: String,
    /// `user`, `users`, `group`, `tag`, `autogroup`, `host`, `ip` or `wildcard`.
    pub source_kind: String,
    /// The nodes of the tailnet the source stands for here.
    pub resolves_to: Vec<NodeRef>,
    /// The node that accepts the traffic (the node itself, its subnet router or exit node).
    pub destination: NodeRef,
    /// The addresses allowed on it (its own, `*`, a routed subnet, `0.0.0.0/0`).
    pub addresses: Vec<String>,
    /// `direct`, `subnet` (through a subnet router) or `exit` (through an exit node).
    pub through: String,
    /// Ports, with the protocol when the rule names one (`tcp:5432`, `*`, `22,80-90`).
    pub ports: Vec<String>,
    /// Capabilities an app grant gives (not ports).
    pub capabilities: Vec<String>,
    pub rule: RuleRef,
}

/// A review's answer at one point.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub entries: Vec<Entry>,
    /// What the reader should know (no policy set, an unreachable address, …).
    pub notes: Vec<String>,
}

/// Labels of the policy's compiled rules: index → where it is in the document.
struct Labels {
    net: Vec<(RuleRef, Vec<String>)>,
    apps: Vec<(RuleRef, Vec<String>, Vec<String>)>,
}

/// The allow-all label (no policy, or one without `acls` and `grants`).
fn allow_all_label(text: &str) -> RuleRef {
    RuleRef {
        rule: text.to_string(),
        kind: "none".into(),
        index: None,
        text: text.to_string(),
        ip: Vec::new(),
        app: Vec::new(),
    }
}

impl Labels {
    /// Mirrors `checked::check`: `acls` one rule each, then each grant's `ip` entries (one
    /// rule each) and, if it has `app`, one app rule.
    fn new(document: &Document) -> Labels {
        let mut net = Vec::new();
        let mut apps = Vec::new();
        for (i, acl) in document.acls.iter().flatten().enumerate() {
            let mut text = format!(
                "{} {} -> {}",
                acl.action,
                acl.src.join(", "),
                acl.dst.join(", ")
            );
            if !acl.proto.is_empty() {
                text.push_str(&format!(" proto {}", acl.proto));
            }
            net.push((
                RuleRef {
                    rule: format!("acl[{i}]"),
                    kind: "acl".into(),
                    index: Some(i),
                    text,
                    ip: Vec::new(),
                    app: Vec::new(),
                },
                acl.src.clone(),
            ));
        }
        for (i, grant) in document.grants.iter().flatten().enumerate() {
            let via = if grant.via.is_empty() {
                String::new()
            } else {
                format!(" via {}", grant.via.join(", "))
            };
            let head = format!("grant {} -> {}", grant.src.join(", "), grant.dst.join(", "));
            for spec in &grant.ip {
                net.push((
                    RuleRef {
                        rule: format!("grant[{i}]"),
                        kind: "grant".into(),
                        index: Some(i),
                        text: format!("{head} ip {spec}{via}"),
                        ip: vec![spec.clone()],
                        app: Vec::new(),
                    },
                    grant.src.clone(),
                ));
            }
            if !grant.app.is_empty() {
                let caps: Vec<String> = grant.app.keys().cloned().collect();
                apps.push((
                    RuleRef {
                        rule: format!("grant[{i}]"),
                        kind: "grant".into(),
                        index: Some(i),
                        text: format!("{head} app {}{via}", caps.join(", ")),
                        ip: Vec::new(),
                        app: caps,
                    },
                    grant.src.clone(),
                    grant.dst.clone(),
                ));
            }
        }
        Labels { net, apps }
    }
}

/// A policy compiled against a tailnet, ready to answer review questions.
pub struct Review {
    compiled: Compiled,
    /// `None` when the filters come from an allow-all policy; else the rules' labels.
    labels: Option<Labels>,
    allow_all: Option<&'static str>,
    user_names: BTreeMap<u64, String>,
    expired: BTreeSet<u64>,
}

impl Review {
    /// `policy`: the text in force and its parse (`None`: no policy). `expired`: ids of the
    /// nodes whose key has expired at the point asked about.
    pub fn new(
        topology: Arc<Topology>,
        policy: Option<(&str, Arc<Policy>)>,
        expired: BTreeSet<u64>,
    ) -> Review {
        let user_names = topology
            .users
            .iter()
            .map(|u| (u.id, u.name.clone()))
            .collect();
        let (compiled, labels, allow_all) = match policy {
            None => (
                Compiled::new(Arc::new(Policy::allow_all()), topology),
                None,
                Some(NO_POLICY),
            ),
            Some((_, parsed)) if parsed.allow_all => {
                (Compiled::new(parsed, topology), None, Some(EMPTY_POLICY))
            }
            Some((text, parsed)) => {
                let labels = super::hujson::parse(text)
                    .and_then(document::decode)
                    .map(|doc| Labels::new(&doc))
                    .ok();
                (Compiled::new(parsed, topology), labels, None)
            }
        };
        Review {
            compiled,
            labels,
            allow_all,
            user_names,
            expired,
        }
    }

    /// The review of `state` with its policy, expiry judged at `now`.
    pub fn for_state(state: &State, now: Timestamp) -> Review {
        let topology = Arc::new(Topology::from_state(state));
        let expired = state
            .nodes
            .values()
            .filter(|n| n.authorized && n.is_expired(now))
            .map(|n| n.id.0)
            .collect();
        let parsed = state.parsed_policy();
        let policy = match (&state.policy, parsed) {
            (Some(document), Some(parsed)) => Some((document.text.as_str(), parsed)),
            _ => None,
        };
        Review::new(topology, policy, expired)
    }

    fn nodes(&self) -> &[TopologyNode] {
        &self.compiled.topology().nodes
    }

    /// The position of the node named by `name` (an id or a given name).
    pub fn find_node(&self, name: &str) -> Option<usize> {
        let nodes = self.nodes();
        if let Ok(id) = name.parse::<u64>() {
            if let Some(i) = nodes.iter().position(|n| n.id == id) {
                return Some(i);
            }
        }
        nodes.iter().position(|n| n.name == name)
    }

    fn node_ref(&self, i: usize) -> NodeRef {
        let node = &self.nodes()[i];
        NodeRef {
            id: node.id,
            name: node.name.clone(),
            user: node.user.and_then(|u| self.user_names.get(&u).cloned()),
            tags: node.tags.clone(),
            ips: node.ips().map(|ip| ip.to_string()).collect(),
            expired: self.expired.contains(&node.id),
        }
    }

    fn rule_ref(&self, origin: Origin) -> RuleRef {
        if let Some(note) = self.allow_all {
            return allow_all_label(note);
        }
        let label = self.labels.as_ref().and_then(|labels| match origin {
            Origin::Net(k) => labels.net.get(k).map(|(r, _)| r.clone()),
            Origin::App(k) | Origin::Companion(k) => labels.apps.get(k).map(|(r, _, _)| r.clone()),
        });
        label.unwrap_or_else(|| RuleRef {
            rule: format!("{origin:?}"),
            kind: "grant".into(),
            index: None,
            text: String::new(),
            ip: Vec::new(),
            app: Vec::new(),
        })
    }

    /// The source aliases of the rule behind `origin`, with their text as written.
    fn sources(&self, origin: Origin) -> Vec<(Alias, String)> {
        let policy = &self.compiled.policy;
        let (aliases, texts): (Vec<Alias>, Option<Vec<String>>) = match (self.allow_all, origin) {
            (Some(_), _) => (vec![Alias::Wildcard], Some(vec!["*".into()])),
            (None, Origin::Net(k)) => (
                policy
                    .rules
                    .get(k)
                    .map(|r| r.src.clone())
                    .unwrap_or_default(),
                self.labels
                    .as_ref()
                    .and_then(|l| l.net.get(k))
                    .map(|(_, s)| s.clone()),
            ),
            (None, Origin::App(k)) => (
                policy
                    .apps
                    .get(k)
                    .map(|r| r.src.clone())
                    .unwrap_or_default(),
                self.labels
                    .as_ref()
                    .and_then(|l| l.apps.get(k))
                    .map(|(_, s, _)| s.clone()),
            ),
            // The companion capability flows from the grant's destinations to its sources.
            (None, Origin::Companion(k)) => (
                policy
                    .apps
                    .get(k)
                    .map(|r| r.dst.clone())
                    .unwrap_or_default(),
                self.labels
                    .as_ref()
                    .and_then(|l| l.apps.get(k))
                    .map(|(_, _, d)| d.clone()),
            ),
        };
        let texts = texts.filter(|t| t.len() == aliases.len());
        aliases
            .into_iter()
            .enumerate()
            .map(|(n, alias)| {
                let text = match &texts {
                    Some(texts) => texts[n].clone(),
                    None => alias_text(&alias),
                };
                (alias, text)
            })
            .collect()
    }

    /// The nodes whose addresses a filter rule's sources cover.
    fn source_nodes(&self, rule: &FilterRule) -> BTreeSet<usize> {
        self.nodes()
            .iter()
            .enumerate()
            .filter(|(_, node)| {
                node.ips()
                    .any(|ip| rule.src_ips.iter().any(|s| address_covers(s, ip)))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Splits the source nodes `covered` of a rule from `origin` among the rule's aliases:
    /// (alias text, kind, nodes). Literal addresses and `*` are listed even when no node has
    /// an address in them (they still let those addresses in).
    fn attribute(
        &self,
        origin: Origin,
        covered: &BTreeSet<usize>,
    ) -> Vec<(String, String, BTreeSet<usize>)> {
        let mut out = Vec::new();
        let mut left = covered.clone();
        for (alias, text) in self.sources(origin) {
            let nodes: BTreeSet<usize> = match &alias {
                Alias::Wildcard | Alias::Auto(AutoGroup::DangerAll) => covered.clone(),
                Alias::Prefix(prefix) | Alias::Host(_, prefix) => covered
                    .iter()
                    .copied()
                    .filter(|&i| self.nodes()[i].ips().any(|ip| prefix.contains(&ip)))
                    .collect(),
                other => {
                    let set = self.compiled.alias_nodes(other);
                    covered
                        .iter()
                        .copied()
                        .filter(|&i| set.contains(i))
                        .collect()
                }
            };
            let literal = matches!(
                alias,
                Alias::Wildcard
                    | Alias::Auto(AutoGroup::DangerAll)
                    | Alias::Prefix(_)
                    | Alias::Host(..)
            );
            if nodes.is_empty() && !literal {
                continue;
            }
            for i in &nodes {
                left.remove(i);
            }
            out.push((text, alias_kind(&alias).to_string(), nodes));
        }
        if !left.is_empty() {
            out.push(("(addresses in the filter)".into(), "ip".into(), left));
        }
        out
    }

    /// Who can reach `destination`: every source allowed by the filters of the nodes that
    /// accept traffic for it.
    pub fn who_can_reach(&self, destination: &Destination) -> Result<Answer, String> {
        let mut notes = Vec::new();
        // (enforcing node, the addresses of the destination it accepts traffic for).
        let enforcers: Vec<(usize, Vec<IpAddr>)> = match &destination.host {
            Host::Node(name) => {
                let i = self
                    .find_node(name)
                    .ok_or_else(|| format!("no node {name:?} in the tailnet at this point"))?;
                vec![(i, self.nodes()[i].ips().collect())]
            }
            Host::Ip(ip) => {
                let own: Vec<usize> = self
                    .nodes()
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| n.ips().any(|a| a == *ip))
                    .map(|(i, _)| i)
                    .collect();
                // Otherwise the routers of the most specific approved route holding it
                // (a subnet router before an exit node), as a client routes.
                let list = if own.is_empty() {
                    let longest = |n: &TopologyNode| {
                        n.routes
                            .iter()
                            .filter(|r| r.contains(ip))
                            .map(|r| r.prefix_len())
                            .max()
                    };
                    let best = self.nodes().iter().filter_map(longest).max();
                    self.nodes()
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| best.is_some() && longest(n) == best)
                        .map(|(i, _)| i)
                        .collect()
                } else {
                    own
                };
                if list.is_empty() {
                    notes.push(format!(
                        "no node has the address {ip} and no approved route holds it: nothing in \
                         the tailnet carries traffic to it"
                    ));
                }
                list.into_iter().map(|i| (i, vec![*ip])).collect()
            }
        };
        if self.allow_all.is_some() {
            notes.push(ALLOW_ALL_NOTE.to_string());
        }
        let mut entries = Vec::new();
        for (i, targets) in enforcers {
            let node = &self.nodes()[i];
            for (origin, rule) in self.compiled.filter_with_origins(i) {
                let Some(matched) = match_rule(&rule, node, &targets, destination) else {
                    continue;
                };
                let mut covered = self.source_nodes(&rule);
                // A node reaching itself is not access anyone granted.
                if matched.through == "direct" {
                    covered.remove(&i);
                }
                for (source, kind, nodes) in self.attribute(origin, &covered) {
                    entries.push(Entry {
                        source,
                        source_kind: kind,
                        resolves_to: nodes.iter().map(|&n| self.node_ref(n)).collect(),
                        destination: self.node_ref(i),
                        addresses: matched.addresses.clone(),
                        through: matched.through.clone(),
                        ports: matched.ports.clone(),
                        capabilities: matched.capabilities.clone(),
                        rule: self.rule_ref(origin),
                    });
                }
            }
        }
        Ok(Answer { entries, notes })
    }

    /// What node `name` can reach: every destination whose filter lets its addresses in.
    pub fn what_can(&self, name: &str) -> Result<Answer, String> {
        let me = self
            .find_node(name)
            .ok_or_else(|| format!("no node {name:?} in the tailnet at this point"))?;
        let my_ips: Vec<IpAddr> = self.nodes()[me].ips().collect();
        let mut notes = Vec::new();
        if self.allow_all.is_some() {
            notes.push(ALLOW_ALL_NOTE.to_string());
        }
        let mut entries = Vec::new();
        for (j, node) in self.nodes().iter().enumerate() {
            if j == me {
                continue;
            }
            for (origin, rule) in self.compiled.filter_with_origins(j) {
                let from_me = rule
                    .src_ips
                    .iter()
                    .any(|s| my_ips.iter().any(|ip| address_covers(s, *ip)));
                if !from_me {
                    continue;
                }
                let mine = BTreeSet::from([me]);
                let sources = self.attribute(origin, &mine);
                let (source, kind) = match sources.iter().find(|(_, _, n)| n.contains(&me)) {
                    Some((text, kind, _)) => (text.clone(), kind.clone()),
                    None => ("(addresses in the filter)".into(), "ip".into()),
                };
                for matched in split_by_path(&rule, node) {
                    entries.push(Entry {
                        source: source.clone(),
                        source_kind: kind.clone(),
                        resolves_to: vec![self.node_ref(me)],
                        destination: self.node_ref(j),
                        addresses: matched.addresses,
                        through: matched.through,
                        ports: matched.ports,
                        capabilities: matched.capabilities,
                        rule: self.rule_ref(origin),
                    });
                }
            }
        }
        Ok(Answer { entries, notes })
    }
}

/// The text of an alias when the document could not be read back (should not happen).
fn alias_text(alias: &Alias) -> String {
    match alias {
        Alias::Wildcard => "*".into(),
        Alias::User(u) => u.clone(),
        Alias::UserDomain(d) => format!("user:*@{d}"),
        Alias::Group(g) | Alias::Tag(g) => g.clone(),
        Alias::Host(name, _) => name.clone(),
        Alias::Prefix(p) => p.to_string(),
        Alias::Auto(a) => a.name(),
    }
}

fn alias_kind(alias: &Alias) -> &'static str {
    match alias {
        Alias::Wildcard => "wildcard",
        Alias::User(_) => "user",
        Alias::UserDomain(_) => "users",
        Alias::Group(_) => "group",
        Alias::Tag(_) => "tag",
        Alias::Host(..) => "host",
        Alias::Prefix(_) => "ip",
        Alias::Auto(_) => "autogroup",
    }
}

/// Whether a filter address (`*`, an IP, a CIDR, an `a-b` range) covers `ip`.
pub fn address_covers(text: &str, ip: IpAddr) -> bool {
    if text == "*" {
        return true;
    }
    if let Some((first, last)) = text.split_once('-') {
        return match (first.parse::<IpAddr>(), last.parse::<IpAddr>()) {
            (Ok(first), Ok(last)) => first <= ip && ip <= last && first.is_ipv4() == ip.is_ipv4(),
            _ => false,
        };
    }
    if let Ok(prefix) = text.parse::<IpNet>() {
        return prefix.contains(&ip);
    }
    text.parse::<IpAddr>().is_ok_and(|a| a == ip)
}

/// What one filter rule allows to a destination on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matched {
    addresses: Vec<String>,
    through: String,
    ports: Vec<String>,
    capabilities: Vec<String>,
}

fn protocol_name(number: i32) -> String {
    match number {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn port_text(first: u16, last: u16) -> String {
    match (first, last) {
        (0, 65535) => "*".into(),
        (f, l) if f == l => f.to_string(),
        (f, l) => format!("{f}-{l}"),
    }
}

/// How traffic to `address` (a filter destination) reaches `node`.
fn path_of(address: &str, node: &TopologyNode) -> &'static str {
    if address == "0.0.0.0/0"
        || address == "::/0"
        || super::compile::internet_prefixes().contains(&address)
    {
        "exit"
    } else if address == "*" || node.ips().any(|ip| address_covers(address, ip)) {
        "direct"
    } else {
        "subnet"
    }
}

/// The ports list of a rule's entries, with the protocols it names.
fn ports_of(rule: &FilterRule, ranges: &[(u16, u16)]) -> Vec<String> {
    let ports: BTreeSet<String> = ranges.iter().map(|(f, l)| port_text(*f, *l)).collect();
    if rule.ip_proto.is_empty() {
        return ports.into_iter().collect();
    }
    let mut out = Vec::new();
    for proto in &rule.ip_proto {
        for port in &ports {
            out.push(format!("{}:{port}", protocol_name(*proto)));
        }
    }
    out
}

/// Whether `rule` on `node` lets traffic in to one of `targets` (with the destination's port
/// and protocol, when given), and what it allows.
fn match_rule(
    rule: &FilterRule,
    node: &TopologyNode,
    targets: &[IpAddr],
    destination: &Destination,
) -> Option<Matched> {
    if let Some((_, proto)) = &destination.proto {
        let protocols: &[i32] = if rule.ip_proto.is_empty() {
            &DEFAULT_PROTOCOLS
        } else {
            &rule.ip_proto
        };
        if !rule.dst_ports.is_empty() && !protocols.contains(proto) {
            return None;
        }
    }
    let mut addresses = BTreeSet::new();
    let mut ranges = Vec::new();
    let mut through = "direct";
    for range in &rule.dst_ports {
        if !targets.iter().any(|ip| address_covers(&range.ip, *ip)) {
            continue;
        }
        let port_ok = destination
            .port
            .is_none_or(|p| range.ports.first <= p && p <= range.ports.last);
        if !port_ok {
            continue;
        }
        through = path_of(&range.ip, node);
        addresses.insert(range.ip.clone());
        ranges.push((range.ports.first, range.ports.last));
    }
    let mut capabilities = BTreeSet::new();
    if destination.port.is_none() && destination.proto.is_none() {
        for grant in &rule.cap_grant {
            let hit = grant
                .dsts
                .iter()
                .any(|d| targets.iter().any(|ip| address_covers(d, *ip)));
            if hit {
                capabilities.extend(grant.cap_map.keys().cloned());
                addresses.extend(grant.dsts.iter().cloned());
            }
        }
    }
    if ranges.is_empty() && capabilities.is_empty() {
        return None;
    }
    Some(Matched {
        addresses: addresses.into_iter().collect(),
        through: through.to_string(),
        ports: ports_of(rule, &ranges),
        capabilities: capabilities.into_iter().collect(),
    })
}

/// The addresses and port ranges one rule allows on one path.
type PathAllows = (BTreeSet<String>, Vec<(u16, u16)>);

/// Everything `rule` on `node` allows, one `Matched` per path (direct, subnet, exit).
fn split_by_path(rule: &FilterRule, node: &TopologyNode) -> Vec<Matched> {
    let mut by_path: BTreeMap<&'static str, PathAllows> = BTreeMap::new();
    for range in &rule.dst_ports {
        let entry = by_path.entry(path_of(&range.ip, node)).or_default();
        entry.0.insert(range.ip.clone());
        entry.1.push((range.ports.first, range.ports.last));
    }
    let mut out: Vec<Matched> = by_path
        .into_iter()
        .map(|(path, (addresses, ranges))| Matched {
            addresses: addresses.into_iter().collect(),
            through: path.to_string(),
            ports: ports_of(rule, &ranges),
            capabilities: Vec::new(),
        })
        .collect();
    for grant in &rule.cap_grant {
        out.push(Matched {
            addresses: grant.dsts.clone(),
            through: "direct".into(),
            ports: Vec::new(),
            capabilities: grant.cap_map.keys().cloned().collect(),
        });
    }
    out
}

/// A review question, kept so it can be asked again along the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Question {
    WhoCanReach(Destination),
    /// A node id or given name.
    WhatCan(String),
}

impl Question {
    pub fn answer(&self, review: &Review) -> Result<Answer, String> {
        match self {
            Question::WhoCanReach(destination) => review.who_can_reach(destination),
            Question::WhatCan(node) => review.what_can(node),
        }
    }
}

/// Whether `event` can change who reaches what: the policy, users (names and e-mails are
/// what policies name), nodes (existence, owner, tags, addresses, expiry, approval) and
/// routes. Presence, keys and hostinfo other than routes cannot.
pub fn changes_access(event: &Event) -> bool {
    matches!(
        event,
        Event::PolicyReplaced { .. }
            | Event::UserCreated { .. }
            | Event::UserRenamed { .. }
            | Event::UserDeleted { .. }
            | Event::UserProfileChanged { .. }
            | Event::UserIdentityLinked { .. }
            | Event::UserImported(_)
            | Event::NodeRegistered(_)
            | Event::NodeReauthenticated { .. }
            | Event::NodeHostinfoChanged { .. }
            | Event::NodeRenamed { .. }
            | Event::NodeMoved { .. }
            | Event::NodeTagsSet { .. }
            | Event::NodeApproved { .. }
            | Event::NodeExpiryChanged { .. }
            | Event::NodeDeleted { .. }
            | Event::RoutesApproved { .. }
            | Event::NodeImported(_)
            | Event::Imported(_)
    )
}

/// A gain or loss of access, and the event that caused it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    #[schema(value_type = String)]
    #[serde(with = "id_text")]
    pub seq: u64,
    /// When the event was appended (RFC 3339).
    pub at: String,
    pub event_type: String,
    pub actor: String,
    /// `gained` or `lost`.
    pub change: String,
    /// The source as the rule names it.
    pub source: String,
    /// The source node (who-can-reach), when the source stands for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeRef>,
    /// The node that accepts the traffic.
    pub destination: NodeRef,
    pub through: String,
    pub ports: Vec<String>,
    pub capabilities: Vec<String>,
    pub rule: RuleRef,
    /// The change in one line, e.g. `+ group:eng (node laptop 100.64.0.2) via acl[1] …`.
    pub line: String,
}

/// One fact of an answer, compared between two points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    source: String,
    node: Option<u64>,
    destination: u64,
    addresses: Vec<String>,
    ports: Vec<String>,
    capabilities: Vec<String>,
    rule: String,
}

#[derive(Debug, Clone)]
struct Fact {
    source: String,
    node: Option<NodeRef>,
    destination: NodeRef,
    through: String,
    ports: Vec<String>,
    capabilities: Vec<String>,
    rule: RuleRef,
}

/// The facts of an answer: who-can-reach one per (source, source node), what-can one
/// per destination entry.
fn facts(question: &Question, answer: &Answer) -> BTreeMap<Key, Fact> {
    let mut out = BTreeMap::new();
    for entry in &answer.entries {
        let nodes: Vec<Option<&NodeRef>> = match question {
            Question::WhoCanReach(_) if !entry.resolves_to.is_empty() => {
                entry.resolves_to.iter().map(Some).collect()
            }
            _ => vec![None],
        };
        for node in nodes {
            out.insert(
                Key {
                    source: entry.source.clone(),
                    node: node.map(|n| n.id),
                    destination: entry.destination.id,
                    addresses: entry.addresses.clone(),
                    ports: entry.ports.clone(),
                    capabilities: entry.capabilities.clone(),
                    rule: entry.rule.rule.clone(),
                },
                Fact {
                    source: entry.source.clone(),
                    node: node.cloned(),
                    destination: entry.destination.clone(),
                    through: entry.through.clone(),
                    ports: entry.ports.clone(),
                    capabilities: entry.capabilities.clone(),
                    rule: entry.rule.clone(),
                },
            );
        }
    }
    out
}

fn describe_node(node: &NodeRef) -> String {
    let mut text = format!("node {}", node.name);
    if let Some(ip) = node.ips.first() {
        text.push_str(&format!(" {ip}"));
    }
    match &node.user {
        Some(user) => text.push_str(&format!(", user {user}")),
        None if !node.tags.is_empty() => text.push_str(&format!(", {}", node.tags.join(","))),
        None => {}
    }
    text
}

/// At most this many changes are listed for one walk; the rest are counted.
pub const MAX_CHANGES: usize = 10_000;

/// An answer followed along the log: fold the state forward, re-ask the question after each
/// event that can change access, and record what was gained and lost.
pub struct Walk {
    question: Question,
    facts: BTreeMap<Key, Fact>,
    pub changes: Vec<Change>,
    /// Changes beyond [`MAX_CHANGES`], counted only.
    pub dropped: u64,
    /// How many events made the answer be recomputed.
    pub recomputed: u64,
}

impl Walk {
    /// Starts from the answer at the walk's first point.
    pub fn start(question: Question, start: &Answer) -> Walk {
        Walk {
            facts: facts(&question, start),
            question,
            changes: Vec::new(),
            dropped: 0,
            recomputed: 0,
        }
    }

    /// `state`: the state right after `envelope`. A question that cannot be answered there
    /// (the node does not exist yet, or any more) has an empty answer.
    pub fn step(&mut self, state: &State, envelope: &Envelope) {
        if !changes_access(&envelope.event) {
            return;
        }
        self.recomputed += 1;
        let review = Review::for_state(state, envelope.at);
        let answer = self.question.answer(&review).unwrap_or_default();
        let now = facts(&self.question, &answer);
        let cause = format!(
            "at seq {} ({} by {})",
            envelope.seq,
            envelope.event.kind(),
            envelope.actor
        );
        let mut record = |sign: &str, fact: &Fact| {
            if self.changes.len() >= MAX_CHANGES {
                self.dropped += 1;
                return;
            }
            let what = match (&self.question, &fact.node) {
                (Question::WhoCanReach(_), Some(node)) => {
                    format!("{} ({})", fact.source, describe_node(node))
                }
                (Question::WhoCanReach(_), None) => fact.source.clone(),
                (Question::WhatCan(_), _) => {
                    format!("{} [{}]", describe_node(&fact.destination), fact.through)
                }
            };
            let mut allowed = fact.ports.join(",");
            if !fact.capabilities.is_empty() {
                if !allowed.is_empty() {
                    allowed.push(' ');
                }
                allowed.push_str(&format!("caps {}", fact.capabilities.join(",")));
            }
            self.changes.push(Change {
                seq: envelope.seq,
                at: envelope.at.to_rfc3339(),
                event_type: envelope.event.kind().to_string(),
                actor: envelope.actor.to_string(),
                change: if sign == "+" { "gained" } else { "lost" }.into(),
                source: fact.source.clone(),
                node: fact.node.clone(),
                destination: fact.destination.clone(),
                through: fact.through.clone(),
                ports: fact.ports.clone(),
                capabilities: fact.capabilities.clone(),
                rule: fact.rule.clone(),
                line: format!("{sign} {what} on {allowed} via {} {cause}", fact.rule.rule),
            });
        };
        for (key, fact) in &self.facts {
            if !now.contains_key(key) {
                record("-", fact);
            }
        }
        for (key, fact) in &now {
            if !self.facts.contains_key(key) {
                record("+", fact);
            }
        }
        self.facts = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::topology::TopologyUser;

    fn user(id: u64, name: &str) -> TopologyUser {
        TopologyUser {
            id,
            name: name.into(),
            email: format!("{name}@example.com"),
            provider_identifier: String::new(),
            role: Default::default(),
        }
    }

    fn node(
        id: u64,
        name: &str,
        user: Option<u64>,
        tags: &[&str],
        routes: &[&str],
    ) -> TopologyNode {
        TopologyNode {
            id,
            name: name.into(),
            user,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ipv4: Some(format!("100.64.0.{id}").parse().unwrap()),
            ipv6: Some(format!("fd7a:115c:a1e0::{id}").parse().unwrap()),
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    /// alice: laptop (1), phone (2); bob: desktop (3); tag:db: db (4); tag:router: router (5)
    /// serving 10.1.0.0/16; tag:exit: exit (6).
    fn tailnet() -> Arc<Topology> {
        Arc::new(Topology {
            users: vec![user(1, "alice"), user(2, "bob")],
            nodes: vec![
                node(1, "laptop", Some(1), &[], &[]),
                node(2, "phone", Some(1), &[], &[]),
                node(3, "desktop", Some(2), &[], &[]),
                node(4, "db", None, &["tag:db"], &[]),
                node(5, "router", None, &["tag:router"], &["10.1.0.0/16"]),
                node(6, "exit", None, &["tag:exit"], &["0.0.0.0/0", "::/0"]),
            ],
        })
    }

    const POLICY: &str = r#"{
        "groups": {"group:eng": ["alice@"]},
        "tagOwners": {"tag:db": ["alice@"], "tag:router": ["alice@"], "tag:exit": ["alice@"]},
        "acls": [
            {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
            {"action": "accept", "src": ["group:eng"], "dst": ["tag:db:5432"]},
            {"action": "accept", "src": ["bob@"], "dst": ["10.1.2.0/24:443"], "proto": "tcp"},
            {"action": "accept", "src": ["group:eng"], "dst": ["autogroup:internet:*"]}
        ],
        "grants": [
            {"src": ["tag:db"], "dst": ["bob@"], "ip": ["icmp:*"], "app": {"example.com/cap/ping": [{}]}}
        ]
    }"#;

    fn review(text: Option<&str>) -> Review {
        let policy = text.map(|t| (t, Arc::new(Policy::parse(t).unwrap())));
        Review::new(tailnet(), policy, BTreeSet::new())
    }

    fn dest(text: &str) -> Destination {
        parse_destination(text).unwrap()
    }

    /// (source, source node names, rule) of an answer.
    fn rows(answer: &Answer) -> Vec<(String, Vec<String>, String)> {
        let mut out: Vec<_> = answer
            .entries
            .iter()
            .map(|e| {
                (
                    e.source.clone(),
                    e.resolves_to.iter().map(|n| n.name.clone()).collect(),
                    e.rule.rule.clone(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn row(source: &str, nodes: &[&str], rule: &str) -> (String, Vec<String>, String) {
        (
            source.into(),
            nodes.iter().map(|n| n.to_string()).collect(),
            rule.into(),
        )
    }

    #[test]
    fn destinations_parse_in_every_form() {
        assert_eq!(dest("db").host, Host::Node("db".into()));
        assert_eq!(dest("4").host, Host::Node("4".into()));
        let d = dest("100.64.0.4:5432/tcp");
        assert_eq!(d.host, Host::Ip("100.64.0.4".parse().unwrap()));
        assert_eq!((d.port, d.proto), (Some(5432), Some(("tcp".into(), 6))));
        assert_eq!(dest("[fd7a:115c:a1e0::4]:22").port, Some(22));
        assert_eq!(dest("fd7a:115c:a1e0::4").port, None);
        assert_eq!(dest("10.0.0.1:*/icmp").proto, Some(("icmp".into(), 1)));
        assert_eq!(dest("db:5432").host, Host::Node("db".into()));
        for bad in [
            "",
            "10.0.0.0/24",
            "10.0.0.1:99999",
            "10.0.0.1:22/bogus",
            ":22",
        ] {
            assert!(parse_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn who_can_reach_names_the_rule_and_the_nodes() {
        let review = review(Some(POLICY));
        let answer = review.who_can_reach(&dest("db")).unwrap();
        assert_eq!(
            rows(&answer),
            vec![row("group:eng", &["laptop", "phone"], "acl[1]")]
        );
        let entry = &answer.entries[0];
        assert_eq!(entry.ports, vec!["5432"]);
        assert_eq!(entry.rule.text, "accept group:eng -> tag:db:5432");
        // The wrong port: nobody.
        assert!(review
            .who_can_reach(&dest("100.64.0.4:22"))
            .unwrap()
            .entries
            .is_empty());
        // autogroup:self: alice's devices reach each other, bob is not among them.
        assert_eq!(
            rows(&review.who_can_reach(&dest("laptop")).unwrap()),
            vec![row("autogroup:member", &["phone"], "acl[0]")]
        );
    }

    #[test]
    fn a_routed_address_is_reached_through_its_router() {
        let review = review(Some(POLICY));
        let answer = review.who_can_reach(&dest("10.1.2.7:443/tcp")).unwrap();
        assert_eq!(rows(&answer), vec![row("bob@", &["desktop"], "acl[2]")]);
        assert_eq!(answer.entries[0].destination.name, "router");
        assert_eq!(answer.entries[0].through, "subnet");
        assert_eq!(answer.entries[0].ports, vec!["tcp:443"]);
        assert!(review
            .who_can_reach(&dest("10.1.2.7:443/udp"))
            .unwrap()
            .entries
            .is_empty());
        // Outside every subnet: the internet, through the exit node.
        let answer = review.who_can_reach(&dest("8.8.8.8:53/udp")).unwrap();
        assert_eq!(
            rows(&answer),
            vec![row("group:eng", &["laptop", "phone"], "acl[3]")]
        );
        assert_eq!(answer.entries[0].through, "exit");
    }

    #[test]
    fn grants_list_capabilities_apart_from_ports() {
        let review = review(Some(POLICY));
        let answer = review.who_can_reach(&dest("desktop")).unwrap();
        let grant: Vec<&Entry> = answer
            .entries
            .iter()
            .filter(|e| e.rule.rule == "grant[0]")
            .collect();
        assert_eq!(grant.len(), 2, "{grant:?}");
        assert!(grant
            .iter()
            .any(|e| e.ports == vec!["icmp:*"] && e.rule.ip == vec!["icmp:*"]));
        assert!(grant
            .iter()
            .any(|e| e.capabilities == vec!["example.com/cap/ping"] && e.ports.is_empty()));
        assert!(grant.iter().all(|e| e.source == "tag:db"));
    }

    #[test]
    fn without_a_policy_everyone_reaches_everyone() {
        let review = review(None);
        let answer = review.who_can_reach(&dest("db:22")).unwrap();
        assert_eq!(answer.notes, vec![ALLOW_ALL_NOTE.to_string()]);
        assert_eq!(answer.entries.len(), 1);
        assert_eq!(answer.entries[0].rule.rule, NO_POLICY);
        assert_eq!(answer.entries[0].resolves_to.len(), 5);
        let what = review.what_can("laptop").unwrap();
        let reached: BTreeSet<&str> = what
            .entries
            .iter()
            .map(|e| e.destination.name.as_str())
            .collect();
        assert_eq!(reached.len(), 5);
    }

    #[test]
    fn what_can_lists_destinations_with_their_rule() {
        let review = review(Some(POLICY));
        let answer = review.what_can("desktop").unwrap();
        let got: Vec<(String, String, Vec<String>, String)> = answer
            .entries
            .iter()
            .map(|e| {
                (
                    e.destination.name.clone(),
                    e.through.clone(),
                    e.ports.clone(),
                    e.rule.rule.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "desktop".to_string(),
                    "direct".to_string(),
                    vec!["*".to_string()],
                    "acl[0]".to_string()
                ),
                (
                    "router".into(),
                    "subnet".into(),
                    vec!["tcp:443".into()],
                    "acl[2]".into()
                ),
            ]
            .into_iter()
            .filter(|(name, ..)| name != "desktop")
            .collect::<Vec<_>>()
        );
        assert!(review.what_can("nope").is_err());
    }

    /// The property: for every node and port, who-can-reach names exactly the nodes whose
    /// addresses its packet filter lets in on that port, and what-can exactly the nodes
    /// whose filters let it in.
    #[test]
    fn answers_agree_with_the_packet_filters() {
        let policies = [
            None,
            Some(POLICY),
            Some(
                r#"{"tagOwners": {"tag:db": ["bob@"]},
                   "acls": [{"action": "accept", "src": ["*"], "dst": ["tag:db:80,443"]}]}"#,
            ),
            Some(
                r#"{"groups": {"group:a": ["bob@"]}, "tagOwners": {"tag:db": ["bob@"]},
                   "grants": [{"src": ["group:a", "100.64.0.1"], "dst": ["tag:db", "autogroup:member"], "ip": ["tcp:22", "udp:53"]}]}"#,
            ),
        ];
        for text in policies {
            let review = review(text);
            let nodes = review.nodes().to_vec();
            for (i, target) in nodes.iter().enumerate() {
                let filter = review.compiled.filter(i);
                for port in [22u16, 53, 80, 5432, 9999] {
                    let ip = target.ipv4.unwrap();
                    let expected: BTreeSet<u64> = nodes
                        .iter()
                        .filter(|source| source.id != target.id)
                        .filter(|source| {
                            filter.iter().any(|rule| {
                                rule.dst_ports.iter().any(|d| {
                                    address_covers(&d.ip, IpAddr::V4(ip))
                                        && d.ports.first <= port
                                        && port <= d.ports.last
                                }) && source
                                    .ips()
                                    .any(|a| rule.src_ips.iter().any(|s| address_covers(s, a)))
                            })
                        })
                        .map(|n| n.id)
                        .collect();
                    let answer = review
                        .who_can_reach(&dest(&format!("{ip}:{port}")))
                        .unwrap();
                    let got: BTreeSet<u64> = answer
                        .entries
                        .iter()
                        .flat_map(|e| e.resolves_to.iter().map(|n| n.id))
                        .collect();
                    assert_eq!(got, expected, "{text:?} {} port {port}", target.name);
                }
            }
            for (me, source) in nodes.iter().enumerate() {
                let expected: BTreeSet<u64> = nodes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != me)
                    .filter(|(j, _)| {
                        review.compiled.filter(*j).iter().any(|rule| {
                            source
                                .ips()
                                .any(|a| rule.src_ips.iter().any(|s| address_covers(s, a)))
                        })
                    })
                    .map(|(_, n)| n.id)
                    .collect();
                let got: BTreeSet<u64> = review
                    .what_can(&source.name)
                    .unwrap()
                    .entries
                    .iter()
                    .map(|e| e.destination.id)
                    .collect();
                assert_eq!(got, expected, "{text:?} what-can {}", source.name);
            }
        }
    }

    #[test]
    fn filter_addresses_cover_ranges_prefixes_and_wildcards() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(address_covers("*", ip("1.2.3.4")));
        assert!(address_covers("100.64.0.1-100.64.0.3", ip("100.64.0.2")));
        assert!(!address_covers("100.64.0.1-100.64.0.3", ip("100.64.0.4")));
        assert!(address_covers("10.0.0.0/8", ip("10.9.9.9")));
        assert!(address_covers("fd7a:115c:a1e0::1", ip("fd7a:115c:a1e0::1")));
        assert!(!address_covers("100.64.0.1", ip("100.64.0.2")));
    }
}
