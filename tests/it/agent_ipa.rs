//! The agent driver against the REAL ironic-python-agent 13.0.0 (PyPI), sandboxed with a loop
//! device as its only disk (see tests/it/support/ipa.rs). Needs root; under CI the peers are
//! required, locally the tests skip loudly without them.

use crate::support;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use support::ipa::{AGENT_MAC, AGENT_PORT, Lab, LabOptions, TestImages, read_dev, sha256_file};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);

fn fake_calls(node: &Value) -> String {
    node["driver_internal_info"]["fake_calls"].to_string()
}

/// The MBR disk identifier as the agent reports it (`0x` + 8 hex digits).
fn mbr_disk_id(image: &[u8]) -> String {
    let id = u32::from_le_bytes([image[440], image[441], image[442], image[443]]);
    format!("0x{id:08x}")
}

fn whole_disk_info(lab: &Lab, images: &TestImages, file: &str, format: &str) -> Value {
    let served = format!("{}-{}", std::process::id(), file);
    let url = lab.serve_image(&images.path(file), &served);
    json!({
        "image_source": url,
        "image_disk_format": format,
        "image_checksum": format!("sha256:{}", sha256_file(&images.path(file))),
    })
}

#[test]
fn raw_whole_disk_is_streamed_byte_for_byte_and_tokens_are_enforced() {
    // The agent's heartbeats are held at the lab's gate until the token checks are done.
    let opts = LabOptions {
        hold_heartbeats: true,
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa raw", opts) else {
        return;
    };
    let images = TestImages::make();
    let uuid = lab.create_node(
        "raw-node",
        whole_disk_info(&lab, &images, "wd.raw", "raw"),
        None,
    );
    lab.provision(&uuid, "active");

    // The agent looked its node up (the token is handed out) and its first heartbeat waits at
    // the gate: ironboot has not heard from it, whatever the machine's speed.
    lab.wait_heartbeat_held(Duration::from_secs(90));
    let node = lab.node(&uuid);
    assert_eq!(node["provision_state"], "wait call-back", "{node}");
    let dii = &node["driver_internal_info"];
    assert_eq!(
        dii["agent_secret_token"], "******",
        "the API masks the token"
    );
    assert!(dii.get("agent_url").is_none(), "no heartbeat yet: {dii}");
    // (e) A second lookup gets the masked token; the API never shows the real one.
    let (s, body) = lab.api("GET", &format!("/v1/lookup?addresses={AGENT_MAC}"), None);
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["config"]["agent_token"], "******", "{body}");
    assert_eq!(body["node"]["uuid"], uuid);
    // (d) Heartbeats without the token or with a wrong one are refused with 400.
    let url = format!("https://127.0.0.1:{AGENT_PORT}");
    for token in [None, Some("x".repeat(43))] {
        let mut hb = json!({"callback_url": url, "agent_version": "13.0.0"});
        if let Some(t) = &token {
            hb["agent_token"] = json!(t);
        }
        let (s, body) = lab.api("POST", &format!("/v1/heartbeat/{uuid}"), Some(&hb));
        assert_eq!(s, 400, "token {token:?}: {body}");
        assert!(
            body["error_message"].as_str().unwrap().contains("token"),
            "{body}"
        );
    }
    // Lookup before microversion 1.22 does not exist.
    let (s, _) = lab.api_with_version("GET", "/v1/lookup?addresses=x", None, Some("1.21"));
    assert_eq!(s, 404);
    // The refused heartbeats recorded nothing: the node still waits for its agent.
    let node = lab.node(&uuid);
    assert_eq!(node["provision_state"], "wait call-back", "{node}");
    assert!(node["driver_internal_info"].get("agent_url").is_none());
    assert_eq!(
        lab.heartbeats_held(),
        1,
        "the agent's first heartbeat, held"
    );
    lab.release_heartbeats();

    let done = lab.wait_reached(&uuid, "active", &["deploy failed"], DEPLOY_TIMEOUT);
    let image = std::fs::read(images.path("wd.raw")).unwrap();
    assert!(
        read_dev(&lab.disk, 0, image.len()) == image,
        "the loop device does not hold wd.raw byte for byte"
    );
    let calls = fake_calls(&done);
    assert!(
        calls.contains(&format!(
            "boot.prepare_instance:disk={}",
            mbr_disk_id(&image)
        )),
        "boot switched to the disk id the agent reported: {calls}"
    );
    assert!(
        calls.contains("boot.prepare_ramdisk:ipa-api-url="),
        "{calls}"
    );
    assert_eq!(done["power_state"], "power on");
    let dii = done["driver_internal_info"].as_object().unwrap();
    for gone in ["agent_secret_token", "agent_url", "agent_verify_ca"] {
        assert!(!dii.contains_key(gone), "{gone} left after deploy: {dii:?}");
    }
    // The image went origin -> ironboot's cache -> ironboot's HTTP server -> agent, and the
    // served link is gone once written.
    let log = lab.ironboot_log();
    assert!(
        log.contains("instance image cached and served to the agent"),
        "{}",
        support::ipa::tail(&log, 40)
    );
    let served = lab.dir().join("data/httpboot/agent_images").join(&uuid);
    assert!(!served.exists(), "{} left behind", served.display());
    // Auto-TLS was used: the agent advertised https and the conductor pinned its certificate.
    assert!(
        log.contains(&format!("https://127.0.0.1:{AGENT_PORT}")),
        "{}",
        support::ipa::tail(&log, 40)
    );
    // The agent streamed from the image URL and powered off through the shim, then the
    // instance "booted" (power on started a second process, as a BMC would boot the disk).
    assert_eq!(lab.boots(), 2);
    let agent = lab.agent_logs();
    assert!(
        agent.contains("write_image") || agent.contains("execute_deploy_step"),
        "{}",
        support::ipa::tail(&agent, 40)
    );
}

#[test]
fn qcow2_whole_disk_is_converted_onto_the_disk_and_undeploy_erases_it() {
    // The agent downloads from the origin and converts the qcow2 image itself.
    let opts = LabOptions {
        erase_on_undeploy: true,
        image_download_source: "direct",
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa qcow2", opts) else {
        return;
    };
    let images = TestImages::make();
    let uuid = lab.create_node(
        "qcow2-node",
        whole_disk_info(&lab, &images, "wd.qcow2", "qcow2"),
        None,
    );
    // A config drive given as JSON: ironboot builds the config-2 ISO, the agent writes it
    // into a partition of its own after the image.
    let drive = json!({"meta_data": {"hostname": "qcow2-node"}, "user_data": "#cloud-config\n"});
    lab.provision_with(&uuid, json!({"target": "active", "configdrive": drive}));
    let done = lab.wait_state(&uuid, &["active", "deploy failed"], DEPLOY_TIMEOUT);
    assert_eq!(
        done["provision_state"],
        "active",
        "last_error: {}\n{}",
        done["last_error"],
        support::ipa::tail(&lab.agent_logs(), 80)
    );
    // qemu-img wrote the raw content of the qcow2 image: compare with its raw source (the
    // config drive partition entry added to the MBR aside).
    let raw = std::fs::read(images.path("wd.raw")).unwrap();
    let disk = read_dev(&lab.disk, 0, raw.len());
    assert!(
        disk[512..] == raw[512..] && disk[..446] == raw[..446],
        "the disk does not hold the converted image"
    );
    let config_2 = partitions(&lab.disk).into_iter().find(|p| {
        let pvd = read_dev(&lab.disk, p.start + 16 * 2048, 72);
        &pvd[1..6] == b"CD001" && pvd[40..72].starts_with(b"config-2 ")
    });
    let config_2 =
        config_2.unwrap_or_else(|| panic!("no config-2 partition: {:?}", partitions(&lab.disk)));
    let content =
        String::from_utf8_lossy(&read_dev(&lab.disk, config_2.start, 1 << 20)).into_owned();
    assert!(
        content.contains("qcow2-node") && content.contains(&uuid),
        "meta_data.json not on the drive"
    );
    assert!(fake_calls(&done).contains(&format!("disk={}", mbr_disk_id(&raw))));
    assert_eq!(
        &read_dev(&lab.disk, 510, 2),
        &[0x55, 0xaa],
        "MBR signature written"
    );

    // Undeploy boots the agent once more to erase the disk metadata through its clean step.
    lab.provision(&uuid, "deleted");
    let clean = lab.wait_state(
        &uuid,
        &["available", "clean failed", "error"],
        DEPLOY_TIMEOUT,
    );
    assert_eq!(
        clean["provision_state"],
        "available",
        "last_error: {}\n{}",
        clean["last_error"],
        support::ipa::tail(&lab.agent_logs(), 60)
    );
    assert_eq!(lab.boots(), 3, "deploy ramdisk, instance, cleaning ramdisk");
    assert_eq!(
        &read_dev(&lab.disk, 510, 2),
        &[0, 0],
        "partition table erased by erase_devices_metadata"
    );
    assert_eq!(clean["power_state"], "power off");
    assert!(lab.agent_logs().contains("erase_devices_metadata"));
}

#[derive(Debug)]
struct Part {
    /// The partition's device node (`/dev/loopNpM`).
    node: String,
    start: u64,
    size: u64,
    kind: String,
}

fn partitions(dev: &str) -> Vec<Part> {
    let (ok, out, err) = support::run(Command::new("sfdisk").args(["-J", dev]));
    assert!(ok, "sfdisk -J {dev}: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            node: p["node"].as_str().unwrap_or_default().to_string(),
            start: p["start"].as_u64().unwrap() * 512,
            size: p["size"].as_u64().unwrap() * 512,
            kind: p["type"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The filesystem UUID blkid reads from `path` (a device or an image file), probing it
/// directly (no cache, no udev).
fn fs_uuid(path: &str) -> String {
    let (ok, out, err) =
        support::run(Command::new("blkid").args(["-p", "-s", "UUID", "-o", "value", path]));
    assert!(ok, "blkid {path}: {err}");
    out.trim().to_string()
}

#[test]
fn partition_image_with_swap_and_configdrive() {
    let Some(lab) = Lab::start("agent_ipa partition", LabOptions::default()) else {
        return;
    };
    let images = TestImages::make();
    let part = images.path("part.raw");
    let url = lab.serve_image(&part, &format!("{}-part.raw", std::process::id()));
    support::write_pattern_file(&images.path("cd.bin"), 64 * 1024, 11);
    let cd_bytes = std::fs::read(images.path("cd.bin")).unwrap();
    let configdrive = base64::engine::general_purpose::STANDARD.encode(gzip(&cd_bytes));
    let info = json!({
        "image_source": url,
        "image_disk_format": "raw",
        "image_checksum": format!("sha256:{}", sha256_file(&part)),
        "kernel": "http://127.0.0.1/instance-kernel",
        "ramdisk": "http://127.0.0.1/instance-ramdisk",
        "root_mb": 64,
        "swap_mb": 16,
    });
    let uuid = lab.create_node("part-node", info, None);
    lab.provision_with(
        &uuid,
        json!({"target": "active", "configdrive": configdrive}),
    );
    let done = lab.wait_reached(&uuid, "active", &["deploy failed"], DEPLOY_TIMEOUT);

    // The agent laid out the disk: swap, root, and the config drive.
    let parts = partitions(&lab.disk);
    let swap = parts
        .iter()
        .find(|p| p.size == 16 << 20)
        .unwrap_or_else(|| panic!("no 16 MiB swap: {parts:?}"));
    let root = parts
        .iter()
        .find(|p| p.size == 64 << 20)
        .unwrap_or_else(|| panic!("no 64 MiB root: {parts:?}"));
    assert_eq!(swap.kind, "82", "swap partition type: {parts:?}");
    let image = std::fs::read(&part).unwrap();
    assert!(
        read_dev(&lab.disk, root.start, image.len()) == image,
        "root partition does not hold part.raw"
    );
    let cd = parts
        .iter()
        .filter(|p| p.start != swap.start && p.start != root.start)
        .find(|p| read_dev(&lab.disk, p.start, cd_bytes.len()) == cd_bytes);
    assert!(
        cd.is_some(),
        "no partition holds the config drive: {parts:?}"
    );

    // The agent read the root filesystem's UUID on the disk (lsblk, from the lab's udev
    // database), and ironboot recorded it and wrote it into the instance's boot config.
    let on_disk = fs_uuid(&root.node);
    assert_eq!(
        on_disk,
        fs_uuid(part.to_str().unwrap()),
        "the root partition holds part.raw's filesystem"
    );
    assert!(!on_disk.is_empty(), "part.raw has a filesystem UUID");
    assert_eq!(
        done["driver_internal_info"]["root_uuid_or_disk_id"], on_disk,
        "the root UUID ironboot recorded is the agent's"
    );
    let calls = fake_calls(&done);
    assert!(
        calls.contains(&format!("boot.prepare_instance:root=UUID={on_disk}")),
        "{calls}"
    );
    assert_eq!(done["power_state"], "power on");
    let dii = done["driver_internal_info"].as_object().unwrap();
    assert!(!dii.contains_key("agent_secret_token"), "token wiped");
}

/// gzip in memory (the config drive is gzipped, then base64).
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn agent_that_never_calls_back_is_failed_by_the_callback_timeout() {
    let opts = LabOptions {
        callback_timeout: 8,
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa callback timeout", opts) else {
        return;
    };
    let images = TestImages::make();
    // The agent boots, but looks for its conductor where nothing listens.
    let uuid = lab.create_node(
        "silent-node",
        whole_disk_info(&lab, &images, "wd.raw", "raw"),
        Some("http://127.0.0.1:9"),
    );
    lab.provision(&uuid, "active");
    lab.wait_state(&uuid, &["wait call-back"], Duration::from_secs(30));
    let started = std::time::Instant::now();
    let failed = lab.wait_state(&uuid, &["deploy failed"], Duration::from_secs(60));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "failed too early: {:?}",
        started.elapsed()
    );
    let err = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("timeout reached while waiting for callback"),
        "{err}"
    );
    assert_eq!(failed["power_state"], "power off");
    assert_eq!(lab.boots(), 1, "the agent was started once");
    assert!(!lab.agent_running(), "the agent process was killed");
    assert!(
        lab.agent_logs().contains("127.0.0.1:9"),
        "the real agent ran and tried its API URL"
    );
}

#[test]
fn baremetal_cli_deploys_through_the_real_agent() {
    let Some(cli) = support::pyenv::baremetal_cli("agent_ipa baremetal") else {
        return;
    };
    let Some(lab) = Lab::start("agent_ipa baremetal", LabOptions::default()) else {
        return;
    };
    let images = TestImages::make();
    let home = tempfile::tempdir().unwrap();
    let bm = |args: &[&str]| {
        let (ok, out, err) = support::run(
            lab.in_netns(cli.to_str().unwrap())
                .args(args)
                .env("OS_AUTH_TYPE", "none")
                .env("OS_ENDPOINT", lab.api_url())
                .env("HOME", home.path())
                .env_remove("OS_CLOUD"),
        );
        assert!(
            ok,
            "baremetal {args:?}:\n{out}\n{err}\n{}",
            support::ipa::tail(&lab.ironboot_log(), 40)
        );
        out
    };
    let info = whole_disk_info(&lab, &images, "wd.raw", "raw");
    let power = lab.power_driver_info(None);
    let created: Value = serde_json::from_str(&bm(&[
        "node",
        "create",
        "-f",
        "json",
        "--driver",
        "fake-hardware",
        "--name",
        "cli-agent-node",
        "--deploy-interface",
        "direct",
        "--power-interface",
        "script",
        "--property",
        "capabilities=boot_mode:bios",
    ]))
    .unwrap();
    let mut set = vec!["node".to_string(), "set".into(), "cli-agent-node".into()];
    for (k, v) in power.as_object().unwrap() {
        set.push("--driver-info".into());
        set.push(format!("{k}={v}"));
    }
    for (k, v) in info.as_object().unwrap() {
        set.push("--instance-info".into());
        set.push(format!("{k}={}", v.as_str().unwrap()));
    }
    bm(&set.iter().map(String::as_str).collect::<Vec<_>>());
    // Ports name their node by UUID (as in Ironic).
    let uuid = created["uuid"].as_str().unwrap();
    bm(&["port", "create", AGENT_MAC, "--node", uuid]);
    bm(&["node", "manage", "cli-agent-node", "--wait", "60"]);
    bm(&["node", "provide", "cli-agent-node", "--wait", "60"]);
    bm(&["node", "deploy", "cli-agent-node", "--wait", "240"]);
    let shown: Value =
        serde_json::from_str(&bm(&["node", "show", "cli-agent-node", "-f", "json"])).unwrap();
    assert_eq!(shown["provision_state"], "active", "{shown}");
    let image = std::fs::read(images.path("wd.raw")).unwrap();
    assert!(read_dev(&lab.disk, 0, image.len()) == image);
    bm(&["node", "undeploy", "cli-agent-node", "--wait", "60"]);
    let shown: Value =
        serde_json::from_str(&bm(&["node", "show", "cli-agent-node", "-f", "json"])).unwrap();
    assert_eq!(shown["provision_state"], "available", "{shown}");
    assert_eq!(shown["power_state"], "power off");
}
