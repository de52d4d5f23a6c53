#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2317 # bash -c bodies; functions run through `rounds`
# Image cache: NODES concurrent deploy-style requests of one uncached SIZE_MIB image through
# ironboot's cache (fetch, then hard-link into NODES node directories), in one run with one
# plain `curl` download of the same image from the same local origin and with
# `curl | tee | sha256sum` (download and hash: the work the cache does too). Target: ironboot
# <= 1.1x one plain curl download.
#
# The ironboot side starts from an empty cache every round; every side starts after `sync`,
# so none pays for another's write-back. A round of the ironboot side counts only when the
# origin saw exactly one GET for the NODES requests, every node file is the same inode, and
# that file's checksum equals the source's. Cache-hit latency (HITS conditional GETs answered
# 304) is what the bench binary measured. `curl + fsync` (information, no target) is the
# download made durable, as the cache's must be. Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/image_cache.sh [--strict] [SIZE_MIB]
Env:   ROUNDS (default 6), SIZE_MIB (1024), NODES (100), HITS (200), BENCH_SUM, WORK
       (benches/lib.sh); builds examples/image_cache_bench --release (CARGO_TARGET_DIR)
Needs: curl
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
BENCH_NUMBER=SIZE_MIB
ROUNDS=${ROUNDS:-6}
SIZE_MIB=${SIZE_MIB:-1024}
NODES=${NODES:-100}
HITS=${HITS:-200}
bench_usage "$USAGE"
bench_init image_cache "$@"
bench_need curl sha256sum tee
cargo build --release --quiet --example image_cache_bench
BENCH=$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/image_cache_bench")

head -c $((SIZE_MIB << 20)) /dev/urandom > "$WORK/image"
SUM=$(checksum "$WORK/image")
start_bg "$BENCH" origin "$WORK/image" "$WORK/port"
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
ORIGIN=http://127.0.0.1:$(cat "$WORK/port")
URL=$ORIGIN/image
curl -sS --fail -o /dev/null "$URL" # warm the origin's page cache
echo "   origin $ORIGIN; image ${SIZE_MIB} MiB; $NODES requests, then $HITS cache hits"

gets() { curl -sS --fail "$ORIGIN/stats"; }

# The ironboot side's check: one origin GET, one master linked into every node directory,
# holding the source's bytes.
nodes_ok() {
  local after inodes
  after=$(gets) || { echo "cannot read the origin's GET count"; return 1; }
  # The HITS cache hits are conditional GETs (304), counted by the origin too.
  GETS=$((after - BEFORE - HITS))
  if [ "$GETS" != 1 ]; then
    echo "the origin saw $GETS GETs for $NODES requests (must be 1)"
    return 1
  fi
  inodes=$(find "$1" -name disk -type f -exec stat -c %i {} + | sort -u)
  if [ "$(find "$1" -name disk -type f | wc -l)" != "$NODES" ] || [ "$(wc -l <<< "$inodes")" != 1 ]; then
    echo "expected $NODES node files linking one master, found inodes: $(tr '\n' ' ' <<< "$inodes")"
    return 1
  fi
  local got
  got=$(checksum "$1/0/disk")
  if [ "$got" != "$SUM" ]; then
    echo "corrupt: $BENCH_SUM $got, source $SUM"
    return 1
  fi
}

deploy() { "$BENCH" deploy "$URL" "$WORK/cache" "$WORK/nodes" "$NODES" "$HITS" > "$WORK/deploy.out"; }

side() {
  rm -rf "$WORK/cache" "$WORK/nodes" "$WORK/plain"
  sync
  case $1 in
    ironboot)
      BEFORE=$(gets)
      rm -f "$WORK/deploy.out"
      local failed
      failed=$(failures_of cache.ironboot)
      transfer cache.ironboot "$WORK/nodes" @nodes_ok deploy
      if [ "$(failures_of cache.ironboot)" = "$failed" ]; then
        sample hit.p50 "$(awk '/^hit_p50_ms/ {print $2}' "$WORK/deploy.out")"
        sample hit.p99 "$(awk '/^hit_p99_ms/ {print $2}' "$WORK/deploy.out")"
      fi
      rm -rf "$WORK/cache"
      ;;
    curl)
      transfer cache.curl "$WORK/plain" "$SUM" curl -sS --fail -o "$WORK/plain" "$URL"
      ;;
    curl+fsync)
      # A durable download (the cache may not publish a master before it is on disk).
      transfer cache.curl-fsync "$WORK/plain" "$SUM" \
        bash -c 'curl -sS --fail -o "$1" "$2" && sync "$1"' _ "$WORK/plain" "$URL"
      ;;
    curl+sha256sum)
      transfer cache.curl-sha256 "$WORK/plain" "$SUM" \
        bash -o pipefail -c 'curl -sS --fail "$1" | tee "$2" | sha256sum > /dev/null' _ "$URL" "$WORK/plain"
      ;;
  esac
}

rounds side ironboot curl curl+fsync curl+sha256sum

compare "$SIZE_MIB MiB image: $NODES concurrent requests through the cache vs one plain curl download" \
  cache.ironboot ironboot cache.curl curl
target "ironboot <= 1.1x one plain curl download (time ratio, lower is better)" \
  "$(ratio_of cache.ironboot cache.curl)" "<=" 1.1
compare "a durable download: curl, then fsync of its file" cache.ironboot ironboot cache.curl-fsync "curl+fsync"
compare "the same work: download and hash" cache.ironboot ironboot cache.curl-sha256 "curl|tee|sha256sum"
echo
echo "-- cache hits (conditional GET answered 304), as the bench binary timed them, per round"
show hit.p50 "p50" ms
show hit.p99 "p99" ms
bench_finish
