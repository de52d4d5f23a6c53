#!/usr/bin/env bash
# Image cache benchmark: 100 concurrent deploy-style requests of one uncached image (1 GiB by
# default) through ironboot's cache, side by side with one plain `curl` download of the same
# image from the same local origin, and with `curl | tee | sha256sum` (download and hash, the
# work the cache does too), in one run. Prints origin GETs (must be 1), the wall-time ratios
# (goal <= 1.1 against plain curl) and the cache-hit latency (a conditional GET answered 304).
#
#   benches/image_cache.sh [SIZE_MIB]        (needs curl; uses CARGO_TARGET_DIR if set)
set -euo pipefail

SIZE_MIB=${1:-1024}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ironboot-image-bench.XXXXXX")
ORIGIN_PID=
cleanup() {
    [ -n "$ORIGIN_PID" ] && kill "$ORIGIN_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v curl >/dev/null || { echo "curl is required" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --quiet --example image_cache_bench)
BENCH=$TARGET/release/examples/image_cache_bench

echo "# making a ${SIZE_MIB} MiB image in $WORK"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$WORK/image"
"$BENCH" origin "$WORK/image" "$WORK/port" &
ORIGIN_PID=$!
for _ in $(seq 100); do [ -s "$WORK/port" ] && break; sleep 0.05; done
URL="http://127.0.0.1:$(cat "$WORK/port")/image"
gets() { curl -s "http://127.0.0.1:$(cat "$WORK/port")/stats"; }
now() { date +%s.%N; }

# Warm the origin's page cache so neither side pays for the first read of the file.
curl -s -o /dev/null "$URL"

ROUNDS=${ROUNDS:-5}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
curls=() verifies=() deploys=() p50s=() p99s=() gets_per_round=()
# Rounds alternate the sides; each starts after `sync` so none pays for another's
# write-back. The ironboot side starts from an empty cache every round.
for r in $(seq "$ROUNDS"); do
    rm -rf "$WORK/plain" "$WORK/cache" "$WORK/nodes"
    sync
    t0=$(now)
    curl -s -o "$WORK/plain" "$URL"
    t1=$(now)
    curls+=("$(awk "BEGIN { print $t1 - $t0 }")")
    rm -f "$WORK/plain"
    sync
    t0=$(now)
    curl -s "$URL" | tee "$WORK/plain" | sha256sum >/dev/null
    t1=$(now)
    verifies+=("$(awk "BEGIN { print $t1 - $t0 }")")
    rm -f "$WORK/plain"
    sync
    before=$(gets)
    "$BENCH" deploy "$URL" "$WORK/cache" "$WORK/nodes" 100 200 >"$WORK/deploy.out"
    after=$(gets)
    gets_per_round+=($((after - before - 200))) # the 200 cache hits are conditional GETs (304)
    deploys+=("$(awk '/^deploy_secs/ {print $2}' "$WORK/deploy.out")")
    p50s+=("$(awk '/^hit_p50_ms/ {print $2}' "$WORK/deploy.out")")
    p99s+=("$(awk '/^hit_p99_ms/ {print $2}' "$WORK/deploy.out")")
done
sha=$(awk '/^sha256/ {print $2}' "$WORK/deploy.out")
curl_med=$(printf '%s\n' "${curls[@]}" | median)
verify_med=$(printf '%s\n' "${verifies[@]}" | median)
deploy_med=$(printf '%s\n' "${deploys[@]}" | median)
p50=$(printf '%s\n' "${p50s[@]}" | median)
p99=$(printf '%s\n' "${p99s[@]}" | median)
links=$(stat -c %h "$WORK/nodes/0/disk")

[ "$(sha256sum "$WORK/nodes/42/disk" | cut -d' ' -f1)" = "$sha" ] || { echo "content mismatch" >&2; exit 1; }
printf '\n== image cache: %s MiB image, 100 concurrent deploy requests ==\n' "$SIZE_MIB"
printf 'origin GETs per round           : %s (must be 1)\n' "${gets_per_round[*]}"
printf 'links to the master             : %d (100 nodes + the master)\n' "$links"
printf 'plain curl download             : %.2f s median (%s)\n' "$curl_med" "${curls[*]}"
printf 'ironboot, 100 requests          : %.2f s median (%s; download, sha256, inspect, fsync, 100 links)\n' "$deploy_med" "${deploys[*]}"
printf 'curl | tee | sha256sum          : %.2f s median (%s)\n' "$verify_med" "${verifies[*]}"
printf 'ratio ironboot / curl           : %.2fx (goal <= 1.1x)\n' "$(awk "BEGIN { print $deploy_med / $curl_med }")"
printf 'ratio ironboot / curl+sha256sum : %.2fx (the same work: download and hash)\n' "$(awk "BEGIN { print $deploy_med / $verify_med }")"
printf 'cache hit latency               : p50 %.2f ms, p99 %.2f ms (conditional GET answered 304)\n' "$p50" "$p99"
for g in "${gets_per_round[@]}"; do
    [ "$g" -eq 1 ] || { echo "FAIL: expected exactly one origin GET per round" >&2; exit 1; }
done
