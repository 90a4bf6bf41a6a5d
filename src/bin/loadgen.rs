//! `loadgen`: the map fan-out benchmark (see benches/BENCHMARKS.md, "Map fan-out"). Registers
//! N nodes with a reusable pre-auth key, holds N map streams, changes one node's endpoints R
//! times and prints the per-round fan-out latency (p50/p99/max), bytes per frame and, with
//! `--server-pid`, the server's RSS. The key comes from `--auth-key`, or is created through
//! the server's own CLI (`--headscale BIN --config FILE`), which also sets the access policy
//! of `--policy FILE` before any node registers (it must let every node see every other).

use clap::Parser;
use headscale::client::loadgen::{self, LoadgenOptions};
use std::process::Command;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Map fan-out load generator for the headscale control server"
)]
struct Args {
    /// The server URL (http:// only), e.g. http://127.0.0.1:8080
    #[arg(long)]
    server: String,
    /// A reusable pre-auth key (hskey-auth-…).
    #[arg(long)]
    auth_key: Option<String>,
    /// Create the user and a reusable key with this headscale binary…
    #[arg(long)]
    headscale: Option<String>,
    /// …and this server config.
    #[arg(long)]
    config: Option<String>,
    /// Set this policy file first (`headscale policy set -f`; needs --headscale, --config).
    /// Every node must still see every other: the rounds wait for all N−1 peers.
    #[arg(long)]
    policy: Option<String>,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 150)]
    pause_ms: u64,
    /// Decode every n-th stream fully into a netmap (0: none).
    #[arg(long, default_value_t = 10)]
    sample_every: usize,
    /// The server's PID, to report its VmRSS.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 145)]
    capability_version: u16,
}

/// Runs the server's CLI with `args`.
fn run_cli(headscale: &str, config: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(headscale)
        .args(["-c", config])
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {headscale}: {e}"))
}

fn set_policy(headscale: &str, config: &str, file: &str) -> Result<(), String> {
    let out = run_cli(headscale, config, &["policy", "set", "-f", file])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(())
}

fn create_key(headscale: &str, config: &str) -> Result<String, String> {
    let run = |args: &[&str]| run_cli(headscale, config, args);
    // The user may already exist from an earlier run.
    let _ = run(&["users", "create", "loadgen"])?;
    let out = run(&[
        "preauthkeys",
        "create",
        "-u",
        "loadgen",
        "--reusable",
        "--expiration",
        "24h",
    ])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let args = Args::parse();
    // Every node holds a TCP connection: raise the soft open-file limit to the hard one,
    // and say so when even that cannot hold them all.
    match headscale::conn_limits::raise_fd_limit() {
        Ok(limit) if limit.soft < args.nodes as u64 + 64 => eprintln!(
            "warning: the open-file limit is {} (hard {}): {} nodes need about {} (raise it with ulimit -n)",
            limit.soft,
            limit.hard,
            args.nodes,
            args.nodes + 64
        ),
        Ok(_) => {}
        Err(error) => eprintln!("warning: cannot raise the open-file limit: {error}"),
    }
    if let Some(file) = &args.policy {
        let (Some(bin), Some(config)) = (&args.headscale, &args.config) else {
            eprintln!("Error: --policy needs --headscale and --config");
            std::process::exit(1);
        };
        if let Err(error) = set_policy(bin, config, file) {
            eprintln!("Error: cannot set the policy {file}: {error}");
            std::process::exit(1);
        }
        println!("policy {file} set");
    }
    let auth_key = match (&args.auth_key, &args.headscale, &args.config) {
        (Some(key), _, _) => key.clone(),
        (None, Some(bin), Some(config)) => match create_key(bin, config) {
            Ok(key) => key,
            Err(error) => {
                eprintln!("Error: cannot create a pre-auth key: {error}");
                std::process::exit(1);
            }
        },
        _ => {
            eprintln!("Error: give --auth-key, or --headscale and --config");
            std::process::exit(1);
        }
    };
    let mut options = LoadgenOptions::new(&args.server, &auth_key, args.nodes, args.rounds);
    options.concurrency = args.concurrency;
    options.pause = Duration::from_millis(args.pause_ms);
    options.sample_every = args.sample_every;
    options.server_pid = args.server_pid;
    options.capability_version = args.capability_version;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(loadgen::run(options)) {
        Ok(report) => {
            println!("{}", report.summary());
            // Last line: the figures as one JSON object, for scripts.
            println!("{}", report.json());
            if !report.complete() {
                std::process::exit(2);
            }
        }
        Err(error) => {
            eprintln!("Error: {error}");
            std::process::exit(1);
        }
    }
}
