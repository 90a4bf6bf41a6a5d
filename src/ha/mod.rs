//! Several instances on one PostgreSQL event log (`database.type: postgres`).
//!
//! The log is the truth and every instance folds it: each one appends optimistically
//! (`engine`: decide at head N, insert only while the head is still N, on a conflict catch
//! up, re-decide and retry) and tails what the others append (`tail`: a LISTEN/NOTIFY hint
//! wakes it, a catch-up read is the truth, a periodic poll is the safety net). Any instance
//! serves any client. What is volatile — presence, logins waiting for an admin or an
//! OpenID provider — is shared through tables of its own that are never part of the log.
//!
//! - `pool`: connections to the shared tables (a small pool) and a dedicated LISTEN one;
//! - `tail`: follows the log and keeps the engine at the head; fails closed when cut off;
//! - `presence`: which nodes are online on which instance, shared through tables of its own;
//! - `logins`: interactive logins and OIDC flights waiting on any instance;
//! - `lease`: a named lease (an advisory lock) one instance holds at a time.

pub mod lease;
pub mod logins;
pub mod pool;
pub mod presence;
pub mod tail;

/// The NOTIFY channel an append signals (payload: the new head seq). A hint only.
pub const EVENTS_CHANNEL: &str = "headscale_rs_events";

/// This instance's name: `ha.instance_name`, or the host name and process id.
pub fn instance_name(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "headscale".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}
