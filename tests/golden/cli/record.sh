#!/usr/bin/env bash
# Records golden CLI outputs from the real Go headscale v0.29.2 for tests/cli_output.rs.
#
# Starts the Go server on loopback with a throwaway config (sqlite, unix socket and keys in a
# temp dir, no DERP fetches, no update checks, policy.mode: database), then runs every case of
# cases.txt, in order, with the Go CLI over the unix socket, and writes one file per case next
# to this script: `<name>.txt` holding the exit status, stdout and stderr. Nothing here talks
# to anything but loopback and the socket.
#
#   bash tests/golden/cli/record.sh          # the binary from .ci/install-go-headscale
#   HEADSCALE_GO=/path/to/headscale bash tests/golden/cli/record.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
bin="${HEADSCALE_GO:-}"
if [ -z "$bin" ]; then
    bin="$(bash "$root/.ci/install-go-headscale" | tail -n 1)"
fi
[ -x "$bin" ] || { echo "no headscale binary at $bin (run .ci/install-go-headscale or set HEADSCALE_GO)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
export HEADSCALE_DISABLE_CHECK_UPDATES=true

tmp="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

# A DERP map that needs no network: one dummy region on loopback, never fetched from anywhere.
cat > "$tmp/derp.yaml" <<YAML
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
YAML

cat > "$tmp/config.yaml" <<YAML
server_url: http://127.0.0.1:$port
listen_addr: 127.0.0.1:$port
metrics_listen_addr: 127.0.0.1:0
grpc_listen_addr: 127.0.0.1:0
grpc_allow_insecure: false
disable_check_updates: true
noise:
  private_key_path: $tmp/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: false
  urls: []
  paths:
    - $tmp/derp.yaml
  auto_update_enabled: false
node:
  expiry: 0
database:
  type: sqlite
  sqlite:
    path: $tmp/db.sqlite
    write_ahead_log: true
log:
  level: warn
  format: text
policy:
  mode: database
dns:
  magic_dns: true
  base_domain: tailnet.example
  override_local_dns: false
  nameservers:
    global: []
unix_socket: $tmp/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
YAML

"$bin" -c "$tmp/config.yaml" serve > "$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$tmp/serve.log" >&2; exit 1; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }

rm -f "$here"/*.txt.new
count=0
while read -r name args; do
    case "$name" in ''|'#'*) continue ;; esac
    args="${args//\{\{dir\}\}/$here}"
    read -ra argv <<< "$args"
    rc=0
    "$bin" -c "$tmp/config.yaml" "${argv[@]}" < /dev/null > "$tmp/out" 2> "$tmp/err" || rc=$?
    {
        echo "rc: $rc"
        echo "--- stdout"
        cat "$tmp/out"
        echo "--- stderr"
        cat "$tmp/err"
    } > "$here/$name.txt.new"
    count=$((count + 1))
done < "$here/cases.txt"
# Replace the old recording only once the whole run worked.
find "$here" -maxdepth 1 -name '*.txt' ! -name 'cases.txt' -delete
for f in "$here"/*.txt.new; do mv "$f" "${f%.new}"; done
if grep -qiE 'panic|fatal' "$tmp/serve.log"; then
    echo "--- headscale log had panics/fatal lines:" >&2
    grep -iE 'panic|fatal' "$tmp/serve.log" >&2 || true
fi
echo "recorded $count cases into $here"
