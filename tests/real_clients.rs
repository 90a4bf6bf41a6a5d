//! Real, unmodified Tailscale clients (`tailscaled` + `tailscale`, the pinned newest and
//! oldest supported versions) against our real server binary, inside a network namespace this
//! test creates: nothing can leave the machine. One binary without the libtest harness: the
//! scenarios run serially from `main`, each printed as `scenario <name> ... ok (Xs)`, with the
//! server's and daemons' logs on failure; the exit status is non-zero if any failed.
//!
//! Choose scenarios with arguments or `REAL_CLIENTS=a,b` (comma-separated): a full name
//! (`register_with_key/v1.80.3`), a base name (`register_with_key`, both versions), `pending`
//! (the scenarios waiting for map streams and DERP), `all`; any other word selects the default
//! scenarios whose names contain it. `--list` prints the names. Needs root (for `unshare`) and
//! the clients `.ci/install-tailscale` builds.

mod common;
#[path = "real_clients/dns.rs"]
mod dns;
#[path = "real_clients/ha.rs"]
mod ha;
#[path = "ha_cluster/mod.rs"]
mod ha_cluster;
#[path = "real_clients/lifecycle.rs"]
mod lifecycle;
#[path = "real_clients/migration.rs"]
mod migration;
#[path = "real_clients/namespace.rs"]
mod namespace;
#[path = "real_clients/oidc.rs"]
mod oidc;
#[path = "pg_cluster/mod.rs"]
mod pg_cluster;
#[path = "real_clients/policy.rs"]
mod policy;
#[path = "real_clients/scenarios.rs"]
mod scenarios;
#[path = "real_clients/server.rs"]
mod server;
#[path = "real_clients/tailscale.rs"]
mod tailscale;
#[path = "real_clients/trap.rs"]
mod trap;

use scenarios::Scenario;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static TRAP: OnceLock<trap::Trap> = OnceLock::new();

/// The run's traffic trap (started on first use).
pub fn trap() -> &'static trap::Trap {
    TRAP.get_or_init(trap::Trap::start)
}

/// Polls `check` every 100 ms until it returns `Some`, panicking after `limit`.
pub fn wait_until<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the last 40 lines of a log, for failures.
pub fn print_tail(title: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(40)..];
    eprintln!("----- {title} (last {} lines) -----", tail.len());
    for line in tail {
        eprintln!("{line}");
    }
}

/// The scenarios the filter words select, in list order.
fn select(words: &[String]) -> Vec<Scenario> {
    let defaults = scenarios::default_list();
    if words.is_empty() {
        return defaults;
    }
    let default_names: Vec<String> = defaults.iter().map(|s| s.name.clone()).collect();
    defaults
        .into_iter()
        .chain(scenarios::pending_list())
        .filter(|scenario| {
            let name = scenario.name.as_str();
            let base = name.split('/').next().unwrap_or(name);
            let is_default = default_names.iter().any(|d| d == name);
            words.iter().any(|word| {
                word == "all"
                    || word == name
                    || word == base
                    || (word == "pending" && !is_default)
                    || (is_default && name.contains(word.as_str()))
            })
        })
        .collect()
}

/// libtest flags `cargo test` may pass that take a value (skipped, but `--skip` is honoured).
const FLAGS_WITH_VALUE: [&str; 7] = [
    "--skip",
    "--test-threads",
    "--format",
    "--color",
    "--logfile",
    "--shuffle-seed",
    "-Z",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut words = Vec::new();
    let mut skip = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if FLAGS_WITH_VALUE.contains(&arg.as_str()) {
            let value = rest.next().cloned().unwrap_or_default();
            if arg == "--skip" {
                skip.push(value);
            }
        } else if !arg.starts_with('-') {
            words.push(arg.clone());
        }
    }
    if let Ok(list) = std::env::var("REAL_CLIENTS") {
        words.extend(
            list.split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(String::from),
        );
    }
    let mut selected = select(&words);
    selected.retain(|s| !skip.iter().any(|word| s.name.contains(word.as_str())));
    if args.iter().any(|a| a == "--list") {
        for scenario in &selected {
            println!("{}: test", scenario.name);
        }
        return;
    }
    if selected.is_empty() {
        // A `cargo test <filter>` aimed at other tests: nothing to do, no root needed.
        println!("real_clients: no scenario matches {words:?}");
        return;
    }
    namespace::enter();
    let start = Instant::now();
    let mut failed = Vec::new();
    let mut retried = Vec::new();
    // Real daemons have timing races of their own (seen: a v1.80.3 client that stays in
    // `Starting` with its DERP connected and no engine status update until the next netmap
    // change). A scenario that fails is run once more; both attempts print everything, and
    // the summary names every scenario that needed the second one. A trap-proxy leak is
    // never retried. REAL_CLIENTS_NO_RETRY=1 turns retries off.
    let retries = if std::env::var_os("REAL_CLIENTS_NO_RETRY").is_some() {
        0
    } else {
        1
    };
    for scenario in &selected {
        let mut attempt = 0;
        loop {
            println!("scenario {} ...", scenario.name);
            let _ = std::io::stdout().flush();
            let began = Instant::now();
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&scenario.run));
            let leaked = trap().take();
            let seconds = began.elapsed().as_secs_f64();
            if outcome.is_ok() && leaked.is_empty() {
                if attempt > 0 {
                    retried.push(scenario.name.clone());
                    println!("scenario {} ... ok on retry ({seconds:.1}s)", scenario.name);
                } else {
                    println!("scenario {} ... ok ({seconds:.1}s)", scenario.name);
                }
                break;
            }
            if !leaked.is_empty() {
                println!(
                    "scenario {} ... FAILED ({seconds:.1}s): the trap proxy saw {leaked:?}",
                    scenario.name
                );
                failed.push(scenario.name.clone());
                break;
            }
            if attempt < retries {
                attempt += 1;
                println!(
                    "scenario {} ... FAILED ({seconds:.1}s); running it once more",
                    scenario.name
                );
                continue;
            }
            println!("scenario {} ... FAILED ({seconds:.1}s)", scenario.name);
            failed.push(scenario.name.clone());
            break;
        }
    }
    if !retried.is_empty() {
        println!("passed only on retry: {}", retried.join(", "));
    }
    println!(
        "real_clients: {} passed, {} failed ({} selected) in {:.1}s",
        selected.len() - failed.len(),
        failed.len(),
        selected.len(),
        start.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
        std::process::exit(1);
    }
}
