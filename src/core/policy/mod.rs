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
pub mod policy_tests;
pub mod tag_owners;
pub mod topology;

pub use checked::Policy;
pub use compile::{Compiled, SshPolicy};
pub use topology::{Topology, TopologyNode, TopologyUser};
