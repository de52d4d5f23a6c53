#!/bin/bash
# Ironic-compatible API: ironboot vs the real OpenStack Ironic 39.0.0 (all-in-one, SQLite, noauth,
# fake-hardware, the configuration of the parity tests), side by side in one run, with the same
# client load (benches/api_load.py; python http.client, one keep-alive connection per client):
#
#   get     GET /v1/nodes/{uuid}                       (1000 nodes in the database)
#   post    POST /v1/nodes                             (fake-hardware)
#   list    GET /v1/nodes/detail?limit=1000            (every answer must hold 1000 nodes)
#   lookup  GET /v1/lookup + POST /v1/heartbeat         (nodes waiting for their agent, one pair each)
#
# each sequential (1 client) and 8-way, in rounds alternating A B B A (A = ironboot, B = Ironic).
# Prints min/median/max requests/s of each side, server CPU per request (the server process
# tree's utime+stime from /proc), and the median ratio against the target ironboot >= 20x Ironic.
# Every response is checked; an error fails the run.
#
# Usage: benches/api.sh [--strict]   (--strict: exit 1 when a ratio misses the target)
# Env: N_GET (300), N_POST (300), N_LIST (10), N_LOOKUP (20), NODES (1000), IB (ironboot binary; default: a
#      release build), IRONIC_VENV (default: the parity tests' cached venv; created if missing)
# Needs: python3, curl; the first run installs ironic==39.0.0 from PyPI (~2 min).
set -euo pipefail
cd "$(dirname "$0")/.."
# Self-contained (its servers are two full API services, not file servers).
free_port() {
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
build_ironboot() {
  if [ -z "${IB:-}" ]; then
    cargo build --release --quiet --bin ironboot
    IB=$(realpath "${CARGO_TARGET_DIR:-target}/release/ironboot")
  fi
}
STRICT=0; [ "${1:-}" = "--strict" ] && STRICT=1
N_GET=${N_GET:-300}; N_POST=${N_POST:-300}; N_LIST=${N_LIST:-10}; N_LOOKUP=${N_LOOKUP:-20}
NODES=${NODES:-1000}
TARGET=20
for t in curl python3; do command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }; done
build_ironboot
VENV=${IRONIC_VENV:-$(pwd)/target/ironboot-test-cache/venv-ironic39}
if [ ! -x "$VENV/bin/ironic" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "ironic==39.0.0"
fi
WORK=$(mktemp -d /tmp/ironboot-api-bench.XXXXXX)
trap 'stop_all; rm -rf "$WORK"' EXIT
LOAD="python3 benches/api_load.py"
V='X-OpenStack-Ironic-API-Version: 1.80'
J='Content-Type: application/json'

# --- an image both servers can check (Ironic HEADs image_source before deploying) -----------
mkdir -p "$WORK/img"; head -c 1048576 /dev/urandom > "$WORK/img/disk.raw"
IMG_SUM=$(md5sum < "$WORK/img/disk.raw" | cut -d' ' -f1)
IMG_PORT=$(free_port tcp)
(cd "$WORK/img" && exec python3 -m http.server "$IMG_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
PIDS+=($!)

# --- Ironic -----------------------------------------------------------------------------------
IR_PORT=$(free_port tcp); IR="$WORK/ironic"
mkdir -p "$IR"/{state,locks,httpboot,tftpboot}
cat > "$IR/ironic.conf" <<EOF
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = bench-conductor
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake,pxe,ipxe
enabled_deploy_interfaces = fake,direct
enabled_power_interfaces = fake
enabled_management_interfaces = fake,noop
enabled_inspect_interfaces = fake,no-inspect
enabled_network_interfaces = noop
enabled_console_interfaces = fake,no-console
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,no-rescue
enabled_vendor_interfaces = fake,no-vendor
enabled_bios_interfaces = fake,no-bios
enabled_firmware_interfaces = fake,no-firmware
enabled_storage_interfaces = noop,fake
default_network_interface = noop
log_file = $IR/ironic.log
use_stderr = false
state_path = $IR/state
[database]
connection = sqlite:///$IR/ironic.sqlite
[api]
host_ip = 127.0.0.1
port = $IR_PORT
[deploy]
http_root = $IR/httpboot
http_url = http://127.0.0.1:9/
[pxe]
tftp_root = $IR/tftpboot
[dhcp]
dhcp_provider = none
[service_catalog]
endpoint_override = http://127.0.0.1:$IR_PORT
[conductor]
automated_clean = false
[oslo_concurrency]
lock_path = $IR/locks
EOF
"$VENV/bin/ironic-dbsync" --config-file "$IR/ironic.conf" create_schema > "$IR/dbsync.log" 2>&1
setsid "$VENV/bin/ironic" --config-file "$IR/ironic.conf" > "$IR/stdout.log" 2>&1 &
IR_PID=$!; PIDS+=($IR_PID)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$IR_PORT/v1" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$IR_PORT/v1" >/dev/null || { echo "Ironic did not start" >&2; tail "$IR/ironic.log" >&2; exit 1; }

# --- ironboot -----------------------------------------------------------------------------------
IB_PORT=$(free_port tcp)
RUST_LOG=warn "$IB" serve --data-dir "$WORK/ib" --api-listen "127.0.0.1:$IB_PORT" \
  --tftp-listen "127.0.0.1:$(free_port udp)" --http-listen "127.0.0.1:$(free_port tcp)" \
  > "$WORK/ironboot.log" 2>&1 &
IB_PID=$!; PIDS+=($IB_PID)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$IB_PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

declare -A URL=([A]="http://127.0.0.1:$IB_PORT" [B]="http://127.0.0.1:$IR_PORT")
declare -A PID=([A]=$IB_PID [B]=$IR_PID)
declare -A NAME=([A]=ironboot [B]=ironic)

# --- data: 1000 nodes each, and nodes waiting for their agent for the lookup scenario ---------
echo "preparing $NODES nodes on each server ..." >&2
for s in A B; do
  out=$($LOAD post "${URL[$s]}" "${PID[$s]}" "$NODES" 8)
  python3 -c "import json,sys; e=json.loads(sys.argv[1])['errors']; sys.exit(1 if e else 0)" "$out" \
    || { echo "${NAME[$s]}: creating nodes failed: $out" >&2; exit 1; }
done
uuids() { curl -s "$1/v1/nodes?limit=$NODES" -H "$V" | python3 -c "import json,sys; print(' '.join(n['uuid'] for n in json.load(sys.stdin)['nodes']))"; }
declare -A UUIDS=([A]="$(uuids "${URL[A]}")" [B]="$(uuids "${URL[B]}")")

# A node in `wait call-back`: direct deploy, fake boot and power, one port with MAC `mac`.
waiting_node() {
  local url=$1 mac=$2 uuid
  uuid=$(curl -sf -X POST "$url/v1/nodes" -H "$V" -H "$J" -d "{\"driver\": \"fake-hardware\",
    \"deploy_interface\": \"direct\", \"boot_interface\": \"fake\",
    \"instance_info\": {\"image_source\": \"http://127.0.0.1:$IMG_PORT/disk.raw\",
    \"image_checksum\": \"$IMG_SUM\"}}" | python3 -c "import json,sys; print(json.load(sys.stdin)['uuid'])")
  curl -sf -X POST "$url/v1/ports" -H "$V" -H "$J" -d "{\"node_uuid\": \"$uuid\", \"address\": \"$mac\"}" >/dev/null
  for t in manage provide active; do
    curl -sf -X PUT "$url/v1/nodes/$uuid/states/provision" -H "$V" -H "$J" -d "{\"target\": \"$t\"}" >/dev/null
    for _ in $(seq 100); do
      st=$(curl -s "$url/v1/nodes/$uuid" -H "$V" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['provision_state'] if not d['target_provision_state'] or d['provision_state']=='wait call-back' else '')")
      [ -n "$st" ] && break; sleep 0.2
    done
  done
  [ "$st" = "wait call-back" ] || { echo "node on $url ended in '$st' instead of wait call-back" >&2; return 1; }
  echo "$mac=$uuid"
}
# Each side measures lookup in 4 rounds (2 sequential, 2 8-way), each on fresh waiting nodes.
echo "preparing $((N_LOOKUP * 4)) waiting nodes on each server ..." >&2
declare -A POOL
for s in A B; do
  pool=""
  for i in $(seq $((N_LOOKUP * 4))); do
    pool+="$(waiting_node "${URL[$s]}" "$(printf '52:54:%02x:00:%02x:%02x' "$([ $s = A ] && echo 1 || echo 2)" $((i / 256)) $((i % 256)))") "
  done
  POOL[$s]=$pool
done

# --- measurement ----------------------------------------------------------------------------
declare -A RATES CPUS
FAIL=0
measure() {  # scenario n concurrency side round
  local sc=$1 n=$2 c=$3 s=$4 r=$5 args out
  case $sc in
    get) args=${UUIDS[$s]} ;;
    list) args=$NODES ;;
    lookup) args=$(echo ${POOL[$s]} | tr ' ' '\n' | sed -n "$((r * n + 1)),$(((r + 1) * n))p" | tr '\n' ' ') ;;
    *) args="" ;;
  esac
  out=$($LOAD "$sc" "${URL[$s]}" "${PID[$s]}" "$n" "$c" $args)
  read -r secs errs cpu < <(python3 -c "import json,sys; d=json.loads(sys.argv[1]); print(d['seconds'], d['errors'], d['cpu_seconds'])" "$out")
  [ "$errs" = 0 ] || { echo "${NAME[$s]} $sc x$c: $errs of $n responses were wrong" >&2; FAIL=1; }
  RATES[$sc.$c.$s]+="$(awk -v n="$n" -v t="$secs" 'BEGIN {printf "%.1f", n/t}') "
  CPUS[$sc.$c.$s]+="$(awk -v n="$n" -v c="$cpu" 'BEGIN {printf "%.3f", 1000*c/n}') "
}
stat3() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%s %s %s\n", a[1], m, a[NR]}'; }

printf '%-7s %-4s %-9s %28s %16s\n' scenario conc server "req/s min/median/max" "cpu ms/req (med)"
for sc in get post list lookup; do
  case $sc in get) n=$N_GET;; post) n=$N_POST;; list) n=$N_LIST;; lookup) n=$N_LOOKUP;; esac
  declare -A SEEN=([A]=0 [B]=0)
  for c in 1 8; do
    for s in A B B A; do
      # The k-th round of a side (lookup uses the k-th slice of that side's waiting nodes).
      k=${SEEN[$s]}; SEEN[$s]=$((k + 1))
      measure "$sc" "$n" "$c" "$s" "$k"
    done
    read -r amin amed amax < <(echo "${RATES[$sc.$c.A]}" | stat3)
    read -r bmin bmed bmax < <(echo "${RATES[$sc.$c.B]}" | stat3)
    read -r _ acpu _ < <(echo "${CPUS[$sc.$c.A]}" | stat3)
    read -r _ bcpu _ < <(echo "${CPUS[$sc.$c.B]}" | stat3)
    x=$(ratio "$amed" "$bmed")
    verdict=$(awk -v x="$x" -v t=$TARGET 'BEGIN {print (x >= t) ? "ok" : "MISS"}')
    [ "$verdict" = ok ] || MISSED=1
    printf '%-7s %-4s %-9s %28s %16s\n' $sc $c ironboot "$amin / $amed / $amax" "$acpu"
    printf '%-7s %-4s %-9s %28s %16s   ironboot/ironic = %sx (target >= %sx: %s)\n' $sc $c ironic "$bmin / $bmed / $bmax" "$bcpu" "$x" $TARGET "$verdict"
  done
done
echo "load during the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
[ $FAIL = 0 ] || exit 1
[ $STRICT = 1 ] && [ "${MISSED:-0}" = 1 ] && exit 1
exit 0
