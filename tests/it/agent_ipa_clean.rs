//! Cleaning through the REAL ironic-python-agent 13.0.0, sandboxed with a loop device as its
//! only disk (tests/it/support/ipa.rs): automated cleaning on provide erases the metadata of a
//! partitioned disk (checked on the loop device), a manual clean through python-ironicclient
//! does the same from `manageable`, an unknown step ends in `clean failed` naming it, bad steps
//! are refused with 400 and change nothing, and abort in `clean wait` stops the agent;
//! `erase_devices` shreds a small disk to zeros, or to random data as configured.

use crate::support;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ipa::{Lab, LabOptions, read_dev};

const CLEAN_TIMEOUT: Duration = Duration::from_secs(240);

fn dev_size(dev: &str) -> u64 {
    let (ok, out, err) = support::run(Command::new("blockdev").args(["--getsize64", dev]));
    assert!(ok, "blockdev {dev}: {err}");
    out.trim().parse().unwrap()
}

/// Writes a GPT with one partition onto the lab's disk and checks it is there: the
/// protective MBR's signature, the primary header at LBA 1 and the backup at the last LBA.
fn partition(dev: &str) {
    let (ok, _, err) = support::run(Command::new("sgdisk").args(["-o", "-n", "1:2048:+64M", dev]));
    assert!(ok, "sgdisk {dev}: {err}");
    assert_eq!(gpt_headers(dev), (true, true, true), "GPT written");
}

/// (MBR signature, primary GPT header, backup GPT header) present on `dev`.
fn gpt_headers(dev: &str) -> (bool, bool, bool) {
    let last = dev_size(dev) - 512;
    (
        read_dev(dev, 510, 2) == [0x55, 0xaa],
        read_dev(dev, 512, 8) == *b"EFI PART",
        read_dev(dev, last, 8) == *b"EFI PART",
    )
}

fn node_body(lab: &Lab) -> Value {
    json!({"image_source": lab.image_url("none"), "image_disk_format": "raw"})
}

#[test]
fn automated_cleaning_on_provide_erases_the_disk_metadata() {
    let opts = LabOptions {
        automated_clean: true,
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa_clean automated", opts) else {
        return;
    };
    partition(&lab.disk);
    let uuid = lab.create_manageable_node("auto-clean", node_body(&lab), None);
    let started = Instant::now();
    lab.provision(&uuid, "provide");
    let waiting = lab.wait_state(&uuid, &["clean wait", "available"], CLEAN_TIMEOUT);
    assert_eq!(
        waiting["provision_state"], "clean wait",
        "the agent boots for cleaning"
    );
    let done = lab.wait_reached(&uuid, "available", &["clean failed"], CLEAN_TIMEOUT);
    let took = started.elapsed();
    eprintln!("agent_ipa_clean: provide → available with metadata erase: {took:.1?}");
    assert_eq!(gpt_headers(&lab.disk), (false, false, false), "GPT erased");
    assert_eq!(lab.boots(), 1, "one agent boot for cleaning");
    assert!(!lab.agent_running(), "the agent was powered off");
    assert_eq!(done["power_state"], "power off");
    assert!(done["last_error"].is_null(), "{}", done["last_error"]);
    let dii = done["driver_internal_info"].as_object().unwrap();
    for gone in [
        "clean_steps",
        "clean_step",
        "clean_step_index",
        "agent_url",
        "agent_secret_token",
    ] {
        assert!(!dii.contains_key(gone), "{gone} left: {dii:?}");
    }
    // ironboot's default plan: the metadata erase only, not the full erase_devices.
    let log = lab.ironboot_log();
    assert!(
        log.lines().any(|l| l.contains("clean steps planned")
            && l.contains(r#"steps=["deploy.erase_devices_metadata"]"#)),
        "{}",
        support::ipa::tail(&log, 40)
    );
}

#[test]
fn manual_cleaning_runs_the_chosen_step_and_refuses_what_the_agent_lacks() {
    let Some(cli) = support::pyenv::baremetal_cli("agent_ipa_clean manual") else {
        return;
    };
    let opts = LabOptions {
        hold_heartbeats: true,
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa_clean manual", opts) else {
        return;
    };
    partition(&lab.disk);
    let uuid = lab.create_manageable_node("manual-clean", node_body(&lab), None);
    let path = format!("/v1/nodes/{uuid}/states/provision");

    // Bad input: 400 with Ironic's error body, nothing changes.
    for (body, says) in [
        (
            json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices_metadata", "args": "all"}]}),
            "Invalid clean_steps: ",
        ),
        (
            json!({"target": "clean", "clean_steps": [{"interface": "disk", "step": "erase_devices_metadata"}]}),
            "Invalid clean_steps: ",
        ),
        (
            json!({"target": "clean", "clean_steps": "erase_devices_metadata"}),
            "Invalid clean_steps: ",
        ),
        (json!({"target": "clean"}), "\"clean_steps\" is required"),
    ] {
        let (s, b) = lab.api("PUT", &path, Some(&body));
        assert_eq!(s, 400, "{body}: {b}");
        // Ironic's body: the fault as JSON text inside `error_message`.
        let fault: Value =
            serde_json::from_str(b["error_message"].as_str().unwrap_or_default()).unwrap();
        let msg = fault["faultstring"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{body}: {b}");
        let node = lab.node(&uuid);
        assert_eq!(node["provision_state"], "manageable");
        assert!(node["driver_internal_info"].get("clean_steps").is_none());
    }
    assert_eq!(lab.boots(), 0, "no agent booted for refused requests");

    // Abort in clean wait: the agent's first heartbeat is held at the gate.
    let erase = json!([{"interface": "deploy", "step": "erase_devices_metadata"}]);
    lab.provision_with(&uuid, json!({"target": "clean", "clean_steps": erase}));
    lab.wait_heartbeat_held(Duration::from_secs(90));
    assert_eq!(lab.node(&uuid)["provision_state"], "clean wait");
    lab.provision(&uuid, "abort");
    let aborted = lab.wait_state(&uuid, &["clean failed"], Duration::from_secs(60));
    assert_eq!(
        aborted["last_error"],
        "By request, the clean operation was aborted"
    );
    assert!(!lab.agent_running(), "abort powered the agent off");
    assert_eq!(gpt_headers(&lab.disk), (true, true, true), "nothing erased");
    lab.release_heartbeats();
    lab.provision(&uuid, "manage");
    lab.wait_state(&uuid, &["manageable"], Duration::from_secs(30));

    // The chosen step through python-ironicclient, waiting for the end.
    let started = Instant::now();
    let steps = erase.to_string();
    lab.baremetal(
        &cli,
        &[
            "node",
            "clean",
            &uuid,
            "--clean-steps",
            &steps,
            "--wait",
            "240",
        ],
    );
    let took = started.elapsed();
    eprintln!("agent_ipa_clean: manual erase_devices_metadata clean: {took:.1?}");
    let node = lab.node(&uuid);
    assert_eq!(node["provision_state"], "manageable", "{node}");
    assert_eq!(gpt_headers(&lab.disk), (false, false, false), "GPT erased");
    assert_eq!(node["power_state"], "power off");

    // A step the agent does not offer: the agent boots, lists its steps, nothing runs.
    partition(&lab.disk);
    lab.provision_with(
        &uuid,
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_everything_twice"}]}),
    );
    let failed = lab.wait_state(&uuid, &["clean failed", "manageable"], CLEAN_TIMEOUT);
    assert_eq!(failed["provision_state"], "clean failed", "{failed}");
    let err = failed["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("node does not support this clean step")
            && err.contains("erase_everything_twice"),
        "{err}"
    );
    assert_eq!(gpt_headers(&lab.disk), (true, true, true), "nothing erased");
    lab.provision(&uuid, "manage");
    lab.wait_state(&uuid, &["manageable"], Duration::from_secs(30));
}

/// Fills `dev` with a repeating non-zero pattern.
fn fill_pattern(dev: &str) {
    use std::io::Write;
    let size = dev_size(dev);
    let block: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 | 1).collect();
    let mut f = std::fs::OpenOptions::new().write(true).open(dev).unwrap();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// (zero bytes, bytes equal to the pattern at their offset) over the whole of `dev`.
fn survey(dev: &str) -> (u64, u64) {
    let size = dev_size(dev);
    let mut f = std::fs::File::open(dev).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut zeros, mut pattern, mut offset) = (0u64, 0u64, 0u64);
    while offset < size {
        let n = (size - offset).min(buf.len() as u64) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        for (i, b) in buf[..n].iter().enumerate() {
            zeros += u64::from(*b == 0);
            pattern += u64::from(*b == ((i % 251) as u8 | 1));
        }
        offset += n as u64;
    }
    (zeros, pattern)
}

#[test]
fn manual_erase_devices_shreds_the_disk_to_zeros() {
    let opts = LabOptions {
        disk_size: "64M",
        // A loop device has no ATA security feature set: straight to shred.
        env: vec![("IRONBOOT_DEPLOY__ENABLE_ATA_SECURE_ERASE", "false")],
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa_clean shred", opts) else {
        return;
    };
    fill_pattern(&lab.disk);
    let size = dev_size(&lab.disk);
    assert_eq!(survey(&lab.disk), (0, size), "pattern written");
    let uuid = lab.create_manageable_node("shred-zero", node_body(&lab), None);
    let started = Instant::now();
    lab.provision_with(
        &uuid,
        json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]}),
    );
    let done = lab.wait_reached(&uuid, "manageable", &["clean failed"], CLEAN_TIMEOUT);
    let took = started.elapsed();
    eprintln!("agent_ipa_clean: erase_devices (shred, 1 pass + zeros) of 64 MiB: {took:.1?}");
    let dii = &done["driver_internal_info"];
    assert_eq!(dii["agent_erase_devices_iterations"], 1, "{dii}");
    assert_eq!(dii["agent_erase_devices_zeroize"], true, "{dii}");
    assert_eq!(survey(&lab.disk).0, size, "every byte zero");
    assert!(
        lab.agent_logs().contains("shred"),
        "{}",
        support::ipa::tail(&lab.agent_logs(), 40)
    );
}

#[test]
fn automated_cleaning_with_erase_devices_enabled_leaves_random_data() {
    let opts = LabOptions {
        disk_size: "64M",
        automated_clean: true,
        env: vec![
            ("IRONBOOT_DEPLOY__ENABLE_ATA_SECURE_ERASE", "false"),
            ("IRONBOOT_DEPLOY__ERASE_DEVICES_PRIORITY", "10"),
            ("IRONBOOT_DEPLOY__SHRED_FINAL_OVERWRITE_WITH_ZEROS", "false"),
        ],
        ..Default::default()
    };
    let Some(lab) = Lab::start("agent_ipa_clean shred random", opts) else {
        return;
    };
    fill_pattern(&lab.disk);
    let size = dev_size(&lab.disk);
    let uuid = lab.create_manageable_node("shred-random", node_body(&lab), None);
    lab.provision(&uuid, "provide");
    lab.wait_reached(&uuid, "available", &["clean failed"], CLEAN_TIMEOUT);
    let log = lab.ironboot_log();
    assert!(
        log.lines().any(|l| l.contains("clean steps planned")
            && l.contains(r#"steps=["deploy.erase_devices_metadata", "deploy.erase_devices"]"#)),
        "{}",
        support::ipa::tail(&log, 40)
    );
    // One random pass, no zeros: about 1/256 of the bytes are zero, and as many happen to
    // match the pattern; nothing like the whole disk.
    let (zeros, pattern) = survey(&lab.disk);
    assert!(zeros < size / 100, "{zeros} of {size} bytes zero");
    assert!(
        pattern < size / 100,
        "{pattern} of {size} bytes still the pattern"
    );
}
