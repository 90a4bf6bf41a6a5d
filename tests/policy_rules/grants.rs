//! `grants`: see `src/core/policy/RULES.md` ("grants").

use crate::support::*;

fn app_grant(cap: &str) -> String {
    with_tags(&format!(
        r#""grants": [{{"src": ["*"], "dst": ["tag:server"], "app": {{"{cap}": [{{}}]}}}}]"#
    ))
}

#[test]
fn a_capability_name_must_have_the_form_domain_slash_path() {
    // Checked before the tailscale.com rule: this name is in tailscale.com, yet gets the form error.
    for name in [
        "https://tailscale.com/cap/ingress",
        "example.com",
        "example.com/",
        "/cap/x",
    ] {
        refused(
            &app_grant(name),
            "grants[0]: capability name must have the form {domain}/{path}",
        );
    }
    for name in ["example.com/a/b/c/d/e/f", "my-company.internal/cap/access"] {
        accepted(&app_grant(name));
    }
}

#[test]
fn a_capability_name_must_not_be_in_the_tailscale_com_domain_unless_grantable() {
    for name in [
        "tailscale.com/cap/funnel",
        "tailscale.com/cap/ingress",
        "tailscale.com/cap/relay-target",
    ] {
        refused(
            &app_grant(name),
            "capability name must not be in the tailscale.com domain",
        );
    }
    for name in [
        "tailscale.com/cap/drive",
        "tailscale.com/cap/kubernetes",
        "tailscale.com/cap/relay",
        "tailscale.com/cap/tsidp",
        "tailscale.com/cap/webui",
    ] {
        accepted(&app_grant(name));
    }
}

#[test]
fn a_via_tag_must_be_defined() {
    refused(
        &with_tags(
            r#""grants": [{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:nonexistent"]}]"#,
        ),
        r#"grants[0]: tag "tag:nonexistent" not found"#,
    );
}

#[test]
fn via_can_only_be_a_tag() {
    refused(
        &with_tags(
            r#""grants": [{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["odin@example.com"]}]"#,
        ),
        "grants[0]: via can only be a tag",
    );
}

fn grant(rule: &str) -> String {
    with_tags(&format!(r#""grants": [{rule}]"#))
}

#[test]
fn ip_and_app_can_not_both_be_empty() {
    refused(
        &grant(r#"{"src": ["*"], "dst": ["*"]}"#),
        "grants[0]: ip and app can not both be empty",
    );
}

#[test]
fn an_empty_grants_list_is_accepted_and_allows_nothing() {
    let policy = accepted(&with_tags(r#""grants": []"#));
    assert!(!policy.allow_all && policy.rules.is_empty());
}

#[test]
fn a_bare_protocol_name_in_ip_is_a_port_error() {
    refused(
        &grant(r#"{"src": ["*"], "dst": ["*"], "ip": ["icmp"]}"#),
        r#"grants[0]: port range "icmp": invalid first integer"#,
    );
    accepted(&grant(
        r#"{"src": ["*"], "dst": ["*"], "ip": ["icmp:*", "tcp:22", "80-90", "*"]}"#,
    ));
}

#[test]
fn port_zero_is_refused() {
    refused(
        &grant(r#"{"src": ["*"], "dst": ["*"], "ip": ["0"]}"#),
        r#"grants[0]: port range "0": first port must be >0, or use '*' for wildcard"#,
    );
}

#[test]
fn dst_of_every_address_must_be_written_as_star_or_autogroup_internet() {
    for all in ["0.0.0.0/0", "::/0"] {
        refused(
            &grant(&format!(
                r#"{{"src": ["*"], "dst": ["{all}"], "ip": ["*"]}}"#
            )),
            &format!(
                r#"grants[0]: dst "{all}": to allow all IP addresses, use "*" or "autogroup:internet""#
            ),
        );
    }
}

#[test]
fn autogroup_danger_all_is_not_a_dst_but_is_a_src() {
    refused(
        &grant(r#"{"src": ["*"], "dst": ["autogroup:danger-all"], "ip": ["*"]}"#),
        "grants[0]: cannot use autogroup:danger-all as a dst",
    );
    accepted(&grant(
        r#"{"src": ["autogroup:danger-all"], "dst": ["tag:server"], "ip": ["*"]}"#,
    ));
}

#[test]
fn app_grants_cannot_target_autogroup_internet() {
    refused(
        &grant(
            r#"{"src": ["*"], "dst": ["autogroup:internet"], "app": {"example.com/cap/x": [{}]}}"#,
        ),
        "grants[0]: cannot use app grants with autogroup:internet",
    );
}

#[test]
fn a_grant_dst_may_be_an_ipv6_address() {
    accepted(&grant(
        r#"{"src": ["*"], "dst": ["fd7a:115c:a1e0::4"], "ip": ["*"]}"#,
    ));
}

#[test]
fn app_with_via_is_accepted() {
    accepted(&grant(
        r#"{"src": ["*"], "dst": ["10.33.0.0/16"], "ip": ["*"], "via": ["tag:router"], "app": {"example.com/cap/subnet-access": [{}]}}"#,
    ));
}

#[test]
fn grants_do_not_accept_star_as_the_source_of_autogroup_self() {
    refused(
        &grant(r#"{"src": ["*"], "dst": ["autogroup:self"], "ip": ["*"]}"#),
        "grants[0]: autogroup:self can only be used with users, groups, or supported autogroups",
    );
}
