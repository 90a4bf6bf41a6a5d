//! What one loadgen run measured, printed for people (`summary`) and as one JSON object
//! for scripts (`json`, the bench binary's last line); and the server's RSS and CPU time
//! read from `/proc/<pid>`.

use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct RoundResult {
    /// `None` if not every viewer saw the change within the timeout.
    pub latency: Option<Duration>,
    pub saw: usize,
}

#[derive(Debug, Clone, Default)]
pub struct LoadgenReport {
    pub nodes: usize,
    /// `mesh` or `sparse`.
    pub tailnet: String,
    pub users: usize,
    pub tagged: usize,
    /// Creating users and keys and setting the policy through the CLI.
    pub cli_setup: Duration,
    /// Registering every node (all `/machine/register` answered).
    pub registration: Duration,
    /// Registration plus every stream's first map.
    pub setup: Duration,
    /// Whether every stream's peer set became exactly what the policy gives it.
    pub converged: bool,
    /// From the last first map until converged and quiet.
    pub convergence: Duration,
    /// Mean number of peers the policy gives a node.
    pub expected_peers_mean: f64,
    /// The node whose endpoints change in the rounds, and how many nodes see it.
    pub changer_id: u64,
    pub changer_viewers: usize,
    pub rounds: Vec<RoundResult>,
    /// Policy edit: from just before `policy set` until the last stream got a new filter.
    pub policy_edit: Option<Duration>,
    pub policy_edit_cli: Option<Duration>,
    /// Streams that received a new filter after the edit.
    pub policy_edit_delivered: usize,
    /// Reconnect storm: the restart command's own duration, and from its start until every
    /// stream had a full map again and the peer sets matched the policy.
    pub storm_restart: Option<Duration>,
    pub storm_recovery: Option<Duration>,
    pub storm_remapped: usize,
    /// Events the log grew by across the storm besides the restart's own `ServerStarted`
    /// (should be 0: presence is not logged), and those `ServerStarted` records.
    pub storm_events_appended: Option<usize>,
    pub storm_server_starts: Option<usize>,
    pub frames: u64,
    pub wire_bytes: u64,
    pub json_bytes: u64,
    /// Frames and bytes of the rounds phase only (deltas and keep-alives).
    pub round_frames: u64,
    pub round_wire_bytes: u64,
    pub round_json_bytes: u64,
    pub samples_checked: usize,
    /// Problems found (peer sets not as expected, stream errors...).
    pub problems: Vec<String>,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// The server's peak RSS (VmHWM), the largest over its processes (a storm restarts it).
    pub server_peak_rss_kib: Option<u64>,
    /// Server CPU time (user + system) per phase.
    pub server_cpu_setup: Option<Duration>,
    pub server_cpu_rounds: Option<Duration>,
    pub server_cpu_policy_edit: Option<Duration>,
    /// The restarted server's CPU from its start until the storm was over.
    pub server_cpu_storm: Option<Duration>,
    /// Per stream: from sending the map request to its first (full) map; sorted.
    pub first_map: Vec<Duration>,
    /// Mean size of a first (full) map: wire bytes and JSON bytes.
    pub first_map_wire_bytes: u64,
    pub first_map_json_bytes: u64,
}

fn percentile_of(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
    sorted
        .get(index.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

impl LoadgenReport {
    /// Sorted latencies of the complete rounds.
    pub fn latencies(&self) -> Vec<Duration> {
        let mut all: Vec<Duration> = self.rounds.iter().filter_map(|r| r.latency).collect();
        all.sort();
        all
    }

    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile_of(&self.latencies(), p)
    }

    pub fn complete(&self) -> bool {
        self.converged
            && self.rounds.iter().all(|r| r.latency.is_some())
            && self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
                .unwrap_or("-".into())
        };
        let s = |d: Option<Duration>| {
            d.map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or("-".into())
        };
        let per = |bytes: u64, frames: u64| bytes.checked_div(frames).unwrap_or(0);
        let mib = |k: Option<u64>| k.map(|k| format!("{} MiB", k / 1024)).unwrap_or("-".into());
        format!(
            "nodes {} ({} tailnet, {} users, {} tagged)  cli setup {:.1} s  registration {:.1} s  setup (+ first maps) {:.1} s\n\
             first map p50 {}  p99 {}\n\
             converged {} in {:.1} s (mean {:.1} peers per node)\n\
             rounds {} complete {}/{} (changer {} seen by {})  fan-out p50 {}  p99 {}  max {}\n\
             policy edit delivered to {}/{} in {} (the CLI call {})\n\
             storm: restart {}  recovery {}  remapped {}/{}  events appended {} (+ {} server start)\n\
             frames {} (all)  bytes/frame wire {} json {}\n\
             round-phase frames {}  bytes/frame wire {} json {}\n\
             server CPU setup {}  rounds {}  policy edit {}  storm {}\n\
             sample netmaps checked {}  problems {}\n\
             server RSS before {}  after {}  peak {}",
            self.nodes,
            self.tailnet,
            self.users,
            self.tagged,
            self.cli_setup.as_secs_f64(),
            self.registration.as_secs_f64(),
            self.setup.as_secs_f64(),
            ms(percentile_of(&self.first_map, 50.0)),
            ms(percentile_of(&self.first_map, 99.0)),
            if self.converged { "yes" } else { "NO" },
            self.convergence.as_secs_f64(),
            self.expected_peers_mean,
            self.rounds.len(),
            self.rounds.iter().filter(|r| r.latency.is_some()).count(),
            self.rounds.len(),
            self.changer_id,
            self.changer_viewers,
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.latencies().last().copied()),
            self.policy_edit_delivered,
            self.nodes,
            ms(self.policy_edit),
            ms(self.policy_edit_cli),
            s(self.storm_restart),
            s(self.storm_recovery),
            self.storm_remapped,
            self.nodes,
            self.storm_events_appended
                .map(|e| e.to_string())
                .unwrap_or("-".into()),
            self.storm_server_starts
                .map(|e| e.to_string())
                .unwrap_or("-".into()),
            self.frames,
            per(self.wire_bytes, self.frames),
            per(self.json_bytes, self.frames),
            self.round_frames,
            per(self.round_wire_bytes, self.round_frames),
            per(self.round_json_bytes, self.round_frames),
            s(self.server_cpu_setup),
            s(self.server_cpu_rounds),
            s(self.server_cpu_policy_edit),
            s(self.server_cpu_storm),
            self.samples_checked,
            if self.problems.is_empty() {
                "none".to_string()
            } else {
                self.problems.join("; ")
            },
            mib(self.server_rss_kib_before),
            mib(self.server_rss_kib_after),
            mib(self.server_peak_rss_kib),
        )
    }

    /// The figures as one JSON object (the bench binary's last line).
    pub fn json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
        let secs = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e3).round() / 1e3);
        // Bytes every viewer of the changer receives per change.
        let per_change = (self.round_wire_bytes)
            .checked_div((self.rounds.len() as u64) * (self.changer_viewers as u64).max(1));
        serde_json::json!({
            "nodes": self.nodes,
            "tailnet": self.tailnet,
            "users": self.users,
            "tagged": self.tagged,
            "cli_setup_s": secs(Some(self.cli_setup)),
            "registration_s": secs(Some(self.registration)),
            "setup_s": secs(Some(self.setup)),
            "first_map_p50_ms": ms(percentile_of(&self.first_map, 50.0)),
            "first_map_p99_ms": ms(percentile_of(&self.first_map, 99.0)),
            "first_map_wire_bytes": self.first_map_wire_bytes,
            "first_map_json_bytes": self.first_map_json_bytes,
            "converged": self.converged,
            "convergence_s": secs(Some(self.convergence)),
            "expected_peers_mean": (self.expected_peers_mean * 10.0).round() / 10.0,
            "changer_id": self.changer_id,
            "changer_viewers": self.changer_viewers,
            "rounds": self.rounds.len(),
            "complete_rounds": self.rounds.iter().filter(|r| r.latency.is_some()).count(),
            "fanout_p50_ms": ms(self.percentile(50.0)),
            "fanout_p99_ms": ms(self.percentile(99.0)),
            "fanout_max_ms": ms(self.latencies().last().copied()),
            "policy_edit_ms": ms(self.policy_edit),
            "policy_edit_cli_ms": ms(self.policy_edit_cli),
            "policy_edit_delivered": self.policy_edit_delivered,
            "storm_restart_s": secs(self.storm_restart),
            "storm_recovery_s": secs(self.storm_recovery),
            "storm_remapped": self.storm_remapped,
            "storm_events_appended": self.storm_events_appended,
            "storm_server_start_events": self.storm_server_starts,
            "frames": self.frames,
            "wire_bytes": self.wire_bytes,
            "bytes_per_node_per_change": per_change,
            "server_cpu_setup_s": secs(self.server_cpu_setup),
            "server_cpu_rounds_s": secs(self.server_cpu_rounds),
            "server_cpu_policy_edit_s": secs(self.server_cpu_policy_edit),
            "server_cpu_storm_s": secs(self.server_cpu_storm),
            "server_rss_mib": self.server_rss_kib_after.map(|k| k / 1024),
            "server_peak_rss_mib": self.server_peak_rss_kib.map(|k| k / 1024),
            "problems": self.problems.len(),
            "first_problems": self.problems.iter().take(5).collect::<Vec<_>>(),
        })
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User + system CPU time of a process so far (`/proc/<pid>/stat`, clock ticks of 10 ms).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}
