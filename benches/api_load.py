"""Client load for benches/api.sh: the same requests against two Ironic-compatible APIs.

Usage: api_load.py SCENARIO URL PID N CONCURRENCY [ARG...]
Prints one JSON line: {"seconds", "requests", "cpu_seconds", "errors"}; every response is
checked (status, and the body where it says something: the node's uuid, 1000 nodes, ...).
CPU is the server's (PID and its descendants) from /proc, before and after.
"""

import http.client
import json
import multiprocessing
import os
import sys
import time
import urllib.parse

VERSION = {"X-OpenStack-Ironic-API-Version": "1.80", "Content-Type": "application/json"}


def proc_tree_cpu(root):
    """utime + stime (seconds) of `root` and every descendant."""
    tick = os.sysconf("SC_CLK_TCK")
    parents = {}
    stats = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(pid)] = int(fields[1])
        stats[int(pid)] = int(fields[11]) + int(fields[12])
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(stats.get(p, 0) for p in tree) / tick


def connect(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def call(conn, method, path, body=None, headers=VERSION):
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, data


def get_node(conn, i, args):
    uuid = args[i % len(args)]
    status, data = call(conn, "GET", f"/v1/nodes/{uuid}")
    return status == 200 and json.loads(data)["uuid"] == uuid


def post_node(conn, i, args):
    status, data = call(conn, "POST", "/v1/nodes", json.dumps({"driver": "fake-hardware"}))
    return status == 201 and "uuid" in json.loads(data)


def list_detail(conn, i, args):
    want = int(args[0]) if args else 1000
    status, data = call(conn, "GET", f"/v1/nodes/detail?limit={want}")
    return status == 200 and len(json.loads(data)["nodes"]) == want


def lookup_heartbeat(conn, i, args):
    """args: "mac=uuid" pairs of nodes waiting for their agent; one pair per request."""
    mac, uuid = args[i].split("=")
    headers = dict(VERSION, **{"X-OpenStack-Ironic-API-Version": "1.68"})
    status, data = call(conn, "GET", f"/v1/lookup?addresses={mac}", headers=headers)
    if status != 200:
        return why(f"lookup {mac}: {status} {data[:300]!r}")
    doc = json.loads(data)
    token = doc.get("config", {}).get("agent_token")
    if doc["node"]["uuid"] != uuid or not token:
        return why(f"lookup {mac}: node {doc['node']['uuid']}, token {token!r}")
    body = json.dumps({"callback_url": "https://127.0.0.1:9/", "agent_version": "10.0.0",
                       "agent_token": token})
    status, data = call(conn, "POST", f"/v1/heartbeat/{uuid}", body, headers)
    return status == 202 or why(f"heartbeat {uuid}: {status} {data[:300]!r}")


def why(reason):
    """A wrong answer: says what was wrong (stderr) and counts as an error."""
    print(reason, file=sys.stderr)
    return False


SCENARIOS = {"get": get_node, "post": post_node, "list": list_detail,
             "lookup": lookup_heartbeat}


def worker(job):
    scenario, url, indices, args = job
    conn = connect(url)
    errors = 0
    for i in indices:
        try:
            ok = SCENARIOS[scenario](conn, i, args)
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            ok = False
            conn = connect(url)
        errors += 0 if ok else 1
    return errors


def main():
    scenario, url, pid, n, conc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    args = sys.argv[6:]
    jobs = [(scenario, url, list(range(k, n, conc)), args) for k in range(conc)]
    # The client processes exist before the clock starts: only requests are timed.
    pool = multiprocessing.Pool(conc) if conc > 1 else None
    cpu0 = proc_tree_cpu(pid)
    t0 = time.monotonic()
    if pool is None:
        errors = worker(jobs[0])
    else:
        errors = sum(pool.map(worker, jobs))
    seconds = time.monotonic() - t0
    cpu = proc_tree_cpu(pid) - cpu0
    if pool is not None:
        pool.close()
        pool.join()
    print(json.dumps({"seconds": seconds, "requests": n, "cpu_seconds": cpu, "errors": errors}))


if __name__ == "__main__":
    main()
