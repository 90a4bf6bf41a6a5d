//! `nodeAttrs`: see `src/core/policy/RULES.md` ("nodeAttrs").

use crate::support::*;

#[test]
fn an_entry_with_no_attr_app_or_ip_pool_is_accepted_and_does_nothing() {
    let policy = accepted(&with_tags(r#""nodeAttrs": [{"target": ["*"]}]"#));
    let compiled = compile(&with_tags(r#""nodeAttrs": [{"target": ["*"]}]"#), tailnet());
    assert_eq!(policy.node_attrs.len(), 1);
    assert!(compiled.node_caps(0).is_empty());
}

#[test]
fn ip_pool_overlapping_a_reserved_range_is_refused() {
    refused(
        &with_tags(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["100.100.100.0/24"]}]"#),
        "IPPool(100.100.100.0/24): network within reserved range",
    );
    refused(
        &with_tags(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["100.115.92.0/24"]}]"#),
        "IPPool(100.115.92.0/24): network within reserved range",
    );
}

#[test]
fn ip_pool_must_be_ipv4_inside_the_cgnat_range() {
    refused(
        &with_tags(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["10.0.0.0/8"]}]"#),
        "IPPool(10.0.0.0/8): network outside the CGNAT range 100.64.0.0/10",
    );
    refused(
        &with_tags(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["fd7a:115c:a1e0::/64"]}]"#),
        "IPPool(fd7a:115c:a1e0::/64): pools are IPv4 ranges",
    );
    let policy = accepted(&with_tags(
        r#""nodeAttrs": [{"target": ["*"], "ipPool": ["100.81.0.0/16"]}]"#,
    ));
    assert_eq!(policy.node_attrs[0].ip_pool, vec!["100.81.0.0/16".parse().unwrap()]);
}

#[test]
fn ip_pool_gives_no_capability() {
    let compiled = compile(
        &with_tags(r#""nodeAttrs": [{"target": ["*"], "ipPool": ["100.81.0.0/16"]}]"#),
        tailnet(),
    );
    assert!(compiled.node_caps(0).is_empty());
}
