#!/usr/bin/env bash
# Side by side (issue #14): our server and the real Go headscale v0.29.2 on loopback, each
# driven by `loadgen` with the same N nodes, the same tick (tuning.batch_change_delay) and the
# same rounds, one fresh data directory per run; then a policy edit (every node's filter
# changes) and a reconnect storm (the server restarted on the same data dir under all N
# streams); prints one table. A run that does not finish within RUN_TIMEOUT seconds is
# reported as such. Not part of the test suite (minutes per N).
#
#   bash benches/side_by_side.sh                 # N = 100 500 1000 2000
#   NODES="100 1000" ROUNDS=20 bash benches/side_by_side.sh
#   SERVERS=ours NODES=5000 bash benches/side_by_side.sh
#   STORM=0 POLICY_EDIT=0 bash benches/side_by_side.sh   # fan-out only
#   BUILD=0 CARGO_TARGET_DIR=… bash benches/side_by_side.sh  # the release binaries as built
#
# The Go headscale comes from the Go module cache through .ci/install-go-headscale (built
# once, cached under ~/.cache/headscale-rs, never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES="${NODES:-100 500 1000 2000}"
ROUNDS="${ROUNDS:-50}"
SERVERS="${SERVERS:-ours go}"
TICK="${TICK:-100ms}"
PAUSE_MS="${PAUSE_MS:-550}"  # ≥ 500 ms (our per-node presence budget), not a multiple of the tick
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
PHASE_TIMEOUT="${PHASE_TIMEOUT:-300}"  # each of setup, convergence, policy edit, storm recovery
POLICY_EDIT="${POLICY_EDIT:-1}"        # 1: time a policy edit to every node
STORM="${STORM:-1}"                    # 1: restart the server under all streams
CACHE="${HEADSCALE_CACHE:-$HOME/.cache/headscale-rs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

[[ "${BUILD:-1}" == 1 ]] && cargo build --release --bins >&2
ours="$CARGO_TARGET_DIR/release/headscale"
loadgen="$CARGO_TARGET_DIR/release/loadgen"
go_headscale=""
if [[ " $SERVERS " == *" go "* ]]; then
  go_headscale="$(bash .ci/install-go-headscale | tail -n 1)"
fi
ulimit -n "$(ulimit -Hn)" || true

source benches/bench_lib.sh

# One run: prints loadgen's JSON line, or {"error": "..."}.
run_one() {
  local kind="$1" nodes="$2" bin
  [[ "$kind" == go ]] && bin="$go_headscale" || bin="$ours"
  local dir port key out extra=()
  dir="$(mktemp -d)"
  port="$(free_port)"
  write_config "$dir" "$port" "$kind" "$TICK"
  write_restart "$bin" "$dir" "$port"
  start_server "$bin" "$dir" "$port" || true
  "$bin" -c "$dir/config.yaml" users create loadgen >/dev/null 2>&1 || true
  # The Go CLI names the user by id; ours takes the name.
  local user=loadgen
  [[ "$kind" == go ]] && user=1
  key="$("$bin" -c "$dir/config.yaml" preauthkeys create -u "$user" --reusable --expiration 24h 2>/dev/null | tail -n 1)"
  # The policy edit goes through the server's CLI; the storm restarts the server on the
  # same data dir (the Go headscale has no `events verify`: no event count for it).
  [[ "$POLICY_EDIT" == 1 ]] && extra+=(--policy-edit)
  [[ "$STORM" == 1 ]] && extra+=(--restart-cmd "bash $dir/restart.sh")
  [[ "$kind" == go ]] && extra+=(--no-event-count)
  if [[ "$key" != hskey-auth-* ]]; then
    echo "{\"error\": \"no pre-auth key: $(tail -n 2 "$dir/serve.log" | tr '"\n' "' ")\"}"
  else
    out="$(timeout "$RUN_TIMEOUT" "$loadgen" --server "http://127.0.0.1:$port" --auth-key "$key" \
      --headscale "$bin" --config "$dir/config.yaml" --phase-timeout-s "$PHASE_TIMEOUT" \
      --nodes "$nodes" --rounds "$ROUNDS" --pause-ms "$PAUSE_MS" --server-pid "$(cat "$dir/pid")" \
      "${extra[@]}" 2>&1 | tail -n 1)" || true
    if [[ "$out" == "{"* ]]; then
      echo "$out"
    else
      echo "{\"error\": \"did not finish within ${RUN_TIMEOUT}s: $(echo "$out" | tail -c 200 | tr '"\n' "' ")\"}"
    fi
  fi
  stop_server "$dir"
  rm -rf "$dir"
}

printf '| N | server | setup + converged s | fan-out p50 / p99 / max ms | first map p50 / p99 ms | policy edit ms | storm recovery s (events) | server CPU setup / rounds / storm s | peak RSS MiB | bytes/node/change | problems |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|\n'
for nodes in $NODES; do
  for kind in $SERVERS; do
    json="$(run_one "$kind" "$nodes")"
    name=ours
    [[ "$kind" == go ]] && name="headscale 0.29.2"
    python3 - "$nodes" "$name" "$json" <<'EOF'
import json, sys
nodes, name, raw = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    r = json.loads(raw)
except ValueError:
    r = {"error": raw[:120]}
if "error" in r:
    print(f"| {nodes} | {name} | {r['error']} | | | | | | | | |")
else:
    def f(k, digits=0):
        v = r.get(k)
        return "-" if v is None else f"{v:.{digits}f}"
    events = r.get("storm_events_appended")
    events = "-" if events is None else events
    converged = f"{f('setup_s', 1)} + {f('convergence_s', 1)}" if r.get("converged") else "NO"
    print(f"| {nodes} | {name} | {converged} "
          f"| {f('fanout_p50_ms')} / {f('fanout_p99_ms')} / {f('fanout_max_ms')} "
          f"| {f('first_map_p50_ms')} / {f('first_map_p99_ms')} "
          f"| {f('policy_edit_ms')} | {f('storm_recovery_s', 2)} ({events}) "
          f"| {f('server_cpu_setup_s', 2)} / {f('server_cpu_rounds_s', 2)} / {f('server_cpu_storm_s', 2)} "
          f"| {r.get('server_peak_rss_mib', '-')} | {r.get('bytes_per_node_per_change', '-')} "
          f"| {r.get('problems', 0)} (rounds {r.get('complete_rounds', 0)}/{r.get('rounds', 0)}) "
          f"{'; '.join(r.get('first_problems', []))[:160]} |")
EOF
  done
done
