#!/usr/bin/env bash
# The main job on one machine: a reference ledger (ledgerd, embedded sled) and an
# edge spool (spoold) forwarding to it, both on loopback, ready to accept events.
# Ctrl-C stops both (SIGTERM: in-flight requests finish, the spool closes cleanly).
#
# Data, tokens and logs live in ./data/local (override with OFFGRID_DATA); they
# are kept between runs, so events spooled in one run are still there (and still
# forwarded) in the next. Ports: OFFGRID_SPOOLD_ADDR (127.0.0.1:8700),
# OFFGRID_LEDGERD_ADDR (127.0.0.1:8800).
set -euo pipefail
cd "$(dirname "$0")/.."

data="${OFFGRID_DATA:-$PWD/data/local}"
spoold_addr="${OFFGRID_SPOOLD_ADDR:-127.0.0.1:8700}"
ledgerd_addr="${OFFGRID_LEDGERD_ADDR:-127.0.0.1:8800}"

cargo build --release --locked -p spoold -p ledger -p spoolctl
bin="$PWD/target/release"

mkdir -p "$data"
chmod 700 "$data"
umask 077
secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
# Tokens are made once and kept: name:secret[:role] (SPEC §5).
if [ ! -f "$data/ledgerd.tokens" ]; then
  node_secret="$(secret)"
  printf 'local-1:%s:node\nadmin:%s:admin\n' "$node_secret" "$(secret)" > "$data/ledgerd.tokens"
  printf '%s\n' "$node_secret" > "$data/ledger.token"
  printf 'local-client:%s\n' "$(secret)" > "$data/spoold.tokens"
fi
client_secret="$(cut -d: -f2 "$data/spoold.tokens" | head -n 1)"
admin_secret="$(grep '^admin:' "$data/ledgerd.tokens" | cut -d: -f2)"

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

"$bin/ledgerd" --listen "$ledgerd_addr" --store "sled://$data/ledgerd" \
  --tokens-file "$data/ledgerd.tokens" 2>>"$data/ledgerd.log" &
pids+=($!)
"$bin/spoold" --listen "$spoold_addr" --spool-dir "$data/spoold" --node-id local-1 \
  --tokens-file "$data/spoold.tokens" --ledger-url "http://$ledgerd_addr" \
  --ledger-token-file "$data/ledger.token" --admin-socket "$data/spoold.sock" 2>>"$data/spoold.log" &
pids+=($!)

for url in "http://$ledgerd_addr/readyz" "http://$spoold_addr/readyz"; do
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && break
    sleep 0.1
  done
  curl -fsS -o /dev/null "$url" || { echo "not ready: $url (logs in $data)" >&2; exit 1; }
done

cat <<INFO
offgrid is running: spoold on http://$spoold_addr, ledgerd on http://$ledgerd_addr
data, tokens and logs: $data

Send an event (202 accepted = fsynced in the spool; sending it again answers 200 duplicate):
  curl -sS -X POST http://$spoold_addr/v1/events \\
    -H 'Authorization: Bearer $client_secret' -H 'Content-Type: application/json' \\
    -d '{"id":"sl-demo-1","kind":"purchase","amount":250,"currency":"L\$","payer":"9c8b7a6d-5e4f-4a3b-2c1d-0e9f8a7b6c5d","payee":"2b6f0d1e-4c1a-4f9e-9a6b-3c2d1e0f9a8b","occurred_at":"2026-11-24T12:00:00Z","item":"Mesh Sofa Deluxe"}'

See it at the ledger (once forwarded, within a second):
  curl -sS http://$ledgerd_addr/v1/events/sl-demo-1 -H 'Authorization: Bearer $admin_secret'

Inspect the spool:
  $bin/spoolctl --socket $data/spoold.sock status

Ctrl-C stops both.
INFO
wait
