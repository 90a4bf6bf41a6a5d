#!/usr/bin/env bash
# A small tailnet with a history, to try the audit questions on (see README.md here).
#
#   bash examples/story/story.sh            # plays the story on a throwaway server, asks, stops
#   bash examples/story/story.sh --keep     # ... and leaves the server running to explore
#
# The headscale binary is $HEADSCALE, else target/debug/headscale, else `headscale` on PATH.
# Everything runs on 127.0.0.1 in a temp dir; nothing is installed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
keep=false
[[ ${1:-} == --keep ]] && keep=true
if [[ -z ${HEADSCALE:-} ]]; then
    if [[ -x $repo/target/debug/headscale ]]; then HEADSCALE=$repo/target/debug/headscale
    elif [[ -n ${CARGO_TARGET_DIR:-} && -x $CARGO_TARGET_DIR/debug/headscale ]]; then
        HEADSCALE=$CARGO_TARGET_DIR/debug/headscale
    else HEADSCALE=headscale; fi
fi

dir=$(mktemp -d /tmp/headscale-story.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/config.yaml" <<YAML
server_url: http://127.0.0.1:$port
listen_addr: 127.0.0.1:$port
metrics_listen_addr: ""
unix_socket: $dir/headscale.sock
noise:
  private_key_path: $dir/noise_private.key
database:
  type: sled
  sled:
    path: $dir/db.sled
dns:
  base_domain: acme.example
derp:
  server:
    enabled: false
    private_key_path: $dir/derp.key
policy:
  mode: database
log:
  level: warn
YAML

hs() { "$HEADSCALE" -c "$dir/config.yaml" "$@"; }
# The seq of the newest event: the story's marks are points in the log.
head_seq() { hs events list -o json | python3 -c 'import json,sys; e=json.load(sys.stdin); print(e[-1]["seq"] if e else 0)'; }
node_id() { hs nodes list -o json | python3 -c "import json,sys; print(next(n['id'] for n in json.load(sys.stdin) if n['given_name']=='$1'))"; }
ask() { printf '\n$ headscale %s\n' "$*"; hs "$@"; }

hs serve >"$dir/server.log" 2>&1 &
server=$!
stop() { if ! $keep; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"; fi; }
trap stop EXIT
for _ in $(seq 100); do hs health >/dev/null 2>&1 && break; sleep 0.1; done
hs health >/dev/null

# Act 1: the tailnet as it should be.
for user in alice bob dave; do hs users create "$user" >/dev/null; done
hs debug create-node --name alice-laptop -u alice >/dev/null
hs debug create-node --name bob-laptop -u bob >/dev/null
hs debug create-node --name dave-laptop -u dave >/dev/null
hs debug create-node --name db-1 -u alice >/dev/null
hs debug create-node --name ci-runner -u alice >/dev/null
hs debug create-node --name office-router -u alice -r 10.20.0.0/24 >/dev/null
hs nodes tag -i "$(node_id db-1)" -t tag:db >/dev/null
hs nodes tag -i "$(node_id ci-runner)" -t tag:ci >/dev/null
hs nodes tag -i "$(node_id office-router)" -t tag:router >/dev/null
hs routes enable -i "$(node_id office-router)" -r 10.20.0.0/24 >/dev/null
hs policy set -f "$here/policy-1.hujson" >/dev/null
before=$(head_seq)

# Act 2: the incident. A contractor joins and is put in group:eng "for a quick fix".
hs users create eve >/dev/null
hs debug create-node --name eve-laptop -u eve >/dev/null
hs policy set -f "$here/policy-2.hujson" >/dev/null
incident=$(head_seq)

# Act 3: the clean-up. eve leaves group:eng, her laptop is expired, a staging server appears.
hs policy set -f "$here/policy-3.hujson" >/dev/null
hs debug create-node --name staging-web -u alice >/dev/null
hs nodes tag -i "$(node_id staging-web)" -t tag:staging >/dev/null
hs nodes expire -i "$(node_id eve-laptop)" >/dev/null
after=$(head_seq)

echo "The story is in the log: before the incident = seq $before, during = seq $incident, after = seq $after."

# Who could reach the database during the incident, and by which rule?
ask policy who-can-reach db-1:5432 --at "$incident"
# When was that access gained and lost, by which events, done by whom?
ask policy who-can-reach db-1:5432 --since "$before" --until "$after"
# What could eve's laptop reach during the incident?
ask policy what-can eve-laptop --at "$incident"
# What did eve's client get from the server then (peers, packet filter, SSH policy, DNS)?
ask nodes netmap --node eve-laptop --at "$incident"
# What changed in the tailnet from before the incident to after the clean-up?
ask state diff --from "$before" --to "$after"
# Who did it: the admin's changes since the incident began.
ask events list --since "$before" --actor admin
ask users list --at "$incident"
# An export an auditor can check on another machine, without the server.
export_file="$dir/story-audit.jsonl"
ask events export --file "$export_file"
key=$(hs events verify -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["checkpointKey"])')
ask events verify --file "$export_file" --key "$key"

if $keep; then
    echo
    echo "The server keeps running: headscale -c $dir/config.yaml <command>   (stop: kill $server)"
fi
