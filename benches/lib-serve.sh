# Shared by benches/tftp.sh and benches/http.sh: start `ironboot serve` on loopback, find free
# ports, take medians. Sourced, not run.

# A free port on 127.0.0.1 (tcp or udp).
free_port() {
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# ratio A/B with 2 decimals
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

# seconds since an $EPOCHREALTIME stamp
since() { awk -v s="$1" -v e="$EPOCHREALTIME" 'BEGIN {printf "%.3f", e-s}'; }

PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }

# start_ironboot DATA_DIR -> sets IB_TFTP, IB_HTTP; the binary is $IB
start_ironboot() {
  local data=$1 api
  IB_TFTP=$(free_port udp); IB_HTTP=$(free_port tcp); api=$(free_port tcp)
  RUST_LOG=warn "$IB" serve --data-dir "$data" --api-listen "127.0.0.1:$api" \
    --tftp-listen "127.0.0.1:$IB_TFTP" --http-listen "127.0.0.1:$IB_HTTP" \
    > "$WORK/ironboot.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$api/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "ironboot did not start:" >&2; cat "$WORK/ironboot.log" >&2; exit 1
}

build_ironboot() {
  local target=${CARGO_TARGET_DIR:-target}
  if [ -z "${IB:-}" ]; then
    cargo build --release --quiet --bin ironboot
    IB=$(realpath "$target/release/ironboot")
  fi
}
