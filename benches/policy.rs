//! Policy engine benchmark: parse + compile time, and the per-viewer netmap work the map hub
//! does after a policy or topology change (peers through `can_see`, packet filter, SSH
//! policy; `core::netmap::Access`), for a 1,000-node full mesh and a 10,000-node tailnet
//! under a sparse policy. Heap bytes come from a counting allocator.
//! Run: `cargo bench --bench policy` (results: benches/BENCHMARKS.md, "Policy engine").

use headscale::core::ids::{NodeId, UserId};
use headscale::core::keys::{MachineKey, NodeKey};
use headscale::core::netmap::Access;
use headscale::core::policy::{Compiled, Policy, Topology};
use headscale::core::state::{Node, PolicyDocument, User};
use headscale::core::{event::NodeHostinfo, event::RegisterMethod, State, Timestamp};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

const SERVER_URL: &str = "https://hs.bench.example";

/// A tailnet: `users` users with `per_user` nodes each. With `servers`, the first node of
/// each user is a server instead, `tag:db` or `tag:web` by turns (tagged: no user's).
fn state(users: u64, per_user: u64, servers: bool, policy: &str) -> State {
    let mut state = State::default();
    for u in 0..users {
        let id = UserId(u + 1);
        state.users.insert(
            id,
            User {
                id,
                name: format!("user{u}"),
                display_name: String::new(),
                email: format!("user{u}@bench.example"),
                created_at: Timestamp::EPOCH,
                picture_url: String::new(),
            },
        );
    }
    let mut next = 1u64;
    for u in 0..users {
        for k in 0..per_user {
            let id = next;
            next += 1;
            let tag = match (servers && k == 0, u % 2) {
                (false, _) => None,
                (true, 0) => Some("tag:db"),
                (true, _) => Some("tag:web"),
            };
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&id.to_le_bytes());
            state.nodes.insert(
                NodeId(id),
                Node {
                    id: NodeId(id),
                    machine_key: MachineKey(key),
                    node_key: NodeKey(key),
                    user: Some(UserId(u + 1)),
                    tags: tag.into_iter().map(String::from).collect(),
                    given_name: format!("node-{id}"),
                    given_name_by_admin: false,
                    hostinfo: NodeHostinfo {
                        hostname: format!("node-{id}"),
                        os: "linux".into(),
                        ..Default::default()
                    },
                    ipv4: Some(Ipv4Addr::from(
                        u32::from(Ipv4Addr::new(100, 64, 0, 0)) + id as u32,
                    )),
                    ipv6: Some(Ipv6Addr::from(
                        u128::from("fd7a:115c:a1e0::".parse::<Ipv6Addr>().unwrap()) + id as u128,
                    )),
                    expiry: None,
                    register_method: RegisterMethod::AuthKey,
                    auth_key: None,
                    ephemeral: false,
                    authorized: true,
                    approved_routes: Vec::new(),
                    created_at: Timestamp::EPOCH,
                },
            );
        }
    }
    state.policy = (!policy.is_empty()).then(|| PolicyDocument {
        text: policy.to_string(),
        updated_at: Timestamp::EPOCH,
    });
    state
}

const MESH: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;

/// 200 users: everyone reaches their own devices; five groups of ten users reach the
/// database and web servers (100 `tag:db`, 100 `tag:web` nodes); SSH to one's own devices
/// (check) and, for the ops group, to the web servers as root. The same text `loadgen
/// --tailnet sparse` sets on a live server.
fn sparse_policy() -> String {
    headscale::client::loadgen::tailnet::sparse_policy(200, false)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[index.saturating_sub(1).min(sorted.len() - 1)]
}

fn mib(bytes: isize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Best of `runs` timings of `f`.
fn best<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("runs > 0"))
}

fn scenario(name: &str, state: &State) {
    let n = state.nodes.len();
    println!("\n### {name}: {} users, {n} nodes\n", state.users.len());
    println!("| measurement | value |\n|---|---|");
    let text = state.policy.as_ref().map(|p| p.text.clone());
    let (topology_time, topology) = best(5, || Topology::from_state(state));
    let other = Topology::from_state(state);
    let (compare_time, _) = best(5, || std::hint::black_box(&topology) == &other);
    drop(other);
    let topology = Arc::new(topology);
    let tagged = topology.nodes.iter().filter(|n| n.is_tagged()).count();
    println!("| tagged nodes | {tagged} |");
    println!(
        "| topology from state (the hub, on every published state: derive + compare) | {} + {} |",
        ms(topology_time),
        ms(compare_time)
    );
    let policy = text.as_ref().map(|text| {
        let (parse_time, policy) = best(5, || Policy::parse(text).expect("the policy parses"));
        println!(
            "| policy parse ({} bytes) | {} |",
            text.len(),
            ms(parse_time)
        );
        let policy = Arc::new(policy);
        let before = heap();
        let (compile_time, compiled) = best(5, || Compiled::new(policy.clone(), topology.clone()));
        println!(
            "| compile (`Compiled::new`), heap | {}, {} |",
            ms(compile_time),
            mib(heap() - before)
        );
        drop(compiled);
        policy
    });
    let (access_time, _) = best(5, || {
        Access::with_topology(topology.clone(), policy.clone(), SERVER_URL)
    });
    println!(
        "| `Access::for_state` (parse + compile + index) | {} |",
        ms(best(3, || Access::for_state(state, SERVER_URL)).0)
    );
    println!(
        "| `Access::with_topology` (compile + index) | {} |",
        ms(access_time)
    );

    // Every viewer once, in id order, on a fresh view: what the hub does after a policy or
    // topology change (each session's delta asks `can_see` for every node, then the filter
    // and SSH policy).
    let before = heap();
    let access = Access::with_topology(topology.clone(), policy.clone(), SERVER_URL);
    let ids: Vec<NodeId> = state.nodes.keys().copied().collect();
    let mut peers_t = Vec::with_capacity(n);
    let mut filter_t = Vec::with_capacity(n);
    let mut ssh_t = Vec::with_capacity(n);
    let mut total_t = Vec::with_capacity(n);
    let mut peer_count = 0usize;
    let mut filter_bytes = 0usize;
    let mut ssh_bytes = 0usize;
    let all = Instant::now();
    for &viewer in &ids {
        let start = Instant::now();
        peer_count += ids.iter().filter(|&&p| access.can_see(viewer, p)).count();
        let after_peers = Instant::now();
        filter_bytes += access.filter(viewer).get().len();
        let after_filter = Instant::now();
        ssh_bytes += access.ssh_policy(viewer).map_or(0, |s| s.get().len());
        let end = Instant::now();
        peers_t.push(after_peers - start);
        filter_t.push(after_filter - after_peers);
        ssh_t.push(end - after_filter);
        total_t.push(end - start);
    }
    let all = all.elapsed();
    let cached = heap() - before;
    // Again, with every per-viewer answer cached: the cost of a delta that changes nothing
    // about access.
    let again = Instant::now();
    for &viewer in &ids {
        std::hint::black_box(ids.iter().filter(|&&p| access.can_see(viewer, p)).count());
        std::hint::black_box(access.filter(viewer));
        std::hint::black_box(access.ssh_policy(viewer));
    }
    let again = again.elapsed();
    for t in [&mut peers_t, &mut filter_t, &mut ssh_t, &mut total_t] {
        t.sort();
    }
    let row = |what: &str, t: &[Duration]| {
        println!(
            "| per viewer: {what} p50 / p99 / max | {} / {} / {} |",
            ms(percentile(t, 50.0)),
            ms(percentile(t, 99.0)),
            ms(*t.last().unwrap())
        );
    };
    row("peers (`can_see` × every node)", &peers_t);
    row("packet filter", &filter_t);
    row("SSH policy", &ssh_t);
    row("total", &total_t);
    println!(
        "| all {n} viewers, first time (sum of per viewer: peers + filter + SSH) | {} ({} + {} + {}) |",
        ms(all),
        ms(peers_t.iter().sum()),
        ms(filter_t.iter().sum()),
        ms(ssh_t.iter().sum())
    );
    println!("| all {n} viewers again, cached | {} |", ms(again));
    println!(
        "| mean peers / filter JSON / SSH JSON per viewer | {:.0} / {} B / {} B |",
        peer_count as f64 / n as f64,
        filter_bytes / n,
        ssh_bytes / n
    );
    println!(
        "| heap of the view with every viewer cached | {} |",
        mib(cached)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a name given after `--` picks scenarios by substring.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    let sparse = sparse_policy();
    let scenarios = [
        ("mesh-1k-nopolicy", 10, 100, false, ""),
        ("mesh-1k", 10, 100, false, MESH),
        ("mesh-10k", 200, 50, false, MESH),
        ("sparse-10k-nopolicy", 200, 50, true, ""),
        ("sparse-10k", 200, 50, true, sparse.as_str()),
    ];
    for (name, users, per_user, servers, policy) in scenarios {
        if wanted(name) {
            scenario(name, &state(users, per_user, servers, policy));
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap_or("?")
        .trim()
        .to_string();
    println!("\npeak RSS of the benchmark process: {hwm}");
}
