# shellcheck shell=bash
# benches/lib.sh: what every bench script shares. Source it, never run it:
#
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   bench_init tftp "$@"            # --strict/--help, $WORK, clean-up trap, header with the load
#   ... prepare the source files, start the servers (start_ironboot, start_bg) ...
#   side() { transfer "lock.$1" "$WORK/out" "$SUM" curl ... -o "$WORK/out" ...; }
#   rounds side ironboot tftpd-hpa  # ROUNDS rounds, the order alternating
#   compare "64 MiB lock-step" lock.ironboot ironboot lock.tftpd-hpa tftpd-hpa
#   target "time <= 1.0x tftpd-hpa" "$(ratio_of lock.ironboot lock.tftpd-hpa)" "<=" 1.0
#   bench_finish                    # load at the end, failures, verdict; exits with the status
#
# Rules every bench follows (issue 15):
# - Sides alternate: with sides A B the rounds run A B, B A, A B, ... (more sides: forward,
#   then reversed), so no side always runs first. Use an even ROUNDS.
# - Every transfer: its output file is removed before it runs (never reused) and after it is
#   checked; the client's exit status is checked; its bytes are compared with a checksum
#   computed here from the source file, never with anything the tool under test printed.
# - A failed or corrupt transfer is printed at once, counted, and never enters the sample.
# - Each side prints n, min, median, max; each comparison the ratio of medians and which way
#   is better. The load (/proc/loadavg, nproc) is printed at the start and the end, and the
#   range of the 1-minute load seen after each round.
# - Each target prints `met` or `MISSED` with its figure.
# - Exit status: 0; 1 when any transfer failed or was corrupt (always); 2 for a missing tool
#   or a bad option; 3 when a target was MISSED and --strict was given.
#
# Environment: ROUNDS (each script sets its default), BENCH_SUM (cksum: CRC-32 and length,
# ~15 GB/s, so checking every byte of a stream costs little; sha256 or md5 for a
# cryptographic check at ~0.3-0.6 GB/s), IB (an ironboot binary; default: cargo build
# --release once), WORK (scratch directory; default a new one under TMPDIR, removed at exit),
# KEEP_WORK=1 (keep it).
#
# Functions:
#   bench_init NAME [ARGS...]     parse --strict / -h; make $WORK; trap clean-up; print the header
#   bench_usage TEXT              the script's --help text (call before bench_init)
#   bench_need TOOL...            exit 2 naming a missing tool (sbin directories are searched)
#   bench_ironboot                set $IB: the given binary, or `cargo build --release` once
#   checksum FILE | checksum_stdin   the checksum (BENCH_SUM) of a file or of stdin
#   now; since STAMP              an $EPOCHREALTIME stamp; seconds since it (3 decimals)
#   quiet CMD...                  CMD with its stdout discarded (for tools that print reports)
#   sample KEY SECONDS            record a valid timing of KEY
#   failure KEY REASON            record and print a failed or corrupt transfer of KEY
#   transfer KEY OUT CHECK CMD... one timed transfer: OUT removed, CMD run and timed, its exit
#                                 status checked, then OUT checked, then removed; CMD's stderr
#                                 is kept for the failure message, not shown. OUT "-" means
#                                 CMD writes the bytes to stdout (checked as they stream by).
#                                 CHECK is the expected checksum, or @FUNC: `FUNC OUT` must
#                                 succeed (printing the reason when it fails).
#   transfer_many KEY N CHECK OUT CMD...   N copies of CMD at once; `{}` in OUT and in any
#                                 argument becomes the client number 1..N. One sample (the wall
#                                 time of all N) only when all N succeeded; each bad one is a
#                                 failure.
#   rounds FUNC SIDE...           ROUNDS rounds of `FUNC SIDE` for every side, order alternating
#   stats KEY                     "n min median max" of KEY's samples ("0 - - -" without any)
#   median_of KEY; failures_of KEY
#   show KEY NAME [UNIT]          one line: NAME n, min, median, max, failures
#   ratio A B                     A/B with 2 decimals ("-" when either is missing)
#   ratio_of KEY_A KEY_B          ratio of the medians
#   compare TITLE KEY_A NAME_A KEY_B NAME_B [UNIT]   both sides, then the ratio of medians A/B
#                                 ("time: below 1 means NAME_A is faster")
#   compare_all TITLE KEY_A NAME_A KEY NAME...   the same against several sides (seconds)
#   target DESC VALUE OP LIMIT    prints `target DESC: VALUE OP LIMIT: met|MISSED` (OP <= or >=)
#   bench_finish                  the load at the end, failures, verdicts; exits
# Serving (servers started here are stopped at exit, by their process ids):
#   free_port tcp|udp             a free port on 127.0.0.1 (for peers that cannot bind port 0)
#   start_bg CMD...               start CMD in the background and remember its pid
#   start_ironboot DATA_DIR       `ironboot serve` on 127.0.0.1, every listener on port 0,
#                                 reported through --ready-file: sets IB_API, IB_HTTP, IB_TFTP
#   wait_tcp PORT                 wait (up to 10 s) until 127.0.0.1:PORT accepts connections
#   stop_all                      stop every server started here
#   bench_at_exit CMD...          run CMD at exit, after the servers are stopped (clean-up of
#                                 what a script made outside $WORK, e.g. a cgroup)
# Names starting with BENCH_ or _b_ belong to this file; a script's own may be anything else.

BENCH_NAME=""
BENCH_STRICT=0
BENCH_USAGE=""
BENCH_PIDS=()
BENCH_MISSED=0
BENCH_STATE=""
BENCH_AT_EXIT=()

bench_usage() { BENCH_USAGE=$1; }

bench_init() {
  BENCH_NAME=$1
  shift
  local arg
  for arg in "$@"; do
    case $arg in
      --strict) BENCH_STRICT=1 ;;
      # A script's one number argument goes to the variable BENCH_NUMBER names.
      [0-9]*) if [ -n "${BENCH_NUMBER:-}" ]; then printf -v "$BENCH_NUMBER" %s "$arg"; else
        echo "$BENCH_NAME: unknown option $arg (see --help)" >&2
        exit 2
      fi ;;
      -h | --help)
        printf '%s\n' "$BENCH_USAGE"
        exit 0
        ;;
      *)
        echo "$BENCH_NAME: unknown option $arg (see --help)" >&2
        exit 2
        ;;
    esac
  done
  case ${BENCH_SUM:=cksum} in
    cksum | sha256 | md5) ;;
    *)
      echo "BENCH_SUM=$BENCH_SUM: use cksum, sha256 or md5" >&2
      exit 2
      ;;
  esac
  export PATH="$PATH:/usr/sbin:/sbin"
  if [ -z "${WORK:-}" ]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/ironboot-bench-$BENCH_NAME.XXXXXX")
    BENCH_OWN_WORK=1
  else
    mkdir -p "$WORK"
    BENCH_OWN_WORK=0
  fi
  BENCH_STATE=$WORK/.bench
  rm -rf "$BENCH_STATE"
  mkdir -p "$BENCH_STATE/samples" "$BENCH_STATE/failures"
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  echo "== bench $BENCH_NAME: $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname), $(nproc) cores ($(bench_cpu))"
  echo "   command: $(bench_command "$@")"
  echo "   rounds: ${ROUNDS:-?}, order alternating; every transfer checked against a $BENCH_SUM of its source"
  bench_load start
}

bench_cpu() {
  sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1
}

# The command line with the knobs that were set, so a figure can be reproduced.
bench_command() {
  local knobs="" v
  for v in ROUNDS SIZE_MIB CLIENTS STORM_CLIENTS STORM_KIB KERNEL_MIB RAMDISK_MIB NODES HITS BENCH_SUM IB; do
    if [ -n "${!v:-}" ]; then knobs+="$v=${!v} "; fi
  done
  echo "${knobs}benches/$(basename "$0")${*:+ $*}"
}

bench_load() {
  local avg
  read -r avg < /proc/loadavg
  echo "   load at $1: $avg (1/5/15-min averages, running/total tasks, last pid); nproc $(nproc)"
}

# Records the 1-minute load after a round (the range is printed at the end).
bench_note_load() {
  local one _
  read -r one _ < /proc/loadavg
  echo "$one" >> "$BENCH_STATE/load"
}

bench_at_exit() { BENCH_AT_EXIT+=("$*"); }

bench_cleanup() {
  local rc=$? cmd
  stop_all
  for cmd in "${BENCH_AT_EXIT[@]}"; do eval "$cmd" || true; done
  if [ "${BENCH_OWN_WORK:-0}" = 1 ] && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
  fi
  exit "$rc"
}

bench_need() {
  local t
  for t in "$@"; do
    if ! command -v "$t" > /dev/null; then
      echo "$BENCH_NAME: missing $t (install it; see benches/README.md)" >&2
      exit 2
    fi
  done
}

bench_ironboot() {
  if [ -z "${IB:-}" ]; then
    local root target
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    (cd "$root" && cargo build --release --quiet --bin ironboot)
    IB=$target/release/ironboot
  fi
  IB=$(realpath "$IB")
  echo "   ironboot: $IB ($("$IB" --version))"
}

checksum_stdin() {
  case $BENCH_SUM in
    cksum) cksum | awk '{print $1 "/" $2}' ;;
    sha256) sha256sum | cut -d' ' -f1 ;;
    md5) md5sum | cut -d' ' -f1 ;;
  esac
}

checksum() { checksum_stdin < "$1"; }

now() { echo "$EPOCHREALTIME"; }

quiet() { "$@" > /dev/null; }

since() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN {printf "%.3f", e - s}'; }

sample() { echo "$2" >> "$BENCH_STATE/samples/$1"; }

failure() {
  echo "$2" >> "$BENCH_STATE/failures/$1"
  echo "   FAILED $1: $2" >&2
}

# Checks OUT against CHECK (a checksum, or @FUNC); prints the reason when it does not match.
bench_check() {
  local _b_out=$1 _b_check=$2 _b_got
  if [ "${_b_check#@}" != "$_b_check" ]; then
    "${_b_check#@}" "$_b_out"
    return
  fi
  if [ ! -f "$_b_out" ]; then
    echo "no output file"
    return 1
  fi
  _b_got=$(checksum "$_b_out")
  if [ "$_b_got" != "$_b_check" ]; then
    echo "corrupt: $BENCH_SUM $_b_got, source $_b_check"
    return 1
  fi
}

# The last line the client wrote to stderr, for a failure message.
bench_stderr_tail() {
  if [ -s "$1" ]; then echo " (stderr: $(tail -n 1 "$1"))"; fi
}

transfer() {
  local _b_key=$1 _b_out=$2 _b_check=$3 _b_t _b_rc=0 _b_secs _b_got _b_why _b_err=$BENCH_STATE/stderr
  shift 3
  if [ "$_b_out" = - ]; then
    _b_t=$(now)
    _b_got=$(
      set +e
      "$@" 2> "$_b_err" | checksum_stdin
      exit "${PIPESTATUS[0]}"
    ) || _b_rc=$?
    _b_secs=$(since "$_b_t")
    if [ "$_b_rc" != 0 ]; then
      failure "$_b_key" "exit status $_b_rc: $*$(bench_stderr_tail "$_b_err")"
    elif [ "$_b_got" != "$_b_check" ]; then
      failure "$_b_key" "corrupt: $BENCH_SUM $_b_got, source $_b_check: $*"
    else
      sample "$_b_key" "$_b_secs"
    fi
    return 0
  fi
  rm -rf "$_b_out"
  _b_t=$(now)
  "$@" 2> "$_b_err" || _b_rc=$?
  _b_secs=$(since "$_b_t")
  if [ "$_b_rc" != 0 ]; then
    failure "$_b_key" "exit status $_b_rc: $*$(bench_stderr_tail "$_b_err")"
  elif _b_why=$(bench_check "$_b_out" "$_b_check"); then
    sample "$_b_key" "$_b_secs"
  else
    failure "$_b_key" "$_b_why: $*"
  fi
  rm -rf "$_b_out"
  return 0
}

transfer_many() {
  local _b_key=$1 _b_n=$2 _b_check=$3 _b_out=$4 _b_i _b_t _b_secs _b_bad=0 _b_rc _b_why
  shift 4
  local _b_dir=$BENCH_STATE/many _b_pids=() _b_argv _b_a
  rm -rf "$_b_dir"
  mkdir -p "$_b_dir"
  for _b_i in $(seq "$_b_n"); do
    if [ "$_b_out" != - ]; then rm -rf "${_b_out//\{\}/$_b_i}"; fi
  done
  _b_t=$(now)
  for _b_i in $(seq "$_b_n"); do
    _b_argv=()
    for _b_a in "$@"; do _b_argv+=("${_b_a//\{\}/$_b_i}"); done
    if [ "$_b_out" = - ]; then
      (
        set +e
        "${_b_argv[@]}" 2> "$_b_dir/$_b_i.err" | checksum_stdin > "$_b_dir/$_b_i.sum"
        echo "${PIPESTATUS[0]}" > "$_b_dir/$_b_i.rc"
      ) &
    else
      (
        set +e
        "${_b_argv[@]}" 2> "$_b_dir/$_b_i.err"
        echo "$?" > "$_b_dir/$_b_i.rc"
      ) &
    fi
    _b_pids+=($!)
  done
  for _b_i in "${_b_pids[@]}"; do wait "$_b_i" || true; done
  _b_secs=$(since "$_b_t")
  for _b_i in $(seq "$_b_n"); do
    _b_rc=$(cat "$_b_dir/$_b_i.rc" 2> /dev/null || echo "lost")
    if [ "$_b_rc" != 0 ]; then
      failure "$_b_key" "client $_b_i: exit status $_b_rc$(bench_stderr_tail "$_b_dir/$_b_i.err")"
      _b_bad=$((_b_bad + 1))
    elif [ "$_b_out" = - ]; then
      if [ "$(cat "$_b_dir/$_b_i.sum")" != "$_b_check" ]; then
        failure "$_b_key" "client $_b_i: corrupt: $BENCH_SUM $(cat "$_b_dir/$_b_i.sum"), source $_b_check"
        _b_bad=$((_b_bad + 1))
      fi
    elif ! _b_why=$(bench_check "${_b_out//\{\}/$_b_i}" "$_b_check"); then
      failure "$_b_key" "client $_b_i: $_b_why"
      _b_bad=$((_b_bad + 1))
    fi
    if [ "$_b_out" != - ]; then rm -rf "${_b_out//\{\}/$_b_i}"; fi
  done
  rm -rf "$_b_dir"
  if [ "$_b_bad" = 0 ]; then
    sample "$_b_key" "$_b_secs"
  else
    echo "   round of $_b_key not timed: $_b_bad of $_b_n transfers failed" >&2
  fi
  return 0
}

# Callbacks see a caller's locals (bash scoping), so the functions that run them use _b names.
rounds() {
  local _b_fn=$1 _b_r _b_i
  shift
  local _b_sides=("$@") _b_order
  local _b_n=${ROUNDS:?ROUNDS must be set}
  for _b_r in $(seq "$_b_n"); do
    _b_order=()
    if [ $((_b_r % 2)) = 1 ]; then
      _b_order=("${_b_sides[@]}")
    else
      for ((_b_i = ${#_b_sides[@]} - 1; _b_i >= 0; _b_i--)); do _b_order+=("${_b_sides[_b_i]}"); done
    fi
    for _b_i in "${_b_order[@]}"; do "$_b_fn" "$_b_i"; done
    bench_note_load
    echo "   $_b_fn: round $_b_r/$_b_n done (${_b_order[*]})"
  done
}

stats() {
  local f=$BENCH_STATE/samples/$1
  if [ ! -s "$f" ]; then
    echo "0 - - -"
    return
  fi
  sort -g "$f" | awk '{v[NR] = $1}
    END {m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         printf "%d %.3f %.3f %.3f\n", NR, v[1], m, v[NR]}'
}

median_of() {
  local n min med max
  read -r n min med max <<< "$(stats "$1")"
  echo "$med"
}

failures_of() {
  local f=$BENCH_STATE/failures/$1
  if [ -f "$f" ]; then wc -l < "$f"; else echo 0; fi
}

show() {
  local n min med max
  read -r n min med max <<< "$(stats "$1")"
  printf '   %-22s n=%-3s min %9s  median %9s  max %9s %s  failed %s\n' \
    "$2" "$n" "$min" "$med" "$max" "${3:-s}" "$(failures_of "$1")"
}

ratio() {
  if [ "$1" = - ] || [ "$2" = - ]; then
    echo -
    return
  fi
  awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "-"; else printf "%.2f", a / b}'
}

ratio_of() { ratio "$(median_of "$1")" "$(median_of "$2")"; }

compare() {
  local title=$1 ka=$2 na=$3 kb=$4 nb=$5 unit=${6:-s}
  echo
  echo "-- $title"
  show "$ka" "$na" "$unit"
  show "$kb" "$nb" "$unit"
  local reading="time: below 1 means $na is faster"
  case $unit in
    */s) reading="throughput: above 1 means $na is faster" ;;
    s) ;;
    *) reading="below 1 means $na uses less" ;;
  esac
  echo "   ratio of medians $na/$nb: $(ratio_of "$ka" "$kb") ($reading)"
}

compare_all() {
  local title=$1 ka=$2 na=$3 unit=s
  shift 3
  echo
  echo "-- $title"
  show "$ka" "$na" "$unit"
  local args=("$@") i
  for ((i = 0; i < ${#args[@]}; i += 2)); do show "${args[i]}" "${args[i + 1]}" "$unit"; done
  for ((i = 0; i < ${#args[@]}; i += 2)); do
    echo "   ratio of medians $na/${args[i + 1]}: $(ratio_of "$ka" "${args[i]}") (time: below 1 means $na is faster)"
  done
}

target() {
  local desc=$1 value=$2 op=$3 limit=$4 ok
  if [ "$value" = - ]; then
    ok=0
  else
    ok=$(awk -v v="$value" -v l="$limit" -v op="$op" \
      'BEGIN {print (op == "<=") ? (v <= l) : (v >= l)}')
  fi
  if [ "$ok" = 1 ]; then
    echo "   target $desc: $value $op $limit: met"
  else
    echo "   target $desc: $value $op $limit: MISSED"
    BENCH_MISSED=$((BENCH_MISSED + 1))
  fi
}

bench_finish() {
  local failed=0 f lo hi
  for f in "$BENCH_STATE"/failures/*; do
    [ -e "$f" ] || continue
    failed=$((failed + $(wc -l < "$f")))
  done
  echo
  if [ -s "$BENCH_STATE/load" ]; then
    read -r lo hi <<< "$(sort -g "$BENCH_STATE/load" | awk 'NR == 1 {lo = $1} {hi = $1} END {print lo, hi}')"
    echo "   1-minute load after each round: $lo to $hi"
  fi
  bench_load end
  if [ "$failed" != 0 ]; then
    echo "== $BENCH_NAME: $failed failed or corrupt transfer(s) (listed above): these figures are not valid"
    exit 1
  fi
  if [ "$BENCH_MISSED" != 0 ] && [ "$BENCH_STRICT" = 1 ]; then
    echo "== $BENCH_NAME: every transfer checked; $BENCH_MISSED target(s) MISSED (--strict)"
    exit 3
  fi
  echo "== $BENCH_NAME: every transfer checked; $BENCH_MISSED target(s) MISSED"
  exit 0
}

# ---- serving ----

free_port() {
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

start_bg() {
  "$@" &
  BENCH_PIDS+=($!)
}

stop_all() {
  local p
  for p in "${BENCH_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done
  for p in "${BENCH_PIDS[@]}"; do wait "$p" 2> /dev/null || true; done
  BENCH_PIDS=()
}

# start_nginx ROOT CONNECTIONS [LISTEN_OPTIONS]: nginx (sendfile, no access log) serving ROOT
# on a free loopback port, CONNECTIONS per worker; sets NGX (its port) and NGX_PID.
start_nginx() {
  local root=$1 conns=$2 listen_opts=${3:-}
  NGX=$(free_port tcp)
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" << CONF
worker_processes auto;
worker_rlimit_nofile $((conns * 2));
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections $conns; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$NGX$listen_opts; root $root; }
}
CONF
  start_bg nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf"
  NGX_PID=${BENCH_PIDS[-1]}
  wait_tcp "$NGX"
}

wait_tcp() {
  local i
  for i in $(seq 100); do
    if (exec 3<> "/dev/tcp/127.0.0.1/$1") 2> /dev/null; then return 0; fi
    sleep 0.1
  done
  echo "$BENCH_NAME: nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# Port of one listener in the ready file: ready_port FILE api|http|tftp
ready_port() { sed -n "s/.*\"$2\":\"[^\"]*:\([0-9]*\)\".*/\1/p" "$1"; }

start_ironboot() {
  local data=$1 ready=$WORK/ironboot.ready i
  rm -f "$ready"
  start_bg env RUST_LOG=warn "$IB" serve --data-dir "$data" --api-listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 --tftp-listen 127.0.0.1:0 --ready-file "$ready" \
    > "$WORK/ironboot.log" 2>&1
  for i in $(seq 300); do
    if [ -s "$ready" ]; then break; fi
    if ! kill -0 "${BENCH_PIDS[-1]}" 2> /dev/null; then break; fi
    sleep 0.1
  done
  if [ ! -s "$ready" ]; then
    echo "$BENCH_NAME: ironboot did not start:" >&2
    cat "$WORK/ironboot.log" >&2
    exit 1
  fi
  # Read by the bench scripts.
  # shellcheck disable=SC2034
  {
    IB_API=$(ready_port "$ready" api)
    IB_HTTP=$(ready_port "$ready" http)
    IB_TFTP=$(ready_port "$ready" tftp)
  }
}
