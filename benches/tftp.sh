#!/bin/bash
# TFTP: ironboot vs tftpd-hpa (what Ironic/Bifrost deploy) and atftpd 0.8.0 (the reference
# server for RFC 7440 windowsize), side by side in one run, same files, same clients.
#
#   1. lock-step: curl --tftp-blksize 1468 of a 64 MiB file, ironboot vs tftpd-hpa
#      (target: ironboot throughput >= 1.0x tftpd-hpa)
#   2. windowed: atftp --option "blksize 1468" --option "windowsize 16" of the same file,
#      ironboot vs atftpd 0.8.0 (target: ironboot time <= 1.0x atftpd)
#   3. storm: 200 concurrent curl clients fetching a 1 MiB file, ironboot vs tftpd-hpa
#      (target: no failed or corrupt transfer, wall <= 1.0x tftpd-hpa)
# Each figure is the median of ROUNDS runs, ironboot and the peer alternating; every download
# is checked byte for byte (md5). ironboot runs as `ironboot serve` with its default [tftp]
# settings (blksize cap 1468, windowsize cap 16, 1 worker).
#
# Usage: benches/tftp.sh     Env: ROUNDS (default 5), IB (an ironboot binary; default: build
#        --release into $CARGO_TARGET_DIR or target/), WORK (scratch dir)
# Needs: curl atftp tftpd-hpa (in.tftpd) python3, and apt-get download for atftpd + libwrap0
#        (atftpd conflicts with tftpd-hpa, so it runs from the extracted .deb).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib-serve.sh
export PATH="$PATH:/usr/sbin:/sbin"
ROUNDS=${ROUNDS:-5}
for t in curl atftp in.tftpd python3 dpkg; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
build_ironboot
WORK=${WORK:-$(mktemp -d /tmp/ironboot-tftp-bench.XXXXXX)}
mkdir -p "$WORK"
trap 'stop_all; rm -rf "$WORK"' EXIT

# atftpd from its .deb, cached between runs.
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/ironboot-bench
if [ ! -x "$CACHE/atftpd/usr/sbin/atftpd" ]; then
  mkdir -p "$CACHE" && (cd "$CACHE" && apt-get download atftpd >/dev/null 2>&1 && dpkg -x atftpd_*.deb atftpd)
fi
ATFTPD=$CACHE/atftpd/usr/sbin/atftpd

DATA=$WORK/data
ROOT=$DATA/tftpboot
mkdir -p "$ROOT"
head -c $((64 << 20)) /dev/urandom > "$ROOT/blob64m"
head -c $((1 << 20)) /dev/urandom > "$ROOT/blob1m"
chmod 755 "$WORK" "$DATA" "$ROOT"; chmod 644 "$ROOT"/blob*   # tftpd-hpa drops to nobody
SUM64=$(md5sum < "$ROOT/blob64m"); SUM1=$(md5sum < "$ROOT/blob1m")

start_ironboot "$DATA"
HPA=$(free_port udp); ATF=$(free_port udp)
in.tftpd -L -a "127.0.0.1:$HPA" -s "$ROOT" & PIDS+=($!)
"$ATFTPD" --daemon --no-fork --port "$ATF" --bind-address 127.0.0.1 --user "$(id -un)" \
  --group "$(id -gn)" --logfile /dev/null "$ROOT" & PIDS+=($!)
sleep 0.5
echo "== ironboot $($IB --version) tftp :$IB_TFTP | tftpd-hpa :$HPA | atftpd 0.8.0 :$ATF | $ROUNDS rounds, $(nproc) cores"

check() { # file expected-md5 label
  [ "$(md5sum < "$1")" = "$2" ] || { echo "CORRUPT download: $3" >&2; exit 1; }
}

curl64() { # port -> seconds
  local t=$EPOCHREALTIME
  curl -sS --max-time 120 --tftp-blksize 1468 -o "$WORK/out" "tftp://127.0.0.1:$1/blob64m"
  since "$t"; check "$WORK/out" "$SUM64" "curl from :$1"
}
atftp64() {
  local t=$EPOCHREALTIME
  atftp --get -r blob64m -l "$WORK/out" --option "blksize 1468" --option "windowsize 16" \
    127.0.0.1 "$1" >/dev/null 2>&1
  since "$t"; check "$WORK/out" "$SUM64" "atftp from :$1"
}
storm() { # port -> "seconds failures"
  local t=$EPOCHREALTIME pids=() fail=0 i
  mkdir -p "$WORK/storm"
  for i in $(seq 200); do
    curl -s --max-time 120 --tftp-blksize 1468 -o "$WORK/storm/$i" "tftp://127.0.0.1:$1/blob1m" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || fail=$((fail + 1)); done
  local wall; wall=$(since "$t")
  for i in $(seq 200); do [ "$(md5sum < "$WORK/storm/$i" 2>/dev/null)" = "$SUM1" ] || fail=$((fail + 1)); done
  rm -rf "$WORK/storm"
  echo "$wall $fail"
}

declare -A T
for r in $(seq "$ROUNDS"); do
  T[ib_lock]+="$(curl64 "$IB_TFTP") "; T[hpa_lock]+="$(curl64 "$HPA") "
  T[ib_win]+="$(atftp64 "$IB_TFTP") "; T[atf_win]+="$(atftp64 "$ATF") "
  read -r w f <<< "$(storm "$IB_TFTP")"; T[ib_storm]+="$w "; T[ib_fail]+="$f "
  read -r w f <<< "$(storm "$HPA")"; T[hpa_storm]+="$w "; T[hpa_fail]+="$f "
  echo "  round $r done"
done
med() { tr ' ' '\n' <<< "${T[$1]}" | grep . | median; }
sum() { tr ' ' '\n' <<< "${T[$1]}" | grep . | paste -sd+ | bc; }

ib_lock=$(med ib_lock); hpa_lock=$(med hpa_lock)
ib_win=$(med ib_win); atf_win=$(med atf_win)
ib_storm=$(med ib_storm); hpa_storm=$(med hpa_storm)
ib_fail=$(sum ib_fail); hpa_fail=$(sum hpa_fail)
verdict() { awk -v v="$1" -v op="$2" 'BEGIN {ok = (op == ">=") ? v >= 1.0 : v <= 1.0; print ok ? "met" : "MISSED"}'; }
r1=$(ratio "$hpa_lock" "$ib_lock"); r2=$(ratio "$ib_win" "$atf_win"); r3=$(ratio "$ib_storm" "$hpa_storm")
echo
echo "benchmark                                   ironboot    peer       ratio  target"
printf "64 MiB lock-step blksize 1468 (curl)        %6.2f s   %6.2f s   %s   throughput >= 1.0x tftpd-hpa: %s\n" "$ib_lock" "$hpa_lock" "$r1" "$(verdict "$r1" ">=")"
printf "64 MiB windowsize 16 (atftp) vs atftpd      %6.2f s   %6.2f s   %s   time <= 1.0x atftpd: %s\n" "$ib_win" "$atf_win" "$r2" "$(verdict "$r2" "<=")"
printf "200 clients x 1 MiB (curl) vs tftpd-hpa     %6.2f s   %6.2f s   %s   wall <= 1.0x: %s; failed transfers: ironboot %s, tftpd-hpa %s\n" "$ib_storm" "$hpa_storm" "$r3" "$(verdict "$r3" "<=")" "$ib_fail" "$hpa_fail"
[ "$ib_fail" = 0 ] || { echo "ironboot had failed transfers" >&2; exit 1; }
