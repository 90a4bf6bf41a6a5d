#!/usr/bin/env bash
# Records golden /api/v1 responses from the real Go headscale (0.29.2) for tests/api_contract.rs.
#
# Starts headscale on loopback with a throwaway config (sqlite, unix socket and keys in a temp
# dir, no DERP fetches, no update checks, policy.mode: database), creates an admin API key with
# its CLI, then runs record_cases.py, which sends every case to 127.0.0.1 only and writes one
# JSON file per case next to this script. Nothing here talks to anything but loopback.
#
#   bash tests/golden/api/record.sh            # uses $HEADSCALE_GO or the cache dir below
#   HEADSCALE_GO=/path/to/headscale bash tests/golden/api/record.sh
#
# Install the binary (never commit it):
#   GOBIN=/root/.cache/headscale-rs/go-headscale-0.29.2 GOTOOLCHAIN=local \
#     go install github.com/juanfont/headscale/cmd/headscale@v0.29.2
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${HEADSCALE_GO:-/root/.cache/headscale-rs/go-headscale-0.29.2/headscale}"
[ -x "$bin" ] || { echo "no headscale binary at $bin (set HEADSCALE_GO)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

tmp="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

# A DERP map that needs no network: one dummy region on loopback, never fetched from anywhere.
cat > "$tmp/derp.yaml" <<EOF
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

cat > "$tmp/config.yaml" <<EOF
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
taildrop:
  enabled: true
EOF

"$bin" -c "$tmp/config.yaml" serve > "$tmp/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then cat "$tmp/serve.log" >&2; exit 1; fi
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/health" >/dev/null || { cat "$tmp/serve.log" >&2; exit 1; }

api_key="$("$bin" -c "$tmp/config.yaml" apikeys create --expiration 1d 2>/dev/null | tail -n 1)"
case "$api_key" in hskey-api-*) ;; *) echo "could not create an API key: $api_key" >&2; exit 1 ;; esac

version="$("$bin" -c "$tmp/config.yaml" version 2>/dev/null | head -n 1 || true)"
rm -f "$here"/*.json
python3 "$here/record_cases.py" "http://127.0.0.1:$port" "$api_key" "$here" "$version"
if grep -qiE 'panic|fatal' "$tmp/serve.log"; then
    echo "--- headscale log had panics/fatal lines:" >&2
    grep -iE 'panic|fatal' "$tmp/serve.log" >&2 || true
fi
echo "recorded $(ls "$here"/*.json | wc -l) cases into $here"
