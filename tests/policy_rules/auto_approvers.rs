//! `autoApprovers`: see `src/core/policy/RULES.md` ("autoApprovers").

use crate::support::*;

#[test]
fn auto_approvers_services_is_refused_as_not_supported() {
    refused(
        &with_tags(r#""autoApprovers": {"services": {"svc:web": ["tag:server"]}}"#),
        "autoApprovers: services is not supported: Tailscale Services are not implemented",
    );
}

#[test]
fn auto_approvers_routes_and_exit_node_name_defined_approvers() {
    accepted(&with_tags(
        r#""autoApprovers": {"routes": {"10.33.0.0/16": ["tag:router"]}, "exitNode": ["tag:router"]}"#,
    ));
    refused(
        &with_tags(r#""autoApprovers": {"routes": {"10.33.0.0/16": ["tag:nope"]}}"#),
        r#"autoApprovers.routes["10.33.0.0/16"]: tag not found: "tag:nope""#,
    );
    refused(
        &with_tags(r#""autoApprovers": {"routes": {"10.33.0.0": ["tag:router"]}}"#),
        r#"autoApprovers.routes: "10.33.0.0" is not a CIDR"#,
    );
}
