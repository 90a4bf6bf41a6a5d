#!/usr/bin/env bash
# 10,000 nodes on this machine (issue #14), our server only: a release build with
# `trusted_proxies: [127.0.0.1]` (every simulated node connects from 127.0.0.1), log level
# warn, the default tick and the open-file limit raised to the hard limit; `loadgen` builds
# the sparse tailnet of benches/policy.rs (200 users × 50 nodes, one tag:db or tag:web server
# per user) through the server's CLI, checks every stream converges to exactly the peers the
# policy gives it, runs the fan-out rounds from the most-seen node, a policy edit that
# changes every node's packet filter, and a reconnect storm (the server restarted on the
# same data dir under all streams). Prints the figures and whether each target was met;
# exits 1 if one was missed. Bounded by RUN_TIMEOUT. Not part of the test suite.
#
#   bash benches/ten_thousand.sh                       # 200 × 50 = 10,000 nodes
#   USERS=40 bash benches/ten_thousand.sh              # 40 × 50 = 2,000 nodes, same shape
#   FULL_MESH=2000 bash benches/ten_thousand.sh        # 2,000 nodes, one user, full mesh
#   BUILD=0 CARGO_TARGET_DIR=… bash benches/ten_thousand.sh   # use the binaries as built
set -euo pipefail
cd "$(dirname "$0")/.."

USERS="${USERS:-200}"
PER_USER="${PER_USER:-50}"
FULL_MESH="${FULL_MESH:-}"         # a node count: full mesh instead of the sparse tailnet
ROUNDS="${ROUNDS:-50}"
PAUSE_MS="${PAUSE_MS:-550}"        # ≥ 500 ms (our per-node presence budget)
TICK="${TICK:-}"                   # tuning.batch_change_delay; empty: the server's default
CONCURRENCY="${CONCURRENCY:-64}"   # registrations and stream opens in flight
RUN_TIMEOUT="${RUN_TIMEOUT:-1800}"
PHASE_TIMEOUT="${PHASE_TIMEOUT:-600}"
BUILD="${BUILD:-1}"
CACHE="${HEADSCALE_CACHE:-$HOME/.cache/headscale-rs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

[[ "$BUILD" == 1 ]] && cargo build --release --bins >&2
ours="$CARGO_TARGET_DIR/release/headscale"
loadgen="$CARGO_TARGET_DIR/release/loadgen"
ulimit -n "$(ulimit -Hn)" || true
echo "open-file limit: $(ulimit -n) (each side needs one per node, plus a few)" >&2

source benches/bench_lib.sh

dir="$(mktemp -d)"
port="$(free_port)"
trap 'stop_server "$dir"; rm -rf "$dir"' EXIT
write_config "$dir" "$port" ours "$TICK" warn
write_restart "$ours" "$dir" "$port"
start_server "$ours" "$dir" "$port" || { echo "the server did not start:" >&2; tail "$dir/serve.log" >&2; exit 1; }

if [[ -n "$FULL_MESH" ]]; then
  shape=(--tailnet mesh --nodes "$FULL_MESH")
  p99_target=100
else
  shape=(--tailnet sparse --users "$USERS" --nodes-per-user "$PER_USER")
  p99_target=1000
fi
status=0
timeout "$RUN_TIMEOUT" "$loadgen" --server "http://127.0.0.1:$port" \
  --headscale "$ours" --config "$dir/config.yaml" "${shape[@]}" \
  --rounds "$ROUNDS" --pause-ms "$PAUSE_MS" --concurrency "$CONCURRENCY" \
  --phase-timeout-s "$PHASE_TIMEOUT" --policy-edit --restart-cmd "bash $dir/restart.sh" \
  --server-pid "$(cat "$dir/pid")" > "$dir/loadgen.out" 2>&1 || status=$?
grep -v '^{' "$dir/loadgen.out" | tail -n 30 >&2 || true
json="$(tail -n 1 "$dir/loadgen.out")"
if [[ "$json" != "{"* ]]; then
  echo "loadgen did not finish (exit $status) within ${RUN_TIMEOUT}s" >&2
  exit 1
fi
echo "$json"
python3 - "$json" "$p99_target" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
p99_target = float(sys.argv[2])
def v(k):
    x = r.get(k)
    return float("inf") if x is None else x
targets = [
    ("converged to the policy's peers (setup, policy edit, storm)", r.get("converged") is True, r.get("converged")),
    ("registration of all + every first map < 120 s", v("setup_s") < 120, f"{v('setup_s'):.1f} s"),
    (f"fan-out p99 < {p99_target:.0f} ms", v("fanout_p99_ms") < p99_target, f"{v('fanout_p99_ms'):.1f} ms"),
    ("policy edit delivered to all < 5 s", v("policy_edit_ms") < 5000, f"{v('policy_edit_ms'):.0f} ms"),
    ("server peak RSS < 2 GiB", v("server_peak_rss_mib") < 2048, f"{v('server_peak_rss_mib'):.0f} MiB"),
    ("storm: event log grew by 0 events", r.get("storm_events_appended") == 0, r.get("storm_events_appended")),
]
print(f"\n{r['nodes']} nodes ({r['tailnet']}, {r['users']} users, {r['tagged']} tagged), "
      f"mean {r['expected_peers_mean']} peers per node; changer seen by {r['changer_viewers']}")
print(f"cli setup {r['cli_setup_s']} s, registration {r['registration_s']} s, + first maps {r['setup_s']} s "
      f"(first map p50 {r['first_map_p50_ms']} / p99 {r['first_map_p99_ms']} ms), convergence {r['convergence_s']} s")
print(f"fan-out p50 / p99 / max: {r['fanout_p50_ms']} / {r['fanout_p99_ms']} / {r['fanout_max_ms']} ms "
      f"({r['complete_rounds']}/{r['rounds']} rounds), {r['bytes_per_node_per_change']} bytes per viewer per change")
print(f"policy edit: {r['policy_edit_ms']} ms to all ({r['policy_edit_delivered']} streams; CLI call {r['policy_edit_cli_ms']} ms)")
print(f"storm: restart {r['storm_restart_s']} s, recovery {r['storm_recovery_s']} s, "
      f"{r['storm_remapped']} remapped, events appended {r['storm_events_appended']} (+ {r['storm_server_start_events']} ServerStarted)")
print(f"server CPU: setup {r['server_cpu_setup_s']} s, rounds {r['server_cpu_rounds_s']} s, "
      f"policy edit {r['server_cpu_policy_edit_s']} s, storm (new process) {r['server_cpu_storm_s']} s; "
      f"RSS {r['server_rss_mib']} MiB, peak {r['server_peak_rss_mib']} MiB")
if r.get("first_problems"):
    print("problems:", "; ".join(r["first_problems"]))
print()
missed = 0
for name, ok, value in targets:
    print(f"{'met   ' if ok else 'MISSED'}  {name}: {value}")
    missed += not ok
sys.exit(1 if missed else 0)
EOF
