//! Compiling a checked policy against a topology: every alias is resolved once into node
//! sets (bitsets over the topology's nodes) and literal prefixes, so a viewer's peers are a
//! few bitset unions and its packet filter a walk over the rules that name it — never a
//! pass over every pair of nodes.

use super::alias::{Alias, AutoGroup, Ports};
use super::checked::{Policy, SshAction, SshUser};
use super::topology::{Topology, TopologyNode};
use crate::tailcfg::{CapGrant, FilterRule, NetPortRange, PortRange};
use fixedbitset::FixedBitSet;
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// What `*` means as a source: the tailnet's address space (Tailscale's CGNAT range
/// without the 100.115.92.0/23 it reserves, and its IPv6 ULA), plus approved subnets.
const TAILNET_SOURCES: [&str; 3] = [
    "100.64.0.0-100.115.91.255",
    "100.115.94.0-100.127.255.255",
    "fd7a:115c:a1e0::/48",
];

/// Where a packet-filter rule comes from: an index into the policy's network rules
/// (`Policy::rules`: `acls`, then one per `ip` entry of each grant) or its app grants
/// (`Policy::apps`); `Companion` is an app grant's reversed companion capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    Net(usize),
    App(usize),
    Companion(usize),
}

/// An alias resolved against the topology.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    /// Nodes named by identity (user, group, tag, autogroup): their addresses are listed.
    nodes: FixedBitSet,
    /// Literal prefixes (IPs, CIDRs, hosts), listed as written.
    pub(super) prefixes: Vec<IpNet>,
    pub(super) wildcard: bool,
    pub(super) danger_all: bool,
    /// Nodes this set stands for when deciding who sees whom: the identity nodes, nodes
    /// whose addresses fall in a prefix, routers whose routes overlap one, everyone for `*`.
    pub(super) members: FixedBitSet,
}

impl Resolved {
    fn empty(n: usize) -> Resolved {
        Resolved {
            nodes: FixedBitSet::with_capacity(n),
            prefixes: Vec::new(),
            wildcard: false,
            danger_all: false,
            members: FixedBitSet::with_capacity(n),
        }
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_clear() && self.prefixes.is_empty() && !self.wildcard && !self.danger_all
    }
}

#[derive(Debug, Clone)]
pub(super) enum DstKind {
    Wildcard,
    Nodes(FixedBitSet),
    Prefix(IpNet),
    Internet,
    SelfNodes,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledDst {
    pub(super) kind: DstKind,
    ports: Vec<Ports>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledRule {
    pub(super) src: Resolved,
    src_ips: Vec<String>,
    pub(super) dsts: Vec<CompiledDst>,
    /// Every node some non-self destination matches (for a routed destination under
    /// `via`, only the routers carrying a via tag).
    pub(super) dst_members: FixedBitSet,
    has_self: bool,
    protocols: Vec<i32>,
    /// A grant's `via`: the nodes carrying one of its tags, the only routers its routed
    /// destinations (subnets, `autogroup:internet`) are reached through.
    pub(super) via: Option<FixedBitSet>,
}

#[derive(Debug, Clone)]
pub(super) struct CompiledApp {
    pub(super) src: Resolved,
    src_ips: Vec<String>,
    pub(super) dst: Vec<DstKind>,
    pub(super) dst_members: FixedBitSet,
    has_self: bool,
    caps: BTreeMap<String, Vec<Value>>,
    /// As for `CompiledRule::via`.
    pub(super) via: Option<FixedBitSet>,
}

/// An SSH rule's sources and destinations, resolved once per compile (not per viewer).
#[derive(Debug, Clone)]
struct CompiledSsh {
    src: Resolved,
    /// Every node some non-self destination matches.
    dst_members: FixedBitSet,
    has_self: bool,
}

/// `tailcfg.SSHPolicy`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SshPolicy {
    pub rules: Vec<SshRuleOut>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SshRuleOut {
    pub principals: Vec<SshPrincipal>,
    #[serde(rename = "sshUsers")]
    pub ssh_users: BTreeMap<String, String>,
    pub action: SshActionOut,
    #[serde(rename = "acceptEnv", skip_serializing_if = "Vec::is_empty")]
    pub accept_env: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SshPrincipal {
    #[serde(rename = "nodeIP")]
    pub node_ip: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SshActionOut {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept: bool,
    #[serde(
        rename = "allowAgentForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_agent_forwarding: bool,
    #[serde(
        rename = "allowLocalPortForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_local_port_forwarding: bool,
    #[serde(
        rename = "allowRemotePortForwarding",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub allow_remote_port_forwarding: bool,
    #[serde(rename = "holdAndDelegate", skip_serializing_if = "String::is_empty")]
    pub hold_and_delegate: String,
}

/// The node attribute that shows a node IPv6-only.
pub const DISABLE_IPV4: &str = "disable-ipv4";

/// A policy compiled against one topology.
pub struct Compiled {
    pub(super) policy: Arc<Policy>,
    topology: Arc<Topology>,
    pub(super) rules: Vec<CompiledRule>,
    pub(super) apps: Vec<CompiledApp>,
    /// One per `policy.ssh` rule, in order.
    ssh_rules: Vec<CompiledSsh>,
    /// One per `policy.node_attrs` entry, in order: the nodes its target names.
    attr_targets: Vec<FixedBitSet>,
    /// The nodes shown IPv6-only (`disable-ipv4`, see [`Compiled::ipv4_disabled`]).
    ipv4_disabled: FixedBitSet,
    /// Each node's addresses as text, formatted once: filters and SSH principals list
    /// them for every viewer.
    ip_text: Vec<Box<[String]>>,
    /// Untagged nodes per user id.
    user_nodes: HashMap<u64, FixedBitSet>,
    all: FixedBitSet,
    /// Approved subnet routes anywhere in the tailnet (part of what `*` means as a source).
    tailnet_routes: Vec<IpNet>,
}

pub(super) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn ip_string(prefix: &IpNet) -> String {
    if prefix.prefix_len() == prefix.max_prefix_len() {
        prefix.addr().to_string()
    } else {
        prefix.to_string()
    }
}

impl Compiled {
    pub fn new(policy: Arc<Policy>, topology: Arc<Topology>) -> Compiled {
        let n = topology.nodes.len();
        let mut all = FixedBitSet::with_capacity(n);
        all.insert_range(..);
        let mut user_nodes: HashMap<u64, FixedBitSet> = HashMap::new();
        for (i, node) in topology.nodes.iter().enumerate() {
            if let (Some(user), false) = (node.user, node.is_tagged()) {
                user_nodes
                    .entry(user)
                    .or_insert_with(|| FixedBitSet::with_capacity(n))
                    .insert(i);
            }
        }
        let mut tailnet_routes: Vec<IpNet> = topology
            .nodes
            .iter()
            .flat_map(|node| node.subnet_routes().copied())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        tailnet_routes.sort();
        let mut compiled = Compiled {
            policy: policy.clone(),
            topology: topology.clone(),
            rules: Vec::new(),
            apps: Vec::new(),
            ssh_rules: Vec::new(),
            attr_targets: Vec::new(),
            ipv4_disabled: FixedBitSet::with_capacity(n),
            ip_text: topology
                .nodes
                .iter()
                .map(|node| node.ips().map(|ip| ip.to_string()).collect())
                .collect(),
            user_nodes,
            all,
            tailnet_routes,
        };
        if policy.allow_all {
            let rule = compiled.compile_rule(
                &[Alias::Wildcard],
                &[(Alias::Wildcard, vec![Ports::ALL])],
                &[],
                &[],
            );
            compiled.rules.push(rule);
        } else {
            for rule in &policy.rules {
                let dsts: Vec<(Alias, Vec<Ports>)> = rule
                    .dst
                    .iter()
                    .map(|d| (d.alias.clone(), d.ports.clone()))
                    .collect();
                let compiled_rule =
                    compiled.compile_rule(&rule.src, &dsts, &rule.protocols, &rule.via);
                compiled.rules.push(compiled_rule);
            }
            for app in &policy.apps {
                let src = compiled.resolve_all(&app.src);
                let src_ips = ranged(compiled.source_ips(&src));
                let via = compiled.via_set(&app.via);
                let mut dst_members = FixedBitSet::with_capacity(n);
                let mut dst = Vec::new();
                let mut has_self = false;
                for alias in &app.dst {
                    let kind = compiled.destination(alias);
                    match &kind {
                        DstKind::SelfNodes => has_self = true,
                        other => {
                            dst_members.union_with(&compiled.dst_members_via(other, via.as_ref()))
                        }
                    }
                    dst.push(kind);
                }
                compiled.apps.push(CompiledApp {
                    src,
                    src_ips,
                    dst,
                    dst_members,
                    has_self,
                    caps: app.caps.clone(),
                    via,
                });
            }
        }
        for rule in policy.ssh.iter().flatten() {
            let src = compiled.resolve_all(&rule.src);
            let mut dst_members = FixedBitSet::with_capacity(n);
            let mut has_self = false;
            for alias in &rule.dst {
                match compiled.destination(alias) {
                    DstKind::SelfNodes => has_self = true,
                    other => dst_members.union_with(&compiled.dst_kind_members(&other)),
                }
            }
            compiled.ssh_rules.push(CompiledSsh {
                src,
                dst_members,
                has_self,
            });
        }
        for attr in &policy.node_attrs {
            let target = compiled.resolve_all(&attr.target);
            compiled.attr_targets.push(target.members);
        }
        compiled.ipv4_disabled = compiled.disabled_ipv4_nodes();
        compiled
    }

    /// The nodes with the `disable-ipv4` attribute, or every node under the top-level
    /// `disableIPv4`.
    fn disabled_ipv4_nodes(&self) -> FixedBitSet {
        if self.policy.disable_ipv4 {
            return self.all.clone();
        }
        let mut disabled = FixedBitSet::with_capacity(self.topology.nodes.len());
        for (attr, target) in self.policy.node_attrs.iter().zip(&self.attr_targets) {
            if attr.attr.iter().any(|name| name == DISABLE_IPV4) {
                disabled.union_with(target);
            }
        }
        disabled
    }

    pub(super) fn node(&self, i: usize) -> &TopologyNode {
        &self.topology.nodes[i]
    }

    /// The tailnet this policy was compiled against.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The nodes one alias names by identity (users, groups, tags, autogroups), resolved as
    /// the filters resolve it; empty for literal addresses and `*`.
    pub(super) fn alias_nodes(&self, alias: &Alias) -> FixedBitSet {
        self.resolve_all(std::slice::from_ref(alias)).nodes
    }

    fn compile_rule(
        &self,
        src: &[Alias],
        dsts: &[(Alias, Vec<Ports>)],
        protocols: &[i32],
        via: &[String],
    ) -> CompiledRule {
        let n = self.topology.nodes.len();
        let src = self.resolve_all(src);
        let src_ips = ranged(self.source_ips(&src));
        let via = self.via_set(via);
        let mut dst_members = FixedBitSet::with_capacity(n);
        let mut compiled = Vec::new();
        let mut has_self = false;
        for (alias, ports) in dsts {
            let kind = self.destination(alias);
            match &kind {
                DstKind::SelfNodes => has_self = true,
                other => dst_members.union_with(&self.dst_members_via(other, via.as_ref())),
            }
            compiled.push(CompiledDst {
                kind,
                ports: ports.clone(),
            });
        }
        CompiledRule {
            src,
            src_ips,
            dsts: compiled,
            dst_members,
            has_self,
            protocols: protocols.to_vec(),
            via,
        }
    }

    /// The nodes carrying one of a grant's `via` tags; `None` without `via`.
    fn via_set(&self, tags: &[String]) -> Option<FixedBitSet> {
        if tags.is_empty() {
            return None;
        }
        let mut set = FixedBitSet::with_capacity(self.topology.nodes.len());
        for (i, node) in self.topology.nodes.iter().enumerate() {
            if node.tags.iter().any(|t| tags.contains(t)) {
                set.insert(i);
            }
        }
        Some(set)
    }

    /// The nodes a destination matches, under `via` (routed destinations are then reached
    /// only through the via routers, so only those are the sources' peers for it).
    fn dst_members_via(&self, kind: &DstKind, via: Option<&FixedBitSet>) -> FixedBitSet {
        let mut members = self.dst_kind_members(kind);
        if let (Some(via), DstKind::Prefix(_) | DstKind::Internet) = (via, kind) {
            members.intersect_with(via);
        }
        members
    }

    fn user_set(&self, token: &str) -> FixedBitSet {
        let mut set = FixedBitSet::with_capacity(self.topology.nodes.len());
        for id in self.topology.users_named(token) {
            if let Some(nodes) = self.user_nodes.get(&id) {
                set.union_with(nodes);
            }
        }
        set
    }

    fn resolve(&self, alias: &Alias, out: &mut Resolved) {
        let nodes = &self.topology.nodes;
        match alias {
            Alias::Wildcard => out.wildcard = true,
            Alias::Auto(AutoGroup::DangerAll) => out.danger_all = true,
            Alias::User(token) => out.nodes.union_with(&self.user_set(token)),
            Alias::UserDomain(domain) => {
                for user in &self.topology.users {
                    let at_domain = user
                        .email
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain));
                    if let (true, Some(nodes)) = (at_domain, self.user_nodes.get(&user.id)) {
                        out.nodes.union_with(nodes);
                    }
                }
            }
            Alias::Group(group) => {
                for member in self.policy.groups.get(group).into_iter().flatten() {
                    out.nodes.union_with(&self.user_set(member));
                }
            }
            Alias::Tag(tag) => {
                for (i, node) in nodes.iter().enumerate() {
                    if node.tags.iter().any(|t| t == tag) {
                        out.nodes.insert(i);
                    }
                }
            }
            Alias::Auto(AutoGroup::Member) => {
                for set in self.user_nodes.values() {
                    out.nodes.union_with(set);
                }
            }
            Alias::Auto(AutoGroup::Tagged) => {
                for (i, node) in nodes.iter().enumerate() {
                    if node.is_tagged() {
                        out.nodes.insert(i);
                    }
                }
            }
            // Role autogroups: the untagged nodes of the users holding the role.
            Alias::Auto(AutoGroup::Role(role)) => {
                for user in self.topology.users.iter().filter(|u| u.role.is_in(*role)) {
                    if let Some(set) = self.user_nodes.get(&user.id) {
                        out.nodes.union_with(set);
                    }
                }
            }
            Alias::Host(_, prefix) | Alias::Prefix(prefix) => out.prefixes.push(*prefix),
            Alias::Auto(
                AutoGroup::SelfNodes | AutoGroup::Internet | AutoGroup::NonRoot | AutoGroup::Shared,
            ) => {}
        }
    }

    fn resolve_all(&self, aliases: &[Alias]) -> Resolved {
        let n = self.topology.nodes.len();
        let mut out = Resolved::empty(n);
        for alias in aliases {
            self.resolve(alias, &mut out);
        }
        out.members = out.nodes.clone();
        if out.wildcard || out.danger_all {
            out.members.insert_range(..);
        }
        for prefix in &out.prefixes {
            out.members.union_with(&self.prefix_members(prefix));
        }
        out
    }

    /// Nodes whose addresses fall in `prefix`, and routers whose routes overlap it.
    fn prefix_members(&self, prefix: &IpNet) -> FixedBitSet {
        let mut set = FixedBitSet::with_capacity(self.topology.nodes.len());
        for (i, node) in self.topology.nodes.iter().enumerate() {
            let addressed = node.ips().any(|ip| prefix.contains(&ip));
            let routed = node.subnet_routes().any(|r| overlaps(r, prefix));
            if addressed || routed {
                set.insert(i);
            }
        }
        set
    }

    fn destination(&self, alias: &Alias) -> DstKind {
        match alias {
            Alias::Wildcard => DstKind::Wildcard,
            Alias::Auto(AutoGroup::SelfNodes) => DstKind::SelfNodes,
            Alias::Auto(AutoGroup::Internet) => DstKind::Internet,
            Alias::Host(_, prefix) | Alias::Prefix(prefix) => DstKind::Prefix(*prefix),
            other => {
                let mut out = Resolved::empty(self.topology.nodes.len());
                self.resolve(other, &mut out);
                DstKind::Nodes(out.nodes)
            }
        }
    }

    fn dst_kind_members(&self, kind: &DstKind) -> FixedBitSet {
        let n = self.topology.nodes.len();
        match kind {
            DstKind::Wildcard => self.all.clone(),
            DstKind::Nodes(set) => set.clone(),
            DstKind::Prefix(prefix) => self.prefix_members(prefix),
            DstKind::Internet => {
                let mut set = FixedBitSet::with_capacity(n);
                for (i, node) in self.topology.nodes.iter().enumerate() {
                    if node.is_exit_node() {
                        set.insert(i);
                    }
                }
                set
            }
            DstKind::SelfNodes => FixedBitSet::with_capacity(n),
        }
    }

    /// `SrcIPs` for a resolved source set.
    fn source_ips(&self, src: &Resolved) -> Vec<String> {
        if src.danger_all {
            return vec!["*".into()];
        }
        let mut literal: Vec<String> = src.prefixes.iter().map(ip_string).collect();
        if src.wildcard {
            literal.extend(TAILNET_SOURCES.iter().map(|s| s.to_string()));
            literal.extend(self.tailnet_routes.iter().map(|r| r.to_string()));
        }
        let mut out: Vec<&str> = literal.iter().map(String::as_str).collect();
        out.extend(self.ip_text_of(&src.nodes));
        sorted_unique(out)
    }

    /// The addresses of the nodes in `set`, as text.
    fn ip_text_of<'a>(&'a self, set: &'a FixedBitSet) -> impl Iterator<Item = &'a str> + 'a {
        set.ones()
            .flat_map(|i| self.ip_text[i].iter().map(String::as_str))
    }

    fn node_ips_of(&self, set: &FixedBitSet) -> Vec<String> {
        sorted_unique(self.ip_text_of(set).collect())
    }

    /// Whether node `i` is the target of a prefix destination (its address or its routes).
    fn prefix_hits(&self, i: usize, prefix: &IpNet) -> bool {
        let node = self.node(i);
        node.ips().any(|ip| prefix.contains(&ip))
            || node.subnet_routes().any(|r| overlaps(r, prefix))
    }

    /// The packet filter of node `i`: the rules that let traffic in to it.
    pub fn filter(&self, i: usize) -> Vec<FilterRule> {
        self.filter_with_origins(i)
            .into_iter()
            .map(|(_, rule)| rule)
            .collect()
    }

    /// [`Compiled::filter`] with, for each rule, the policy rule it comes from: what an
    /// access review (`review.rs`) reads, so its answers are the filters themselves.
    pub fn filter_with_origins(&self, i: usize) -> Vec<(Origin, FilterRule)> {
        let node = self.node(i);
        let own = &self.ip_text[i];
        let mut out = Vec::new();
        for (k, rule) in self.rules.iter().enumerate() {
            let mut dst_ports = Vec::new();
            let mut push = |ip: &str, ports: &[Ports]| {
                for p in ports {
                    dst_ports.push(NetPortRange {
                        ip: ip.to_string(),
                        ports: PortRange {
                            first: p.first,
                            last: p.last,
                        },
                    });
                }
            };
            // Under `via`, routed destinations are enforced on the via routers only.
            let routes_here = rule.via.as_ref().is_none_or(|via| via.contains(i));
            for dst in &rule.dsts {
                match &dst.kind {
                    DstKind::Wildcard => push("*", &dst.ports),
                    DstKind::Nodes(set) if set.contains(i) => {
                        for ip in own.iter() {
                            push(ip, &dst.ports);
                        }
                    }
                    DstKind::Prefix(prefix) if routes_here && self.prefix_hits(i, prefix) => {
                        push(&ip_string(prefix), &dst.ports)
                    }
                    DstKind::Internet if routes_here && node.is_exit_node() => {
                        for prefix in internet_prefixes() {
                            push(prefix, &dst.ports);
                        }
                    }
                    _ => {}
                }
            }
            if !dst_ports.is_empty() && !rule.src.is_empty() {
                out.push((
                    Origin::Net(k),
                    FilterRule {
                        src_ips: rule.src_ips.clone(),
                        dst_ports,
                        ip_proto: rule.protocols.clone(),
                        cap_grant: Vec::new(),
                    },
                ));
            }
            if rule.has_self {
                if let Some(mine) = self.same_user(i) {
                    let mut srcs = rule.src.members.clone();
                    srcs.intersect_with(mine);
                    if !srcs.is_clear() {
                        let mut dst_ports = Vec::new();
                        for dst in rule
                            .dsts
                            .iter()
                            .filter(|d| matches!(d.kind, DstKind::SelfNodes))
                        {
                            for ip in self.node_ips_of(mine) {
                                for p in &dst.ports {
                                    dst_ports.push(NetPortRange {
                                        ip: ip.clone(),
                                        ports: PortRange {
                                            first: p.first,
                                            last: p.last,
                                        },
                                    });
                                }
                            }
                        }
                        out.push((
                            Origin::Net(k),
                            FilterRule {
                                src_ips: ranged(self.node_ips_of(&srcs)),
                                dst_ports,
                                ip_proto: rule.protocols.clone(),
                                cap_grant: Vec::new(),
                            },
                        ));
                    }
                }
            }
        }
        for (k, app) in self.apps.iter().enumerate() {
            // An app grant with `via` only steers routes: Tailscale sends no capability
            // for it, on the via routers or elsewhere (captured: grant-k12).
            if app.via.is_some() {
                continue;
            }
            let mut dsts = Vec::new();
            for kind in &app.dst {
                let hit = match kind {
                    DstKind::Wildcard => true,
                    DstKind::Nodes(set) => set.contains(i),
                    DstKind::Prefix(prefix) => self.prefix_hits(i, prefix),
                    DstKind::Internet | DstKind::SelfNodes => false,
                };
                if hit {
                    dsts = node_prefixes(node);
                }
            }
            // Tailscale sends a capability grant even when its sources resolve to nobody
            // (an empty group), but not when the grant names no source at all (grant-h4).
            if !dsts.is_empty() && !self.policy.apps[k].src.is_empty() {
                out.push((
                    Origin::App(k),
                    FilterRule {
                        src_ips: app.src_ips.clone(),
                        dst_ports: Vec::new(),
                        ip_proto: Vec::new(),
                        cap_grant: vec![CapGrant {
                            dsts,
                            cap_map: cap_values(&app.caps),
                        }],
                    },
                ));
            }
            // Some of Tailscale's capabilities come with a companion granted the other way
            // round (the sharer side of Taildrive, the target side of a relay): a rule on
            // each source node, from the destinations.
            let companions: Vec<&str> = COMPANION_CAPS
                .iter()
                .filter(|(cap, _)| app.caps.contains_key(*cap))
                .map(|(_, companion)| *companion)
                .collect();
            if !companions.is_empty() && app.src.members.contains(i) {
                let mut from = Resolved::empty(self.topology.nodes.len());
                for kind in &app.dst {
                    match kind {
                        DstKind::Wildcard => from.wildcard = true,
                        DstKind::Nodes(set) => from.nodes.union_with(set),
                        DstKind::Prefix(prefix) => from.prefixes.push(*prefix),
                        DstKind::SelfNodes => {
                            if let Some(mine) = self.same_user(i) {
                                from.nodes.union_with(mine);
                            }
                        }
                        DstKind::Internet => {}
                    }
                }
                if !from.is_empty() {
                    for companion in companions {
                        out.push((
                            Origin::Companion(k),
                            FilterRule {
                                src_ips: ranged(self.source_ips(&from)),
                                dst_ports: Vec::new(),
                                ip_proto: Vec::new(),
                                cap_grant: vec![CapGrant {
                                    dsts: node_prefixes(node),
                                    cap_map: BTreeMap::from([(companion.to_string(), Value::Null)]),
                                }],
                            },
                        ));
                    }
                }
            }
            if app.has_self {
                if let Some(mine) = self.same_user(i) {
                    let mut srcs = app.src.members.clone();
                    srcs.intersect_with(mine);
                    if !srcs.is_clear() {
                        out.push((
                            Origin::App(k),
                            FilterRule {
                                src_ips: ranged(self.node_ips_of(&srcs)),
                                dst_ports: Vec::new(),
                                ip_proto: Vec::new(),
                                cap_grant: vec![CapGrant {
                                    dsts: node_prefixes(node),
                                    cap_map: cap_values(&app.caps),
                                }],
                            },
                        ));
                    }
                }
            }
        }
        out
    }

    /// The untagged nodes of node `i`'s user, if `i` is an untagged node.
    fn same_user(&self, i: usize) -> Option<&FixedBitSet> {
        let node = self.node(i);
        if node.is_tagged() {
            return None;
        }
        self.user_nodes.get(&node.user?)
    }

    /// Indices of the nodes node `i` sees: those it may reach or that may reach it.
    pub fn peers(&self, i: usize) -> Vec<usize> {
        let mut seen = FixedBitSet::with_capacity(self.topology.nodes.len());
        let mine = self.same_user(i);
        let mut add = |src: &Resolved, dst_members: &FixedBitSet, has_self: bool| {
            if dst_members.contains(i) {
                seen.union_with(&src.members);
            }
            if src.members.contains(i) {
                seen.union_with(dst_members);
            }
            if has_self {
                if let Some(mine) = mine {
                    if src.members.contains(i) {
                        seen.union_with(mine);
                    }
                    let mut srcs = src.members.clone();
                    srcs.intersect_with(mine);
                    seen.union_with(&srcs);
                }
            }
        };
        for rule in &self.rules {
            add(&rule.src, &rule.dst_members, rule.has_self);
        }
        for app in &self.apps {
            add(&app.src, &app.dst_members, app.has_self);
        }
        seen.set(i, false);
        seen.ones().collect()
    }

    /// The SSH policy of node `i` as a destination; `None` when the policy has no `ssh`.
    pub fn ssh(&self, i: usize, server_url: &str) -> Option<SshPolicy> {
        let Some(rules) = self.policy.ssh.as_ref() else {
            return Some(SshPolicy::default());
        };
        let node = self.node(i);
        let mut check_rules = Vec::new();
        let mut accept_rules = Vec::new();
        for (rule, compiled) in rules.iter().zip(&self.ssh_rules) {
            let src = &compiled.src;
            let mut principals_nodes = FixedBitSet::with_capacity(self.topology.nodes.len());
            if compiled.dst_members.contains(i) {
                principals_nodes.union_with(&src.members);
            }
            if compiled.has_self {
                if let Some(mine) = self.same_user(i) {
                    let mut s = src.members.clone();
                    s.intersect_with(mine);
                    principals_nodes.union_with(&s);
                }
            }
            let has_localpart = rule
                .users
                .iter()
                .any(|u| matches!(u, SshUser::Localpart(_)));
            if principals_nodes.is_clear() && has_localpart && src.members.contains(i) {
                // Tailscale's quirk with `localpart:`: a source node that is not a
                // destination still gets the rule, for itself (tagged) or its user's nodes.
                match self.same_user(i) {
                    Some(mine) => {
                        let mut s = src.members.clone();
                        s.intersect_with(mine);
                        principals_nodes = s;
                    }
                    None => principals_nodes.insert(i),
                }
            }
            if principals_nodes.is_clear() {
                continue;
            }
            let action = match rule.action {
                SshAction::Accept => SshActionOut {
                    accept: true,
                    allow_agent_forwarding: true,
                    allow_local_port_forwarding: true,
                    allow_remote_port_forwarding: true,
                    hold_and_delegate: String::new(),
                },
                SshAction::Check => SshActionOut {
                    hold_and_delegate: format!(
                        "{}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER",
                        server_url.trim_end_matches('/')
                    ),
                    ..Default::default()
                },
            };
            let mut users = BTreeMap::new();
            users.insert("root".to_string(), String::new());
            let mut localparts = Vec::new();
            for user in &rule.users {
                match user {
                    SshUser::Root => {
                        users.insert("root".into(), "root".into());
                    }
                    SshUser::NonRoot => {
                        users.insert("*".into(), "=".into());
                    }
                    SshUser::Named(name) => {
                        users.insert(name.clone(), name.clone());
                    }
                    SshUser::Localpart(domain) => localparts.push(domain.clone()),
                }
            }
            let target = match rule.action {
                SshAction::Check => &mut check_rules,
                SshAction::Accept => &mut accept_rules,
            };
            let make = |set: &FixedBitSet, users: BTreeMap<String, String>| SshRuleOut {
                principals: self
                    .node_ips_of(set)
                    .into_iter()
                    .map(|node_ip| SshPrincipal { node_ip })
                    .collect(),
                ssh_users: users,
                action: action.clone(),
                accept_env: rule.accept_env.clone(),
            };
            if localparts.is_empty() {
                target.push(make(&principals_nodes, users));
                continue;
            }
            // With `localpart:*@domain`, each source user gets their own rules (their
            // nodes, the common users, then their local part), tagged sources one more.
            let mut users_by_id: Vec<&super::topology::TopologyUser> =
                self.topology.users.iter().collect();
            users_by_id.sort_by_key(|u| u.id);
            for user in users_by_id {
                let Some(theirs) = self.user_nodes.get(&user.id) else {
                    continue;
                };
                let mut s = principals_nodes.clone();
                s.intersect_with(theirs);
                if s.is_clear() {
                    continue;
                }
                target.push(make(&s, users.clone()));
                if let Some((local, domain)) = user.email.rsplit_once('@') {
                    if localparts.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
                        target.push(make(
                            &s,
                            BTreeMap::from([(local.to_string(), local.to_string())]),
                        ));
                    }
                }
            }
            let mut tagged = principals_nodes.clone();
            for set in self.user_nodes.values() {
                tagged.difference_with(set);
            }
            if !tagged.is_clear() {
                target.push(make(&tagged, users.clone()));
            }
        }
        let _ = node;
        check_rules.extend(accept_rules);
        Some(SshPolicy { rules: check_rules })
    }

    /// Whether node `i` is shown IPv6-only (`disable-ipv4`): its own IPv4 address leaves
    /// its `Addresses` and `AllowedIPs` for itself and for every peer, and it is shown
    /// every peer without the peer's IPv4 address. Routes stay; packet filters are
    /// unchanged; the address stays allocated. As Tailscale renders it (captures
    /// `nodeattrs-attr-c15/c16`).
    pub fn ipv4_disabled(&self, i: usize) -> bool {
        self.ipv4_disabled.contains(i)
    }

    /// Whether `viewer` is shown `node`'s IPv4 address (itself included): neither is
    /// IPv6-only.
    pub fn shows_ipv4(&self, viewer: usize, node: usize) -> bool {
        !self.ipv4_disabled(viewer) && !self.ipv4_disabled(node)
    }

    /// The capabilities `nodeAttrs` give node `i`.
    pub fn node_caps(&self, i: usize) -> BTreeMap<String, Vec<Value>> {
        let mut caps = BTreeMap::new();
        // Top-level `randomizeClientPort`: every node gets the attribute (as Tailscale does).
        if self.policy.randomize_client_port {
            caps.insert("randomize-client-port".to_string(), Vec::new());
        }
        for (attr, target) in self.policy.node_attrs.iter().zip(&self.attr_targets) {
            if !target.contains(i) {
                continue;
            }
            for name in &attr.attr {
                caps.entry(name.clone()).or_insert_with(Vec::new);
            }
            for (name, values) in &attr.app {
                caps.entry(name.clone())
                    .or_insert_with(Vec::new)
                    .extend(values.iter().cloned());
            }
        }
        caps
    }
}

/// Packet-filter sources as Tailscale sends them: runs of consecutive single addresses
/// become one `a-b` range (a member-wide rule at 1,000 nodes is one range per family, not
/// 2,000 addresses). Prefixes, ranges and `*` stay as they are; the order is kept otherwise
/// (ranges take the place of their first address).
pub(crate) fn ranged(items: Vec<String>) -> Vec<String> {
    let mut singles: Vec<std::net::IpAddr> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for item in items {
        match item.parse::<std::net::IpAddr>() {
            Ok(ip) => singles.push(ip),
            Err(_) => others.push(item),
        }
    }
    if singles.len() < 2 {
        others.extend(singles.iter().map(|ip| ip.to_string()));
        return sorted_unique(others.iter().map(String::as_str).collect());
    }
    singles.sort_unstable();
    singles.dedup();
    let number = |ip: &std::net::IpAddr| -> (u8, u128) {
        match ip {
            std::net::IpAddr::V4(v4) => (4, u32::from(*v4) as u128),
            std::net::IpAddr::V6(v6) => (6, u128::from(*v6)),
        }
    };
    let mut start = singles[0];
    let mut end = singles[0];
    let mut push = |start: std::net::IpAddr, end: std::net::IpAddr| {
        others.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    };
    for ip in singles.into_iter().skip(1) {
        let (family, n) = number(&ip);
        let (end_family, end_n) = number(&end);
        if family == end_family && end_n.checked_add(1) == Some(n) {
            end = ip;
        } else {
            push(start, end);
            start = ip;
            end = ip;
        }
    }
    push(start, end);
    sorted_unique(others.iter().map(String::as_str).collect())
}

/// Sorted (as text), without duplicates: the order Tailscale lists addresses in.
fn sorted_unique(mut items: Vec<&str>) -> Vec<String> {
    items.sort_unstable();
    items.dedup();
    items.into_iter().map(str::to_string).collect()
}

/// Capabilities that bring a reversed companion capability along.
const COMPANION_CAPS: [(&str, &str); 2] = [
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

fn cap_values(caps: &BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Value> {
    caps.iter()
        .map(|(k, v)| (k.clone(), Value::Array(v.clone())))
        .collect()
}

/// A node's own addresses as prefixes (`/32`, `/128`), as `CapGrant.Dsts` lists them.
fn node_prefixes(node: &TopologyNode) -> Vec<String> {
    node.ips()
        .map(|ip| match ip {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        })
        .collect()
}

/// What `autogroup:internet` covers on an exit node, as Tailscale sends it (captures
/// `routes-b17`/`b18`): every IPv4 address but the private, CGNAT and link-local ranges
/// (10/8, 100.64/10, 169.254/16, 172.16/12, 192.168/16), and IPv6's global unicast 2000::/3.
/// So a grant to the internet never opens the exit node's own LAN.
pub(crate) fn internet_prefixes() -> &'static [&'static str] {
    &[
        "0.0.0.0-9.255.255.255",
        "11.0.0.0-100.63.255.255",
        "100.128.0.0-169.253.255.255",
        "169.255.0.0-172.15.255.255",
        "172.32.0.0-192.167.255.255",
        "192.169.0.0-255.255.255.255",
        "2000::-3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ]
}

#[cfg(test)]
mod ranged_tests {
    use super::ranged;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn consecutive_addresses_become_ranges() {
        assert_eq!(
            ranged(strings(&[
                "100.64.0.3",
                "100.64.0.1",
                "100.64.0.2",
                "100.64.0.9",
                "fd7a:115c:a1e0::1",
                "fd7a:115c:a1e0::2",
                "10.0.0.0/8",
                "100.64.0.2",
            ])),
            strings(&[
                "10.0.0.0/8",
                "100.64.0.1-100.64.0.3",
                "100.64.0.9",
                "fd7a:115c:a1e0::1-fd7a:115c:a1e0::2",
            ])
        );
        // The last address of a family never runs into the next family.
        assert_eq!(
            ranged(strings(&["255.255.255.255", "::", "*"])),
            strings(&["*", "255.255.255.255", "::"])
        );
        assert_eq!(ranged(strings(&["100.64.0.1"])), strings(&["100.64.0.1"]));
        assert!(ranged(Vec::new()).is_empty());
    }
}
