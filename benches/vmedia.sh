#!/bin/bash
# shellcheck disable=SC2317 # functions run through `rounds`
# Virtual media deploys (redfish-virtual-media against sushy-tools 2.2.0, fake driver), two
# figures from one run:
#
#   1. Deploy: from `PUT .../states/provision {"target": "active"}` until the node is in `wait
#      call-back` — the deploy ISO built from a KERNEL_MIB kernel and a RAMDISK_MIB ramdisk
#      (random bytes, through the image cache: warm after the first deploy), published under
#      ironboot's HTTP root, the slots emptied, the ISO inserted (the emulator downloads it
#      inside InsertMedia), the one-time Cd boot set, the power-on sent and seen — against
#      genisoimage alone building the same ISO (Ironic's BIOS mkisofs flags, same kernel,
#      ramdisk and kernel command line). Sides alternate every round.
#      Target: ironboot's median <= 1.5x genisoimage's. Also shown, for information: the time
#      ironboot spent in POSTs to the BMC (its own metric; InsertMedia returns only once the
#      emulator has downloaded the ISO) and the rest.
#   2. Take over: NODES nodes in `wait call-back`, each on its own emulated system, deployed
#      by conductor A; A stops; conductor B starts on A's database (another host name, its own
#      HTTP root, the same [api] public_url) and rebuilds, republishes and re-inserts every
#      node's media. Timed from B's start until the API shows all of them taken over.
#      Target: <= 10 s.
#
# Checks: each deploy ISO the emulator fetched has the checksum of what ironboot published and
# holds the source kernel and ramdisk (isoinfo); an abort afterwards leaves nothing published;
# genisoimage's output holds them too; after take over, every node's medium in the emulator is
# the one B published, which is byte for byte the one A built. Nodes boot in BIOS mode so both
# sides build an isolinux ISO (benches/media.sh compares UEFI builds). The emulator runs
# without authentication and with power changes applied at once (its fake driver otherwise
# waits 1-11 s at random), so the figures are ironboot's.
# Rules, output and exit status: benches/lib.sh.
read -r -d '' USAGE << 'EOF'
Usage: benches/vmedia.sh [--strict]
Env:   ROUNDS (default 4), KERNEL_MIB (10), RAMDISK_MIB (200), NODES (100), SUSHY_VENV,
       BENCH_SUM, IB, WORK (benches/lib.sh; WORK defaults to a directory under the target dir)
Needs: python3 (venv: sushy-tools 2.2.0 from PyPI unless SUSHY_VENV has it), genisoimage
       (with isoinfo), isolinux, syslinux-common
EOF
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
ROUNDS=${ROUNDS:-4}
KERNEL_MIB=${KERNEL_MIB:-10}
RAMDISK_MIB=${RAMDISK_MIB:-200}
NODES=${NODES:-100}
TARGET=$(realpath "${CARGO_TARGET_DIR:-target}")
mkdir -p "$TARGET"
TMPDIR=$TARGET # the data directories and the inputs on one filesystem, as in a deployment
export TMPDIR
bench_usage "$USAGE"
bench_init vmedia "$@"
bench_need python3 genisoimage isoinfo
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || bench_need isolinux
bench_ironboot

SUSHY_VENV=${SUSHY_VENV:-$TARGET/ironboot-test-cache/venv-sushy}
if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ]; then
  SUSHY_VENV=$TARGET/bench-cache/venv-sushy
  if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ]; then
    echo "   creating $SUSHY_VENV (sushy-tools 2.2.0 from PyPI)"
    python3 -m venv "$SUSHY_VENV"
    "$SUSHY_VENV/bin/pip" install --quiet sushy-tools==2.2.0
  fi
fi
cd "$WORK"

# ---- helpers: the emulator's config, the API side of the deploys ----
cat > api.py << 'PY'
import json, os, sys, time, urllib.request

def api(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          "X-OpenStack-Ironic-API-Version": "1.80"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def wait(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            sys.exit(f"timeout waiting for {what}")
        time.sleep(0.01)

def node_in(base, uuid, states):
    def check():
        _, n = api(base, "GET", f"/v1/nodes/{uuid}")
        return n if n["provision_state"] in states and n["reservation"] is None else None
    return check

def provision(base, uuid, target):
    s, body = api(base, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target})
    if s != 202:
        sys.exit(f"{target}: {s} {body}")

def cd_image(sushy, system):
    with urllib.request.urlopen(f"{sushy}/redfish/v1/Systems/{system}/VirtualMedia/Cd") as r:
        return json.load(r)["Image"]

def fetched_copy(tmp, name):
    for d in os.listdir(tmp):
        if os.path.exists(os.path.join(tmp, d, name)):
            return os.path.join(tmp, d, name)
    sys.exit(f"the emulator holds no copy of {name}")

def post_seconds(base):
    """Time ironboot spent in POSTs to BMCs so far (its own metric): InsertMedia, which the
    emulator answers once it has downloaded the medium, and the power-on reset."""
    with urllib.request.urlopen(base + "/metrics") as r:
        for line in r.read().decode().splitlines():
            if line.startswith('ironboot_redfish_call_duration_seconds_sum{method="POST"}'):
                return float(line.split()[-1])
    return 0.0

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "sushy-config":           # DIR, then system uuids and MACs as uuid=mac
    d, systems = args[0], args[1:]
    lines = [f"    {{'uuid': '{s.split('=')[0]}', 'name': 'n{i}', 'power_state': 'Off',"
             f" 'external_notifier': False, 'nics': [{{'mac': '{s.split('=')[1]}', 'ip': '127.0.0.1'}}]}},"
             for i, s in enumerate(systems)]
    print("SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = 0\n"
          f"SUSHY_EMULATOR_FAKE_DRIVER = True\nSUSHY_EMULATOR_STATE_DIR = '{d}/state'\n"
          "SUSHY_EMULATOR_FAKE_SYSTEMS = [\n" + "\n".join(lines) + "\n]\n"
          # Power changes at once: the fake driver's random 1-11 s delay set to 0.
          "import types as _t\nimport sushy_tools.emulator.resources.systems.fakedriver as _f\n"
          "_f.random = _t.SimpleNamespace(randint=lambda a, b: 0)")
elif cmd == "enroll":               # API SUSHY SYSTEM MAC KERNEL RAMDISK IMAGE -> uuid
    base, sushy, system, mac, kernel, ramdisk, image = args
    s, n = api(base, "POST", "/v1/nodes", {
        "driver": "redfish", "properties": {"capabilities": "boot_mode:bios"},
        "driver_info": {"redfish_address": sushy, "redfish_system_id": f"/redfish/v1/Systems/{system}",
                        "deploy_kernel": kernel, "deploy_ramdisk": ramdisk},
        "instance_info": {"image_source": image}})
    if s != 201:
        sys.exit(f"create: {s} {n}")
    s, p = api(base, "POST", "/v1/ports", {"address": mac, "node_uuid": n["uuid"]})
    if s != 201:
        sys.exit(f"port: {s} {p}")
    for verb, state in (("manage", "manageable"), ("provide", "available")):
        provision(base, n["uuid"], verb)
        wait(state, node_in(base, n["uuid"], [state]), 120)
    print(n["uuid"])
elif cmd == "deploy":               # API UUID SUSHY SYSTEM SUSHY_TMP OUT -> seconds, name, BMC POST seconds
    base, uuid, sushy, system, tmp, out = args
    before = post_seconds(base)
    t0 = time.monotonic()
    provision(base, uuid, "active")
    n = wait("wait call-back", node_in(base, uuid, ["wait call-back", "deploy failed"]), 600)
    secs = time.monotonic() - t0
    if n["provision_state"] != "wait call-back":
        sys.exit(f"deploy failed: {n['last_error']}")
    name = cd_image(sushy, system).rsplit("/", 1)[1]
    os.link(fetched_copy(tmp, name), out)
    print(f"{secs:.3f} {name} {post_seconds(base) - before:.3f}")
elif cmd == "deploy-many":          # API UUID... -> all in wait call-back
    base, uuids = args[0], args[1:]
    for u in uuids:
        provision(base, u, "active")
    for u in uuids:
        n = wait("wait call-back", node_in(base, u, ["wait call-back", "deploy failed"]), 1200)
        if n["provision_state"] != "wait call-back":
            sys.exit(f"deploy failed: {n['last_error']}")
elif cmd == "abort":                # API UUID
    provision(args[0], args[1], "abort")
    wait("deploy failed", node_in(args[0], args[1], ["deploy failed"]), 120)
elif cmd == "taken-over":           # API HOST NODES STARTED_EPOCH -> seconds since STARTED
    base, host, count, started = args[0], args[1], int(args[2]), float(args[3])
    def all_taken():
        _, listing = api(base, "GET", "/v1/nodes/detail")
        nodes = listing["nodes"]
        return len(nodes) == count and all(
            n["conductor"] == host and n["reservation"] is None for n in nodes)
    wait("take over", all_taken, 600)
    print(f"{time.time() - started:.3f}")
elif cmd == "images":               # SUSHY SYSTEM... -> "system url" lines
    for s in args[1:]:
        print(s, cd_image(args[0], s))
PY

start_sushy() {  # NAME SYSTEM=MAC... -> SUSHY (url), SUSHY_TMP
  local d=$WORK/$1 i port=""
  shift
  mkdir -p "$d/state" "$d/tmp"
  python3 api.py sushy-config "$d" "$@" > "$d/sushy.conf"
  start_bg env TMPDIR="$d/tmp" NO_PROXY=127.0.0.1,localhost \
    "$SUSHY_VENV/bin/sushy-emulator" --config "$d/sushy.conf" > "$d/sushy.log" 2>&1
  for i in $(seq 600); do
    port=$(sed -n 's/.*Running on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$d/sushy.log" | head -1)
    if [ -n "$port" ]; then break; fi
    sleep 0.1
  done
  [ -n "$port" ] || { echo "sushy-emulator did not start:" >&2; cat "$d/sushy.log" >&2; exit 1; }
  SUSHY=http://127.0.0.1:$port
  SUSHY_TMP=$d/tmp
}

printf '[agent]\nrequire_tls = false\n[redfish]\nconnection_retry_interval_ms = 100\npower_state_poll_interval_ms = 20\n' \
  > ironboot.toml
export IRONBOOT_CONFIG=$WORK/ironboot.toml

# ---- 1. deploy to "media inserted and power on sent" vs genisoimage ----
head -c $((KERNEL_MIB << 20)) /dev/urandom > vmlinuz
head -c $((RAMDISK_MIB << 20)) /dev/urandom > initrd
head -c $((1 << 20)) /dev/urandom > disk.img
SUM_KERNEL=$(checksum vmlinuz)
SUM_RAMDISK=$(checksum initrd)
SYSTEM=27946b59-9e44-4fa7-8e91-f3527a1ef094
start_sushy sushy-deploy "$SYSTEM=52:54:00:12:34:56"
IRONBOOT_HOST=bench-deploy start_ironboot "$WORK/deploy"
API=http://127.0.0.1:$IB_API
NODE=$(python3 api.py enroll "$API" "$SUSHY" "$SYSTEM" 52:54:00:12:34:56 "$WORK/vmlinuz" "$WORK/initrd" "$WORK/disk.img")
PUBLISHED=$WORK/deploy/httpboot/redfish

iso_ok() {
  local k r
  k=$(isoinfo -R -i "$1" -x /vmlinuz 2> /dev/null | checksum_stdin)
  r=$(isoinfo -R -i "$1" -x /initrd 2> /dev/null | checksum_stdin)
  if [ "$k" != "$SUM_KERNEL" ] || [ "$r" != "$SUM_RAMDISK" ]; then
    echo "corrupt: /vmlinuz $k (source $SUM_KERNEL), /initrd $r (source $SUM_RAMDISK)"
    return 1
  fi
}

# One deploy, checked, then aborted (which must leave nothing published). Prints the kernel
# command line of the ISO when asked (the genisoimage tree uses it).
deploy_once() {
  local out=$WORK/fetched.iso got secs name why
  rm -f "$out"
  if ! got=$(python3 api.py deploy "$API" "$NODE" "$SUSHY" "$SYSTEM" "$SUSHY_TMP" "$out" 2> "$WORK/deploy.err"); then
    failure deploy.ironboot "$(tail -n 1 "$WORK/deploy.err")"
    return 0
  fi
  read -r secs name post <<< "$got"
  if [ "$(checksum "$out")" != "$(checksum "$PUBLISHED/$name")" ]; then
    failure deploy.ironboot "the emulator fetched other bytes than $PUBLISHED/$name"
  elif why=$(iso_ok "$out"); then
    sample deploy.ironboot "$secs"
    sample deploy.bmc-post "$post"
    sample deploy.without-bmc "$(awk -v a="$secs" -v b="$post" 'BEGIN {printf "%.3f", a - b}')"
  else
    failure deploy.ironboot "$why"
  fi
  if [ "${1:-}" = cmdline ]; then
    isoinfo -R -i "$out" -x /isolinux/isolinux.cfg | sed -n 's/^ *APPEND //p'
  fi
  rm -f "$out"
  python3 api.py abort "$API" "$NODE" || failure deploy.ironboot "abort failed"
  if [ -n "$(ls -A "$PUBLISHED")" ]; then failure deploy.ironboot "media left published after abort"; fi
}

# The warm-up deploy fills the image cache and gives the command line genisoimage's ISO gets.
APPEND=$(deploy_once cmdline)
rm -f "$BENCH_STATE"/samples/deploy.*
mkdir -p tree/isolinux
ln vmlinuz tree/vmlinuz
ln initrd tree/initrd
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 tree/isolinux/
printf 'DEFAULT ironboot\nPROMPT 0\nLABEL ironboot\n  KERNEL /vmlinuz\n  INITRD /initrd\n  APPEND %s\n' \
  "$APPEND" > tree/isolinux/isolinux.cfg
ISO_FLAGS=(-r -V VMEDIA_BOOT_ISO -J -l -publisher ironboot-bench -no-emul-boot -boot-load-size 4
  -boot-info-table -b isolinux/isolinux.bin)

deploy() {
  case $1 in
    ironboot) deploy_once ;;
    genisoimage) transfer deploy.genisoimage gen.iso @iso_ok genisoimage -quiet "${ISO_FLAGS[@]}" -o gen.iso tree ;;
  esac
}
echo "   inputs: ${KERNEL_MIB} MiB kernel, ${RAMDISK_MIB} MiB ramdisk (random); node $NODE on $SUSHY"
rounds deploy ironboot genisoimage
stop_all

# ---- 2. take over of NODES nodes in wait call-back ----
head -c $((64 << 10)) /dev/urandom > small-vmlinuz
head -c $((1 << 20)) /dev/urandom > small-initrd
systems=()
for i in $(seq 0 $((NODES - 1))); do
  systems+=("$(printf '00000000-0000-4000-8000-%012x=52:54:01:00:%02x:%02x' $((i + 1)) $((i / 256)) $((i % 256)))")
done
start_sushy sushy-take-over "${systems[@]}"
IRONBOOT_HOST=bench-a start_ironboot "$WORK/a"
API_A=http://127.0.0.1:$IB_API
uuids=()
for s in "${systems[@]}"; do
  uuids+=("$(python3 api.py enroll "$API_A" "$SUSHY" "${s%%=*}" "${s#*=}" "$WORK/small-vmlinuz" "$WORK/small-initrd" "$WORK/disk.img")")
done
python3 api.py deploy-many "$API_A" "${uuids[@]}"
echo "   $NODES nodes in wait call-back on conductor A ($API_A)"
kill "${BENCH_PIDS[-1]}"
wait "${BENCH_PIDS[-1]}" || true
unset 'BENCH_PIDS[-1]'
STARTED=$(date +%s.%N)
IRONBOOT_HOST=bench-b IRONBOOT_DATABASE__URL=sqlite://$WORK/a/ironboot.sqlite \
  IRONBOOT_API__PUBLIC_URL=$API_A start_ironboot "$WORK/b"
API_B=http://127.0.0.1:$IB_API
if secs=$(python3 api.py taken-over "$API_B" bench-b "$NODES" "$STARTED"); then
  bad=0
  while read -r system url; do
    name=${url##*/}
    if [ "${url%/redfish/*}" != "http://127.0.0.1:$IB_HTTP" ]; then
      failure take-over "$system holds $url, not conductor B's"
      bad=1
    elif [ "$(checksum "$WORK/b/httpboot/redfish/$name")" != "$(checksum "$WORK/a/httpboot/redfish/$name")" ]; then
      failure take-over "$name: B's rebuilt medium differs from A's"
      bad=1
    elif [ "$(checksum "$(find "$SUSHY_TMP" -name "$name" | head -1)")" != "$(checksum "$WORK/b/httpboot/redfish/$name")" ]; then
      failure take-over "$name: the emulator fetched other bytes than B published"
      bad=1
    fi
  done < <(python3 api.py images "$SUSHY" "${systems[@]%%=*}")
  if [ "$bad" = 0 ]; then sample take-over "$secs"; fi
else
  failure take-over "not every node was taken over"
fi
bench_note_load

compare "deploy -> media inserted and power on sent (${KERNEL_MIB} MiB kernel + ${RAMDISK_MIB} MiB ramdisk)" \
  deploy.ironboot ironboot deploy.genisoimage "genisoimage alone"
# Where the deploy's time goes: the emulator answers InsertMedia only once it has downloaded
# the whole ISO (python-requests into its TMPDIR), which is the BMC's work, not ironboot's.
show deploy.bmc-post "of which BMC POSTs"
show deploy.without-bmc "ironboot without them"
echo "   ratio of medians (ironboot without the BMC's POSTs)/genisoimage: $(ratio_of deploy.without-bmc deploy.genisoimage) (information)"
echo
echo "-- take over of $NODES nodes in wait call-back: from conductor B's start until every node was rebuilt, republished and re-inserted"
show take-over "ironboot"
target "deploy <= 1.5x genisoimage" "$(ratio_of deploy.ironboot deploy.genisoimage)" "<=" 1.5
target "take over of $NODES nodes <= 10 s" "$(median_of take-over)" "<=" 10
bench_finish
