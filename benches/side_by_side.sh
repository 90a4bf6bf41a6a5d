#!/usr/bin/env bash
# Side by side (issue #14): our server and the real Go headscale v0.29.2 on loopback, each
# driven by `loadgen` with the same N nodes, the same tick (tuning.batch_change_delay) and the
# same rounds, one fresh data directory per run; prints one table. A run that does not finish
# within RUN_TIMEOUT seconds is reported as such. Not part of the test suite (minutes per N).
#
#   bash benches/side_by_side.sh                 # N = 100 500 1000 2000
#   NODES="100 1000" ROUNDS=20 bash benches/side_by_side.sh
#   SERVERS=ours NODES=5000 bash benches/side_by_side.sh
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
CACHE="${HEADSCALE_CACHE:-$HOME/.cache/headscale-rs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

cargo build --release --bins >&2
ours="$CARGO_TARGET_DIR/release/headscale"
loadgen="$CARGO_TARGET_DIR/release/loadgen"
go_headscale=""
if [[ " $SERVERS " == *" go "* ]]; then
  go_headscale="$(bash .ci/install-go-headscale | tail -n 1)"
fi
ulimit -n "$(ulimit -Hn)" || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Writes a config both servers accept; only the database section differs.
write_config() {
  local dir="$1" port="$2" kind="$3"
  cat > "$dir/derp.yaml" <<EOF
regions:
  900:
    regionid: 900
    regioncode: test
    regionname: Test
    nodes:
      - name: 900a
        regionid: 900
        hostname: 127.0.0.1
        ipv4: 127.0.0.1
        stunport: -1
        derpport: 1
EOF
  local database
  if [[ "$kind" == go ]]; then
    database="database:
  type: sqlite
  sqlite:
    path: $dir/db.sqlite
    write_ahead_log: true"
  else
    database="database:
  type: sled
  sled:
    path: $dir/db.sled"
  fi
  cat > "$dir/config.yaml" <<EOF
server_url: http://127.0.0.1:$port
listen_addr: 127.0.0.1:$port
metrics_listen_addr: ""
grpc_listen_addr: 127.0.0.1:0
disable_check_updates: true
# Every simulated node connects from 127.0.0.1 (ours caps connections per source).
trusted_proxies: [127.0.0.1/32]
noise:
  private_key_path: $dir/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
derp:
  server:
    enabled: false
  urls: []
  paths: [$dir/derp.yaml]
  auto_update_enabled: false
$database
log:
  level: warn
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: tailnet.example
  override_local_dns: false
  nameservers:
    global: []
unix_socket: $dir/headscale.sock
tuning:
  batch_change_delay: $TICK
EOF
}

# One run: prints loadgen's JSON line, or {"error": "..."}.
run_one() {
  local kind="$1" nodes="$2" bin
  [[ "$kind" == go ]] && bin="$go_headscale" || bin="$ours"
  local dir port pid key out
  dir="$(mktemp -d)"
  port="$(free_port)"
  write_config "$dir" "$port" "$kind"
  HEADSCALE_DISABLE_CHECK_UPDATES=true "$bin" -c "$dir/config.yaml" serve > "$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$bin" -c "$dir/config.yaml" users create loadgen >/dev/null 2>&1 || true
  # The Go CLI names the user by id; ours takes the name.
  local user=loadgen
  [[ "$kind" == go ]] && user=1
  key="$("$bin" -c "$dir/config.yaml" preauthkeys create -u "$user" --reusable --expiration 24h 2>/dev/null | tail -n 1)"
  if [[ "$key" != hskey-auth-* ]]; then
    echo "{\"error\": \"no pre-auth key: $(tail -n 2 "$dir/serve.log" | tr '"\n' "' ")\"}"
  elif out="$(timeout "$RUN_TIMEOUT" "$loadgen" --server "http://127.0.0.1:$port" --auth-key "$key" \
      --nodes "$nodes" --rounds "$ROUNDS" --pause-ms "$PAUSE_MS" --server-pid "$pid" 2>&1 | tail -n 1)" \
      && [[ "$out" == "{"* ]]; then
    echo "$out"
  else
    echo "{\"error\": \"did not finish within ${RUN_TIMEOUT}s\"}"
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}

printf '| N | server | fan-out p50 / p99 / max ms | first map p50 / p99 ms | server CPU setup / rounds s | peak RSS MiB | bytes/node/change | problems |\n'
printf '|---|---|---|---|---|---|---|---|\n'
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
    print(f"| {nodes} | {name} | {r['error']} | | | | | |")
else:
    f = lambda k: f"{r.get(k, 0):.0f}"
    print(f"| {nodes} | {name} | {f('fanout_p50_ms')} / {f('fanout_p99_ms')} / {f('fanout_max_ms')} "
          f"| {f('first_map_p50_ms')} / {f('first_map_p99_ms')} "
          f"| {r.get('server_cpu_setup_s', 0):.2f} / {r.get('server_cpu_rounds_s', 0):.2f} "
          f"| {r.get('server_peak_rss_mib', 0)} | {r.get('bytes_per_node_per_change', 0)} "
          f"| {r.get('problems', 0)} (rounds {r.get('complete_rounds', 0)}/{r.get('rounds', 0)}) |")
EOF
  done
done
