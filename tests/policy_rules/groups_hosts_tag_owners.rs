//! `groups`, `hosts`, `tagOwners`: see `src/core/policy/RULES.md` ("groups, hosts, tagOwners").

use crate::support::*;

#[test]
fn group_members_cannot_be_recursive() {
    refused(
        r#"{"groups": {"group:a": ["odin@example.com"], "group:b": ["group:a"]}}"#,
        r#"groups["group:b"]: "group:a": group members cannot be recursive"#,
    );
}

#[test]
fn group_names_start_with_group() {
    refused(
        r#"{"groups": {"admins": ["odin@example.com"]}}"#,
        r#"groups["admins"]: group names must start with "group:""#,
    );
}

#[test]
fn group_members_are_users() {
    refused(
        &with_tags(r#""groups": {"group:a": ["tag:server"]}"#),
        r#"groups["group:a"]: "tag:server": group members must be users"#,
    );
}

#[test]
fn an_empty_group_is_accepted() {
    accepted(r#"{"groups": {"group:empty": []}}"#);
}

#[test]
fn a_host_is_an_ip_or_a_cidr() {
    accepted(
        r#"{"hosts": {"one": "100.64.0.1", "net": "10.33.0.0/16", "six": "fd7a:115c:a1e0::1"}}"#,
    );
    refused(
        r#"{"hosts": {"bad": "example.com"}}"#,
        r#"hosts["bad"]: "example.com" is not an IP or CIDR"#,
    );
}

#[test]
fn tag_names_start_with_a_letter() {
    refused(
        r#"{"tagOwners": {"tag:сервер": ["odin@example.com"]}}"#,
        r#"tagOwners["tag:сервер"]: tag names must start with a letter, after 'tag:'"#,
    );
    refused(
        r#"{"tagOwners": {"tag:1st": ["odin@example.com"]}}"#,
        "tag names must start with a letter, after 'tag:'",
    );
}

#[test]
fn tag_names_hold_only_letters_digits_dashes_and_underscores() {
    refused(
        r#"{"tagOwners": {"tag:a.b": ["odin@example.com"]}}"#,
        r#"tagOwners["tag:a.b"]: tag names can only contain letters, numbers, dashes and underscores"#,
    );
}

#[test]
fn a_tag_owner_that_is_a_tag_or_group_must_be_defined() {
    refused(
        r#"{"tagOwners": {"tag:a": ["tag:b"]}}"#,
        r#"tag not found: "tag:b""#,
    );
    refused(
        r#"{"tagOwners": {"tag:a": ["group:nope"]}}"#,
        r#"tagOwners["tag:a"]: group "group:nope" is not defined"#,
    );
    accepted(
        r#"{"groups": {"group:ops": []}, "tagOwners": {"tag:a": ["tag:b", "group:ops"], "tag:b": []}}"#,
    );
}

#[test]
fn a_tag_cannot_be_owned_by_autogroup_tagged() {
    refused(
        r#"{"tagOwners": {"tag:a": ["autogroup:tagged"]}}"#,
        r#"tagOwners["tag:a"]: "autogroup:tagged" cannot own a tag (users, groups and tags can)"#,
    );
}
