//! `acls`: see `src/core/policy/RULES.md` ("acls").

use crate::support::*;

fn acl(rule: &str) -> String {
    with_tags(&format!(r#""acls": [{rule}]"#))
}

#[test]
fn legacy_users_and_ports_fields_are_src_and_dst() {
    let legacy = accepted(&acl(
        r#"{"action": "accept", "users": ["odin@example.com"], "ports": ["tag:server:22"]}"#,
    ));
    let current = accepted(&acl(
        r#"{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server:22"]}"#,
    ));
    assert_eq!(legacy.rules, current.rules);
}

#[test]
fn a_field_and_its_legacy_name_together_are_refused() {
    refused(
        &acl(r#"{"action": "accept", "src": ["*"], "users": ["*"], "dst": ["*:*"]}"#),
        "acls[0]: src and users (its legacy name) cannot both be given",
    );
    refused(
        &acl(r#"{"action": "accept", "src": ["*"], "dst": ["*:*"], "ports": ["*:*"]}"#),
        "acls[0]: dst and ports (its legacy name) cannot both be given",
    );
}

#[test]
fn action_must_be_accept() {
    refused(
        &acl(r#"{"action": "deny", "src": ["*"], "dst": ["*:*"]}"#),
        r#"acls[0]: action="deny" is not supported"#,
    );
}

#[test]
fn an_unknown_tag_in_src_is_refused() {
    refused(
        &acl(r#"{"action": "accept", "src": ["tag:nonexistent"], "dst": ["*:*"]}"#),
        r#"acls[0]: src=tag not found: "tag:nonexistent""#,
    );
}

#[test]
fn an_unknown_tag_in_dst_is_refused() {
    refused(
        &acl(r#"{"action": "accept", "src": ["*"], "dst": ["tag:nonexistent:*"]}"#),
        r#"acls[0]: dst="tag:nonexistent": tag not found: "tag:nonexistent""#,
    );
}

#[test]
fn a_dst_port_must_be_a_number_range_or_star() {
    refused(
        &acl(r#"{"action": "accept", "src": ["*"], "dst": ["tag:server:ssh"]}"#),
        r#"acls[0]: dst="tag:server:ssh": port range "ssh": invalid first integer"#,
    );
    // A dst without a port reads its last word as the port.
    refused(
        &acl(r#"{"action": "accept", "src": ["odin@example.com"], "dst": ["autogroup:self"]}"#),
        r#"acls[0]: dst="autogroup:self": port range "self": invalid first integer"#,
    );
}

#[test]
fn autogroup_self_is_not_valid_as_a_source() {
    refused(
        &acl(r#"{"action": "accept", "src": ["autogroup:self"], "dst": ["*:*"]}"#),
        r#"acls[0]: "autogroup:self" not valid on the src side of a rule"#,
    );
}

#[test]
fn autogroup_self_needs_user_sources() {
    refused(
        &acl(r#"{"action": "accept", "src": ["tag:server"], "dst": ["autogroup:self:*"]}"#),
        "acls[0]: autogroup:self can only be used with users, groups, or supported autogroups",
    );
    for src in ["*", "odin@example.com", "autogroup:member"] {
        accepted(&acl(&format!(
            r#"{{"action": "accept", "src": ["{src}"], "dst": ["autogroup:self:*"]}}"#
        )));
    }
}
