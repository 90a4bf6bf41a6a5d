//! `groups_hosts_tag_owners`: see `src/core/policy/RULES.md`.

#[allow(unused_imports)]
use crate::support::*;
