#!/usr/bin/env python3
"""Connection-flood client for benches/flood.sh (not run on its own).

flood.py api-p99 API NODE HTTP N_IDLE SECONDS
    Keeps N_IDLE idle TCP connections open to the boot HTTP port HTTP (reconnecting each one
    the server closes), and meanwhile times GET /v1/nodes/NODE on the API, one new connection
    per request, for SECONDS. Every answer is checked (200 and the node's uuid). Prints
    requests, failures, p50/p99/max in ms and how many idle connections were held.

flood.py slowloris HTTP N SECONDS
    Opens N connections that send a request head one header line per second, forever, and
    prints when the server closed them (seconds after connecting: min/median/max).
"""
import http.client
import json
import resource
import selectors
import socket
import sys
import time


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(n, soft), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def connect_nb(addr):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(addr)
    except BlockingIOError:
        pass
    except OSError:
        s.close()
        return None
    return s


def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(round(p / 100.0 * (len(sorted_ms) - 1))))]


def api_p99(api_port, node, http_port, n_idle, seconds):
    raise_nofile(n_idle + 512)
    target = ("127.0.0.1", http_port)
    sel = selectors.DefaultSelector()
    idle = set()

    def top_up():
        while len(idle) < n_idle:
            s = connect_nb(target)
            if s is None:
                return
            idle.add(s)
            sel.register(s, selectors.EVENT_READ)

    def reap():
        for key, _ in sel.select(timeout=0):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                idle.discard(s)
                s.close()

    top_up()
    time.sleep(1.0)
    lat, failures, held = [], 0, []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        reap()
        top_up()
        held.append(len(idle))
        t0 = time.perf_counter()
        try:
            c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=10)
            c.request("GET", "/v1/nodes/" + node,
                      headers={"X-OpenStack-Ironic-API-Version": "1.80"})
            r = c.getresponse()
            body = r.read()
            ok = r.status == 200 and json.loads(body).get("uuid") == node
            c.close()
        except Exception:
            ok = False
        ms = (time.perf_counter() - t0) * 1000.0
        if ok:
            lat.append(ms)
        else:
            failures += 1
    lat.sort()
    print("requests=%d failures=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f idle_held_min=%d idle_held_max=%d"
          % (len(lat) + failures, failures, pct(lat, 50), pct(lat, 99),
             lat[-1] if lat else float("nan"), min(held), max(held)))


def slowloris(http_port, n, seconds):
    raise_nofile(n + 256)
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", http_port))
        s.setblocking(False)
        s.send(b"GET /x HTTP/1.1\r\nHost: slowloris\r\n")
        socks.append([s, time.monotonic(), None])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(c[2] is None for c in socks):
        for c in socks:
            if c[2] is not None:
                continue
            try:
                c[0].send(b"X-Slow: 1\r\n")
                data = c[0].recv(4096)
                if not data:
                    c[2] = time.monotonic() - c[1]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                c[2] = time.monotonic() - c[1]
        time.sleep(0.25)
    shed = sorted(c[2] for c in socks if c[2] is not None)
    print("connections=%d shed=%d min_s=%.2f median_s=%.2f max_s=%.2f"
          % (n, len(shed), shed[0] if shed else float("nan"),
             pct(shed, 50), shed[-1] if shed else float("nan")))


if __name__ == "__main__":
    if sys.argv[1] == "api-p99":
        api_p99(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                float(sys.argv[6]))
    elif sys.argv[1] == "slowloris":
        slowloris(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)
