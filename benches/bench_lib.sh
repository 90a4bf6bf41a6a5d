# Shared by benches/side_by_side.sh and benches/ten_thousand.sh (sourced, not run): a
# throwaway loopback config both servers accept, starting a server in the background, and a
# restart script for loadgen's reconnect storm (`--restart-cmd`).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# write_config DIR PORT KIND(ours|go) TICK(empty: the server's default) LOG_LEVEL
# Only the database section differs between the two servers.
write_config() {
  local dir="$1" port="$2" kind="$3" tick="${4:-}" level="${5:-warn}"
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
  local database tuning=""
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
  if [[ -n "$tick" ]]; then
    tuning="tuning:
  batch_change_delay: $tick"
  fi
  cat > "$dir/config.yaml" <<EOF
server_url: http://127.0.0.1:$port
listen_addr: 127.0.0.1:$port
metrics_listen_addr: ""
grpc_listen_addr: 127.0.0.1:0
disable_check_updates: true
# Every simulated node connects from 127.0.0.1 (ours caps connections and handshakes per
# source; a trusted proxy's are exempt).
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
  level: $level
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: tailnet.example
  override_local_dns: false
  nameservers:
    global: []
unix_socket: $dir/headscale.sock
$tuning
EOF
}

# start_server BIN DIR PORT: starts `BIN -c DIR/config.yaml serve` (output appended to
# DIR/serve.log, PID in DIR/pid) and waits up to 60 s for /health.
start_server() {
  local bin="$1" dir="$2" port="$3"
  HEADSCALE_DISABLE_CHECK_UPDATES=true "$bin" -c "$dir/config.yaml" serve >> "$dir/serve.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# write_restart BIN DIR PORT: DIR/restart.sh stops the server of DIR/pid (SIGTERM, then
# waits for it to exit), starts it again on the same data dir and prints the new PID: what
# loadgen's --restart-cmd runs for the reconnect storm.
write_restart() {
  local bin="$1" dir="$2" port="$3"
  cat > "$dir/restart.sh" <<EOF
set -e
old=\$(cat "$dir/pid")
kill "\$old" 2>/dev/null || true
while kill -0 "\$old" 2>/dev/null; do sleep 0.02; done
HEADSCALE_DISABLE_CHECK_UPDATES=true "$bin" -c "$dir/config.yaml" serve >> "$dir/serve.log" 2>&1 &
echo \$! > "$dir/pid"
echo \$!
EOF
}

# stop_server DIR
stop_server() {
  local pid
  pid="$(cat "$1/pid" 2>/dev/null)" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
}
