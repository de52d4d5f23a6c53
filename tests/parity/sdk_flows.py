"""openstacksdk flows for the Ironic parity test (tests/it/ironic_parity.rs).

Usage: sdk_flows.py ENDPOINT PROXY_ENDPOINT

Runs the same flows against one server and prints one JSON line per step:
{"id": ..., "ok": true, "result": ...} or {"id": ..., "ok": false, "error": "..."}.
Results hold only values that must not differ between Ironic and ironboot (no uuids of
their own making, no timestamps). The test runs this against both and compares the lines.
"""

import json
import sys
import traceback

import openstack

ENDPOINT, PROXY = sys.argv[1], sys.argv[2]
N1 = "5d0c0a5e-0000-4000-8000-000000000001"
N2 = "5d0c0a5e-0000-4000-8000-000000000002"
P1 = "5d0c0a5e-0000-4000-8000-0000000000a1"
A1 = "5d0c0a5e-0000-4000-8000-0000000000b1"


def connect(endpoint):
    return openstack.connection.Connection(
        auth_type="none",
        baremetal_endpoint_override=endpoint,
        baremetal_status_code_retries=0,
    )


conn = connect(ENDPOINT)
bm = conn.baremetal


def step(name, fn):
    try:
        result = fn()
        line = {"id": name, "ok": True, "result": result}
    except Exception as exc:  # noqa: BLE001 - every failure is a result here
        status = getattr(exc, "status_code", None)
        line = {
            "id": name,
            "ok": False,
            "error": "%s: %s" % (type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else ""),
            "status": status,
        }
        if status is None:
            line["trace"] = traceback.format_exc().splitlines()[-1][:200]
    print(json.dumps(line), flush=True)


def node_view(n):
    return {
        "name": n.name,
        "provision_state": n.provision_state,
        "power_state": n.power_state,
        "resource_class": n.resource_class,
        "driver": n.driver,
        "boot_interface": n.boot_interface,
        "deploy_interface": n.deploy_interface,
        "management_interface": n.management_interface,
        "owner": n.owner,
        "description": n.description,
        "traits": sorted(n.traits or []),
        "instance_id": n.instance_id,
        "allocation_id": n.allocation_id,
    }


step("node-create", lambda: node_view(bm.create_node(
    driver="fake-hardware", name="sdk-n1", id=N1, resource_class="sdk-rc")))
step("node-create-2", lambda: node_view(bm.create_node(driver="fake-hardware", name="sdk-n2", id=N2)))
step("node-get", lambda: node_view(bm.get_node("sdk-n1")))
step("node-update", lambda: node_view(bm.update_node(N1, extra={"rack": "r1"})))
step("node-update-ownership", lambda: node_view(bm.update_node(
    N1, owner="sdk-owner", lessee="sdk-lessee", description="made by openstacksdk")))
step("node-patch", lambda: node_view(bm.patch_node(
    N1, [{"op": "add", "path": "/properties/cpus", "value": 4}])))


def port_view(p):
    return {
        "address": p.address,
        "pxe_enabled": p.is_pxe_enabled,
        "physical_network": p.physical_network,
        "local_link_connection": p.local_link_connection,
        "is_smartnic": p.is_smartnic,
        "extra": p.extra,
        "node_id": p.node_id,
    }


step("port-create", lambda: port_view(bm.create_port(
    id=P1, node_id=N1, address="52:54:00:aa:00:01", is_pxe_enabled=False)))
step("port-update", lambda: port_view(bm.update_port(P1, extra={"cable": "c1"})))
step("port-update-link", lambda: port_view(bm.update_port(
    P1, physical_network="physnet1",
    local_link_connection={"switch_id": "0a:1b:2c:3d:4e:5f", "port_id": "Eth1/1"})))
step("port-list-node", lambda: [port_view(p) for p in bm.ports(node=N1, details=True)])
step("port-list-address", lambda: [p.address for p in bm.ports(address="52:54:00:aa:00:01")])

step("traits-set", lambda: bm.set_node_traits(N1, ["CUSTOM_A", "CUSTOM_B"]) and None)
step("trait-add", lambda: bm.add_node_trait(N1, "CUSTOM_C") and None)
step("trait-remove", lambda: bm.remove_node_trait(N1, "CUSTOM_A") and None)
step("traits-after", lambda: sorted(bm.get_node(N1).traits))


def validate():
    v = bm.validate_node(N1, required=None)
    return {k: {"result": r.result} for k, r in sorted(v.items())}


step("validate", validate)
step("validate-required", lambda: sorted(bm.validate_node(N1).keys()))
step("boot-device-set", lambda: bm.set_node_boot_device(N1, "pxe", persistent=True))
step("boot-device-get", lambda: bm.get_node_boot_device(N1))
def supported_boot_devices():
    got = bm.get_node_supported_boot_devices(N1)
    if isinstance(got, dict):
        got = got.get("supported_boot_devices")
    return sorted(got)


step("boot-devices-supported", supported_boot_devices)

step("power-off", lambda: bm.set_node_power_state(N1, "power off", wait=True, timeout=60) and None)
step("power-state", lambda: bm.get_node(N1).power_state)
step("manage", lambda: bm.set_node_provision_state(N1, "manage", wait=True, timeout=60).provision_state)
step("provide", lambda: bm.set_node_provision_state(N1, "provide", wait=True, timeout=60).provision_state)
step("wait-available", lambda: [n.provision_state for n in bm.wait_for_nodes_provision_state(
    [N1], "available", timeout=60)])


def allocate():
    a = bm.create_allocation(id=A1, name="sdk-a1", resource_class="sdk-rc", traits=["CUSTOM_B"])
    a = bm.wait_for_allocation(a, timeout=60)
    return {"state": a.state, "node_id": a.node_id, "name": a.name, "traits": a.traits,
            "resource_class": a.resource_class, "last_error": a.last_error}


step("allocation-create", allocate)
step("allocation-list", lambda: [(a.name, a.state) for a in bm.allocations(node=N1)])
step("node-allocated", lambda: node_view(bm.get_node(N1)))
step("allocation-update", lambda: bm.update_allocation(A1, extra={"x": "y"}).extra)
step("allocation-delete", lambda: bm.delete_allocation(A1) and None)
step("node-freed", lambda: node_view(bm.get_node(N1)))

step("deploy", lambda: bm.set_node_provision_state(N1, "active", wait=True, timeout=60).provision_state)
step("undeploy", lambda: bm.set_node_provision_state(N1, "deleted", wait=True, timeout=60).provision_state)

step("nodes-paged", lambda: sorted(n.name for n in bm.nodes(limit=1)))
step("nodes-detail", lambda: sorted((n.name, n.provision_state) for n in bm.nodes(details=True)))
step("nodes-filtered", lambda: [n.name for n in bm.nodes(resource_class="sdk-rc")])


def through_proxy():
    # A client behind a proxy must be sent back through it: links and `next` built from the
    # Host it used, not from the server's listen address.
    pconn = connect(PROXY)
    names = sorted(n.name for n in pconn.baremetal.nodes(limit=1))
    resp = pconn.baremetal.get("/nodes?limit=1", microversion="1.50")
    if not resp.ok:
        raise RuntimeError("GET /nodes?limit=1 answered %s" % resp.status_code)
    body = resp.json()
    nxt = body.get("next", "")
    links = [l["href"] for n in body["nodes"] for l in n["links"]]
    return {
        "names": names,
        "next_through_proxy": nxt.startswith(PROXY),
        "links_through_proxy": all(h.startswith(PROXY) for h in links),
    }


step("proxy-pagination", through_proxy)

step("drivers", lambda: sorted(d.name for d in bm.drivers()))


def driver():
    d = bm.get_driver("fake-hardware")
    return {"name": d.name, "hosts": d.hosts,
            "default_boot_interface": d.default_boot_interface,
            "enabled_deploy_interfaces": sorted(d.enabled_deploy_interfaces or [])}


step("driver-get", driver)
def raw_get(path):
    resp = bm.get(path, microversion="1.50")
    if not resp.ok:
        raise RuntimeError("GET %s answered %s" % (path, resp.status_code))
    return resp.json()


step("driver-properties", lambda: sorted(raw_get("/drivers/fake-hardware/properties").keys()))
step("conductors", lambda: [(c.hostname, c.alive) for c in bm.conductors()])
step("conductor-get", lambda: bm.get_conductor("parity-conductor").hostname)

step("port-delete", lambda: bm.delete_port(P1) and None)
step("node-delete", lambda: bm.delete_node(N1) and None)
step("node-delete-2", lambda: bm.delete_node(N2) and None)
step("nodes-empty", lambda: [n.name for n in bm.nodes()])
