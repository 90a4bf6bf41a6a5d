//! The state's derived lookups (node and machine keys, user names, key prefixes, given
//! names, addresses in use, the parsed policy, the users as policies name them): never
//! serialised, rebuilt when a state is decoded, kept in step by `apply`.

use super::{Node, PolicyDocument, State};
use crate::core::ids::{ApiKeyId, NodeId, PreAuthKeyId, UserId};
use crate::core::intervals::Runs;
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::naming;
use crate::core::policy::{Policy, Topology};
use imbl::{OrdMap, OrdSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

/// Secondary indexes: (key, id) pairs in ordered sets, so a lookup is O(log N) and, should an
/// old log hold duplicates (node keys were not unique before M1), the lowest id wins, as the
/// linear scans these replace did.
#[derive(Clone, Default)]
pub(super) struct Index {
    pub(super) node_keys: OrdSet<(NodeKey, NodeId)>,
    pub(super) machine_keys: OrdSet<(MachineKey, NodeId)>,
    pub(super) user_names: OrdSet<(String, UserId)>,
    pub(super) pre_auth_key_prefixes: OrdSet<(String, PreAuthKeyId)>,
    pub(super) api_key_prefixes: OrdSet<(String, ApiKeyId)>,
    /// Nodes' MagicDNS names (`RenameNode` and registration refuse or avoid a taken one).
    pub(super) given_names: OrdSet<(String, NodeId)>,
    /// The numbers `n` of given names of the form `base-n`, by `base`: the next free
    /// `base-n` for a new node with a taken name, without trying `base-1`, `base-2`, ...
    pub(super) name_suffixes: OrdMap<String, Runs>,
    /// Addresses in use, with the node holding each (so an address shared in an old log is
    /// freed only with its last holder), and as runs for the allocator.
    pub(super) ipv4: OrdSet<(Ipv4Addr, NodeId)>,
    pub(super) ipv4_runs: Runs,
    pub(super) ipv6: OrdSet<(Ipv6Addr, NodeId)>,
    pub(super) ipv6_runs: Runs,
    /// The users as policies name them (`Topology::users_of`), built on first use after a
    /// change of users rather than by every command that resolves a user token; a clone of
    /// the state shares it until either changes its users.
    pub(super) policy_users: Arc<OnceLock<Arc<Topology>>>,
    /// The policy in force, parsed once when it is set rather than by every command that
    /// consults it, with the text it was parsed from; `None` without a policy or when the
    /// stored text no longer parses.
    pub(super) policy: Option<Arc<ParsedPolicy>>,
}

pub(super) struct ParsedPolicy {
    pub(super) text: String,
    pub(super) policy: Arc<Policy>,
}

pub(super) fn parse_policy(document: Option<&PolicyDocument>) -> Option<Arc<ParsedPolicy>> {
    let text = &document?.text;
    let policy = Arc::new(Policy::parse(text).ok()?);
    Some(Arc::new(ParsedPolicy {
        text: text.clone(),
        policy,
    }))
}

/// Derived data: a state's debug output shows the maps, not their index again.
impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Index { .. }")
    }
}

/// The index is a function of the maps, so two states with equal maps are equal.
impl PartialEq for Index {
    fn eq(&self, _: &Index) -> bool {
        true
    }
}

impl Eq for Index {}

impl Index {
    pub(super) fn build(state: &State) -> Index {
        let mut index = Index::default();
        for user in state.users.values() {
            index.user_names.insert((user.name.clone(), user.id));
        }
        for key in state.pre_auth_keys.values() {
            index
                .pre_auth_key_prefixes
                .insert((key.prefix.clone(), key.id));
        }
        for key in state.api_keys.values() {
            index.api_key_prefixes.insert((key.prefix.clone(), key.id));
        }
        for node in state.nodes.values() {
            index.add_node(node);
        }
        index.policy = parse_policy(state.policy.as_ref());
        index
    }

    pub(super) fn add_node(&mut self, node: &Node) {
        self.node_keys.insert((node.node_key, node.id));
        self.machine_keys.insert((node.machine_key, node.id));
        self.add_given_name(&node.given_name, node.id);
        if let Some(ip) = node.ipv4 {
            self.ipv4.insert((ip, node.id));
            self.ipv4_runs.insert(u128::from(u32::from(ip)));
        }
        if let Some(ip) = node.ipv6 {
            self.ipv6.insert((ip, node.id));
            self.ipv6_runs.insert(u128::from(ip));
        }
    }

    pub(super) fn remove_node(&mut self, node: &Node) {
        self.node_keys.remove(&(node.node_key, node.id));
        self.machine_keys.remove(&(node.machine_key, node.id));
        self.remove_given_name(&node.given_name, node.id);
        if let Some(ip) = node.ipv4 {
            self.ipv4.remove(&(ip, node.id));
            if ids_of(&self.ipv4, &ip, ALL_NODES).next().is_none() {
                self.ipv4_runs.remove(u128::from(u32::from(ip)));
            }
        }
        if let Some(ip) = node.ipv6 {
            self.ipv6.remove(&(ip, node.id));
            if ids_of(&self.ipv6, &ip, ALL_NODES).next().is_none() {
                self.ipv6_runs.remove(u128::from(ip));
            }
        }
    }

    pub(super) fn add_given_name(&mut self, name: &str, id: NodeId) {
        self.given_names.insert((name.to_string(), id));
        if let Some((base, n)) = naming::split_suffix(name) {
            let mut runs = self.name_suffixes.get(base).cloned().unwrap_or_default();
            runs.insert(u128::from(n));
            self.name_suffixes.insert(base.to_string(), runs);
        }
    }

    pub(super) fn remove_given_name(&mut self, name: &str, id: NodeId) {
        let name = name.to_string();
        self.given_names.remove(&(name.clone(), id));
        if ids_of(&self.given_names, &name, ALL_NODES).next().is_some() {
            return;
        }
        if let Some((base, n)) = naming::split_suffix(&name) {
            if let Some(runs) = self.name_suffixes.get_mut(base) {
                runs.remove(u128::from(n));
                if runs.is_empty() {
                    self.name_suffixes.remove(base);
                }
            }
        }
    }

    pub(super) fn same_as(&self, other: &Index) -> bool {
        self.node_keys == other.node_keys
            && self.machine_keys == other.machine_keys
            && self.user_names == other.user_names
            && self.pre_auth_key_prefixes == other.pre_auth_key_prefixes
            && self.api_key_prefixes == other.api_key_prefixes
            && self.given_names == other.given_names
            && self.name_suffixes == other.name_suffixes
            && self.ipv4 == other.ipv4
            && self.ipv4_runs == other.ipv4_runs
            && self.ipv6 == other.ipv6
            && self.ipv6_runs == other.ipv6_runs
            && self.policy.as_ref().map(|p| (&p.text, &p.policy))
                == other.policy.as_ref().map(|p| (&p.text, &p.policy))
    }
}

/// The ids paired with `key` in `set`, lowest first.
pub(super) fn ids_of<'a, K: Ord + Clone + 'a, I: Ord + Copy + 'a>(
    set: &'a OrdSet<(K, I)>,
    key: &K,
    (lowest, highest): (I, I),
) -> impl DoubleEndedIterator<Item = I> + 'a {
    set.range((key.clone(), lowest)..=(key.clone(), highest))
        .map(|(_, id)| *id)
}

pub(super) const ALL_NODES: (NodeId, NodeId) = (NodeId(0), NodeId(u64::MAX));
