//! The access policy, pure: HuJSON text → a checked `Policy` → compiled against a
//! `Topology` into each node's packet filter, visible peers, SSH policy and capabilities.
//! Tailscale's own control plane is the reference (`../shared/compat/policy`, replayed by
//! `examples/policy_compat.rs` and `tests/policy_compat.rs`).

pub mod alias;
pub mod auto_approve;
pub mod checked;
pub mod compile;
pub mod document;
pub mod hujson;
pub mod ip_pool;
pub mod policy_tests;
pub mod review;
pub mod route_access;
pub mod tag_owners;
pub mod topology;

pub use checked::Policy;
pub use compile::{Compiled, Origin, SshPolicy};
pub use route_access::RouteAccess;
pub use topology::{Topology, TopologyNode, TopologyUser};

/// Errors quote what the policy says (keys, names, aliases), and a control character there
/// (a JSON `\n` escape, or the raw one `hujson.rs` refuses and quotes) would break the
/// one-line error the CLI and API promise; such characters are shown escaped instead.
pub(crate) fn one_line(error: String) -> String {
    if !error.chars().any(char::is_control) {
        return error;
    }
    error
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether `text` would be accepted as the policy of `state` now: it parses, names only
/// defined things and its own `tests`/`sshTests` pass against the state's tailnet. One
/// function for `ReplacePolicy` and `POST /api/v1/policy/check`, so a check never disagrees
/// with the write that follows it.
pub fn check_for_state(text: &str, state: &crate::core::State) -> Result<Policy, String> {
    let policy = Policy::parse(text)?;
    ip_pool::check_within(&policy, state.config.core.prefix_v4)?;
    policy_tests::run(&policy, &Topology::from_state(state))?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_quoting_the_policy_stay_on_one_line() {
        let error = super::Policy::parse("{\"acls\": [], \"ho\\nsts\": {}}").unwrap_err();
        assert!(
            error.starts_with("ho\\nsts: unknown field `ho\\nsts`"),
            "{error}"
        );
        assert_eq!(super::one_line("a\tb\u{1b}".into()), "a\\tb\\u{1b}");
    }
}
