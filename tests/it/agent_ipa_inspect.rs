//! Inspection through the REAL ironic-python-agent 13.0.0, sandboxed (tests/it/support/ipa.rs):
//! `inspect` boots the agent, which posts its inventory to `/v1/continue_inspection`; ironboot
//! stores it, sets `cpu_arch`, `memory_mb` and `local_gb` from what the sandbox really has, and
//! the node is `manageable` again with the agent powered off (`baremetal node inspect --wait`).
//! Malformed, oversized and
//! unwanted reports are refused and change nothing.

use crate::support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ipa::{AGENT_MAC, API_PORT, Lab, LabOptions};

const INSPECT_TIMEOUT: Duration = Duration::from_secs(180);
const CALLBACK: &str = "/v1/continue_inspection";
/// The callback URL handed to the lab's agent (ironboot at [`API_PORT`] in the sandbox).
const CALLBACK_URL: &str = "http://127.0.0.1:6385/v1/continue_inspection";

/// `CPU(s):` as lscpu reports it (what IPA's inventory counts).
fn lscpu_count() -> u64 {
    let (ok, out, err) = support::run(&mut Command::new("lscpu"));
    assert!(ok, "lscpu: {err}");
    out.lines()
        .find_map(|l| l.strip_prefix("CPU(s):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CPU(s) line in lscpu:\n{out}"))
}

/// MemTotal in MiB (what psutil, and so IPA, report as physical memory).
fn mem_total_mb() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024 / (1 << 20)
}

#[test]
fn inspection_stores_the_real_inventory_and_sets_properties() {
    assert_eq!(
        CALLBACK_URL,
        format!("http://127.0.0.1:{API_PORT}{CALLBACK}")
    );
    let opts = LabOptions {
        // IPA guesses a root disk only from 4 GiB up.
        disk_size: "8G",
        // The lab's agent gets its arguments from power.sh, not a kernel command line: the
        // callback URL ironboot puts on the ramdisk's command line is checked below.
        agent_args: vec!["--inspection_callback_url", CALLBACK_URL],
        ..Default::default()
    };
    let Some(cli) = support::pyenv::baremetal_cli("agent_ipa_inspect") else {
        return;
    };
    let Some(lab) = Lab::start("agent_ipa_inspect", opts) else {
        return;
    };
    let uuid = lab.create_manageable_node("inspect-me", json!({}), None);
    let (s, b) = lab.api(
        "PATCH",
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([{"op": "replace", "path": "/inspect_interface", "value": "agent"}])),
    );
    assert_eq!(s, 200, "{b}");
    // Before any inspection there is no inventory.
    let inventory = || {
        lab.api_with_version(
            "GET",
            &format!("/v1/nodes/{uuid}/inventory"),
            None,
            Some("1.81"),
        )
    };
    let (s, b) = inventory();
    assert_eq!(s, 404, "{b}");
    assert!(
        b.to_string().contains("Node inventory record for node"),
        "{b}"
    );

    let started = Instant::now();
    lab.baremetal(&cli, &["node", "inspect", &uuid, "--wait", "180"]);
    let done = lab.wait_reached(&uuid, "manageable", &["inspect failed"], INSPECT_TIMEOUT);
    let took = started.elapsed();
    eprintln!("agent_ipa_inspect: inspect → manageable through the agent: {took:.1?}");
    let calls = done["driver_internal_info"]["fake_calls"].to_string();
    assert!(
        calls.contains(&format!(
            "ipa-inspection-callback-url=http://127.0.0.1:{API_PORT}{CALLBACK}"
        )),
        "{calls}"
    );
    assert_eq!(lab.boots(), 1);
    assert!(!lab.agent_running(), "the agent was powered off");
    assert_eq!(done["power_state"], "power off");
    assert!(done["inspection_finished_at"].is_string(), "{done}");

    // The properties, from what the sandbox has.
    let props = &done["properties"];
    assert_eq!(props["cpu_arch"], std::env::consts::ARCH, "{props}");
    assert_eq!(props["memory_mb"], mem_total_mb(), "{props}");
    assert_eq!(props["local_gb"], 7, "8 GiB loop disk, minus one: {props}");

    // The inventory as IPA reported it.
    let (s, body) = inventory();
    assert_eq!(s, 200, "{body}");
    let inv = &body["inventory"];
    assert_eq!(inv["cpu"]["count"], lscpu_count(), "{}", inv["cpu"]);
    let disks = inv["disks"].as_array().unwrap();
    assert_eq!(disks.len(), 1, "{disks:?}");
    assert_eq!(disks[0]["name"], lab.disk.as_str());
    assert_eq!(disks[0]["size"], 8u64 << 30);
    assert!(
        inv["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["mac_address"] == AGENT_MAC),
        "{}",
        inv["interfaces"]
    );
    assert_eq!(body["plugin_data"]["root_disk"]["name"], lab.disk.as_str());
    assert!(body["plugin_data"].get("logs").is_none());
    // The one NIC already had its port: no second one.
    let (_, ports) = lab.api("GET", &format!("/v1/ports?node={uuid}"), None);
    assert_eq!(ports["ports"].as_array().unwrap().len(), 1, "{ports}");

    // Reports ironboot must not take: each refused, the node unchanged.
    let report = |inv: Value| json!({"inventory": inv});
    for (body, status) in [
        (json!({"boot_interface": "x"}), 400),
        (report(json!({"interfaces": []})), 400),
        (report(json!({"interfaces": [{"name": "eth0"}]})), 400),
        (json!(["not", "an", "object"]), 400),
        // The right MAC, but the node is not waiting for inspection.
        (
            report(json!({"cpu": {"architecture": "evil"},
                          "interfaces": [{"name": "eth0", "mac_address": AGENT_MAC}]})),
            404,
        ),
    ] {
        let (s, b) = lab.api_with_version("POST", CALLBACK, Some(&body), None);
        assert_eq!(s, status, "{body}: {b}");
    }
    // Between 1.1 and 1.84 the callback does not exist; as in Ironic, the body's schema is
    // checked first.
    let valid = report(json!({"interfaces": [{"name": "eth0", "mac_address": AGENT_MAC}]}));
    let (s, b) = lab.api_with_version("POST", CALLBACK, Some(&valid), Some("1.80"));
    assert_eq!(s, 404, "{b}");
    assert!(b.to_string().contains("1.84 or newer"), "{b}");
    let (s, b) = lab.api_with_version("POST", CALLBACK, Some(&report(json!({}))), Some("1.80"));
    assert_eq!(s, 400, "{b}");
    // Bigger than [api] max_body_bytes (4 MiB): refused before it is parsed.
    let big = report(
        json!({"interfaces": [{"name": "eth0", "mac_address": AGENT_MAC}],
                            "padding": "x".repeat(5 << 20)}),
    );
    let (s, _) = lab.api_with_version("POST", CALLBACK, Some(&big), None);
    assert_eq!(s, 413);
    let after = lab.node(&uuid);
    assert_eq!(after["provision_state"], "manageable");
    assert_eq!(after["properties"], done["properties"]);
    let (_, again) = inventory();
    assert_eq!(again["inventory"], body["inventory"]);
}

#[test]
fn an_unknown_machine_is_enrolled_by_auto_discovery() {
    let opts = LabOptions {
        agent_args: vec!["--inspection_callback_url", CALLBACK_URL],
        env: vec![
            ("IRONBOOT_AUTO_DISCOVERY__ENABLED", "true"),
            ("IRONBOOT_AUTO_DISCOVERY__DRIVER", "fake-hardware"),
        ],
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa_inspect discovery", opts) else {
        return;
    };
    let (_, nodes) = lab.api("GET", "/v1/nodes", None);
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 0);
    // A machine nobody enrolled boots the agent.
    lab.power_on_by_hand();
    let deadline = Instant::now() + INSPECT_TIMEOUT;
    let port = loop {
        let (_, ports) = lab.api(
            "GET",
            &format!("/v1/ports?address={AGENT_MAC}&detail=True"),
            None,
        );
        if let Some(p) = ports["ports"].as_array().and_then(|p| p.first()).cloned() {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no node discovered\n{}",
            lab.log_tails()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    lab.stop_agent();
    let uuid = port["node_uuid"].as_str().unwrap().to_string();
    let node = lab.node(&uuid);
    assert_eq!(node["provision_state"], "enroll", "{node}");
    assert_eq!(node["driver"], "fake-hardware");
    assert_eq!(node["properties"]["cpu_arch"], std::env::consts::ARCH);
    assert_eq!(node["properties"]["memory_mb"], mem_total_mb());
    let (s, body) = lab.api_with_version(
        "GET",
        &format!("/v1/nodes/{uuid}/inventory"),
        None,
        Some("1.81"),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["plugin_data"]["auto_discovered"], true);
    assert_eq!(body["inventory"]["cpu"]["count"], lscpu_count());
    let (_, nodes) = lab.api("GET", "/v1/nodes", None);
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "enrolled once");
}
