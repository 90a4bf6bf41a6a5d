//! `autogroups`: see `src/core/policy/RULES.md` ("Autogroups"): the role autogroups and the
//! tailnet's domain of `user:*@<domain>` / `localpart:*@<domain>`.

use crate::support::*;
use headscale::core::policy::auto_approve::{approved, Candidate};
use headscale::core::policy::tag_owners::user_owns_tag;
use headscale::core::policy::Topology;
use headscale::core::roles::Role;

/// [`tailnet`] with roles given: (user id, role).
fn with_roles(roles: &[(u64, Role)]) -> Topology {
    let mut topology = tailnet();
    for (id, role) in roles {
        let user = topology.users.iter_mut().find(|u| u.id == *id).unwrap();
        user.role = *role;
    }
    topology
}

/// The nodes that get a `nodeAttrs` attribute aimed at `target`.
fn targeted(target: &str, topology: Topology) -> Vec<String> {
    let text = with_tags(&format!(
        r#""nodeAttrs": [{{"target": ["{target}"], "attr": ["funnel"]}}]"#
    ));
    let compiled = compile(&text, topology.clone());
    topology
        .nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| !compiled.node_caps(*i).is_empty())
        .map(|(_, n)| n.name.clone())
        .collect()
}

#[test]
fn role_autogroups_parse() {
    for group in [
        "autogroup:owner",
        "autogroup:admin",
        "autogroup:network-admin",
        "autogroup:it-admin",
        "autogroup:billing-admin",
        "autogroup:auditor",
    ] {
        accepted(&with_tags(&format!(
            r#""acls": [{{"action": "accept", "src": ["{group}"], "dst": ["{group}:*"]}}],
               "nodeAttrs": [{{"target": ["{group}"], "attr": ["funnel"]}}]"#
        )));
    }
    // Spelled exactly: the role names are not case-insensitive here.
    refused(
        &with_tags(r#""acls": [{"action": "accept", "src": ["autogroup:Admin"], "dst": ["*:*"]}]"#),
        "unknown autogroup \"autogroup:Admin\"",
    );
}

#[test]
fn autogroup_admin_is_the_untagged_nodes_of_admins_and_the_owner() {
    // Capture nodeattrs-target-a10: the Owner's node has `is-admin` too and is targeted.
    let topology = with_roles(&[(1, Role::Owner), (2, Role::Admin)]);
    assert_eq!(
        targeted("autogroup:admin", topology),
        ["odin-laptop", "thor-laptop"]
    );
}

#[test]
fn autogroup_owner_is_the_owners_untagged_nodes() {
    // Capture nodeattrs-target-a11: tagged nodes never match, whoever tagged them.
    let topology = with_roles(&[(1, Role::Owner), (2, Role::Admin)]);
    assert_eq!(targeted("autogroup:owner", topology), ["odin-laptop"]);
}

#[test]
fn each_role_autogroup_is_its_roles_users_only() {
    let topology = with_roles(&[
        (1, Role::NetworkAdmin),
        (2, Role::ItAdmin),
        (3, Role::Auditor),
    ]);
    assert_eq!(
        targeted("autogroup:network-admin", topology.clone()),
        ["odin-laptop"]
    );
    assert_eq!(
        targeted("autogroup:it-admin", topology.clone()),
        ["thor-laptop"]
    );
    assert_eq!(
        targeted("autogroup:auditor", topology.clone()),
        ["freya-phone"]
    );
    assert!(targeted("autogroup:billing-admin", topology.clone()).is_empty());
    assert!(targeted("autogroup:admin", topology).is_empty());
}

#[test]
fn a_tailnet_without_roles_has_nobody_in_a_role_autogroup() {
    assert!(targeted("autogroup:admin", tailnet()).is_empty());
    assert!(targeted("autogroup:owner", tailnet()).is_empty());
}

#[test]
fn role_autogroups_work_as_sources_and_destinations() {
    let topology = with_roles(&[(2, Role::Admin)]);
    let compiled = compile(
        &with_tags(
            r#""acls": [{"action": "accept", "src": ["autogroup:admin"], "dst": ["tag:server:22"]}]"#,
        ),
        topology.clone(),
    );
    let server = index(&topology, "server");
    let sources: Vec<String> = compiled
        .filter(server)
        .iter()
        .flat_map(|r| r.src_ips.clone())
        .collect();
    assert_eq!(sources, ["100.64.0.2", "fd7a:115c:a1e0::2"]);
}

#[test]
fn autogroup_shared_resolves_to_nobody() {
    // No node sharing here: accepted as a source, it names no one.
    let compiled = compile(
        &with_tags(
            r#""acls": [{"action": "accept", "src": ["autogroup:shared"], "dst": ["*:*"]}]"#,
        ),
        tailnet(),
    );
    for i in 0..tailnet().nodes.len() {
        assert!(compiled.filter(i).is_empty(), "node {i} has a filter");
    }
}

#[test]
fn autogroup_shared_is_only_a_source() {
    refused(
        &with_tags(
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:shared:*"]}]"#,
        ),
        "\"autogroup:shared\" is only valid on the src side of a rule",
    );
}

#[test]
fn role_autogroups_may_own_tags() {
    let policy = accepted(
        r#"{"tagOwners": {"tag:server": ["autogroup:admin"], "tag:router": ["autogroup:it-admin"]}}"#,
    );
    let topology = with_roles(&[(1, Role::Owner), (2, Role::Admin), (3, Role::ItAdmin)]);
    assert!(user_owns_tag(&policy, &topology, 1, "tag:server"));
    assert!(user_owns_tag(&policy, &topology, 2, "tag:server"));
    assert!(!user_owns_tag(&policy, &topology, 3, "tag:server"));
    assert!(user_owns_tag(&policy, &topology, 3, "tag:router"));
    assert!(!user_owns_tag(&policy, &topology, 2, "tag:router"));
}

#[test]
fn role_autogroups_may_approve_routes_of_their_untagged_nodes() {
    let policy = accepted(&with_tags(
        r#""autoApprovers": {"routes": {"10.0.0.0/8": ["autogroup:network-admin"]}}"#,
    ));
    let topology = with_roles(&[(1, Role::NetworkAdmin)]);
    let route = vec!["10.1.0.0/16".parse().unwrap()];
    let node = |user: Option<u64>, tags: &'static [String]| Candidate {
        user,
        tags,
        ips: Vec::new(),
    };
    assert_eq!(
        approved(&policy, &topology, &node(Some(1), &[]), &route),
        route
    );
    assert!(approved(&policy, &topology, &node(Some(2), &[]), &route).is_empty());
}

#[test]
fn policy_tests_see_role_autogroups() {
    let text = with_tags(
        r#""acls": [{"action": "accept", "src": ["autogroup:admin"], "dst": ["tag:server:22"]}],
           "tests": [{"src": "thor@example.org", "accept": ["tag:server:22"]},
                     {"src": "freya@example.com", "deny": ["tag:server:22"]}]"#,
    );
    let policy = accepted(&text);
    let run = |topology| headscale::core::policy::policy_tests::run(&policy, &topology);
    run(with_roles(&[(2, Role::Admin)])).unwrap();
    assert!(run(tailnet()).unwrap_err().starts_with("test(s) failed"));
}

// The tailnet's domain, for `user:*@<domain>` and `localpart:*@<domain>` (§8).

fn domain_check(text: &str, topology: Topology) -> Result<(), String> {
    headscale::core::policy::policy_tests::run(&accepted(text), &topology)
}

#[test]
fn user_domain_must_be_the_owners_domain_not_any_users() {
    // Captures ssh-b4 / ssh-d1: thor@example.org is a user, yet example.org is refused.
    let owned = with_roles(&[(1, Role::Owner)]);
    let ssh_src = with_tags(
        r#""ssh": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["tag:server"], "users": ["root"]}]"#,
    );
    assert_eq!(
        domain_check(&ssh_src, owned.clone()).unwrap_err(),
        "[ssh] example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
    );
    let localpart = with_tags(
        r#""ssh": [{"action": "accept", "src": ["autogroup:member"], "dst": ["tag:server"], "users": ["localpart:*@example.org"]}]"#,
    );
    assert_eq!(
        domain_check(&localpart, owned.clone()).unwrap_err(),
        "example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
    );
    let acl = with_tags(
        r#""acls": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["*:*"]}]"#,
    );
    assert_eq!(
        domain_check(&acl, owned.clone()).unwrap_err(),
        "example.org is not associated with this Tailnet and cannot be used in user:*@<domain> expressions"
    );
    let owners = with_tags(
        r#""ssh": [{"action": "accept", "src": ["user:*@example.com"], "dst": ["tag:server"], "users": ["localpart:*@example.com"]}]"#,
    );
    domain_check(&owners, owned).unwrap();
}

#[test]
fn user_domain_follows_the_ownership() {
    let text = with_tags(
        r#""acls": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["*:*"]}]"#,
    );
    domain_check(&text, with_roles(&[(2, Role::Owner)])).unwrap();
    assert!(domain_check(&text, with_roles(&[(3, Role::Owner)])).is_err());
}

#[test]
fn without_an_owner_any_users_domain_is_the_tailnets() {
    // Our rule: a tailnet nobody owns yet (every user a Member) has no single domain.
    let text = with_tags(
        r#""acls": [{"action": "accept", "src": ["user:*@example.org"], "dst": ["*:*"]}]"#,
    );
    domain_check(&text, tailnet()).unwrap();
    let unknown = with_tags(
        r#""acls": [{"action": "accept", "src": ["user:*@example.net"], "dst": ["*:*"]}]"#,
    );
    assert!(domain_check(&unknown, tailnet())
        .unwrap_err()
        .starts_with("example.net is not associated"));
}
