//! From a decoded document to a checked `Policy`: every alias parsed, every tag owned,
//! every rule meaningful. Errors name the entry (`acls[1]: ...`) and use Tailscale's wording
//! where it has one; the previous policy stays in force when this fails.

use super::alias::{self, Alias, AutoGroup, Ports};
use super::document::{self, Document};
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One destination of a rule: what, which ports, which protocols (empty: TCP, UDP, ICMP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub alias: Alias,
    pub ports: Vec<Ports>,
}

/// A network rule: `acls` entries and `grants` with `ip` alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRule {
    pub src: Vec<Alias>,
    pub dst: Vec<Destination>,
    pub protocols: Vec<i32>,
    /// `via` tags of a grant: only these routers carry the traffic.
    pub via: Vec<String>,
}

/// A grant with `app`: capabilities given to the sources on the destinations.
#[derive(Debug, Clone, PartialEq)]
pub struct AppRule {
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub caps: BTreeMap<String, Vec<Value>>,
    /// `via` tags of the grant: the capabilities only steer routes (see `route_access.rs`).
    pub via: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshAction {
    Accept,
    Check,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshUser {
    Root,
    /// `autogroup:nonroot`: any user but root.
    NonRoot,
    /// `localpart:*@domain`: the part before the @ of the source user's e-mail.
    Localpart(String),
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshRule {
    pub action: SshAction,
    pub src: Vec<Alias>,
    pub dst: Vec<Alias>,
    pub users: Vec<SshUser>,
    /// For `check`: how long a check lasts.
    pub check_period: Option<Duration>,
    pub accept_env: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeAttrRule {
    pub target: Vec<Alias>,
    pub attr: Vec<String>,
    pub app: BTreeMap<String, Vec<Value>>,
    /// Where new nodes of the target get their IPv4 address (`core/command/register.rs`);
    /// existing nodes keep theirs, as on Tailscale.
    pub ip_pool: Vec<Ipv4Net>,
}

/// A checked policy, ready to compile against a topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub groups: BTreeMap<String, Vec<String>>,
    pub hosts: BTreeMap<String, IpNet>,
    pub tag_owners: BTreeMap<String, Vec<Alias>>,
    /// Neither `acls` nor `grants`: everything is allowed.
    pub allow_all: bool,
    pub rules: Vec<NetRule>,
    pub apps: Vec<AppRule>,
    pub ssh: Option<Vec<SshRule>>,
    pub node_attrs: Vec<NodeAttrRule>,
    pub auto_routes: Vec<(IpNet, Vec<Alias>)>,
    pub auto_exit: Vec<Alias>,
    pub tests: Vec<document::AclTest>,
    pub ssh_tests: Vec<document::SshTest>,
    pub randomize_client_port: bool,
    /// `disableIPv4`: every node IPv6-only on the wire (as if each had `disable-ipv4`).
    pub disable_ipv4: bool,
}

/// Tailscale's own capabilities that a policy may grant (others in its domain are refused).
const GRANTABLE_TAILSCALE_CAPS: [&str; 5] = [
    "tailscale.com/cap/drive",
    "tailscale.com/cap/kubernetes",
    "tailscale.com/cap/relay",
    "tailscale.com/cap/tsidp",
    "tailscale.com/cap/webui",
];

/// The longest `checkPeriod` Tailscale allows.
const MAX_CHECK_PERIOD: Duration = Duration::from_secs(168 * 3600);

impl Policy {
    /// Parses and checks HuJSON policy text (without running its `tests`).
    pub fn parse(text: &str) -> Result<Policy, String> {
        let parse = || {
            let value = super::hujson::parse(text)?;
            check(document::decode(value)?)
        };
        parse().map_err(super::one_line)
    }

    /// The policy in force when none is set: everyone may reach everything.
    pub fn allow_all() -> Policy {
        Policy {
            groups: BTreeMap::new(),
            hosts: BTreeMap::new(),
            tag_owners: BTreeMap::new(),
            allow_all: true,
            rules: Vec::new(),
            apps: Vec::new(),
            ssh: None,
            node_attrs: Vec::new(),
            auto_routes: Vec::new(),
            auto_exit: Vec::new(),
            tests: Vec::new(),
            ssh_tests: Vec::new(),
            randomize_client_port: false,
            disable_ipv4: false,
        }
    }
}

/// Why each field of Tailscale's schema we do not implement is refused (README "Policy").
const POSTURE: &str = "device posture needs device attributes, which this server does not collect";
const NOT_SUPPORTED: [(&str, &str); 5] = [
    (
        "derpMap",
        "the DERP map comes from the server's configuration (derp.*)",
    ),
    (
        "oneCGNATRoute",
        "clients are not told how to route the CGNAT range; they use their default",
    ),
    (
        "ipsets",
        "IP sets are not implemented; name the addresses in hosts instead",
    ),
    ("postures", POSTURE),
    ("attrConfig", "custom device attributes are not implemented"),
];

/// Refuses, by name and with why, the fields of Tailscale's schema that we do not implement.
fn refuse_unsupported(doc: &Document) -> Result<(), String> {
    let unsupported = |field: &str, why: &str| format!("{field} is not supported: {why}");
    let top = [
        &doc.derp_map,
        &doc.one_cgnat_route,
        &doc.ipsets,
        &doc.postures,
        &doc.attr_config,
    ];
    for (present, (field, why)) in top.iter().zip(NOT_SUPPORTED) {
        if present.is_present() {
            return Err(unsupported(field, why));
        }
    }
    if doc.default_src_posture.is_present() {
        return Err(unsupported("defaultSrcPosture", POSTURE));
    }
    for (i, acl) in doc.acls.iter().flatten().enumerate() {
        if acl.src_posture.is_present() {
            return Err(format!("acls[{i}]: {}", unsupported("srcPosture", POSTURE)));
        }
    }
    for (i, grant) in doc.grants.iter().flatten().enumerate() {
        if grant.src_posture.is_present() {
            return Err(format!(
                "grants[{i}]: {}",
                unsupported("srcPosture", POSTURE)
            ));
        }
    }
    for (i, rule) in doc.ssh.iter().flatten().enumerate() {
        let recording = "SSH session recording is not implemented";
        if rule.recorder.is_present() {
            return Err(format!("ssh[{i}]: {}", unsupported("recorder", recording)));
        }
        if rule.enforce_recorder.is_present() {
            return Err(format!(
                "ssh[{i}]: {}",
                unsupported("enforceRecorder", recording)
            ));
        }
    }
    for (i, test) in doc.tests.iter().enumerate() {
        if test.src_posture_attrs.is_present() {
            return Err(format!(
                "tests[{i}]: {}",
                unsupported("srcPostureAttrs", POSTURE)
            ));
        }
    }
    if doc.auto_approvers.services.is_present() {
        return Err(format!(
            "autoApprovers: {}",
            unsupported("services", "Tailscale Services are not implemented")
        ));
    }
    Ok(())
}

fn check(doc: Document) -> Result<Policy, String> {
    refuse_unsupported(&doc)?;
    let mut hosts = BTreeMap::new();
    for (name, value) in &doc.hosts {
        let prefix = alias::parse_prefix(value)
            .ok_or_else(|| format!("hosts[{name:?}]: {value:?} is not an IP or CIDR"))?;
        hosts.insert(name.clone(), prefix);
    }
    for (group, members) in &doc.groups {
        if !group.starts_with("group:") {
            return Err(format!(
                "groups[{group:?}]: group names must start with \"group:\""
            ));
        }
        for member in members {
            if member.starts_with("group:") {
                return Err(format!(
                    "groups[{group:?}]: {member:?}: group members cannot be recursive"
                ));
            }
            if member.starts_with("tag:") || member.starts_with("autogroup:") {
                return Err(format!(
                    "groups[{group:?}]: {member:?}: group members must be users"
                ));
            }
        }
    }
    let mut tag_owners = BTreeMap::new();
    for (tag, owners) in &doc.tag_owners {
        check_tag_name(tag).map_err(|e| format!("tagOwners[{tag:?}]: {e}"))?;
        let mut parsed = Vec::new();
        for owner in owners {
            let owner_alias =
                alias::parse(owner, &hosts).map_err(|e| format!("tagOwners[{tag:?}]: {e}"))?;
            match &owner_alias {
                Alias::User(_)
                | Alias::Tag(_)
                | Alias::Auto(AutoGroup::Member | AutoGroup::Role(_)) => {}
                Alias::Group(g) if doc.groups.contains_key(g) => {}
                Alias::Group(g) => {
                    return Err(format!("tagOwners[{tag:?}]: group {g:?} is not defined"))
                }
                _ => {
                    return Err(format!(
                    "tagOwners[{tag:?}]: {owner:?} cannot own a tag (users, groups and tags can)"
                ))
                }
            }
            parsed.push(owner_alias);
        }
        tag_owners.insert(tag.clone(), parsed);
    }
    for owners in tag_owners.values() {
        for owner in owners {
            if let Alias::Tag(t) = owner {
                if !tag_owners.contains_key(t) {
                    return Err(format!("tag not found: {t:?}"));
                }
            }
        }
    }
    let ctx = Context {
        hosts: &hosts,
        groups: &doc.groups,
        tags: &tag_owners,
    };

    let mut rules = Vec::new();
    let mut apps = Vec::new();
    for (i, acl) in doc.acls.iter().flatten().enumerate() {
        rules.push(ctx.acl(acl).map_err(|e| format!("acls[{i}]: {e}"))?);
    }
    for (i, grant) in doc.grants.iter().flatten().enumerate() {
        ctx.grant(grant, &mut rules, &mut apps)
            .map_err(|e| format!("grants[{i}]: {e}"))?;
    }
    let ssh = match &doc.ssh {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for (i, rule) in list.iter().enumerate() {
                out.push(ctx.ssh(rule).map_err(|e| format!("ssh[{i}]: {e}"))?);
            }
            Some(out)
        }
    };
    let mut node_attrs = Vec::new();
    for (i, attr) in doc.node_attrs.iter().enumerate() {
        let target = attr
            .target
            .iter()
            .map(|t| ctx.node_attr_target(t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("nodeAttrs[{i}]: {e}"))?;
        // An entry with nothing to give is accepted and does nothing, as on Tailscale.
        let ip_pool = attr
            .ip_pool
            .iter()
            .map(|pool| ip_pool(pool))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("nodeAttrs[{i}]: {e}"))?;
        node_attrs.push(NodeAttrRule {
            target,
            attr: attr.attr.clone(),
            app: attr.app.clone(),
            ip_pool,
        });
    }
    let mut auto_routes = Vec::new();
    for (route, approvers) in &doc.auto_approvers.routes {
        let prefix = route
            .parse::<IpNet>()
            .map_err(|_| format!("autoApprovers.routes: {route:?} is not a CIDR"))?
            .trunc();
        let approvers = approvers
            .iter()
            .map(|a| ctx.alias(a))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("autoApprovers.routes[{route:?}]: {e}"))?;
        auto_routes.push((prefix, approvers));
    }
    let auto_exit = doc
        .auto_approvers
        .exit_node
        .iter()
        .map(|a| ctx.alias(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("autoApprovers.exitNode: {e}"))?;
    // Checked when the policy is parsed, before any test runs, with Tailscale's wording.
    for (i, test) in doc.ssh_tests.iter().enumerate() {
        for dst in &test.dst {
            let is_prefix = dst.contains('/') && alias::parse_prefix(dst).is_some();
            if dst == "autogroup:internet" || is_prefix {
                return Err(format!(
                    "sshTests[{i}]: SSH tests dst contains disallowed element {dst:?}"
                ));
            }
            // `tag:server:22` is a tag called `server:22`: unknown.
            if dst.starts_with("tag:") && !tag_owners.contains_key(dst) {
                return Err(format!(
                    "sshTests[{i}]: SSH tests dst contains unknown tag {dst:?}"
                ));
            }
        }
    }
    Ok(Policy {
        groups: doc.groups.clone(),
        hosts,
        tag_owners,
        allow_all: doc.acls.is_none() && doc.grants.is_none(),
        rules,
        apps,
        ssh,
        node_attrs,
        auto_routes,
        auto_exit,
        tests: doc.tests,
        ssh_tests: doc.ssh_tests,
        randomize_client_port: doc.randomize_client_port,
        disable_ipv4: doc.disable_ipv4,
    })
}

/// Addresses Tailscale keeps for itself inside the CGNAT range: Quad100 (the client's DNS
/// and services address) and ChromeOS's VM range.
const RESERVED_V4: [&str; 2] = ["100.100.100.100/32", "100.115.92.0/23"];

/// An `ipPool` range: an IPv4 CIDR inside the CGNAT range `100.64.0.0/10`, clear of the
/// reserved addresses (Tailscale's wording for those).
fn ip_pool(text: &str) -> Result<Ipv4Net, String> {
    let pool = match text.trim().parse::<IpNet>() {
        Ok(IpNet::V4(pool)) => pool.trunc(),
        Ok(IpNet::V6(_)) => return Err(format!("IPPool({text}): pools are IPv4 ranges")),
        Err(_) => return Err(format!("IPPool({text}): not a CIDR")),
    };
    let cgnat: Ipv4Net = "100.64.0.0/10".parse().expect("constant");
    if !cgnat.contains(&pool) {
        return Err(format!(
            "IPPool({pool}): network outside the CGNAT range {cgnat}"
        ));
    }
    for reserved in RESERVED_V4 {
        let reserved: Ipv4Net = reserved.parse().expect("constant");
        if pool.contains(&reserved.network()) || reserved.contains(&pool.network()) {
            return Err(format!("IPPool({pool}): network within reserved range"));
        }
    }
    Ok(pool)
}

fn check_tag_name(tag: &str) -> Result<(), String> {
    let Some(name) = tag.strip_prefix("tag:") else {
        return Err("tags must start with \"tag:\"".into());
    };
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err("tag names must start with a letter, after 'tag:'".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err("tag names can only contain letters, numbers, dashes and underscores".into());
    }
    Ok(())
}

struct Context<'a> {
    hosts: &'a BTreeMap<String, IpNet>,
    groups: &'a BTreeMap<String, Vec<String>>,
    tags: &'a BTreeMap<String, Vec<Alias>>,
}

impl Context<'_> {
    /// Parses an alias and checks that what it names is defined.
    fn alias(&self, text: &str) -> Result<Alias, String> {
        let parsed = alias::parse(text, self.hosts)?;
        match &parsed {
            Alias::Tag(tag) if !self.tags.contains_key(tag) => {
                Err(format!("tag not found: {tag:?}"))
            }
            Alias::Group(group) if !self.groups.contains_key(group) => {
                Err(format!("group not found: {group:?}"))
            }
            _ => Ok(parsed),
        }
    }

    /// A `nodeAttrs` target: something that is nodes. `autogroup:self` (relative to a
    /// source there is none of), `autogroup:internet`, `autogroup:danger-all` (addresses
    /// outside the tailnet) and `autogroup:nonroot` (an SSH login) are not; Tailscale's
    /// control plane fails on `autogroup:self` with an internal error.
    fn node_attr_target(&self, text: &str) -> Result<Alias, String> {
        let parsed = self.alias(text)?;
        match parsed {
            Alias::Auto(
                AutoGroup::SelfNodes
                | AutoGroup::Internet
                | AutoGroup::DangerAll
                | AutoGroup::NonRoot,
            ) => Err(format!("{text} cannot be a nodeAttrs target")),
            _ => Ok(parsed),
        }
    }

    fn sources(&self, list: &[String]) -> Result<Vec<Alias>, String> {
        let mut out = Vec::new();
        for text in list {
            let parsed = self.alias(text).map_err(|e| format!("src={e}"))?;
            match parsed {
                Alias::Auto(AutoGroup::SelfNodes) => {
                    return Err("\"autogroup:self\" not valid on the src side of a rule".into())
                }
                Alias::Auto(AutoGroup::Internet) => {
                    return Err("\"autogroup:internet\" not valid on the src side of a rule".into())
                }
                Alias::Auto(AutoGroup::NonRoot) => {
                    return Err("\"autogroup:nonroot\" is only valid in SSH users".into())
                }
                _ => out.push(parsed),
            }
        }
        Ok(out)
    }

    /// A destination alias (no ports), refused where Tailscale refuses it.
    fn destination(&self, text: &str) -> Result<Alias, String> {
        let parsed = self.alias(text).map_err(|e| format!("dst={text:?}: {e}"))?;
        match &parsed {
            Alias::Prefix(p) | Alias::Host(_, p) if p.prefix_len() == 0 => Err(format!(
                "dst {:?}: to allow all IP addresses, use \"*\" or \"autogroup:internet\"",
                p.to_string()
            )),
            Alias::Auto(AutoGroup::DangerAll) => {
                Err("cannot use autogroup:danger-all as a dst".into())
            }
            Alias::Auto(AutoGroup::NonRoot) => {
                Err("\"autogroup:nonroot\" is only valid in SSH users".into())
            }
            Alias::Auto(AutoGroup::Shared) => {
                Err("\"autogroup:shared\" is only valid on the src side of a rule".into())
            }
            _ => Ok(parsed),
        }
    }

    /// `autogroup:self` needs sources that are users (directly, by group or as members).
    fn check_self(&self, src: &[Alias], dst: &[Alias]) -> Result<(), String> {
        if !dst.contains(&Alias::Auto(AutoGroup::SelfNodes)) {
            return Ok(());
        }
        let user_like = |a: &Alias| {
            matches!(
                a,
                Alias::Wildcard | Alias::User(_) | Alias::Group(_) | Alias::Auto(AutoGroup::Member)
            )
        };
        if src.iter().all(user_like) {
            Ok(())
        } else {
            Err(
                "autogroup:self can only be used with users, groups, or supported autogroups"
                    .into(),
            )
        }
    }

    fn acl(&self, acl: &document::Acl) -> Result<NetRule, String> {
        match acl.action.as_str() {
            "accept" => {}
            "" => return Err("action must be specified".into()),
            other => return Err(format!("action={other:?} is not supported")),
        }
        let src = self.sources(&acl.src)?;
        let mut dst = Vec::new();
        for text in &acl.dst {
            let (alias_text, ports) = alias::split_destination(text)?;
            let ports = alias::parse_ports(ports).map_err(|e| format!("dst={text:?}: {e}"))?;
            let alias = self.destination(alias_text)?;
            dst.push(Destination { alias, ports });
        }
        let aliases: Vec<Alias> = dst.iter().map(|d| d.alias.clone()).collect();
        self.check_self(&src, &aliases)?;
        let protocols = alias::parse_protocol(&acl.proto)?;
        Ok(NetRule {
            src,
            dst,
            protocols,
            via: Vec::new(),
        })
    }

    fn grant(
        &self,
        grant: &document::Grant,
        rules: &mut Vec<NetRule>,
        apps: &mut Vec<AppRule>,
    ) -> Result<(), String> {
        if grant.ip.is_empty() && grant.app.is_empty() {
            return Err("ip and app can not both be empty".into());
        }
        let src = self.sources(&grant.src)?;
        let dst = grant
            .dst
            .iter()
            .map(|d| self.destination(d))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_self(&src, &dst)?;
        // Unlike `acls`, grants do not accept `*` as the source of `autogroup:self`.
        if dst.contains(&Alias::Auto(AutoGroup::SelfNodes)) && src.contains(&Alias::Wildcard) {
            return Err(
                "autogroup:self can only be used with users, groups, or supported autogroups"
                    .into(),
            );
        }
        let mut via = Vec::new();
        for v in &grant.via {
            if !v.starts_with("tag:") {
                return Err("via can only be a tag".into());
            }
            if !self.tags.contains_key(v) {
                return Err(format!("tag {v:?} not found"));
            }
            via.push(v.clone());
        }
        for spec in &grant.ip {
            let (protocols, ports) = parse_ip_spec(spec)?;
            rules.push(NetRule {
                src: src.clone(),
                dst: dst
                    .iter()
                    .map(|alias| Destination {
                        alias: alias.clone(),
                        ports: ports.clone(),
                    })
                    .collect(),
                protocols,
                via: via.clone(),
            });
        }
        if !grant.app.is_empty() {
            for cap in grant.app.keys() {
                let Some(domain) = capability_domain(cap) else {
                    return Err("capability name must have the form {domain}/{path}".into());
                };
                let ours = domain == "tailscale.com" || domain.ends_with(".tailscale.com");
                if ours && !GRANTABLE_TAILSCALE_CAPS.contains(&cap.as_str()) {
                    return Err("capability name must not be in the tailscale.com domain".into());
                }
            }
            if dst.contains(&Alias::Auto(AutoGroup::Internet)) {
                return Err("cannot use app grants with autogroup:internet".into());
            }
            apps.push(AppRule {
                src,
                dst,
                caps: grant.app.clone(),
                via,
            });
        }
        Ok(())
    }

    fn ssh(&self, rule: &document::Ssh) -> Result<SshRule, String> {
        // Tailscale trims the words of SSH rules (" accept", "tag:server ", "\troot").
        let trimmed = |list: &[String]| -> Vec<String> {
            list.iter().map(|s| s.trim().to_string()).collect()
        };
        let action = match rule.action.trim() {
            "accept" => SshAction::Accept,
            "check" => SshAction::Check,
            "" => return Err("action must be specified".into()),
            other => return Err(format!("{other:?} is not a valid action")),
        };
        let src = self.sources(&trimmed(&rule.src))?;
        let mut dst = Vec::new();
        for text in trimmed(&rule.dst) {
            let alias = self.destination(&text)?;
            if matches!(alias, Alias::Host(..) | Alias::Prefix(_)) {
                return Err(format!("invalid dst {text:?}"));
            }
            dst.push(alias);
        }
        let rule_users = rule.users.as_deref().unwrap_or_default();
        if rule_users.is_empty() {
            return Err("users must be specified".into());
        }
        let mut users = Vec::new();
        for user in trimmed(rule_users) {
            users.push(match user.as_str() {
                "root" => SshUser::Root,
                "autogroup:nonroot" => SshUser::NonRoot,
                "" | "*" => return Err(format!("user {user:?} is not valid")),
                other => match other.strip_prefix("localpart:*@") {
                    Some(domain) if !domain.is_empty() => SshUser::Localpart(domain.to_string()),
                    _ => SshUser::Named(other.to_string()),
                },
            });
        }
        let check_period = match (&rule.check_period, action) {
            (Some(text), SshAction::Check) if text.trim() == "always" => Some(Duration::ZERO),
            (Some(text), SshAction::Check) => {
                // `0s` is accepted, as on Tailscale, and means what `always` does: check
                // at every login.
                let period = parse_go_duration(text)?;
                if period > MAX_CHECK_PERIOD {
                    return Err(format!(
                        "checkPeriod {} is above the max (168h)",
                        format_go_duration(period)
                    ));
                }
                Some(period)
            }
            (None, SshAction::Check) => Some(Duration::from_secs(12 * 3600)),
            _ => None,
        };
        let accept_env = rule.accept_env.clone().unwrap_or_default();
        if accept_env.iter().any(String::is_empty) {
            return Err("acceptEnv values cannot be empty".into());
        }
        Ok(SshRule {
            action,
            src,
            dst,
            users,
            check_period,
            accept_env,
        })
    }
}

/// The domain of a capability name `{domain}/{path}`: a host name (letters, digits, `-`,
/// `.`), a `/`, and a non-empty path; `None` when the name has another form (a scheme such
/// as `https://`, no path).
fn capability_domain(name: &str) -> Option<&str> {
    let (domain, path) = name.split_once('/')?;
    let host_name = !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    (host_name && !path.is_empty()).then_some(domain)
}

/// A grant's `ip` entry: `*`, `22`, `80-90`, `tcp:22`, `udp:*`, `icmp:*`.
fn parse_ip_spec(spec: &str) -> Result<(Vec<i32>, Vec<Ports>), String> {
    if spec == "*" {
        return Ok((Vec::new(), vec![Ports::ALL]));
    }
    match spec.split_once(':') {
        Some((proto, ports)) => {
            let protocols = alias::parse_protocol(proto)?;
            Ok((protocols, alias::parse_ports(ports)?))
        }
        None => Ok((Vec::new(), alias::parse_ports(spec)?)),
    }
}

/// Go's `time.ParseDuration` units (what Tailscale's `checkPeriod` accepts), negatives
/// included so the error can say "must be positive".
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(invalid()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    if negative && total > 0.0 {
        return Err(format!(
            "checkPeriod -{} must be a positive duration",
            format_go_duration(Duration::from_secs_f64(total))
        ));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Go's `Duration.String` for whole seconds (`168h0m1s`, `1m0s`).
fn format_go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_entry() {
        let error =
            Policy::parse(r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#)
                .unwrap_err();
        assert_eq!(error, "acls[0]: action=\"deny\" is not supported");
        let error =
            Policy::parse(r#"{"acls": [{"action": "accept", "srcs": ["*"]}]}"#).unwrap_err();
        assert!(error.starts_with("acls[0].srcs: unknown field"), "{error}");
        let error = Policy::parse(
            r#"{"acls": [{"action": "accept", "src": ["tag:nope"], "dst": ["*:*"]}]}"#,
        )
        .unwrap_err();
        assert_eq!(error, "acls[0]: src=tag not found: \"tag:nope\"");
    }

    #[test]
    fn the_example_policy_is_valid() {
        let policy = Policy::parse(include_str!("../../../examples/policy.hujson")).unwrap();
        assert!(!policy.allow_all && policy.ssh.is_some());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            "time: invalid duration \"abc\""
        );
        assert_eq!(
            parse_go_duration("-1m").unwrap_err(),
            "checkPeriod -1m0s must be a positive duration"
        );
        assert_eq!(
            format_go_duration(Duration::from_secs(168 * 3600 + 1)),
            "168h0m1s"
        );
    }
}
