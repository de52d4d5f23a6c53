"""The client side of benches/take_over.sh (standard library only).

enroll API N MAC_PREFIX KERNEL   N pxe nodes (MAC_PREFIX: 4 octets) on fake hardware deployed to active (netboot
                                 fallback: each has a config in its owner's TFTP root)
regenerated DIR UUIDS STARTED    waits until DIR (a TFTP root) holds a config naming each node
                                 UUID listed in the file UUIDS; prints seconds since STARTED
members API N                    waits until the ring has N members
share API                        waits until the conductor took over every node it owns
"""

import concurrent.futures
import json
import os
import sys
import time
import urllib.request

HEADERS = {"X-OpenStack-Ironic-API-Version": "1.80", "Content-Type": "application/json"}


def call(api, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api + path, data=data, method=method, headers=HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def nodes(api):
    fields = "uuid,provision_state,reservation,conductor,last_error"
    out, marker = [], ""
    while True:
        s, b = call(api, "GET", f"/v1/nodes?fields={fields}&limit=1000{marker}")
        assert s == 200, b
        out += b["nodes"]
        if len(b["nodes"]) < 1000:
            return out
        marker = "&marker=" + b["nodes"][-1]["uuid"]


def wait_all(api, state, deadline):
    while True:
        ns = nodes(api)
        bad = [n for n in ns if n["provision_state"] != state or n["reservation"]]
        if not bad:
            return
        failed = [n for n in bad if n["last_error"]]
        if failed:
            sys.exit(f"{len(failed)} nodes failed, e.g. {failed[0]}")
        if time.time() > deadline:
            sys.exit(f"{len(bad)} nodes not {state}, e.g. {bad[0]}")
        time.sleep(0.5)


def enroll(api, n, prefix, kernel):
    href = "file://" + kernel

    def one(i):
        s, node = call(api, "POST", "/v1/nodes", {
            "name": f"bench-{prefix.replace(':', '')}-{i}", "driver": "fake-hardware",
            "boot_interface": "pxe", "deploy_interface": "fake",
            "driver_info": {"deploy_kernel": href, "deploy_ramdisk": href},
            "instance_info": {"image_source": "http://192.0.2.1/disk.img"},
        })
        assert s == 201, node
        mac = f"{prefix}:{i >> 8:02x}:{i & 255:02x}"
        s, port = call(api, "POST", "/v1/ports", {"address": mac, "node_uuid": node["uuid"]})
        assert s == 201, port
        return node["uuid"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        uuids = list(pool.map(one, range(n)))
        print("\n".join(uuids))
        for target, state in (("manage", "manageable"), ("provide", "available"),
                              ("active", "active")):
            def move(u, target=target):
                s, b = call(api, "PUT", f"/v1/nodes/{u}/states/provision", {"target": target})
                assert s == 202, (u, target, b)
            list(pool.map(move, uuids))
            wait_all(api, state, time.time() + 600)


def regenerated(root, uuids_file, started):
    want = set(open(uuids_file).read().split())
    cfg_dir = os.path.join(root, "pxelinux.cfg")
    deadline = time.time() + 600
    seen = {}
    while True:
        try:
            names = [n for n in os.listdir(cfg_dir) if n.startswith("01-")]
        except FileNotFoundError:
            names = []
        for name in names:
            if name not in seen:
                with open(os.path.join(cfg_dir, name)) as f:
                    text = f.read()
                found = [u for u in want if u in text]
                if found:
                    seen[name] = found[0]
        if set(seen.values()) == want:
            print(f"{time.time() - started:.3f}")
            return
        if time.time() > deadline:
            sys.exit(f"{len(set(seen.values()))} of {len(want)} configs regenerated after 600 s")
        time.sleep(0.1)


def metrics(api):
    with urllib.request.urlopen(api + "/metrics", timeout=10) as r:
        out = {}
        for line in r.read().decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


def share(api):
    deadline = time.time() + 600
    while True:
        m = metrics(api)
        owned = m.get("ironboot_conductor_nodes_owned", 0)
        took = m.get('ironboot_conductor_take_overs_total{outcome="succeeded"}', 0)
        if owned > 0 and took == owned:
            return
        if time.time() > deadline:
            sys.exit(f"took {took} of the {owned} nodes it owns after 600 s")
        time.sleep(0.5)


def members(api, n):
    deadline = time.time() + 120
    while True:
        if metrics(api).get("ironboot_conductor_ring_members") == n:
            return
        if time.time() > deadline:
            sys.exit(f"the ring never had {n} members")
        time.sleep(0.2)


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    if cmd == "enroll":
        enroll(args[0], int(args[1]), args[2], args[3])
    elif cmd == "regenerated":
        regenerated(args[0], args[1], float(args[2]))
    elif cmd == "share":
        share(args[0])
    elif cmd == "members":
        members(args[0], int(args[1]))
    else:
        sys.exit(f"unknown command {cmd}")
