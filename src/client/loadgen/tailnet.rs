//! The simulated tailnet's shape: who owns each node (a user or tags), the policy in force
//! (and its edited variant for the policy-edit round), and what each node should see. The
//! expectation comes from the server's own pure policy engine (`core::netmap::Access` over a
//! `State` built from what loadgen knows), so "converged" means exactly the peers the
//! policy gives each node, not N−1.

use crate::core::event::{NodeHostinfo, RegisterMethod};
use crate::core::ids::{NodeId, UserId};
use crate::core::keys::{MachineKey, NodeKey};
use crate::core::netmap::Access;
use crate::core::policy::{Policy, Topology};
use crate::core::state::{Node, User};
use crate::core::{State, Timestamp};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Domain of the sparse tailnet's user e-mails (as `benches/policy.rs`).
pub const EMAIL_DOMAIN: &str = "bench.example";

/// A rule every node's packet filter gains in the mesh policy edit (a port nobody uses).
const EDIT_PORT: u16 = 41641;

/// Which tailnet loadgen builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tailnet {
    /// One user (`loadgen`), every node sees every other (today's default). `policy`: the
    /// policy text set before registration, if any.
    Mesh { policy: Option<String> },
    /// `users` users (`user{u}`, e-mail `user{u}@bench.example`) with `per_user` nodes each;
    /// the first node of each user is a server instead, `tag:db` for even users and
    /// `tag:web` for odd ones (owned by its tags), under `sparse_policy(users)`.
    Sparse { users: usize, per_user: usize },
}

/// Who owns one simulated node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The index of a user in `Tailnet::user_names`.
    User(usize),
    Tag(&'static str),
}

impl Tailnet {
    pub fn nodes(&self, mesh_nodes: usize) -> usize {
        match self {
            Tailnet::Mesh { .. } => mesh_nodes,
            Tailnet::Sparse { users, per_user } => users * per_user,
        }
    }

    /// The users to create: (name, e-mail).
    pub fn users(&self) -> Vec<(String, String)> {
        match self {
            Tailnet::Mesh { .. } => vec![("loadgen".into(), String::new())],
            Tailnet::Sparse { users, .. } => (0..*users)
                .map(|u| (format!("user{u}"), format!("user{u}@{EMAIL_DOMAIN}")))
                .collect(),
        }
    }

    /// The owner of node `index` (registration order).
    pub fn owner(&self, index: usize) -> Owner {
        match self {
            Tailnet::Mesh { .. } => Owner::User(0),
            Tailnet::Sparse { per_user, .. } => {
                let (user, k) = (index / per_user.max(&1), index % per_user.max(&1));
                match (k, user % 2) {
                    (0, 0) => Owner::Tag("tag:db"),
                    (0, _) => Owner::Tag("tag:web"),
                    _ => Owner::User(user),
                }
            }
        }
    }

    /// The policy set before any node registers (`None`: none, every node sees every other).
    pub fn policy(&self) -> Option<String> {
        match self {
            Tailnet::Mesh { policy } => policy.clone(),
            Tailnet::Sparse { users, .. } => Some(sparse_policy(*users, false)),
        }
    }

    /// The policy of the policy-edit round: the same visibility, a different packet filter
    /// for every node.
    pub fn edited_policy(&self) -> String {
        match self {
            Tailnet::Mesh { .. } => format!(
                r#"{{"acls": [
  {{"action": "accept", "src": ["*"], "dst": ["*:*"]}},
  {{"action": "accept", "src": ["*"], "dst": ["*:{EDIT_PORT}"]}},
]}}"#
            ),
            Tailnet::Sparse { users, .. } => sparse_policy(*users, true),
        }
    }
}

/// The sparse policy for `users` users (`benches/policy.rs` uses it at 200):
/// everyone reaches their own devices; five groups of `users / 20` users (at least one,
/// wrapping around when there are fewer than five) reach the database and web servers; SSH
/// to one's own devices and, for ops, to the servers as root. `edited` adds ports to the
/// self, db and web rules, so every node's packet filter changes and no visibility does.
pub fn sparse_policy(users: usize, edited: bool) -> String {
    let users = users.max(1);
    let size = (users / 20).max(1);
    let group = |g: usize| -> String {
        (g * size..g * size + size)
            .map(|u| format!("\"user{}@{EMAIL_DOMAIN}\"", u % users))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (own, db, web) = match edited {
        false => ("*", "5432", "443"),
        true => ("22,80,443,1-65535", "5432,5433", "443,8443"),
    };
    format!(
        r#"{{
  "groups": {{
    "group:dba": [{}],
    "group:backend": [{}],
    "group:frontend": [{}],
    "group:support": [{}],
    "group:ops": [{}],
  }},
  "tagOwners": {{"tag:db": ["group:ops"], "tag:web": ["group:ops"]}},
  "acls": [
    {{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:{own}"]}},
    {{"action": "accept", "src": ["group:dba", "group:backend"], "dst": ["tag:db:{db}"]}},
    {{"action": "accept", "src": ["group:frontend", "group:support"], "dst": ["tag:web:{web}"]}},
    {{"action": "accept", "src": ["group:ops"], "dst": ["tag:db:5432,22", "tag:web:443,22"]}},
    {{"action": "accept", "src": ["tag:web"], "dst": ["tag:db:{db}"]}},
  ],
  "ssh": [
    {{"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"],
      "users": ["autogroup:nonroot", "root"]}},
    {{"action": "accept", "src": ["group:ops"], "dst": ["tag:web", "tag:db"], "users": ["root"]}},
  ],
}}"#,
        group(0),
        group(1),
        group(2),
        group(3),
        group(4)
    )
}

/// What loadgen learnt about one node from its own first map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfNode {
    pub id: u64,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl SelfNode {
    /// From the self node's `Addresses` (`100.64.0.1/32`, `fd7a:…/128`).
    pub fn from_addresses(id: u64, addresses: &[String]) -> SelfNode {
        let mut node = SelfNode {
            id,
            ..Default::default()
        };
        for address in addresses {
            let ip = address.split('/').next().unwrap_or_default();
            if let Ok(v4) = ip.parse::<Ipv4Addr>() {
                node.ipv4 = Some(v4);
            } else if let Ok(v6) = ip.parse::<Ipv6Addr>() {
                node.ipv6 = Some(v6);
            }
        }
        node
    }
}

/// For every node (registration order), the ids of the peers `policy` gives it, computed by
/// the server's engine over a state with these users and nodes.
pub fn expected_peers(
    tailnet: &Tailnet,
    nodes: &[SelfNode],
    policy: Option<&str>,
) -> Result<Vec<Vec<u64>>, String> {
    let mut state = State::default();
    for (u, (name, email)) in tailnet.users().into_iter().enumerate() {
        let id = UserId(u as u64 + 1);
        state.users.insert(
            id,
            User {
                id,
                name,
                display_name: String::new(),
                email,
                created_at: Timestamp::EPOCH,
                picture_url: String::new(),
            },
        );
    }
    for (index, seen) in nodes.iter().enumerate() {
        let (user, tags) = match tailnet.owner(index) {
            Owner::User(u) => (Some(UserId(u as u64 + 1)), Vec::new()),
            Owner::Tag(tag) => (None, vec![tag.to_string()]),
        };
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seen.id.to_le_bytes());
        state.nodes.insert(
            NodeId(seen.id),
            Node {
                id: NodeId(seen.id),
                machine_key: MachineKey(key),
                node_key: NodeKey(key),
                user,
                tags,
                given_name: format!("loadgen-{index}"),
                given_name_by_admin: false,
                hostinfo: NodeHostinfo {
                    hostname: format!("loadgen-{index}"),
                    os: "linux".into(),
                    ..Default::default()
                },
                ipv4: seen.ipv4,
                ipv6: seen.ipv6,
                expiry: None,
                register_method: RegisterMethod::AuthKey,
                auth_key: None,
                ephemeral: false,
                authorized: true,
                approved_routes: Vec::new(),
                created_at: Timestamp::EPOCH,
            },
        );
    }
    let policy = match policy {
        Some(text) => Some(Arc::new(
            Policy::parse(text).map_err(|e| format!("the policy does not parse: {e}"))?,
        )),
        None => None,
    };
    let access = Access::with_topology(
        Arc::new(Topology::from_state(&state)),
        policy,
        "http://loadgen.invalid",
    );
    Ok(nodes
        .iter()
        .map(|viewer| {
            nodes
                .iter()
                .filter(|peer| access.can_see(NodeId(viewer.id), NodeId(peer.id)))
                .map(|peer| peer.id)
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<SelfNode> {
        (0..n)
            .map(|i| {
                SelfNode::from_addresses(
                    i as u64 + 1,
                    &[
                        format!("100.64.0.{}/32", i + 1),
                        format!("fd7a:115c:a1e0::{:x}/128", i + 1),
                    ],
                )
            })
            .collect()
    }

    #[test]
    fn the_sparse_policy_parses_and_gives_each_node_what_it_says() {
        let tailnet = Tailnet::Sparse {
            users: 4,
            per_user: 3,
        };
        let seen = nodes(12);
        let policy = tailnet.policy();
        let expected = expected_peers(&tailnet, &seen, policy.as_deref()).unwrap();
        // Node index i has id i + 1. Index 1 (user 0's second device) sees its sibling
        // (index 2); as a member of group:dba (user 0) the db servers of users 0 and 2
        // (indexes 0, 6); as a member of group:ops (user 0 again: five groups wrap around
        // four users) also the web servers of users 1 and 3 (indexes 3, 9). Never another
        // user's devices, never itself.
        assert_eq!(tailnet.owner(1), Owner::User(0));
        assert_eq!(tailnet.owner(0), Owner::Tag("tag:db"));
        assert_eq!(tailnet.owner(3), Owner::Tag("tag:web"));
        let mut peers = expected[1].clone();
        peers.sort();
        assert_eq!(peers, vec![1, 3, 4, 7, 10]);
        // The edit keeps every peer set.
        let edited = expected_peers(&tailnet, &seen, Some(&tailnet.edited_policy())).unwrap();
        assert_eq!(expected, edited);
        assert_ne!(tailnet.edited_policy(), policy.unwrap());
    }

    #[test]
    fn the_sparse_policy_at_200_users_names_the_bench_groups() {
        let policy = sparse_policy(200, false);
        assert!(policy.contains(r#""group:dba": ["user0@bench.example", "#));
        assert!(policy.contains(r#""user49@bench.example"],"#));
        assert!(!policy.contains("user50@"));
        Policy::parse(&policy).unwrap();
        Policy::parse(&sparse_policy(200, true)).unwrap();
    }

    #[test]
    fn without_a_policy_every_node_sees_every_other() {
        let tailnet = Tailnet::Mesh { policy: None };
        let expected = expected_peers(&tailnet, &nodes(5), None).unwrap();
        assert!(expected.iter().all(|peers| peers.len() == 4));
        let edited = expected_peers(&tailnet, &nodes(5), Some(&tailnet.edited_policy())).unwrap();
        assert_eq!(expected, edited);
    }
}
