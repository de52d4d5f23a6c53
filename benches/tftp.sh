#!/bin/bash
# shellcheck disable=SC2016,SC2317 # bash -c bodies; functions run through `rounds`
# TFTP: ironboot vs tftpd-hpa (what Ironic/Bifrost deploy) and atftpd 0.8.0 (the reference
# server for RFC 7440 windowsize), in one run, same files, same clients:
#
#   1. lock-step: curl --tftp-blksize 1468 of a SIZE_MIB file, ironboot vs tftpd-hpa
#      (target: ironboot throughput >= 1.0x tftpd-hpa's)
#   2. windowed: atftp --option "blksize 1468" --option "windowsize 16" of the same file,
#      ironboot vs atftpd (target: ironboot time <= 1.0x atftpd's), and the CPU time (user +
#      system) each server spent per GiB sent (target: ironboot's <= 1.0x atftpd's). Both
#      serve a transfer from a thread of one process, so /proc/PID/stat counts all of it;
#      tftpd-hpa forks per client, whose time its stat never shows, so lock-step has no
#      CPU figure here (benches/storm.sh measures it with cgroups).
#   3. storm: STORM_CLIENTS concurrent curl clients fetching a STORM_KIB file, ironboot vs
#      tftpd-hpa (target: no failed transfer, wall time <= 1.0x tftpd-hpa's)
#
# ironboot runs as `ironboot serve` with its default [tftp] settings (blksize cap 1468,
# windowsize cap 16, 1 worker). Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/tftp.sh [--strict]
Env:   ROUNDS (default 6), SIZE_MIB (64), STORM_CLIENTS (200), STORM_KIB (1024), BENCH_SUM,
       IB, WORK (see benches/lib.sh)
Needs: curl atftp tftpd-hpa (in.tftpd) python3, and apt-get download for atftpd + libwrap0
       (atftpd conflicts with tftpd-hpa, so it runs from its extracted .deb)
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-6}
SIZE_MIB=${SIZE_MIB:-64}
STORM_CLIENTS=${STORM_CLIENTS:-200}
STORM_KIB=${STORM_KIB:-1024}
bench_usage "$USAGE"
bench_init tftp "$@"
bench_need curl atftp in.tftpd python3 dpkg apt-get
bench_ironboot

# atftpd from its .deb, cached between runs.
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ironboot-bench
if [ ! -x "$CACHE/atftpd/usr/sbin/atftpd" ]; then
  mkdir -p "$CACHE"
  (cd "$CACHE" && apt-get download atftpd > /dev/null 2>&1 && dpkg -x atftpd_*.deb atftpd)
fi
ATFTPD=$CACHE/atftpd/usr/sbin/atftpd

DATA=$WORK/data
ROOT=$DATA/tftpboot
mkdir -p "$ROOT"
head -c $((SIZE_MIB << 20)) /dev/urandom > "$ROOT/big"
head -c $((STORM_KIB << 10)) /dev/urandom > "$ROOT/small"
chmod 755 "$WORK" "$DATA" "$ROOT"
chmod 644 "$ROOT"/big "$ROOT"/small # tftpd-hpa drops to nobody
SUM_BIG=$(checksum "$ROOT/big")
SUM_SMALL=$(checksum "$ROOT/small")

start_ironboot "$DATA"
IB_PID=${BENCH_PIDS[-1]}
HPA=$(free_port udp)
ATF=$(free_port udp)
start_bg in.tftpd -L -a "127.0.0.1:$HPA" -s "$ROOT"
start_bg "$ATFTPD" --daemon --no-fork --port "$ATF" --bind-address 127.0.0.1 \
  --user "$(id -un)" --group "$(id -gn)" --logfile /dev/null "$ROOT"
declare -A PORT=([ironboot]=$IB_TFTP [tftpd-hpa]=$HPA [atftpd]=$ATF)
declare -A PID=([ironboot]=$IB_PID [atftpd]=${BENCH_PIDS[-1]})
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 0.5
echo "   ports: ironboot $IB_TFTP, tftpd-hpa $HPA, atftpd 0.8.0 $ATF; files ${SIZE_MIB} MiB and ${STORM_KIB} KiB"

lock_step() {
  transfer "lock.$1" "$WORK/out" "$SUM_BIG" \
    curl -sS --max-time 300 --tftp-blksize 1468 -o "$WORK/out" "tftp://127.0.0.1:${PORT[$1]}/big"
}
windowed() {
  local before
  before=$(ticks "${PID[$1]}")
  transfer "window.$1" "$WORK/out" "$SUM_BIG" \
    atftp --get -r big -l "$WORK/out" --option "blksize 1468" --option "windowsize 16" \
    127.0.0.1 "${PORT[$1]}"
  sample "window-cpu.$1" "$(awk -v t=$(($(ticks "${PID[$1]}") - before)) -v hz="$HZ" \
    -v mib="$SIZE_MIB" 'BEGIN {printf "%.3f", t / hz / (mib / 1024)}')"
}
storm() {
  transfer_many "storm.$1" "$STORM_CLIENTS" "$SUM_SMALL" "$WORK/storm.{}" \
    curl -sS --max-time 300 --tftp-blksize 1468 -o "$WORK/storm.{}" "tftp://127.0.0.1:${PORT[$1]}/small"
}

rounds lock_step ironboot tftpd-hpa
rounds windowed ironboot atftpd
rounds storm ironboot tftpd-hpa

compare "$SIZE_MIB MiB lock-step, curl --tftp-blksize 1468 (time per transfer)" \
  lock.ironboot ironboot lock.tftpd-hpa tftpd-hpa
target "lock-step throughput >= 1.0x tftpd-hpa's (throughput ratio, higher is better)" \
  "$(ratio_of lock.tftpd-hpa lock.ironboot)" ">=" 1.0
compare "$SIZE_MIB MiB, atftp blksize 1468 + windowsize 16 (time per transfer)" \
  window.ironboot ironboot window.atftpd atftpd
target "windowed time <= 1.0x atftpd's (time ratio, lower is better)" \
  "$(ratio_of window.ironboot window.atftpd)" "<=" 1.0
compare "server CPU (user + system) per GiB sent, windowed" \
  window-cpu.ironboot ironboot window-cpu.atftpd atftpd s/GiB
target "windowed CPU per GiB <= 1.0x atftpd's" \
  "$(ratio_of window-cpu.ironboot window-cpu.atftpd)" "<=" 1.0
compare "$STORM_CLIENTS concurrent curl clients x $STORM_KIB KiB (wall time of all)" \
  storm.ironboot ironboot storm.tftpd-hpa tftpd-hpa
target "storm: failed transfers of ironboot (must be none)" "$(failures_of storm.ironboot)" "<=" 0
target "storm wall time <= 1.0x tftpd-hpa's (time ratio, lower is better)" \
  "$(ratio_of storm.ironboot storm.tftpd-hpa)" "<=" 1.0
bench_finish
