//! `ipsets`: see `src/core/policy/RULES.md` ("ipsets", "Not supported").

use crate::support::*;

#[test]
fn ipsets_are_refused_as_not_supported() {
    refused(
        &with_tags(r#""ipsets": {"ipset:prod": ["100.64.0.0/24"]}"#),
        "ipsets is not supported: IP sets are not implemented; name the addresses in hosts instead",
    );
}
