//! `ip_pool`: see `src/core/policy/RULES.md`.

#[allow(unused_imports)]
use crate::support::*;
