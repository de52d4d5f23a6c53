#!/bin/bash
# Connection floods (issue 16): p99 of GET /v1/nodes/{id} while 10,000 idle connections are
# held against the boot HTTP port, with ironboot started at a soft open-file limit of 1,024
# (a) with no higher hard limit (soft = hard = 1,024: the caps must fit) and (b) with the
# machine's hard limit (raised at start); plus a baseline without the flood, and the time to shed
# slowloris connections (a head sent a line per second) at the default header_read_timeout.
# Every API answer is checked (status 200 and the node's uuid).
#
# Usage: benches/flood.sh     Env: IDLE (10000), SECONDS_EACH (20), SLOW (500), IB, WORK
# Needs: curl python3 prlimit (util-linux); a hard open-file limit above IDLE + 512
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib-serve.sh
IDLE=${IDLE:-10000}; SECONDS_EACH=${SECONDS_EACH:-20}; SLOW=${SLOW:-500}
for t in curl python3 prlimit; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }; done
build_ironboot
WORK=${WORK:-$(mktemp -d /tmp/ironboot-flood-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT
HARD=$(ulimit -Hn)
ulimit -n "$HARD"

# run NAME SOFT HARD FLOOD(0|1)
run() {
  local name=$1 soft=$2 hard=$3 flood=$4 api http data=$WORK/$1
  api=$(free_port tcp); http=$(free_port tcp)
  RUST_LOG=warn prlimit --nofile="$soft:$hard" -- "$IB" serve --data-dir "$data" \
    --api-listen "127.0.0.1:$api" --http-listen "127.0.0.1:$http" \
    --tftp-listen "127.0.0.1:$(free_port udp)" > "$WORK/$name.log" 2>&1 &
  local pid=$!; PIDS+=($pid)
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  local node
  node=$(curl -sf -H 'Content-Type: application/json' -d '{"driver": "fake-hardware"}' \
    "http://127.0.0.1:$api/v1/nodes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uuid"])')
  local idle=$IDLE; [ "$flood" = 1 ] || idle=0
  printf '%-34s ' "$name (nofile $soft:$hard):"
  python3 benches/flood.py api-p99 "$api" "$node" "$http" "$idle" "$SECONDS_EACH"
  if grep -q "Too many open files" "$WORK/$name.log"; then echo "  (the server logged EMFILE)"; fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

echo "== GET /v1/nodes/{id} latency, new connection per request, ${SECONDS_EACH}s each"
run baseline 1024 "$HARD" 0
run flood-at-1024 1024 1024 1
run flood-raised 1024 "$HARD" 1

echo "== slowloris: $SLOW connections, one header line per second, default header_read_timeout"
api=$(free_port tcp); http=$(free_port tcp)
RUST_LOG=warn "$IB" serve --data-dir "$WORK/slow" --api-listen "127.0.0.1:$api" \
  --http-listen "127.0.0.1:$http" --tftp-listen "127.0.0.1:$(free_port udp)" \
  > "$WORK/slow.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
python3 benches/flood.py slowloris "$http" "$SLOW" 40
