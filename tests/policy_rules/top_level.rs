//! The top level of the policy file: see `src/core/policy/RULES.md` ("Top level", "postures",
//! "Not supported").

use crate::support::*;

#[test]
fn a_field_outside_tailscales_schema_is_an_unknown_field() {
    let error = refused(&with_tags(r#""aclz": []"#), "");
    assert!(error.starts_with("aclz: unknown field `aclz`"), "{error}");
}

#[test]
fn neither_acls_nor_grants_allows_everything() {
    assert!(accepted(&with_tags("")).allow_all);
    assert!(!accepted(&with_tags(r#""grants": []"#)).allow_all);
    assert!(!accepted(&with_tags(r#""acls": []"#)).allow_all);
}

#[test]
fn derp_map_is_refused_as_not_supported() {
    refused(
        &with_tags(r#""derpMap": {"Regions": {}}"#),
        "derpMap is not supported: the DERP map comes from the server's configuration (derp.*)",
    );
}

#[test]
fn one_cgnat_route_is_refused_as_not_supported() {
    refused(&with_tags(r#""oneCGNATRoute": "mac-always""#), "oneCGNATRoute is not supported: clients are not told how to route the CGNAT range; they use their default");
}

#[test]
fn attr_config_is_refused_as_not_supported() {
    refused(
        &with_tags(r#""attrConfig": {"custom:tier": {"type": "string"}}"#),
        "attrConfig is not supported: custom device attributes are not implemented",
    );
}

const POSTURE: &str =
    "is not supported: device posture needs device attributes, which this server does not collect";

#[test]
fn postures_are_refused_as_not_supported() {
    refused(
        &with_tags(r#""postures": {"posture:latest": ["node:tsVersion >= '1.60'"]}"#),
        &format!("postures {POSTURE}"),
    );
    refused(
        &with_tags(r#""defaultSrcPosture": ["posture:latest"]"#),
        &format!("defaultSrcPosture {POSTURE}"),
    );
}

#[test]
fn src_posture_on_acls_and_grants_is_refused_as_not_supported() {
    refused(
        &with_tags(
            r#""acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"], "srcPosture": ["posture:latest"]}]"#,
        ),
        &format!("acls[0]: srcPosture {POSTURE}"),
    );
    refused(
        &with_tags(
            r#""grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"], "srcPosture": ["posture:latest"]}]"#,
        ),
        &format!("grants[0]: srcPosture {POSTURE}"),
    );
}

#[test]
fn src_posture_attrs_on_tests_is_refused_as_not_supported() {
    refused(
        &with_tags(
            r#""tests": [{"src": "odin@example.com", "accept": ["tag:server:22"], "srcPostureAttrs": {"node:os": "linux"}}]"#,
        ),
        &format!("tests[0]: srcPostureAttrs {POSTURE}"),
    );
}
