#!/bin/bash
# shellcheck disable=SC2016,SC2317 # bash -c bodies; functions run through `rounds`
# Boot HTTP: ironboot vs nginx (what Ironic/Bifrost serve http_root with), in one run:
# CLIENTS concurrent curl downloads of one SIZE_MIB file (page cache warm). Target: ironboot
# throughput >= 1.0x nginx's.
#
# Every download streams through the checksum (BENCH_SUM, cksum by default: ~15 GB/s) as it
# arrives, for both servers alike; curl --fail makes any non-2xx answer a failed transfer.
# nginx runs with Bifrost-like settings: worker_processes auto, sendfile on, tcp_nopush on,
# access_log off. ironboot runs as `ironboot serve` with its default [http] settings.
# Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/http.sh [--strict]
Env:   ROUNDS (default 4), CLIENTS (32), SIZE_MIB (1024), BENCH_SUM, IB, WORK (benches/lib.sh)
Needs: curl nginx python3
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-4}
CLIENTS=${CLIENTS:-32}
SIZE_MIB=${SIZE_MIB:-1024}
bench_usage "$USAGE"
bench_init http "$@"
bench_need curl nginx python3
bench_ironboot

DATA=$WORK/data
ROOT=$DATA/httpboot
mkdir -p "$ROOT"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$ROOT/image"
chmod 755 "$WORK" "$DATA" "$ROOT"
chmod 644 "$ROOT/image"
SUM=$(checksum "$ROOT/image")

start_ironboot "$DATA"
start_nginx "$ROOT" 1024
declare -A PORT=([ironboot]=$IB_HTTP [nginx]=$NGX)
cat "$ROOT/image" > /dev/null # warm the page cache
echo "   ports: ironboot $IB_HTTP, nginx $(nginx -v 2>&1 | sed 's/.*\///') $NGX; $CLIENTS x $SIZE_MIB MiB"

download() {
  transfer_many "http.$1" "$CLIENTS" "$SUM" - \
    curl -sS --fail --max-time 900 -o - "http://127.0.0.1:${PORT[$1]}/image"
}

rounds download ironboot nginx

compare "$CLIENTS concurrent curl downloads x $SIZE_MIB MiB (wall time of all)" \
  http.ironboot ironboot http.nginx nginx
for side in ironboot nginx; do
  med=$(median_of "http.$side")
  if [ "$med" != - ]; then
    echo "   $side: $(awk -v c="$CLIENTS" -v s="$SIZE_MIB" -v t="$med" 'BEGIN {printf "%.2f", c * s / 1024 / t}') GiB/s at the median"
  fi
done
target "throughput >= 1.0x nginx's (throughput ratio, higher is better)" \
  "$(ratio_of http.nginx http.ironboot)" ">=" 1.0
bench_finish
