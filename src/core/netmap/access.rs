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
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// The access view of one state.
pub struct Access {
    /// `None`: no policy is set, every authorised node sees every other and accepts all
    /// (headscale's default).
    compiled: Option<Compiled>,
    topology: Arc<Topology>,
    index: HashMap<NodeId, usize>,
    peers: Vec<OnceLock<FixedBitSet>>,
    filters: Vec<OnceLock<SharedJson>>,
    ssh: Vec<OnceLock<Option<SharedJson>>>,
    caps: Vec<OnceLock<BTreeMap<String, Vec<Value>>>>,
    allow_all: SharedJson,
    server_url: String,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("nodes", &self.index.len())
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
        let index = topology
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (NodeId(node.id), i))
            .collect();
        Access {
            compiled: policy.map(|p| Compiled::new(p, topology.clone())),
            topology,
            index,
            peers: (0..n).map(|_| OnceLock::new()).collect(),
            filters: (0..n).map(|_| OnceLock::new()).collect(),
            ssh: (0..n).map(|_| OnceLock::new()).collect(),
            caps: (0..n).map(|_| OnceLock::new()).collect(),
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

    /// `for_state` with the topology already derived.
    pub fn for_state_with(state: &State, topology: Arc<Topology>, server_url: &str) -> Access {
        let policy = state
            .policy
            .as_ref()
            .and_then(|doc| match Policy::parse(&doc.text) {
                Ok(policy) => Some(Arc::new(policy)),
                Err(error) => {
                    tracing::error!(%error, "the stored policy does not parse; allowing all");
                    None
                }
            });
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
        match (self.index.get(&viewer), self.index.get(&peer)) {
            (Some(&v), Some(&p)) => self.peer_set(v).contains(p),
            _ => false,
        }
    }

    /// The viewer's packet filter (the `"base"` chunk).
    pub fn filter(&self, viewer: NodeId) -> SharedJson {
        let Some(&i) = self.index.get(&viewer) else {
            return SharedJson::new(&Vec::<FilterRule>::new()).expect("an empty list serialises");
        };
        self.filters[i]
            .get_or_init(|| match &self.compiled {
                Some(compiled) => {
                    SharedJson::new(&compiled.filter(i)).unwrap_or_else(|_| self.allow_all.clone())
                }
                None => self.allow_all.clone(),
            })
            .clone()
    }

    /// The viewer's SSH policy; `None` when no policy is set.
    pub fn ssh_policy(&self, viewer: NodeId) -> Option<SharedJson> {
        let &i = self.index.get(&viewer)?;
        self.ssh[i]
            .get_or_init(|| {
                let compiled = self.compiled.as_ref()?;
                let policy = compiled.ssh(i, &self.server_url)?;
                SharedJson::new(&policy).ok()
            })
            .clone()
    }

    /// Capabilities the policy's `nodeAttrs` give the viewer on itself.
    pub fn node_caps(&self, viewer: NodeId) -> BTreeMap<String, Vec<Value>> {
        let (Some(&i), Some(compiled)) = (self.index.get(&viewer), &self.compiled) else {
            return BTreeMap::new();
        };
        self.caps[i].get_or_init(|| compiled.node_caps(i)).clone()
    }

    /// Whether `viewer` may use `route` (a peer's subnet or exit route); everyone may when
    /// no policy is set.
    pub fn can_access_route(&self, viewer: NodeId, route: &ipnet::IpNet) -> bool {
        match (&self.compiled, self.index.get(&viewer)) {
            (None, _) => true,
            (Some(compiled), Some(&i)) => compiled.can_access_route(i, route),
            (Some(_), None) => false,
        }
    }
}
