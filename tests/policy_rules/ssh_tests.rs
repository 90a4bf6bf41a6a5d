//! `sshTests`: see `src/core/policy/RULES.md` ("sshTests").

use crate::support::*;

/// odin may SSH as root to tag:server; `test` is the policy's only SSH test.
fn with_ssh_test(test: &str) -> String {
    with_tags(&format!(
        r#""ssh": [{{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"]}}],
           "sshTests": [{test}]"#
    ))
}

#[test]
fn ssh_test_dst_autogroup_internet_is_a_disallowed_element() {
    refused(
        &with_ssh_test(
            r#"{"src": "odin@example.com", "dst": ["autogroup:internet"], "accept": ["root"]}"#,
        ),
        r#"sshTests[0]: SSH tests dst contains disallowed element "autogroup:internet""#,
    );
}

#[test]
fn ssh_test_dst_cidr_is_a_disallowed_element_when_parsed() {
    for cidr in ["100.64.0.0/24", "100.64.0.4/32", "fd7a:115c:a1e0::/48"] {
        refused(
            &with_ssh_test(&format!(
                r#"{{"src": "odin@example.com", "dst": ["{cidr}"], "accept": ["root"]}}"#
            )),
            &format!(r#"sshTests[0]: SSH tests dst contains disallowed element "{cidr}""#),
        );
    }
}

#[test]
fn ssh_test_dst_with_a_port_is_an_unknown_tag_when_parsed() {
    refused(
        &with_ssh_test(
            r#"{"src": "odin@example.com", "dst": ["tag:server:22"], "accept": ["root"]}"#,
        ),
        r#"sshTests[0]: SSH tests dst contains unknown tag "tag:server:22""#,
    );
    refused(
        &with_ssh_test(
            r#"{"src": "odin@example.com", "dst": ["tag:nonexistent"], "accept": ["root"]}"#,
        ),
        r#"sshTests[0]: SSH tests dst contains unknown tag "tag:nonexistent""#,
    );
}

#[test]
fn ssh_test_dst_may_be_a_tag_or_a_nodes_ipv4_address() {
    tests_pass(&with_ssh_test(
        r#"{"src": "odin@example.com", "dst": ["tag:server", "100.64.0.4"], "accept": ["root"]}"#,
    ));
}

#[test]
fn ssh_test_dst_host_alias_naming_a_node_is_accepted() {
    tests_pass(&with_tags(
        r#""hosts": {"srv": "100.64.0.4"},
           "ssh": [{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"]}],
           "sshTests": [{"src": "odin@example.com", "dst": ["srv"], "accept": ["root"]}]"#,
    ));
}

#[test]
fn ssh_test_dst_bare_ipv6_fails() {
    tests_fail(
        &with_ssh_test(
            r#"{"src": "odin@example.com", "dst": ["fd7a:115c:a1e0::4"], "accept": ["root"]}"#,
        ),
        r#"test(s) failed: sshTests[0]: "fd7a:115c:a1e0::4" is not a node's address"#,
    );
}
