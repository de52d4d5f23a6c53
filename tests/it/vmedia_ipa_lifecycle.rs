//! Inspection, automated cleaning and rescue of a `redfish` node over virtual media, with the
//! REAL ironic-python-agent 13.0.0 in the IPA lab's sandbox and sushy-tools as the BMC (the
//! machine behind it: tests/it/support/vmedia_machine.rs). The agent boots each time from the
//! ISO ironboot built and inserted: for inspection with `ipa-inspection-callback-url` on its
//! command line, for rescue from `rescue_kernel` + `rescue_ramdisk`. Inspection reports that
//! carry a wrong agent token are refused with nothing changed; one with the token from the
//! media gets Ironic's 1.84 answer. python-ironicclient drives inspect, rescue and unrescue
//! with `--wait`.

use crate::support;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ipa::{AGENT_MAC, Lab, LabOptions, TestImages, sha256_file};
use support::sushy::SYSTEM_UUID;
use support::vmedia_machine::{
    AgentBoot, StopOnDrop, agent_parameters, bmc_get, bmc_view, deploy, enroll_redfish_node,
    play_machine, published, start_bmc, wait_state,
};

const PASSWORD: &str = "vmedia r3scue";
const CALLBACK: &str = "/v1/continue_inspection";

/// An inventory a test posts itself (the agent's has the same shape).
fn small_inventory() -> Value {
    json!({
        "cpu": {"architecture": "x86_64", "count": 2},
        "memory": {"physical_mb": 2048},
        "disks": [{"name": "/dev/vdz", "size": 21_474_836_480u64}],
        "interfaces": [{"name": "eth0", "mac_address": AGENT_MAC}],
    })
}

/// Whether `iso` holds `file`: ISO 9660 starts every file on a 2 KiB sector, so its first
/// sector is one of the image's.
fn iso_holds(iso: &[u8], file: &[u8]) -> bool {
    let first = &file[..2048.min(file.len())];
    iso.chunks(2048).any(|sector| sector.starts_with(first))
}

#[test]
fn inspection_cleaning_and_rescue_boot_the_real_agent_from_virtual_media() {
    let test = "vmedia_ipa_lifecycle";
    let opts = LabOptions {
        // IPA guesses a root disk only from 4 GiB up.
        disk_size: "8G",
        automated_clean: true,
        ..Default::default()
    };
    let Some(lab) = Lab::start(test, opts) else {
        return;
    };
    if !support::require_peer(test, &["xorriso", "mtype", "mlabel"]) {
        return;
    }
    let Some(cli) = support::pyenv::baremetal_cli(test) else {
        return;
    };
    let Some(sushy) = start_bmc(test, &lab) else {
        return;
    };
    let files = lab.dir().join("images");
    let file = |name: &str, len: usize, seed: u64| {
        let p = files.join(name);
        support::write_pattern_file(&p, len, seed);
        p
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let (kernel, ramdisk) = (
        file("ipa.kernel", 64 << 10, 11),
        file("ipa.ramdisk", 256 << 10, 12),
    );
    let (rescue_kernel, rescue_ramdisk) = (
        file("rescue.kernel", 64 << 10, 13),
        file("rescue.ramdisk", 256 << 10, 14),
    );
    let images = TestImages::make();
    let wd = images.path("wd.raw");
    let wd_url = lab.serve_image(&wd, &format!("{}-lifecycle-wd.raw", std::process::id()));
    let uuid = enroll_redfish_node(
        &lab,
        &sushy,
        json!({
            "name": "vmedia-lifecycle",
            "inspect_interface": "agent", "rescue_interface": "agent",
            "driver_info": {"deploy_kernel": path(&kernel), "deploy_ramdisk": path(&ramdisk),
                "rescue_kernel": path(&rescue_kernel), "rescue_ramdisk": path(&rescue_ramdisk)},
            "instance_info": {"image_source": wd_url, "image_disk_format": "raw",
                "image_checksum": format!("sha256:{}", sha256_file(&wd))},
            "properties": {"capabilities": "boot_mode:bios"},
        }),
    );
    lab.provision(&uuid, "manage");
    lab.wait_state(&uuid, &["manageable"], Duration::from_secs(60));

    let events = Mutex::new(Vec::new());
    let boots: Mutex<Vec<AgentBoot>> = Mutex::new(Vec::new());

    // 1. Inspection reports and the agent token, before any agent runs: the node waits with
    // its inspection ISO inserted, the token on the ISO's command line.
    lab.provision(&uuid, "inspect");
    wait_state(&lab, &uuid, &["inspect wait"], &events);
    let view = bmc_view(&lab, &sushy).unwrap();
    let media = agent_parameters(&sushy, &view)
        .unwrap()
        .expect("the inspection ISO with the agent's parameters is inserted");
    assert_eq!(
        media.inspection.as_deref(),
        Some(format!("{}{CALLBACK}", media.api).as_str()),
        "{media:?}"
    );
    let report = |token: &str| json!({"inventory": small_inventory(), "agent_token": token});
    for (token, version) in [("not-the-token", None), ("", Some("1.84"))] {
        let (s, b) = lab.api_with_version("POST", CALLBACK, Some(&report(token)), version);
        assert_eq!(s, 400, "{b}");
        assert!(
            b.to_string()
                .contains("Invalid or missing agent token received."),
            "{b}"
        );
        let n = lab.node(&uuid);
        assert_eq!(n["provision_state"], "inspect wait");
        assert!(n["properties"].get("cpu_arch").is_none(), "{n}");
    }
    // The media's token: taken, and the 1.84 answer is a lookup's, the token masked since
    // the agent already holds it.
    let (s, b) = lab.api_with_version("POST", CALLBACK, Some(&report(&media.token)), Some("1.84"));
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["node"]["uuid"], uuid.as_str(), "{b}");
    assert_eq!(b["config"]["agent_token"], "******", "{b}");
    assert_eq!(b["config"]["agent_token_required"], true, "{b}");
    let n = lab.wait_state(&uuid, &["manageable"], Duration::from_secs(60));
    assert_eq!(n["properties"]["memory_mb"], 2048);
    let view = bmc_view(&lab, &sushy).unwrap();
    assert!(view.cd.is_none() && !view.power_on, "{view:?}");
    assert!(published(&lab).is_empty(), "{:?}", published(&lab));
    // The token went with the inspection; it was never stored as plugin data.
    let (s, inv) = lab.api_with_version(
        "GET",
        &format!("/v1/nodes/{uuid}/inventory"),
        None,
        Some("1.81"),
    );
    assert_eq!(s, 200, "{inv}");
    assert!(inv["plugin_data"].get("agent_token").is_none(), "{inv}");
    assert!(!inv.to_string().contains(&media.token));

    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let machine = scope.spawn(|| play_machine(&lab, &sushy, &stop, &events, &boots));
        let _stop_machine = StopOnDrop(&stop);

        // 2. Inspection by the real agent booted from the ISO.
        let started = Instant::now();
        lab.baremetal(&cli, &["node", "inspect", &uuid, "--wait", "240"]);
        let n = wait_state(&lab, &uuid, &["manageable", "inspect failed"], &events);
        let inspect_took = started.elapsed();
        assert_eq!(n["provision_state"], "manageable", "{}", n["last_error"]);
        assert_eq!(n["properties"]["cpu_arch"], std::env::consts::ARCH);
        assert_eq!(n["properties"]["local_gb"], 7, "8 GiB disk, minus one");
        let (_, inv) = lab.api_with_version(
            "GET",
            &format!("/v1/nodes/{uuid}/inventory"),
            None,
            Some("1.81"),
        );
        let disks = inv["inventory"]["disks"].as_array().unwrap();
        assert_eq!(disks.len(), 1, "{disks:?}");
        assert_eq!(disks[0]["name"], lab.disk.as_str());
        assert_eq!(
            n["properties"]["memory_mb"],
            inv["inventory"]["memory"]["physical_mb"]
        );
        assert!(published(&lab).is_empty(), "{:?}", published(&lab));

        // 3. provide: automated cleaning, the agent booted from the deploy ISO.
        let started = Instant::now();
        lab.provision(&uuid, "provide");
        let n = wait_state(&lab, &uuid, &["available", "clean failed"], &events);
        let clean_took = started.elapsed();
        assert_eq!(n["provision_state"], "available", "{}", n["last_error"]);

        // 4. Deploy, then rescue: the agent boots from an ISO built of the rescue kernel and
        // ramdisk, and gets the password's hash.
        deploy(&lab, &uuid, &events);
        let started = Instant::now();
        lab.baremetal(
            &cli,
            &[
                "node",
                "rescue",
                &uuid,
                "--rescue-password",
                PASSWORD,
                "--wait",
                "240",
            ],
        );
        let n = wait_state(&lab, &uuid, &["rescue", "rescue failed"], &events);
        let rescue_took = started.elapsed();
        assert_eq!(n["provision_state"], "rescue", "{}", n["last_error"]);
        let written = lab
            .etc_written("ipa-rescue-config/ipa-rescue-password")
            .unwrap_or_else(|| panic!("no password file written\n{}", lab.log_tails()));
        assert!(
            written.starts_with("$6$") && !written.contains(PASSWORD),
            "{written}"
        );
        let rescue_boot = boots.lock().unwrap().last().cloned().unwrap();
        let iso = &rescue_boot.cd.expect("the rescue agent booted from a CD").0;
        assert!(iso_holds(iso, &std::fs::read(&rescue_kernel).unwrap()));
        assert!(!iso_holds(iso, &std::fs::read(&kernel).unwrap()));

        // 5. unrescue: the instance boots from its disk again, no medium left.
        let started = Instant::now();
        lab.baremetal(&cli, &["node", "unrescue", &uuid, "--wait", "240"]);
        let n = wait_state(&lab, &uuid, &["active"], &events);
        eprintln!(
            "{test}: over virtual media, inspect → manageable {inspect_took:.1?}, provide → \
             available (automated clean) {clean_took:.1?}, rescue → rescue {rescue_took:.1?}, \
             unrescue → active {:.1?} (inspect, rescue and unrescue: the baremetal CLI's wall \
             time, its --wait polling included)",
            started.elapsed()
        );
        assert!(n["last_error"].is_null(), "{}", n["last_error"]);
        let system = bmc_get(&lab, &sushy, &format!("/redfish/v1/Systems/{SYSTEM_UUID}"));
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Hdd");
        let view = bmc_view(&lab, &sushy).unwrap();
        assert!(view.cd.is_none() && view.floppy.is_none(), "{view:?}");
        assert!(published(&lab).is_empty(), "{:?}", published(&lab));

        stop.store(true, Ordering::SeqCst);
        machine.join().expect("the machine thread");
    });
    let boots = boots.into_inner().unwrap();
    let inspecting: Vec<bool> = boots.iter().map(|b| b.inspection.is_some()).collect();
    assert_eq!(
        inspecting,
        [true, false, false, false],
        "inspect, clean, deploy, rescue: {boots:?}"
    );
    assert_eq!(lab.boots(), 4);
}
