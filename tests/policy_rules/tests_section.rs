//! `tests`: see `src/core/policy/RULES.md` ("tests").

use crate::support::*;

/// Everyone may reach everything: only the test itself can fail.
fn allow_all_with_test(test: &str) -> String {
    with_tags(&format!(
        r#""acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}], "tests": [{test}]"#
    ))
}

#[test]
fn an_autogroup_cannot_be_a_test_source_and_is_quoted_as_written() {
    tests_fail(
        &allow_all_with_test(r#"{"src": "autogroup:member", "accept": ["tag:server:22"]}"#),
        r#"test(s) failed: tests[0]: "autogroup:member" cannot be a test source"#,
    );
    tests_fail(
        &allow_all_with_test(r#"{"src": "100.64.0.0/24", "accept": ["tag:server:22"]}"#),
        r#"test(s) failed: tests[0]: "100.64.0.0/24" cannot be a test source"#,
    );
}

#[test]
fn a_test_destination_that_is_a_prefix_is_refused_even_at_full_length() {
    for dst in [
        "100.64.0.4/32:22",
        "[fd7a:115c:a1e0::4/128]:22",
        "100.64.0.0/24:22",
    ] {
        let error = tests_fail(
            &allow_all_with_test(&format!(
                r#"{{"src": "odin@example.com", "accept": ["{dst}"]}}"#
            )),
            "is a prefix; a test destination is one address",
        );
        assert!(error.starts_with("test(s) failed: tests[0]: "), "{error}");
    }
}

#[test]
fn a_test_destination_may_be_an_ipv4_address_or_a_bracketed_ipv6_address() {
    tests_pass(&allow_all_with_test(
        r#"{"src": "odin@example.com", "accept": ["100.64.0.4:22", "[fd7a:115c:a1e0::4]:22"]}"#,
    ));
}

#[test]
fn an_autogroup_destination_is_quoted_as_written() {
    tests_fail(
        &allow_all_with_test(
            r#"{"src": "odin@example.com", "accept": ["autogroup:internet:443"]}"#,
        ),
        r#"test(s) failed: tests[0]: "autogroup:internet" is not a valid test destination"#,
    );
}

#[test]
fn legacy_user_and_allow_fields_are_src_and_accept() {
    tests_pass(&allow_all_with_test(
        r#"{"user": "odin@example.com", "allow": ["tag:server:22"]}"#,
    ));
    let policy = accepted(&allow_all_with_test(
        r#"{"user": "odin@example.com", "allow": ["tag:server:22"]}"#,
    ));
    assert_eq!(policy.tests[0].src, "odin@example.com");
    assert_eq!(policy.tests[0].accept, vec!["tag:server:22".to_string()]);
}

#[test]
fn a_test_field_and_its_legacy_name_together_are_refused() {
    refused(
        &allow_all_with_test(
            r#"{"src": "odin@example.com", "user": "odin@example.com", "accept": ["tag:server:22"]}"#,
        ),
        "tests[0]: src and user (its legacy name) cannot both be given",
    );
    refused(
        &allow_all_with_test(
            r#"{"src": "odin@example.com", "accept": ["tag:server:22"], "allow": ["tag:server:22"]}"#,
        ),
        "tests[0]: accept and allow (its legacy name) cannot both be given",
    );
}
