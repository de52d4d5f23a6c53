#!/usr/bin/env bash
# Virtual media deploys (redfish-virtual-media against sushy-tools 2.2.0, fake driver), two
# figures from one run:
#
#   1. Deploy: from `PUT .../states/provision {"target": "active"}` to the node in `wait
#      call-back` — the deploy ISO built from a 10 MiB kernel and a 200 MiB ramdisk (random
#      bytes), published under ironboot's HTTP root, the slots emptied, the ISO inserted (sushy
#      downloads it inside InsertMedia), the one-time Cd boot set and the power-on sent and
#      seen — side by side with genisoimage alone building the same ISO (Ironic's BIOS
#      mkisofs flags, same kernel, ramdisk and command line). Rounds alternate A B B A.
#      Target: ironboot <= 1.5 x genisoimage (median).
#   2. Take over: NODES (100) nodes in `wait call-back`, each on its own emulated system,
#      deployed by conductor A; A stops; conductor B starts on the same database (another
#      host name, its own HTTP root, the same [api] public_url) and rebuilds, republishes and
#      re-inserts every node's media. Timed from B's start until the API shows all of them
#      taken over. Target: <= 10 s.
#
# Every transfer is checked: each ISO the emulator fetched is compared with what ironboot
# published (sha256), the published deploy ISO's /vmlinuz and /initrd with the inputs
# (xorriso), genisoimage's output likewise; after take over every node's rebuilt medium must
# equal the one A built. Nodes boot in BIOS mode so both sides build an isolinux ISO (UEFI
# would need a prebuilt efiboot.img on the genisoimage side; benches/media.sh compares that).
# The emulator runs without authentication and with power changes applied at once (its fake
# driver otherwise waits 1-11 s at random), so the figures are ironboot's.
#
# Usage: benches/vmedia.sh [--strict]      (--strict: exit 1 when a target is missed)
# Env:   RUNS (rounds of A B B A, default 2), NODES (default 100), WORK, SUSHY_VENV
# Needs: python3 (with venv, for sushy-tools from PyPI unless SUSHY_VENV has it), genisoimage,
#        xorriso, isolinux, syslinux-common, curl
set -euo pipefail
STRICT=0
[ "${1:-}" = --strict ] && STRICT=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
for t in python3 genisoimage xorriso curl; do
  command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done
[ -f /usr/lib/ISOLINUX/isolinux.bin ] || { echo "missing isolinux" >&2; exit 2; }

(cd "$ROOT" && cargo build --release --quiet --bin ironboot)
IB=$TARGET/release/ironboot
SUSHY_VENV=${SUSHY_VENV:-$TARGET/ironboot-test-cache/venv-sushy}
if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ]; then
  SUSHY_VENV=$TARGET/bench-cache/venv-sushy
  if [ ! -x "$SUSHY_VENV/bin/sushy-emulator" ]; then
    echo "# creating $SUSHY_VENV (sushy-tools 2.2.0 from PyPI)"
    python3 -m venv "$SUSHY_VENV"
    "$SUSHY_VENV/bin/pip" install --quiet sushy-tools==2.2.0
  fi
fi
WORK=${WORK:-$(mktemp -d "$TARGET/vmedia-bench.XXXXXX")}
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

echo "# inputs: 10 MiB kernel, 200 MiB ramdisk (random) in $WORK"
head -c $((10 << 20)) /dev/urandom >"$WORK/vmlinuz"
head -c $((200 << 20)) /dev/urandom >"$WORK/initrd"
head -c $((64 << 10)) /dev/urandom >"$WORK/small-vmlinuz"
head -c $((1 << 20)) /dev/urandom >"$WORK/small-initrd"
head -c $((1 << 20)) /dev/urandom >"$WORK/disk.img"

IB=$IB SUSHY=$SUSHY_VENV/bin/sushy-emulator WORK=$WORK RUNS=${RUNS:-2} NODES=${NODES:-100} \
  STRICT=$STRICT python3 - <<'PY'
import hashlib, json, os, signal, statistics, subprocess, sys, time, urllib.request

IB, SUSHY, WORK = os.environ["IB"], os.environ["SUSHY"], os.environ["WORK"]
RUNS, NODES, STRICT = int(os.environ["RUNS"]), int(os.environ["NODES"]), os.environ["STRICT"] == "1"
procs = []


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wait_for(what, check, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            sys.exit(f"timeout waiting for {what}")
        time.sleep(0.01)


def start_sushy(name, systems):
    d = os.path.join(WORK, name)
    os.makedirs(os.path.join(d, "state"))
    os.makedirs(os.path.join(d, "tmp"))
    lines = [f"    {{'uuid': '{u}', 'name': 'n{i}', 'power_state': 'Off', 'external_notifier': False,"
             f" 'nics': [{{'mac': '{m}', 'ip': '127.0.0.1'}}]}}," for i, (u, m) in enumerate(systems)]
    with open(os.path.join(d, "sushy.conf"), "w") as f:
        f.write("SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\nSUSHY_EMULATOR_LISTEN_PORT = 0\n"
                "SUSHY_EMULATOR_FAKE_DRIVER = True\n"
                f"SUSHY_EMULATOR_STATE_DIR = '{d}/state'\n"
                "SUSHY_EMULATOR_FAKE_SYSTEMS = [\n" + "\n".join(lines) + "\n]\n"
                # Power changes at once (the fake driver's 1-11 s random delay set to 0).
                "import types as _t\nimport sushy_tools.emulator.resources.systems.fakedriver as _f\n"
                "_f.random = _t.SimpleNamespace(randint=lambda a, b: 0)\n")
    log = open(os.path.join(d, "sushy.log"), "w")
    env = dict(os.environ, TMPDIR=os.path.join(d, "tmp"), NO_PROXY="127.0.0.1,localhost")
    p = subprocess.Popen([SUSHY, "--config", os.path.join(d, "sushy.conf")], stdout=log,
                         stderr=subprocess.STDOUT, env=env)
    procs.append(p)

    def port():
        text = open(os.path.join(d, "sushy.log")).read()
        marker = "Running on http://127.0.0.1:"
        if marker in text:
            return int(text.split(marker)[1].split("/")[0].split()[0])
    return f"http://127.0.0.1:{wait_for('sushy', port, 60)}", os.path.join(d, "tmp")


def start_ironboot(name, env):
    data = os.path.join(WORK, name)
    ready = data + ".ready.json"
    log = open(data + ".log", "w")
    cfg = os.path.join(WORK, "ironboot.toml")
    with open(cfg, "w") as f:
        f.write("[agent]\nrequire_tls = false\n[redfish]\nconnection_retry_interval_ms = 100\n"
                "power_state_poll_interval_ms = 20\n")
    started = time.monotonic()
    p = subprocess.Popen([IB, "--config", cfg, "serve", "--data-dir", data, "--ready-file", ready,
                          "--api-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                          "--tftp-listen", "127.0.0.1:0"],
                         stdout=log, stderr=subprocess.STDOUT,
                         env=dict(os.environ, RUST_LOG="warn", **env))
    procs.append(p)
    bound = wait_for("ironboot", lambda: os.path.exists(ready) and json.load(open(ready)), 60)
    return p, f"http://{bound['api']}", f"http://{bound['http']}", data, started


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)


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


def redfish(base, path):
    with urllib.request.urlopen(base + path, timeout=60) as r:
        return json.load(r)


def state_is(base, uuid, states):
    def check():
        _, n = api(base, "GET", f"/v1/nodes/{uuid}")
        return n if n["provision_state"] in states and n["reservation"] is None else None
    return check


def enroll(base, sushy, system, mac, kernel, ramdisk):
    s, n = api(base, "POST", "/v1/nodes", {
        "driver": "redfish", "properties": {"capabilities": "boot_mode:bios"},
        "driver_info": {"redfish_address": sushy, "redfish_system_id": f"/redfish/v1/Systems/{system}",
                        "deploy_kernel": kernel, "deploy_ramdisk": ramdisk},
        "instance_info": {"image_source": os.path.join(WORK, "disk.img")}})
    assert s == 201, n
    uuid = n["uuid"]
    assert api(base, "POST", "/v1/ports", {"address": mac, "node_uuid": uuid})[0] == 201
    for verb, state in (("manage", "manageable"), ("provide", "available")):
        assert api(base, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": verb})[0] == 202
        wait_for(state, state_is(base, uuid, [state]), 60)
    return uuid


def slot_image(sushy, system):
    return redfish(sushy, f"/redfish/v1/Systems/{system}/VirtualMedia/Cd")["Image"]


def copy_of(tmp, name):
    for d in os.listdir(tmp):
        p = os.path.join(tmp, d, name)
        if os.path.exists(p):
            return p
    sys.exit(f"the emulator holds no copy of {name}")


def iso_member(iso, member, out):
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", member, out],
                   check=True, capture_output=True)
    h = sha(out)
    os.unlink(out)
    return h


def stats(xs):
    return f"min {min(xs):.3f} s, median {statistics.median(xs):.3f} s, max {max(xs):.3f} s"


try:
    kernel, ramdisk = os.path.join(WORK, "vmlinuz"), os.path.join(WORK, "initrd")
    want = {"/vmlinuz": sha(kernel), "/initrd": sha(ramdisk)}
    # ---- 1. deploy to "media inserted and power on sent" vs genisoimage ----
    system = "27946b59-9e44-4fa7-8e91-f3527a1ef094"
    sushy, sushy_tmp = start_sushy("sushy-deploy", [(system, "52:54:00:12:34:56")])
    ib, api_a, http_a, data_a, _ = start_ironboot("deploy", {"IRONBOOT_HOST": "bench-deploy"})
    uuid = enroll(api_a, sushy, system, "52:54:00:12:34:56", kernel, ramdisk)
    tree = os.path.join(WORK, "tree")
    os.makedirs(os.path.join(tree, "isolinux"))
    os.link(kernel, os.path.join(tree, "vmlinuz"))
    os.link(ramdisk, os.path.join(tree, "initrd"))
    for f in ("/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32"):
        subprocess.run(["cp", f, os.path.join(tree, "isolinux")], check=True)

    def ironboot_side():
        t0 = time.monotonic()
        s, body = api(api_a, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "active"})
        assert s == 202, body
        n = wait_for("wait call-back", state_is(api_a, uuid, ["wait call-back", "deploy failed"]), 300)
        elapsed = time.monotonic() - t0
        assert n["provision_state"] == "wait call-back", n["last_error"]
        url = slot_image(sushy, system)
        name = url.rsplit("/", 1)[1]
        published = os.path.join(data_a, "httpboot", "redfish", name)
        assert sha(published) == sha(copy_of(sushy_tmp, name)), "the emulator fetched other bytes"
        for member, h in want.items():
            assert iso_member(published, member, os.path.join(WORK, "member")) == h, member
        cfg = os.path.join(WORK, "isolinux.cfg")
        subprocess.run(["xorriso", "-osirrox", "on", "-indev", published, "-extract",
                        "/isolinux/isolinux.cfg", cfg], check=True, capture_output=True)
        cmdline = open(cfg).read()
        os.unlink(cfg)
        assert redfish(sushy, f"/redfish/v1/Systems/{system}")["PowerState"] == "On"
        assert api(api_a, "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": "abort"})[0] == 202
        wait_for("deploy failed", state_is(api_a, uuid, ["deploy failed"]), 120)
        assert not os.listdir(os.path.join(data_a, "httpboot", "redfish")), "left published"
        return elapsed, cmdline

    _, cmdline = ironboot_side()  # warm-up: the image cache fetches the kernel and ramdisk
    append = next(l for l in cmdline.splitlines() if l.strip().startswith("APPEND")).split(None, 1)[1]
    with open(os.path.join(tree, "isolinux", "isolinux.cfg"), "w") as f:
        f.write(f"DEFAULT ironboot\nPROMPT 0\nLABEL ironboot\n  KERNEL /vmlinuz\n  INITRD /initrd\n"
                f"  APPEND {append}\n")
    flags = ["-r", "-V", "VMEDIA_BOOT_ISO", "-J", "-l", "-publisher", "ironboot-bench",
             "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-b", "isolinux/isolinux.bin"]

    def genisoimage_side():
        out = os.path.join(WORK, "gen.iso")
        t0 = time.monotonic()
        subprocess.run(["genisoimage", "-quiet", *flags, "-o", out, tree], check=True)
        elapsed = time.monotonic() - t0
        for member, h in want.items():
            assert iso_member(out, member, os.path.join(WORK, "member")) == h, member
        os.unlink(out)
        return elapsed

    genisoimage_side()  # warm-up
    a, b = [], []
    for _ in range(RUNS):
        a.append(ironboot_side()[0])
        b.append(genisoimage_side())
        b.append(genisoimage_side())
        a.append(ironboot_side()[0])
    stop(ib)
    procs.remove(ib)
    ratio = statistics.median(a) / statistics.median(b)
    print(f"\n== deploy -> media inserted and power on sent (10 MiB kernel + 200 MiB ramdisk), "
          f"{len(a)} runs each, alternating A B B A")
    print(f"ironboot (build, publish, eject, insert, boot override, power on): {stats(a)}")
    print(f"genisoimage alone building the same ISO:                        {stats(b)}")
    print(f"ratio of medians: {ratio:.2f} x (target <= 1.5)")

    # ---- 2. take over of NODES nodes in wait call-back ----
    systems = [(f"00000000-0000-4000-8000-{i + 1:012x}", f"52:54:01:00:{i // 256:02x}:{i % 256:02x}")
               for i in range(NODES)]
    sushy2, sushy2_tmp = start_sushy("sushy-take-over", systems)
    a2, api_a2, http_a2, data_a2, _ = start_ironboot("take-over-a", {"IRONBOOT_HOST": "bench-a"})
    small = (os.path.join(WORK, "small-vmlinuz"), os.path.join(WORK, "small-initrd"))
    uuids = [enroll(api_a2, sushy2, s, m, *small) for s, m in systems]
    for u in uuids:
        assert api(api_a2, "PUT", f"/v1/nodes/{u}/states/provision", {"target": "active"})[0] == 202
    for u in uuids:
        n = wait_for("wait call-back", state_is(api_a2, u, ["wait call-back", "deploy failed"]), 600)
        assert n["provision_state"] == "wait call-back", n["last_error"]
    built_by_a = {f: sha(os.path.join(data_a2, "httpboot", "redfish", f))
                  for f in os.listdir(os.path.join(data_a2, "httpboot", "redfish"))}
    assert len(built_by_a) == NODES
    stop(a2)
    procs.remove(a2)
    b2, api_b2, http_b2, data_b2, started = start_ironboot("take-over-b", {
        "IRONBOOT_HOST": "bench-b",
        "IRONBOOT_DATABASE__URL": "sqlite://" + os.path.join(data_a2, "ironboot.sqlite"),
        "IRONBOOT_API__PUBLIC_URL": api_a2})
    ready_after = time.monotonic() - started

    def all_taken():
        _, listing = api(api_b2, "GET", "/v1/nodes/detail")
        nodes = listing["nodes"]
        return len(nodes) == NODES and all(n["conductor"] == "bench-b" and n["reservation"] is None
                                           for n in nodes)
    wait_for("take over", all_taken, 600)
    took = time.monotonic() - started
    for s, _ in systems:
        url = slot_image(sushy2, s)
        assert url.startswith(http_b2 + "/redfish/"), url
        name = url.rsplit("/", 1)[1]
        republished = sha(os.path.join(data_b2, "httpboot", "redfish", name))
        assert republished == built_by_a[name], f"{name}: rebuilt bytes differ"
        assert sha(copy_of(sushy2_tmp, name)) == republished, f"{name}: the emulator fetched other bytes"
    print(f"\n== take over of {NODES} nodes in wait call-back (conductor B on A's database)")
    print(f"B ready (listeners bound) after {ready_after:.2f} s; every node rebuilt, republished and "
          f"re-inserted after {took:.2f} s (target <= 10 s); all {NODES} media byte-identical")
    missed = [m for m, bad in (("deploy ratio", ratio > 1.5), ("take over", took > 10)) if bad]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        if STRICT:
            sys.exit(1)
finally:
    for p in procs:
        p.kill()
        p.wait()
PY
