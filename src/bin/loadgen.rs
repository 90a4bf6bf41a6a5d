//! `loadgen`: the map fan-out benchmark (see benches/BENCHMARKS.md, "Map fan-out"). Registers
//! N nodes, holds N map streams, checks every stream's peer set against what the policy
//! gives it, changes one node's endpoints R times and prints the per-round fan-out latency;
//! optionally times a policy edit to every node and a reconnect storm (the server restarted
//! under all streams). The tailnet is one user's full mesh (`--nodes`), or a sparse one
//! (`--tailnet sparse --users U --nodes-per-user P`: one server per user, tagged `tag:db` or
//! `tag:web`, under `benches/policy.rs`'s sparse policy). Users, keys and policy are made
//! through the server's own CLI (`--headscale BIN --config FILE`); a mesh can instead take a
//! reusable `--auth-key`. The last line of the output is one JSON object with every figure.

use clap::{Parser, ValueEnum};
use headscale::client::loadgen::{self, Keys, LoadgenOptions, Restart, ServerCli, Tailnet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shape {
    /// One user, every node sees every other (or what `--policy` allows).
    Mesh,
    /// `--users` × `--nodes-per-user`, the first node of each user a tagged server.
    Sparse,
}

#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    about = "Map fan-out load generator for the headscale control server"
)]
struct Args {
    /// The server URL (http:// only), e.g. http://127.0.0.1:8080
    #[arg(long)]
    server: String,
    /// A reusable pre-auth key (hskey-auth-…) for every node of a mesh; then --headscale
    /// and --config (if given) only serve the policy edit and the event count.
    #[arg(long)]
    auth_key: Option<String>,
    /// Create the users and keys (and set policies) with this headscale binary…
    #[arg(long)]
    headscale: Option<String>,
    /// …and this server config.
    #[arg(long)]
    config: Option<String>,
    #[arg(long, value_enum, default_value_t = Shape::Mesh)]
    tailnet: Shape,
    /// Mesh only: set this policy file first (`headscale policy set -f`). Convergence is
    /// checked against what it gives each node.
    #[arg(long)]
    policy: Option<String>,
    /// Mesh: the number of nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Sparse: users (user{u}, user{u}@bench.example).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Sparse: nodes per user (the first of each is a server).
    #[arg(long, default_value_t = 50)]
    nodes_per_user: usize,
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 150)]
    pause_ms: u64,
    /// Seconds each of setup, convergence, policy edit and storm recovery may take.
    #[arg(long, default_value_t = 120)]
    phase_timeout_s: u64,
    /// Decode every n-th stream fully into a netmap (0: none).
    #[arg(long, default_value_t = 10)]
    sample_every: usize,
    /// The server's PID, to report its RSS and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    #[arg(long, default_value_t = 145)]
    capability_version: u16,
    /// After the rounds, replace the policy with one that changes every node's packet
    /// filter and time its delivery (needs --headscale, --config).
    #[arg(long)]
    policy_edit: bool,
    /// Reconnect storm: this shell command restarts the server (it must return once the
    /// new server was started, with its output redirected; a number on its last line of
    /// output is taken as the new server's PID).
    #[arg(long)]
    restart_cmd: Option<String>,
    /// Reconnects in flight at once during the storm.
    #[arg(long, default_value_t = 256)]
    storm_concurrency: usize,
    /// Do not count the server's events across the storm (a server without
    /// `events verify`, e.g. the Go headscale).
    #[arg(long)]
    no_event_count: bool,
}

fn fail(message: String) -> ! {
    eprintln!("Error: {message}");
    std::process::exit(1);
}

/// Runs `command` with `sh -c`; the last line of its output as a PID, when it is one.
fn restart_with(command: String) -> Restart {
    Restart(Arc::new(move || {
        let out = Command::new("sh")
            .args(["-c", &command])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run the restart command: {e}"))?;
        if !out.status.success() {
            return Err(format!("the restart command failed ({})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        Ok(stdout.lines().last().and_then(|l| l.trim().parse().ok()))
    }))
}

fn main() {
    let args = Args::parse();
    let cli = match (&args.headscale, &args.config) {
        (Some(bin), Some(config)) => Some(ServerCli::new(bin, config)),
        (None, None) => None,
        _ => fail("--headscale and --config go together".into()),
    };
    let tailnet = match args.tailnet {
        Shape::Mesh => Tailnet::Mesh {
            policy: args.policy.as_ref().map(|file| {
                std::fs::read_to_string(file)
                    .unwrap_or_else(|e| fail(format!("cannot read the policy {file}: {e}")))
            }),
        },
        Shape::Sparse if args.policy.is_some() => {
            fail("--policy is for a mesh; the sparse tailnet brings its own".into())
        }
        Shape::Sparse => Tailnet::Sparse {
            users: args.users.max(1),
            per_user: args.nodes_per_user.max(1),
        },
    };
    let nodes = tailnet.nodes(args.nodes);
    // Every node holds a TCP connection: raise the soft open-file limit to the hard one,
    // and say so when even that cannot hold them all.
    match headscale::conn_limits::raise_fd_limit() {
        Ok(limit) if limit.soft < nodes as u64 + 64 => eprintln!(
            "warning: the open-file limit is {} (hard {}): {nodes} nodes need about {} (raise it with ulimit -n)",
            limit.soft,
            limit.hard,
            nodes + 64
        ),
        Ok(_) => {}
        Err(error) => eprintln!("warning: cannot raise the open-file limit: {error}"),
    }
    // With --auth-key the CLI (if given) only edits the policy and counts events.
    let keys = match (&args.auth_key, &cli, &tailnet) {
        (Some(key), _, Tailnet::Mesh { policy: None }) => Keys::single(key),
        (Some(_), _, _) => fail("--auth-key is for a mesh without --policy".into()),
        (None, Some(_), _) => Keys::default(),
        (None, None, _) => fail("give --auth-key, or --headscale and --config".into()),
    };
    if args.policy_edit && cli.is_none() {
        fail("--policy-edit needs --headscale and --config".into());
    }
    let mut options = LoadgenOptions::new(&args.server, "", args.nodes, args.rounds);
    options.tailnet = tailnet;
    options.keys = keys;
    options.cli = cli;
    options.concurrency = args.concurrency;
    options.pause = Duration::from_millis(args.pause_ms);
    options.phase_timeout = Duration::from_secs(args.phase_timeout_s);
    options.sample_every = args.sample_every;
    options.server_pid = args.server_pid;
    options.capability_version = args.capability_version;
    options.policy_edit = args.policy_edit;
    options.restart = args.restart_cmd.clone().map(restart_with);
    options.storm_concurrency = args.storm_concurrency;
    options.count_events = !args.no_event_count;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => fail(error.to_string()),
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
        Err(error) => fail(error.to_string()),
    }
}
