//! Tailscale's documented policy-file rules, one test per rule, grouped by the section of the
//! policy file they belong to. `src/core/policy/RULES.md` states each rule (what is valid,
//! what it means, the exact error wording) and names the test that checks it; a test's name
//! is the rule. Where Tailscale's wording is known (captures from its control plane), the
//! error must end with it: our messages add the entry's location in front (`acls[0]: `).

mod support;

mod acls;
mod autogroups;
mod auto_approvers;
mod disable_ipv4;
mod grants;
mod groups_hosts_tag_owners;
mod hujson;
mod ip_pool;
mod ipsets;
mod node_attrs;
mod ssh;
mod ssh_tests;
mod tests_section;
mod top_level;
