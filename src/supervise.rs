//! Supervision of the parts the server cannot run without (the engine writer thread, the
//! map hub task): if one dies by a panic, the process exits non-zero with one clear line, so
//! a supervisor (systemd, Kubernetes) restarts it instead of leaving a zombie that answers
//! health checks but can neither write nor serve maps (audit L6).

use std::future::Future;

/// Exit status when a critical part died or the store cannot be recovered.
pub const EXIT_CRITICAL: i32 = 70;

/// Logs one clear line (also on stderr, in case logging is what broke) and exits.
pub fn fatal(message: &str) -> ! {
    tracing::error!("{message}");
    eprintln!("headscale: fatal: {message}");
    std::process::exit(EXIT_CRITICAL)
}

/// Spawns `task` on the runtime; if it panics, the process exits. A normal end (e.g. at
/// shutdown) is fine.
pub fn spawn_critical<F>(name: &'static str, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(task);
    tokio::spawn(async move {
        if let Err(error) = handle.await {
            if error.is_panic() {
                fatal(&format!(
                    "the {name} task panicked; exiting so a supervisor restarts us"
                ));
            }
        }
    });
}
