//! Who may see whom and what each node accepts, for one state: the policy compiled against
//! the tailnet's topology. Built once per policy or topology change (not per hostinfo or
//! presence change) and shared by every session; each viewer's peers, packet filter and
//! SSH policy are computed the first time a session asks and then reused.

use crate::core::ids::NodeId;
use crate::core::policy::{Compiled, Policy, Topology};
use crate::core::State;
use crate::tailcfg::{FilterRule, SharedJson};
use fixedbitset::FixedBitSet;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

/// Node id → position in the topology. `can_see` runs for every (viewer, node) pair when
/// every session is brought up to date, so this is a table lookup, not a hash: ids are
/// counters, dense unless many nodes were deleted; then a sorted list, searched by halves.
enum NodeIndex {
    /// Indexed by id: position + 1, 0 for an id not in the topology.
    Dense(Vec<u32>),
    Sorted(Vec<(u64, usize)>),
}

impl NodeIndex {
    fn new(topology: &Topology) -> NodeIndex {
        let n = topology.nodes.len();
        let max = topology.nodes.iter().map(|node| node.id).max().unwrap_or(0);
        if n < u32::MAX as usize && max <= 4 * n as u64 + 1024 {
            let mut table = vec![0; max as usize + 1];
            for (i, node) in topology.nodes.iter().enumerate() {
                table[node.id as usize] = i as u32 + 1;
            }
            NodeIndex::Dense(table)
        } else {
            let mut sorted: Vec<(u64, usize)> = topology
                .nodes
                .iter()
                .enumerate()
                .map(|(i, node)| (node.id, i))
                .collect();
            sorted.sort_unstable();
            NodeIndex::Sorted(sorted)
        }
    }

    #[inline]
    fn get(&self, id: NodeId) -> Option<usize> {
        match self {
            NodeIndex::Dense(table) => {
                match usize::try_from(id.0).ok().and_then(|i| table.get(i)) {
                    Some(&position) if position > 0 => Some(position as usize - 1),
                    _ => None,
                }
            }
            NodeIndex::Sorted(sorted) => sorted
                .binary_search_by_key(&id.0, |&(id, _)| id)
                .ok()
                .map(|found| sorted[found].1),
        }
    }
}

/// The access view of one state.
pub struct Access {
    /// `None`: no policy is set, every authorised node sees every other and accepts all
    /// (headscale's default).
    compiled: Option<Compiled>,
    topology: Arc<Topology>,
    index: NodeIndex,
    peers: Vec<OnceLock<FixedBitSet>>,
    filters: Vec<OnceLock<SharedJson>>,
    ssh: Vec<OnceLock<Option<SharedJson>>>,
    caps: Vec<OnceLock<BTreeMap<String, Vec<Value>>>>,
    /// Every filter and SSH policy handed out, once per distinct text: a user's devices
    /// mostly get the same ones (with `autogroup:self`, tens of KiB per device).
    distinct: Mutex<HashSet<Distinct>>,
    allow_all: SharedJson,
    server_url: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("nodes", &self.topology.nodes.len())
            .field("policy", &self.compiled.is_some())
            .finish()
    }
}

impl Access {
    /// Compiles `policy` (the state's, already parsed) against the state's topology.
    pub fn new(state: &State, policy: Option<Arc<Policy>>, server_url: &str) -> Access {
        Access::with_topology(Arc::new(Topology::from_state(state)), policy, server_url)
    }

    pub fn with_topology(
        topology: Arc<Topology>,
        policy: Option<Arc<Policy>>,
        server_url: &str,
    ) -> Access {
        let n = topology.nodes.len();
        let index = NodeIndex::new(&topology);
        Access {
            compiled: policy.map(|p| Compiled::new(p, topology.clone())),
            topology,
            index,
            peers: (0..n).map(|_| OnceLock::new()).collect(),
            filters: (0..n).map(|_| OnceLock::new()).collect(),
            ssh: (0..n).map(|_| OnceLock::new()).collect(),
            caps: (0..n).map(|_| OnceLock::new()).collect(),
            distinct: Mutex::default(),
            allow_all: SharedJson::new(&FilterRule::allow_all())
                .expect("the allow-all filter serialises"),
            server_url: server_url.to_string(),
        }
    }

    /// The view of `state` with its own policy (none set: allow all). A stored policy that
    /// no longer parses (it was checked when set) also falls back to allow all, loudly.
    pub fn for_state(state: &State, server_url: &str) -> Access {
        Access::for_state_with(state, Arc::new(Topology::from_state(state)), server_url)
    }

    /// `for_state` with the topology already derived. The policy is the state's, parsed
    /// once when it was set (`State::parsed_policy`).
    pub fn for_state_with(state: &State, topology: Arc<Topology>, server_url: &str) -> Access {
        let policy = state.parsed_policy();
        if policy.is_none() && state.policy.is_some() {
            tracing::error!("the stored policy does not parse; allowing all");
        }
        Access::with_topology(topology, policy, server_url)
    }

    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The topology this view was compiled against (to notice when it changes).
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    fn peer_set(&self, i: usize) -> &FixedBitSet {
        self.peers[i].get_or_init(|| {
            let n = self.topology.nodes.len();
            let mut set = FixedBitSet::with_capacity(n);
            match &self.compiled {
                Some(compiled) => {
                    for p in compiled.peers(i) {
                        set.insert(p);
                    }
                }
                None => {
                    set.insert_range(..);
                    set.set(i, false);
                }
            }
            set
        })
    }

    /// Whether `viewer` is told about `peer`.
    pub fn can_see(&self, viewer: NodeId, peer: NodeId) -> bool {
        if viewer == peer {
            return false;
        }
        match (self.index.get(viewer), self.index.get(peer)) {
            (Some(v), Some(p)) => self.peer_set(v).contains(p),
            _ => false,
        }
    }

    /// Every node `viewer` is told about, in topology order: what a tailnet-wide change
    /// re-examines, instead of every node of the tailnet (O(peers), not O(nodes), per
    /// session once the viewer's set is known).
    pub fn visible_to(&self, viewer: NodeId) -> Vec<NodeId> {
        match self.index.get(viewer) {
            Some(v) => self
                .peer_set(v)
                .ones()
                .map(|p| NodeId(self.topology.nodes[p].id))
                .collect(),
            None => Vec::new(),
        }
    }

    /// The viewer's packet filter (the `"base"` chunk).
    pub fn filter(&self, viewer: NodeId) -> SharedJson {
        let Some(i) = self.index.get(viewer) else {
            return SharedJson::new(&Vec::<FilterRule>::new()).expect("an empty list serialises");
        };
        self.filters[i]
            .get_or_init(|| match &self.compiled {
                Some(compiled) => SharedJson::new(&compiled.filter(i))
                    .map(|json| self.once(json))
                    .unwrap_or_else(|_| self.allow_all.clone()),
                None => self.allow_all.clone(),
            })
            .clone()
    }

    /// The viewer's SSH policy; `None` when no policy is set.
    pub fn ssh_policy(&self, viewer: NodeId) -> Option<SharedJson> {
        let i = self.index.get(viewer)?;
        self.ssh[i]
            .get_or_init(|| {
                let compiled = self.compiled.as_ref()?;
                let policy = compiled.ssh(i, &self.server_url)?;
                SharedJson::new(&policy).ok().map(|json| self.once(json))
            })
            .clone()
    }

    /// Capabilities the policy's `nodeAttrs` give the viewer on itself.
    pub fn node_caps(&self, viewer: NodeId) -> BTreeMap<String, Vec<Value>> {
        let (Some(i), Some(compiled)) = (self.index.get(viewer), &self.compiled) else {
            return BTreeMap::new();
        };
        self.caps[i].get_or_init(|| compiled.node_caps(i)).clone()
    }

    /// Whether `node` is shown IPv6-only (`disable-ipv4`, `Compiled::ipv4_disabled`): to
    /// itself and to every peer without its IPv4 address, and it is shown its peers
    /// without theirs. No policy: never.
    pub fn ipv4_disabled(&self, node: NodeId) -> bool {
        match (&self.compiled, self.index.get(node)) {
            (Some(compiled), Some(i)) => compiled.ipv4_disabled(i),
            _ => false,
        }
    }

    /// Whether `viewer` gets `route` on `router`'s peer entry. `ranked` are the routers
    /// that can carry the route now, the primary first (`core::routes::Ranking`); a subnet
    /// sits on one of them per viewer (the primary, or a `via` router), exit routes on
    /// every exit node the viewer may use. Without a policy: the primary, every exit node.
    pub fn shows_route(
        &self,
        viewer: NodeId,
        router: NodeId,
        route: &ipnet::IpNet,
        ranked: &[NodeId],
    ) -> bool {
        let Some(compiled) = &self.compiled else {
            return route.prefix_len() == 0 || ranked.first() == Some(&router);
        };
        let (Some(v), Some(r)) = (self.index.get(viewer), self.index.get(router)) else {
            return false;
        };
        let ranked: Vec<usize> = ranked.iter().filter_map(|id| self.index.get(*id)).collect();
        compiled.shows_route(v, r, route, &ranked)
    }

    /// The copy of `json` already handed out, if any.
    fn once(&self, json: SharedJson) -> SharedJson {
        let mut distinct = self.distinct.lock().unwrap_or_else(|e| e.into_inner());
        match distinct.get(json.get()) {
            Some(known) => known.0.clone(),
            None => {
                distinct.insert(Distinct(json.clone()));
                json
            }
        }
    }
}

/// JSON compared and hashed by its text.
struct Distinct(SharedJson);

impl PartialEq for Distinct {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Distinct {}

impl std::hash::Hash for Distinct {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.get().hash(state)
    }
}

impl std::borrow::Borrow<str> for Distinct {
    fn borrow(&self) -> &str {
        self.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::TopologyNode;

    fn topology(ids: &[u64]) -> Arc<Topology> {
        Arc::new(Topology {
            users: Vec::new(),
            nodes: ids
                .iter()
                .map(|&id| TopologyNode {
                    id,
                    name: format!("n{id}"),
                    user: None,
                    tags: vec!["tag:a".into()],
                    ipv4: None,
                    ipv6: None,
                    routes: Vec::new(),
                })
                .collect(),
        })
    }

    #[test]
    fn the_index_finds_dense_and_sparse_ids() {
        // Dense ids use the table; ids far apart (after many deletions) the sorted list.
        for ids in [&[3, 1, 2][..], &[7, 1, 1_000_000, 40][..]] {
            let access = Access::with_topology(topology(ids), None, "https://x");
            assert!(matches!(
                (&access.index, ids.len()),
                (NodeIndex::Dense(_), 3) | (NodeIndex::Sorted(_), 4)
            ));
            for &a in ids {
                assert_eq!(
                    access.index.get(NodeId(a)),
                    ids.iter().position(|&x| x == a)
                );
                for &b in ids {
                    assert_eq!(access.can_see(NodeId(a), NodeId(b)), a != b);
                }
                for unknown in [0, 5, 999_999, 2_000_000, u64::MAX] {
                    assert!(!access.can_see(NodeId(a), NodeId(unknown)));
                    assert!(!access.can_see(NodeId(unknown), NodeId(a)));
                }
            }
        }
    }
}
