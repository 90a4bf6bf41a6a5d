//! The words a policy uses to name things (`*`, users, `group:`, `tag:`, `autogroup:`,
//! host names, IPs and CIDRs), destination ports and protocols, parsed once with
//! Tailscale's error wording.

use crate::core::roles::Role;
use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Alias {
    /// `*`: every address in the tailnet (sources) or anything (destinations).
    Wildcard,
    /// `name@domain` (matched against e-mail, then name) or `name@` (by name).
    User(String),
    /// `user:*@domain`: every user whose e-mail is at `domain`.
    UserDomain(String),
    Group(String),
    Tag(String),
    /// A name from `hosts`, already resolved.
    Host(String, IpNet),
    Prefix(IpNet),
    Auto(AutoGroup),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AutoGroup {
    /// Nodes owned by users (not tagged).
    Member,
    Tagged,
    /// The source's own user's nodes (destinations only).
    SelfNodes,
    /// Everything outside the tailnet, through exit nodes (destinations only).
    Internet,
    /// Every address, inside the tailnet or not (sources only).
    DangerAll,
    /// SSH users other than root (the `users` list of an SSH rule only).
    NonRoot,
    /// `autogroup:owner`, `autogroup:admin`, ...: the untagged nodes of the users holding the
    /// role (the Owner is also an Admin). Never `Role::Member` (that is `Member`).
    Role(Role),
    /// Users a node was shared with: nobody here (no node sharing), sources only.
    Shared,
}

impl AutoGroup {
    pub fn parse(name: &str) -> Option<AutoGroup> {
        Some(match name {
            "member" => AutoGroup::Member,
            "tagged" => AutoGroup::Tagged,
            "self" => AutoGroup::SelfNodes,
            "internet" => AutoGroup::Internet,
            "danger-all" => AutoGroup::DangerAll,
            "nonroot" => AutoGroup::NonRoot,
            "shared" => AutoGroup::Shared,
            role => match Role::parse(role) {
                Some(role) if role.name() == name => AutoGroup::Role(role),
                _ => return None,
            },
        })
    }

    /// How the policy spells it (`autogroup:network-admin`).
    pub fn name(self) -> String {
        let bare = match self {
            AutoGroup::Member => "member",
            AutoGroup::Tagged => "tagged",
            AutoGroup::SelfNodes => "self",
            AutoGroup::Internet => "internet",
            AutoGroup::DangerAll => "danger-all",
            AutoGroup::NonRoot => "nonroot",
            AutoGroup::Role(role) => role.name(),
            AutoGroup::Shared => "shared",
        };
        format!("autogroup:{bare}")
    }
}

/// Parses one alias. `hosts` resolves bare names.
pub fn parse(text: &str, hosts: &BTreeMap<String, IpNet>) -> Result<Alias, String> {
    if text == "*" {
        return Ok(Alias::Wildcard);
    }
    if let Some(rest) = text.strip_prefix("autogroup:") {
        return AutoGroup::parse(rest)
            .map(Alias::Auto)
            .ok_or_else(|| format!("unknown autogroup {text:?}"));
    }
    if let Some(domain) = text.strip_prefix("user:*@") {
        return Ok(Alias::UserDomain(domain.to_ascii_lowercase()));
    }
    if text.starts_with("group:") {
        return Ok(Alias::Group(text.to_string()));
    }
    if text.starts_with("tag:") {
        return Ok(Alias::Tag(text.to_string()));
    }
    if text.contains('@') {
        return Ok(Alias::User(text.to_string()));
    }
    if let Some(prefix) = parse_prefix(text) {
        return Ok(Alias::Prefix(prefix));
    }
    if let Some(prefix) = hosts.get(text) {
        return Ok(Alias::Host(text.to_string(), *prefix));
    }
    Err(format!("{text:?}: invalid address"))
}

/// An IP (as a single-address prefix) or a CIDR, normalised to its network.
pub fn parse_prefix(text: &str) -> Option<IpNet> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    text.parse::<IpNet>().ok().map(|net| net.trunc())
}

/// An inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ports {
    pub first: u16,
    pub last: u16,
}

impl Ports {
    pub const ALL: Ports = Ports {
        first: 0,
        last: 65535,
    };

    pub fn contains(&self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// `*`, `22`, `80-90`, or a comma-separated list of those.
pub fn parse_ports(text: &str) -> Result<Vec<Ports>, String> {
    if text == "*" {
        return Ok(vec![Ports::ALL]);
    }
    let mut out = Vec::new();
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (part, None),
        };
        let first: u16 = first
            .parse()
            .map_err(|_| format!("port range {part:?}: invalid first integer"))?;
        let last: u16 = match last {
            Some(last) => last
                .parse()
                .map_err(|_| format!("port range {part:?}: invalid last integer"))?,
            None => first,
        };
        if first == 0 {
            return Err(format!(
                "port range {part:?}: first port must be >0, or use '*' for wildcard"
            ));
        }
        if last < first {
            return Err(format!("port range {part:?}: last port is below the first"));
        }
        out.push(Ports { first, last });
    }
    Ok(out)
}

/// Splits `alias:ports` at the last colon (`[v6]:ports` for IPv6 addresses).
pub fn split_destination(text: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((address, ports)) = rest.split_once("]:") {
            return Ok((address, ports));
        }
    }
    text.rsplit_once(':')
        .filter(|(alias, _)| !alias.is_empty())
        .ok_or_else(|| format!("invalid dst {text:?}"))
}

/// IP protocol numbers by name, as Tailscale's `proto` field accepts them.
pub fn parse_protocol(text: &str) -> Result<Vec<i32>, String> {
    let number = match text.to_ascii_lowercase().as_str() {
        "" | "*" => return Ok(Vec::new()),
        "icmp" => 1,
        "igmp" => 2,
        "ipv4" | "ip-in-ip" => 4,
        "tcp" => 6,
        "egp" => 8,
        "igp" => 9,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        other => match other.parse::<u8>() {
            Ok(n) if n > 0 => i32::from(n),
            _ => return Err(format!("unknown protocol {text:?}")),
        },
    };
    Ok(vec![number])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let hosts = BTreeMap::from([("web".to_string(), "10.0.0.1/32".parse().unwrap())]);
        assert_eq!(parse("*", &hosts).unwrap(), Alias::Wildcard);
        assert_eq!(
            parse("odin@example.com", &hosts).unwrap(),
            Alias::User("odin@example.com".into())
        );
        assert!(matches!(parse("web", &hosts).unwrap(), Alias::Host(..)));
        assert_eq!(
            parse("10.1.2.0/24", &hosts).unwrap(),
            Alias::Prefix("10.1.2.0/24".parse().unwrap())
        );
        assert_eq!(
            parse("%bogus%", &hosts).unwrap_err(),
            "\"%bogus%\": invalid address"
        );
        assert!(parse("autogroup:nope", &hosts).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_ports("*").unwrap(), vec![Ports::ALL]);
        assert_eq!(
            parse_ports("22,80-90").unwrap(),
            vec![
                Ports {
                    first: 22,
                    last: 22
                },
                Ports {
                    first: 80,
                    last: 90
                }
            ]
        );
        assert_eq!(
            parse_ports("ssh").unwrap_err(),
            "port range \"ssh\": invalid first integer"
        );
        assert!(parse_ports("0")
            .unwrap_err()
            .contains("first port must be >0"));
        assert_eq!(
            split_destination("tag:server:22").unwrap(),
            ("tag:server", "22")
        );
        assert_eq!(
            split_destination("[fd7a::1]:80").unwrap(),
            ("fd7a::1", "80")
        );
    }
}
