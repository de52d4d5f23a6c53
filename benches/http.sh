#!/bin/bash
# Boot HTTP: ironboot vs nginx (what Ironic/Bifrost serve http_root with), side by side in one
# run: 32 concurrent curl downloads of one 1 GiB file (page cache warm), ROUNDS rounds
# alternating, median wall time. Target: ironboot throughput >= 1.0x nginx. Every download is
# checked for status 200 and the full size; one download per round is also md5-checked.
#
# nginx runs with Bifrost-like settings: worker_processes auto, sendfile on, tcp_nopush on,
# access_log off. ironboot runs as `ironboot serve` with its default [http] settings.
#
# Usage: benches/http.sh     Env: ROUNDS (default 3), CLIENTS (32), SIZE_MIB (1024), IB, WORK
# Needs: curl nginx python3
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib-serve.sh
export PATH="$PATH:/usr/sbin:/sbin"
ROUNDS=${ROUNDS:-3}; CLIENTS=${CLIENTS:-32}; SIZE_MIB=${SIZE_MIB:-1024}
for t in curl nginx python3; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }; done
build_ironboot
WORK=${WORK:-$(mktemp -d /tmp/ironboot-http-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT

DATA=$WORK/data
ROOT=$DATA/httpboot
mkdir -p "$ROOT"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$ROOT/image"
chmod 755 "$WORK" "$DATA" "$ROOT"; chmod 644 "$ROOT/image"
SUM=$(md5sum < "$ROOT/image")
SIZE=$((SIZE_MIB << 20))

start_ironboot "$DATA"
NGX=$(free_port tcp)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$NGX; root $ROOT; }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" & PIDS+=($!)
for _ in $(seq 50); do curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$NGX/image" && break; sleep 0.1; done
cat "$ROOT/image" > /dev/null   # warm the page cache
echo "== ironboot $($IB --version) http :$IB_HTTP | nginx $(nginx -v 2>&1 | sed 's/.*\///') :$NGX | $CLIENTS x $SIZE_MIB MiB, $ROUNDS rounds, $(nproc) cores"

download() { # port -> seconds; fails on any short or non-200 download
  local t=$EPOCHREALTIME pids=() i bad=0
  for i in $(seq "$CLIENTS"); do
    curl -s --max-time 600 -o /dev/null -w "%{http_code} %{size_download}\n" \
      "http://127.0.0.1:$1/image" > "$WORK/dl.$i" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
  local wall; wall=$(since "$t")
  for i in $(seq "$CLIENTS"); do [ "$(cat "$WORK/dl.$i")" = "200 $SIZE" ] || bad=$((bad + 1)); done
  [ "$bad" = 0 ] || { echo "$bad failed downloads from :$1" >&2; exit 1; }
  curl -s "http://127.0.0.1:$1/image" | md5sum | grep -q "${SUM%% *}" || { echo "CORRUPT from :$1" >&2; exit 1; }
  echo "$wall"
}

IBT=""; NGT=""
for r in $(seq "$ROUNDS"); do
  IBT+="$(download "$IB_HTTP") "; NGT+="$(download "$NGX") "
  echo "  round $r done"
done
ib=$(tr ' ' '\n' <<< "$IBT" | grep . | median); ng=$(tr ' ' '\n' <<< "$NGT" | grep . | median)
gib=$(awk -v c="$CLIENTS" -v s="$SIZE_MIB" 'BEGIN {print c*s/1024}')
r=$(ratio "$ng" "$ib")
echo
echo "benchmark                                  ironboot           nginx              ratio  target"
printf "%s x %s MiB concurrent (curl)           %6.2f s %5.2f GiB/s  %6.2f s %5.2f GiB/s  %s   throughput >= 1.0x nginx: %s\n" \
  "$CLIENTS" "$SIZE_MIB" "$ib" "$(awk -v g="$gib" -v t="$ib" 'BEGIN {print g/t}')" \
  "$ng" "$(awk -v g="$gib" -v t="$ng" 'BEGIN {print g/t}')" "$r" \
  "$(awk -v v="$r" 'BEGIN {print (v >= 1.0) ? "met" : "MISSED"}')"
