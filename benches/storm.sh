#!/usr/bin/env bash
# shellcheck disable=SC2016,SC2317 # an iPXE variable in single quotes; functions run through `rounds`
# Boot storm: N nodes power on within one second and boot as firmware does, against
# ironboot (`ironboot serve`: TFTP + boot HTTP in one process) and against tftpd-hpa + nginx
# serving the same tree, sides alternating (A B B A ...). Each node (examples/storm):
#   TFTP RRQ loader.efi (1 MiB, blksize 1468; every 4th node also asks windowsize 16),
#   then on one kept-alive HTTP connection: boot.ipxe, nodes/<mac>.ipxe, the kernel
#   (KERNEL_MIB) and the ramdisk (RAMDISK_MIB).
# Every transfer is checked (length and CRC-32 against the source file, computed by the
# load generator from the tree before the storm); a failed node is printed and the round is
# not counted. Per round: failures, p50/p99 time from a node's start to "ramdisk complete",
# aggregate throughput (bytes / wall time), server CPU seconds (user + system) per GiB
# served, of the server processes and all their children (nginx's workers, tftpd-hpa's
# forks), peak resident memory of those processes (sampled from /proc every 200 ms).
# CPU time comes from a cgroup-v1 cpuacct group per side (made here when
# /sys/fs/cgroup/cpuacct is writable, removed at exit): tftpd-hpa ignores SIGCHLD, so its
# forks' time never reaches its own /proc/<pid>/stat. Without one it comes from /proc and
# the script says so (the peers' CPU is then undercounted).
# Targets: no failure; CPU per GiB <= tftpd-hpa + nginx's; p99 <= 1.0x theirs.
# Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/storm.sh [--strict] [NODES]      (NODES: 100, 300, 1000; default 100)
Env:   ROUNDS (default 2: ironboot, peers, peers, ironboot), KERNEL_MIB (10), RAMDISK_MIB (30),
       LOADER_KIB (1024), WINDOW_EVERY (4; 0: no node asks for a window), PARTS (tftp,http;
       one of them alone shows what each protocol costs), BENCH_SUM, IB, WORK
       (benches/lib.sh); builds examples/storm --release (CARGO_TARGET_DIR)
Needs: in.tftpd (tftpd-hpa), nginx, python3
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
BENCH_NUMBER=NODES
ROUNDS=${ROUNDS:-2}
NODES=${NODES:-100}
KERNEL_MIB=${KERNEL_MIB:-10}
RAMDISK_MIB=${RAMDISK_MIB:-30}
LOADER_KIB=${LOADER_KIB:-1024}
WINDOW_EVERY=${WINDOW_EVERY:-4}
PARTS=${PARTS:-tftp,http}
bench_usage "$USAGE"
bench_init storm "$@"
bench_need in.tftpd nginx python3
bench_ironboot
cargo build --release --quiet --example storm
STORM=$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/storm")
ulimit -n "$(ulimit -Hn)" 2> /dev/null || true

# The tree both sides serve.
DATA=$WORK/data
TFTP_ROOT=$DATA/tftpboot
HTTP_ROOT=$DATA/httpboot
mkdir -p "$TFTP_ROOT" "$HTTP_ROOT/deploy" "$HTTP_ROOT/nodes"
head -c $((LOADER_KIB << 10)) /dev/urandom > "$TFTP_ROOT/loader.efi"
head -c $((KERNEL_MIB << 20)) /dev/urandom > "$HTTP_ROOT/deploy/kernel"
head -c $((RAMDISK_MIB << 20)) /dev/urandom > "$HTTP_ROOT/deploy/ramdisk"
printf '#!ipxe\nchain nodes/${mac:hexhyp}.ipxe || goto fail\n:fail\nshell\n' > "$HTTP_ROOT/boot.ipxe"
python3 - "$HTTP_ROOT/nodes" "$NODES" << 'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    b = i.to_bytes(4, "big")
    mac = "52-54-00-%02x-%02x-%02x" % (b[1], b[2], b[3])
    with open(f"{d}/{mac}.ipxe", "w") as f:
        f.write("#!ipxe\nkernel deploy/kernel ipa-api-url=http://192.0.2.1:6385 "
                f"BOOTIF={mac} nofb nomodeset\ninitrd deploy/ramdisk\nboot\n")
PY
find "$DATA" -type d -exec chmod 755 {} +
find "$DATA" -type f -exec chmod 644 {} + # tftpd-hpa drops to nobody
chmod 755 "$WORK"
cat "$TFTP_ROOT/loader.efi" "$HTTP_ROOT"/deploy/* > /dev/null # warm the page cache

start_ironboot "$DATA"
IB_PID=${BENCH_PIDS[-1]}
HPA=$(free_port udp)
start_bg in.tftpd -L -a "127.0.0.1:$HPA" -s "$TFTP_ROOT"
HPA_PID=${BENCH_PIDS[-1]}
start_nginx "$HTTP_ROOT" 8192 " backlog=4096"
sleep 0.5
echo "   ironboot: TFTP $IB_TFTP, HTTP $IB_HTTP (pid $IB_PID); tftpd-hpa $(in.tftpd -V 2>&1 | awk '{print $2; exit}') $HPA (pid $HPA_PID);" \
  "nginx $(nginx -v 2>&1 | sed 's/.*\///') $NGX (pid $NGX_PID)"
echo "   parts: $PARTS; $NODES nodes within 1 s; loader $LOADER_KIB KiB over TFTP, kernel $KERNEL_MIB MiB + ramdisk $RAMDISK_MIB MiB over HTTP"

declare -A TFTP_OF=([ironboot]=$IB_TFTP [peers]=$HPA)
declare -A HTTP_OF=([ironboot]=$IB_HTTP [peers]=$NGX)
declare -A ACCT_OF=([ironboot]="--pids $IB_PID" [peers]="--pids $HPA_PID,$NGX_PID")

# One cpuacct group per side, holding its servers and every task they start.
remove_cgroup() {
  local _
  for _ in $(seq 50); do
    rmdir "$1" 2> /dev/null && return 0
    sleep 0.1 # a fork of a stopped server may still be finishing
  done
  echo "storm: could not remove $1" >&2
}
CG_ROOT=/sys/fs/cgroup/cpuacct
# Sets CG to the group made for side $1 holding processes $2...; fails without cgroups.
cgroup_for() {
  local pid p
  CG=$CG_ROOT/ironboot-bench-$$-$1
  mkdir "$CG" 2> /dev/null || return 1
  bench_at_exit remove_cgroup "$CG"
  shift
  for pid in "$@"; do
    # The process and its children (nginx's workers) move; threads follow their process.
    for p in $pid $(pgrep -P "$pid"); do echo "$p" > "$CG/cgroup.procs" || return 1; done
  done
}
if [ -w "$CG_ROOT" ] && cgroup_for ironboot "$IB_PID" && IB_CG=$CG &&
  cgroup_for peers "$HPA_PID" "$NGX_PID" && PEER_CG=$CG; then
  ACCT_OF=([ironboot]="--cgroup $IB_CG" [peers]="--cgroup $PEER_CG")
  echo "   CPU time: cpuacct cgroups $IB_CG, $PEER_CG"
else
  echo "   CPU time: /proc (no writable cpuacct cgroup): tftpd-hpa's forks are NOT counted"
fi

storm() {
  local out=$WORK/storm.out rc=0 line fails
  rm -f "$out"
  # shellcheck disable=SC2086 # ACCT_OF holds an option and its value
  "$STORM" --tftp "127.0.0.1:${TFTP_OF[$1]}" --http "127.0.0.1:${HTTP_OF[$1]}" \
    --tftp-root "$TFTP_ROOT" --http-root "$HTTP_ROOT" --nodes "$NODES" \
    ${ACCT_OF[$1]} --window-every "$WINDOW_EVERY" --parts "$PARTS" > "$out" 2> "$WORK/storm.err" || rc=$?
  if [ "$rc" != 0 ]; then
    failure "storm.$1" "load generator exit status $rc$(bench_stderr_tail "$WORK/storm.err")"
    echo "$NODES" >> "$WORK/failed_nodes.$1" # no figures: every node counts as failed
    return 0
  fi
  val() { awk -v k="$1" '$1 == k {print $2}' "$out"; }
  fails=$(val failures)
  echo "$fails" >> "$WORK/failed_nodes.$1"
  if [ "$fails" != 0 ]; then
    while read -r line; do failure "storm.$1" "$line"; done < <(grep '^fail ' "$out" | head -20)
    if [ "$fails" -gt 20 ]; then failure "storm.$1" "... and $((fails - 20)) more failed nodes"; fi
    echo "   round of storm.$1 not counted: $fails of $NODES nodes failed" >&2
    return 0
  fi
  for k in p50_s p99_s tftp_p99_s throughput_gib_s cpu_s_per_gib peak_rss_mib; do
    sample "$1.$k" "$(val "$k")"
  done
  echo "   $1: p50 $(val p50_s) s, p99 $(val p99_s) s, $(val throughput_gib_s) GiB/s," \
    "CPU $(val cpu_s) s = $(val cpu_s_per_gib) s/GiB, peak RSS $(val peak_rss_mib) MiB," \
    "windows granted $(val tftp_windowed_granted), HTTP reconnects $(val http_reconnects)"
}

rounds storm ironboot peers

med() { median_of "$1"; }
# Failed nodes over every round (the failure lines above list at most 20 per round).
failed_nodes() { awk '{n += $1} END {print n + 0}' "$WORK/failed_nodes.$1" 2> /dev/null || echo 0; }
F_IB=$(failed_nodes ironboot)
F_PEERS=$(failed_nodes peers)
echo
echo "storm $NODES nodes: failures $F_IB (ironboot) / $F_PEERS (tftpd-hpa+nginx) failed nodes of $((NODES * ROUNDS)) each," \
  "p50 $(med ironboot.p50_s) / $(med peers.p50_s) s, p99 $(med ironboot.p99_s) / $(med peers.p99_s) s," \
  "throughput $(med ironboot.throughput_gib_s) / $(med peers.throughput_gib_s) GiB/s," \
  "CPU $(med ironboot.cpu_s_per_gib) / $(med peers.cpu_s_per_gib) s/GiB," \
  "peak RSS $(med ironboot.peak_rss_mib) / $(med peers.peak_rss_mib) MiB (medians of rounds)"
compare "time from power-on to ramdisk complete, p99 of the nodes" ironboot.p99_s ironboot peers.p99_s tftpd-hpa+nginx
compare "the same, p50" ironboot.p50_s ironboot peers.p50_s tftpd-hpa+nginx
compare "the loader over TFTP, p99" ironboot.tftp_p99_s ironboot peers.tftp_p99_s tftpd-hpa
compare "aggregate throughput (bytes served / wall time)" ironboot.throughput_gib_s ironboot \
  peers.throughput_gib_s tftpd-hpa+nginx GiB/s
compare "server CPU (user + system) per GiB served" ironboot.cpu_s_per_gib ironboot \
  peers.cpu_s_per_gib tftpd-hpa+nginx s/GiB
compare "peak resident memory of the server processes" ironboot.peak_rss_mib ironboot \
  peers.peak_rss_mib tftpd-hpa+nginx MiB
echo
target "failed nodes, ironboot (must be none)" "$F_IB" "<=" 0
target "CPU per GiB <= 1.0x tftpd-hpa+nginx's" "$(ratio_of ironboot.cpu_s_per_gib peers.cpu_s_per_gib)" "<=" 1.0
target "p99 <= 1.0x tftpd-hpa+nginx's" "$(ratio_of ironboot.p99_s peers.p99_s)" "<=" 1.0
bench_finish
