//! `ssh`: see `src/core/policy/RULES.md` ("ssh").

use crate::support::*;

fn ssh_rule(rule: &str) -> String {
    with_tags(&format!(r#""ssh": [{rule}]"#))
}

#[test]
fn check_period_zero_is_accepted_and_means_check_at_every_login() {
    let policy = accepted(&ssh_rule(
        r#"{"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "0s"}"#,
    ));
    let always = accepted(&ssh_rule(
        r#"{"action": "check", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "always"}"#,
    ));
    assert_eq!(policy.ssh, always.ssh);
}

#[test]
fn ssh_session_recording_is_refused_as_not_supported() {
    refused(
        &ssh_rule(
            r#"{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "recorder": ["tag:server"]}"#,
        ),
        "ssh[0]: recorder is not supported: SSH session recording is not implemented",
    );
    refused(
        &ssh_rule(
            r#"{"action": "accept", "src": ["odin@example.com"], "dst": ["tag:server"], "users": ["root"], "enforceRecorder": true}"#,
        ),
        "ssh[0]: enforceRecorder is not supported: SSH session recording is not implemented",
    );
}

fn rule_with(fields: &str) -> String {
    ssh_rule(&format!(
        r#"{{"src": ["odin@example.com"], "dst": ["tag:server"], {fields}}}"#
    ))
}

#[test]
fn action_is_accept_or_check_in_exact_case() {
    for action in ["ACCEPT", "Accept", "deny"] {
        refused(
            &rule_with(&format!(r#""action": "{action}", "users": ["root"]"#)),
            &format!(r#"ssh[0]: "{action}" is not a valid action"#),
        );
    }
    refused(
        &rule_with(r#""users": ["root"]"#),
        "ssh[0]: action must be specified",
    );
}

#[test]
fn users_must_be_specified() {
    for users in [r#""users": []"#, r#""users": null"#, r#""acceptEnv": []"#] {
        refused(
            &rule_with(&format!(r#""action": "accept", {users}"#)),
            "ssh[0]: users must be specified",
        );
    }
}

#[test]
fn an_empty_or_star_user_is_not_valid() {
    refused(
        &rule_with(r#""action": "accept", "users": [""]"#),
        r#"ssh[0]: user "" is not valid"#,
    );
    refused(
        &rule_with(r#""action": "accept", "users": ["*"]"#),
        r#"ssh[0]: user "*" is not valid"#,
    );
}

#[test]
fn users_group_and_tag_words_are_login_names() {
    use headscale::core::policy::checked::SshUser;
    let policy = accepted(&rule_with(
        r#""action": "accept", "users": ["group:foo", "tag:foo", "root"]"#,
    ));
    let users = &policy.ssh.unwrap()[0].users;
    assert_eq!(
        users,
        &vec![
            SshUser::Named("group:foo".into()),
            SshUser::Named("tag:foo".into()),
            SshUser::Root
        ]
    );
}

#[test]
fn words_of_an_ssh_rule_are_trimmed() {
    accepted(&ssh_rule(
        r#"{"action": " accept", "src": ["odin@example.com"], "dst": ["tag:server "], "users": ["\troot"]}"#,
    ));
}

#[test]
fn check_period_of_exactly_168h_is_accepted_and_more_is_refused() {
    accepted(&rule_with(
        r#""action": "check", "users": ["root"], "checkPeriod": "168h""#,
    ));
    refused(
        &rule_with(r#""action": "check", "users": ["root"], "checkPeriod": "168h0m1s""#),
        "ssh[0]: checkPeriod 168h0m1s is above the max (168h)",
    );
    refused(
        &rule_with(r#""action": "check", "users": ["root"], "checkPeriod": "200h""#),
        "ssh[0]: checkPeriod 200h0m0s is above the max (168h)",
    );
}

#[test]
fn check_period_must_be_a_positive_go_duration() {
    refused(
        &rule_with(r#""action": "check", "users": ["root"], "checkPeriod": "-1m""#),
        "ssh[0]: checkPeriod -1m0s must be a positive duration",
    );
    refused(
        &rule_with(r#""action": "check", "users": ["root"], "checkPeriod": "abc""#),
        r#"ssh[0]: time: invalid duration "abc""#,
    );
}

#[test]
fn accept_env_values_cannot_be_empty_and_may_be_globs() {
    refused(
        &rule_with(r#""action": "accept", "users": ["root"], "acceptEnv": [""]"#),
        "ssh[0]: acceptEnv values cannot be empty",
    );
    accepted(&rule_with(
        r#""action": "accept", "users": ["root"], "acceptEnv": ["GIT_*", "CUSTOM_VAR_?", "**"]"#,
    ));
}

#[test]
fn a_host_alias_or_ip_is_an_invalid_dst() {
    let text = with_tags(
        r#""hosts": {"srv": "100.64.0.4", "netblock": "100.64.0.0/24"},
           "ssh": [{"action": "accept", "src": ["odin@example.com"], "dst": ["srv"], "users": ["root"]}]"#,
    );
    refused(&text, r#"ssh[0]: invalid dst "srv""#);
    refused(
        &text.replace(r#"["srv"]"#, r#"["netblock"]"#),
        r#"ssh[0]: invalid dst "netblock""#,
    );
}

#[test]
fn an_empty_dst_is_accepted() {
    accepted(&ssh_rule(
        r#"{"action": "accept", "src": ["odin@example.com"], "dst": [], "users": ["root"]}"#,
    ));
}
