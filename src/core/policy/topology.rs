//! What the policy is compiled against: users and nodes with their identities, addresses
//! and routes. Built from the projected `State` by the server and from captures by the
//! compatibility runner, so the compiler never depends on either.

use crate::core::roles::Role;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyUser {
    pub id: u64,
    pub name: String,
    pub email: String,
    /// The OIDC `issuer/subject` (empty when none): headscale matches it first.
    pub provider_identifier: String,
    /// What the role autogroups (`autogroup:admin`, ...) go by.
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyNode {
    pub id: u64,
    pub name: String,
    /// `None` for a tagged node.
    pub user: Option<u64>,
    pub tags: Vec<String>,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Routes the node announces and an admin (or an auto-approver) approved.
    pub routes: Vec<IpNet>,
}

impl TopologyNode {
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }

    /// Subnet routes it serves (exit routes excluded).
    pub fn subnet_routes(&self) -> impl Iterator<Item = &IpNet> + '_ {
        self.routes.iter().filter(|r| r.prefix_len() != 0)
    }

    /// An exit node: both default routes approved.
    pub fn is_exit_node(&self) -> bool {
        let v4 = self
            .routes
            .iter()
            .any(|r| r.prefix_len() == 0 && matches!(r, IpNet::V4(_)));
        let v6 = self
            .routes
            .iter()
            .any(|r| r.prefix_len() == 0 && matches!(r, IpNet::V6(_)));
        v4 && v6
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub users: Vec<TopologyUser>,
    pub nodes: Vec<TopologyNode>,
}

impl Topology {
    /// The users a policy's user token names: the one whose OIDC identity it is, else by
    /// e-mail, else `name@` / `name` by name.
    pub fn users_named(&self, token: &str) -> Vec<u64> {
        let trimmed = token.strip_suffix('@').unwrap_or(token);
        if let Some(user) = self
            .users
            .iter()
            .find(|u| !u.provider_identifier.is_empty() && u.provider_identifier == trimmed)
        {
            return vec![user.id];
        }
        let by_email: Vec<u64> = self
            .users
            .iter()
            .filter(|u| !u.email.is_empty() && u.email.eq_ignore_ascii_case(token))
            .map(|u| u.id)
            .collect();
        if !by_email.is_empty() {
            return by_email;
        }
        let name = token.strip_suffix('@').unwrap_or(token);
        self.users
            .iter()
            .filter(|u| u.name == name)
            .map(|u| u.id)
            .collect()
    }

    /// Whether user `id` is one of the role autogroup `group`'s users (the Owner is also an
    /// Admin).
    pub fn user_holds(&self, id: u64, group: Role) -> bool {
        self.users.iter().any(|u| u.id == id && u.role.is_in(group))
    }

    /// The domain the tailnet's Owner logs in with, if it has an Owner with an e-mail.
    fn owner_domain(&self) -> Option<&str> {
        let owner = self.users.iter().find(|u| u.role == Role::Owner)?;
        owner.email.rsplit_once('@').map(|(_, domain)| domain)
    }

    /// `user:*@<domain>` and `localpart:*@<domain>` need a domain associated with the
    /// tailnet: the Owner's e-mail domain (Tailscale refuses another user's domain, captures
    /// ssh-b4/ssh-d1). A tailnet without an Owner (or whose Owner has no e-mail) has no such
    /// domain, so any user's e-mail domain is accepted there. Case-sensitive, as Tailscale
    /// compares it. `ssh_src`: the alias is an SSH rule's `src`, which Tailscale's message
    /// prefixes with `[ssh] `.
    pub fn check_user_domain(&self, domain: &str, ssh_src: bool) -> Result<(), String> {
        let associated = match self.owner_domain() {
            Some(owner) => owner == domain,
            None => self
                .users
                .iter()
                .any(|u| u.email.rsplit_once('@').is_some_and(|(_, d)| d == domain)),
        };
        if associated {
            return Ok(());
        }
        Err(format!(
            "{}{domain} is not associated with this Tailnet and cannot be used in \
             user:*@<domain> expressions",
            if ssh_src { "[ssh] " } else { "" }
        ))
    }

    /// The node that has address `ip`.
    pub fn node_with_ip(&self, ip: IpAddr) -> Option<&TopologyNode> {
        self.nodes.iter().find(|n| n.ips().any(|a| a == ip))
    }
}

impl Topology {
    /// Only the users (no nodes): enough to resolve the user tokens of `tagOwners` and
    /// `autoApprovers` without copying every node, as `decide` does per command.
    pub fn users_of(state: &crate::core::State) -> Topology {
        Topology {
            users: state
                .users
                .values()
                .map(|u| TopologyUser {
                    id: u.id.0,
                    name: u.name.clone(),
                    email: u.email.clone(),
                    provider_identifier: state
                        .extras
                        .identities
                        .get(&u.id)
                        .map(|i| i.provider_identifier.clone())
                        .unwrap_or_default(),
                    role: state.role_of(u.id),
                })
                .collect(),
            nodes: Vec::new(),
        }
    }

    /// The tailnet as the policy sees it: every user, and every authorised node (one still
    /// waiting for device approval is nobody's peer), in id order.
    pub fn from_state(state: &crate::core::State) -> Topology {
        Topology {
            users: Topology::users_of(state).users,
            nodes: state
                .nodes
                .values()
                .filter(|n| n.authorized)
                .map(|n| TopologyNode {
                    id: n.id.0,
                    name: n.given_name.clone(),
                    user: if n.is_tagged() {
                        None
                    } else {
                        n.user.map(|u| u.0)
                    },
                    tags: n.tags.clone(),
                    ipv4: n.ipv4,
                    ipv6: n.ipv6,
                    routes: n.subnet_routes(),
                })
                .collect(),
        }
    }
}
