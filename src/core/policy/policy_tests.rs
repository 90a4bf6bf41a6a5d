//! The policy's own `tests` and `sshTests`: assertions about who may reach what, run when a
//! policy is set; a failing or malformed assertion refuses the policy ("test(s) failed",
//! with the first failure named). They are evaluated on identities (a user, a tag, an
//! address), as Tailscale does, not on whichever nodes happen to exist.

use super::alias::{self, Alias, AutoGroup};
use super::checked::{SshAction, SshUser};
use super::{Policy, Topology};
use std::net::IpAddr;

/// Who a test speaks for, or about.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Identity {
    User(u64),
    Tag(String),
    Ip(IpAddr),
}

/// The checks that need the tailnet: `user:*@domain` and `localpart:*@domain` must name the
/// tailnet's domain (`Topology::check_user_domain`); then every test of `policy`.
pub fn run(policy: &Policy, topology: &Topology) -> Result<(), String> {
    run_all(policy, topology).map_err(super::one_line)
}

fn run_all(policy: &Policy, topology: &Topology) -> Result<(), String> {
    // The domains of `user:*@` and `localpart:*@` must be the tailnet's (`topology.rs`).
    for rule in policy.ssh.iter().flatten() {
        for alias in &rule.src {
            if let Alias::UserDomain(domain) = alias {
                topology.check_user_domain(domain, true)?;
            }
        }
        for user in &rule.users {
            if let SshUser::Localpart(domain) = user {
                topology.check_user_domain(domain, false)?;
            }
        }
    }
    for rule in &policy.rules {
        for alias in &rule.src {
            if let Alias::UserDomain(domain) = alias {
                topology.check_user_domain(domain, false)?;
            }
        }
    }
    let eval = Eval { policy, topology };
    for (i, test) in policy.tests.iter().enumerate() {
        eval.acl_test(test)
            .map_err(|e| format!("test(s) failed: tests[{i}]: {e}"))?;
    }
    for (i, test) in policy.ssh_tests.iter().enumerate() {
        eval.ssh_test(test)
            .map_err(|e| format!("test(s) failed: sshTests[{i}]: {e}"))?;
    }
    Ok(())
}

struct Eval<'a> {
    policy: &'a Policy,
    topology: &'a Topology,
}

impl Eval<'_> {
    /// The identities a test's `src` stands for (a group: each member).
    fn sources(&self, text: &str) -> Result<Vec<Identity>, String> {
        if text.is_empty() {
            return Err("src is missing".into());
        }
        let parsed = alias::parse(text, &self.policy.hosts)?;
        let users = |token: &str| -> Vec<Identity> {
            self.topology
                .users_named(token)
                .into_iter()
                .map(Identity::User)
                .collect()
        };
        let out = match parsed {
            Alias::User(token) => users(&token),
            Alias::UserDomain(domain) => self
                .topology
                .users
                .iter()
                .filter(|u| {
                    u.email
                        .rsplit_once('@')
                        .is_some_and(|(_, d)| d.eq_ignore_ascii_case(&domain))
                })
                .map(|u| Identity::User(u.id))
                .collect(),
            Alias::Group(group) => {
                let members = self
                    .policy
                    .groups
                    .get(&group)
                    .ok_or_else(|| format!("group not found: {group:?}"))?;
                members.iter().flat_map(|m| users(m)).collect()
            }
            Alias::Tag(tag) => {
                if !self.policy.tag_owners.contains_key(&tag) {
                    return Err(format!("tag not found: {tag:?}"));
                }
                vec![Identity::Tag(tag)]
            }
            Alias::Prefix(p) | Alias::Host(_, p) if p.prefix_len() == p.max_prefix_len() => {
                vec![Identity::Ip(p.addr())]
            }
            // Quoted as written: an alias's Rust form must never reach a message.
            _ => return Err(format!("{text:?} cannot be a test source")),
        };
        if out.is_empty() {
            return Err(format!("src {text:?} names no user"));
        }
        Ok(out)
    }

    /// A test destination: one identity (a tag, a user, one address).
    fn target(&self, text: &str) -> Result<Identity, String> {
        let parsed = alias::parse(text, &self.policy.hosts)?;
        match parsed {
            // A prefix names addresses, not one: refused even at full length (`/32`).
            Alias::Prefix(_) if text.contains('/') => Err(format!(
                "{text:?} is a prefix; a test destination is one address"
            )),
            Alias::Tag(tag) if self.policy.tag_owners.contains_key(&tag) => Ok(Identity::Tag(tag)),
            Alias::Tag(tag) => Err(format!("tag not found: {tag:?}")),
            Alias::User(token) => self
                .topology
                .users_named(&token)
                .first()
                .map(|id| Identity::User(*id))
                .ok_or_else(|| format!("unknown user {token:?}")),
            Alias::Prefix(p) | Alias::Host(_, p) if p.prefix_len() == p.max_prefix_len() => {
                Ok(Identity::Ip(p.addr()))
            }
            _ => Err(format!("{text:?} is not a valid test destination")),
        }
    }

    /// The identity behind an address, when it is a node's.
    fn owner_of(&self, ip: IpAddr) -> Option<Identity> {
        let node = self.topology.node_with_ip(ip)?;
        match (node.tags.first(), node.user) {
            (Some(tag), _) => Some(Identity::Tag(tag.clone())),
            (None, Some(user)) => Some(Identity::User(user)),
            _ => None,
        }
    }

    /// Whether `alias` (in a rule) covers `who`.
    fn covers(&self, alias: &Alias, who: &Identity) -> bool {
        let direct = match (alias, who) {
            (Alias::Wildcard | Alias::Auto(AutoGroup::DangerAll), _) => true,
            (Alias::User(token), Identity::User(id)) => {
                self.topology.users_named(token).contains(id)
            }
            (Alias::UserDomain(domain), Identity::User(id)) => {
                self.topology.users.iter().any(|u| {
                    u.id == *id
                        && u.email
                            .rsplit_once('@')
                            .is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
                })
            }
            (Alias::Group(group), Identity::User(id)) => self
                .policy
                .groups
                .get(group)
                .into_iter()
                .flatten()
                .any(|m| self.topology.users_named(m).contains(id)),
            (Alias::Tag(tag), Identity::Tag(t)) => tag == t,
            (Alias::Auto(AutoGroup::Member), Identity::User(_)) => true,
            (Alias::Auto(AutoGroup::Tagged), Identity::Tag(_)) => true,
            (Alias::Auto(AutoGroup::Role(role)), Identity::User(id)) => {
                self.topology.user_holds(*id, *role)
            }
            (Alias::Prefix(p) | Alias::Host(_, p), Identity::Ip(ip)) => p.contains(ip),
            _ => false,
        };
        if direct {
            return true;
        }
        match who {
            Identity::Ip(ip) => self.owner_of(*ip).is_some_and(|o| self.covers(alias, &o)),
            Identity::Tag(tag) => self.topology.nodes.iter().any(|n| {
                n.tags.contains(tag)
                    && n.ips().any(|ip| {
                        matches!(alias, Alias::Prefix(p) | Alias::Host(_, p) if p.contains(&ip))
                    })
            }),
            Identity::User(_) => false,
        }
    }

    /// A destination in a rule covers `target` for traffic from `from`.
    fn covers_destination(&self, alias: &Alias, target: &Identity, from: &Identity) -> bool {
        match alias {
            Alias::Auto(AutoGroup::SelfNodes) => {
                let owner = |who: &Identity| match who {
                    Identity::User(id) => Some(*id),
                    Identity::Ip(ip) => match self.owner_of(*ip) {
                        Some(Identity::User(id)) => Some(id),
                        _ => None,
                    },
                    Identity::Tag(_) => None,
                };
                owner(target).is_some() && owner(target) == owner(from)
            }
            Alias::Auto(AutoGroup::Internet) => false,
            other => self.covers(other, target),
        }
    }

    fn allowed(&self, from: &Identity, target: &Identity, port: u16, protocols: &[i32]) -> bool {
        self.policy.allow_all
            || self.policy.rules.iter().any(|rule| {
                let proto_ok = rule.protocols.is_empty()
                    || if protocols.is_empty() {
                        rule.protocols.contains(&6)
                    } else {
                        protocols.iter().all(|p| rule.protocols.contains(p))
                    };
                proto_ok
                    && rule.src.iter().any(|s| self.covers(s, from))
                    && rule.dst.iter().any(|d| {
                        d.ports.iter().any(|p| p.contains(port))
                            && self.covers_destination(&d.alias, target, from)
                    })
            })
    }

    fn acl_test(&self, test: &super::document::AclTest) -> Result<(), String> {
        if test.accept.is_empty() && test.deny.is_empty() {
            return Err("a test needs accept or deny".into());
        }
        let sources = self.sources(&test.src)?;
        let protocols = alias::parse_protocol(&test.proto)?;
        let destination = |text: &str| -> Result<(Identity, u16), String> {
            let (alias_text, port) = alias::split_destination(text)?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{text:?}: a test names one port"))?;
            Ok((self.target(alias_text)?, port))
        };
        for text in &test.accept {
            let (target, port) = destination(text)?;
            for from in &sources {
                if !self.allowed(from, &target, port, &protocols) {
                    return Err(format!("{} cannot reach {text}", test.src));
                }
            }
        }
        for text in &test.deny {
            let (target, port) = destination(text)?;
            for from in &sources {
                if self.allowed(from, &target, port, &protocols) {
                    return Err(format!("{} can reach {text}", test.src));
                }
            }
        }
        Ok(())
    }

    /// Which action, if any, lets `from` log in to `target` as `login`.
    fn ssh_action(&self, from: &Identity, target: &Identity, login: &str) -> Option<SshAction> {
        let rules = self.policy.ssh.as_ref()?;
        let mut found = None;
        for rule in rules {
            let src_ok = rule.src.iter().any(|s| self.covers(s, from));
            let dst_ok = rule
                .dst
                .iter()
                .any(|d| self.covers_destination(d, target, from));
            let user_ok = rule.users.iter().any(|u| match u {
                SshUser::Root => login == "root",
                SshUser::NonRoot => login != "root",
                SshUser::Named(name) => name.trim() == login,
                SshUser::Localpart(domain) => match from {
                    Identity::User(id) => self.topology.users.iter().any(|u| {
                        u.id == *id
                            && u.email.rsplit_once('@').is_some_and(|(local, d)| {
                                local == login && d.eq_ignore_ascii_case(domain)
                            })
                    }),
                    _ => false,
                },
            });
            if src_ok && dst_ok && user_ok {
                match rule.action {
                    SshAction::Accept => return Some(SshAction::Accept),
                    SshAction::Check => found = Some(SshAction::Check),
                }
            }
        }
        found
    }

    fn ssh_test(&self, test: &super::document::SshTest) -> Result<(), String> {
        if test.accept.is_empty() && test.check.is_empty() && test.deny.is_empty() {
            return Err("an SSH test needs accept, check or deny".into());
        }
        let sources = self.sources(&test.src)?;
        for dst in &test.dst {
            let target = self.target(dst)?;
            if let Identity::Ip(ip) = target {
                if ip.is_ipv6() || self.owner_of(ip).is_none() {
                    return Err(format!("{dst:?} is not a node's address"));
                }
            }
            for from in &sources {
                for (logins, want) in [
                    (&test.accept, Some(SshAction::Accept)),
                    (&test.check, Some(SshAction::Check)),
                    (&test.deny, None),
                ] {
                    for login in logins {
                        if login.trim().is_empty() {
                            return Err("an empty user".into());
                        }
                        let got = self.ssh_action(from, &target, login.trim());
                        let ok = match want {
                            None => got.is_none(),
                            Some(_) => got.is_some(),
                        };
                        if !ok {
                            return Err(format!(
                                "{} as {login} to {dst}: expected {}",
                                test.src,
                                if want.is_some() { "allowed" } else { "denied" }
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
