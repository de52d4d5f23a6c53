//! Virtual media deploys with the REAL ironic-python-agent 13.0.0, in the IPA lab's sandbox
//! (tests/it/support/ipa.rs): ironboot, sushy-tools (the BMC, in the sandbox's network
//! namespace so that its InsertMedia downloads from ironboot's HTTP server there) and the
//! agent. The harness (tests/it/support/vmedia_machine.rs) plays the machine behind the BMC,
//! booting the agent from what ironboot published and inserted. One node is deployed three
//! times: a built ISO with a whole-disk image, the operator's `deploy_iso` with a parameters
//! floppy (the iLO way), and a partition image that ends booting an instance ISO whose
//! command line carries the root UUID the agent read.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::ipa::{Lab, LabOptions, TestImages, sha256_file};
use support::sushy::SYSTEM_UUID;
use support::vmedia_lab::{basename, iso_cmdline, param};
use support::vmedia_machine::{
    StopOnDrop, bmc_get, bmc_view, deploy, downloaded, enroll_redfish_node, patch, play_machine,
    published, start_bmc, undeploy,
};

/// The device node of the partition of `dev` that is `size` bytes long (the root the agent
/// laid out).
fn root_partition(dev: &str, size: u64) -> String {
    let (ok, out, err) = support::run(Command::new("sfdisk").args(["-J", dev]));
    assert!(ok, "sfdisk -J {dev}: {err}");
    let table: Value = serde_json::from_str(&out).unwrap();
    table["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["size"].as_u64().unwrap_or(0) * 512 == size)
        .and_then(|p| p["node"].as_str())
        .unwrap_or_else(|| panic!("no {size}-byte partition on {dev}: {out}"))
        .to_string()
}

fn fs_uuid(path: &Path) -> String {
    let (ok, out, err) = support::run(
        Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value"])
            .arg(path),
    );
    assert!(ok, "blkid: {err}");
    out.trim().to_string()
}

#[test]
fn the_real_agent_boots_from_the_media_ironboot_published() {
    let test = "vmedia_ipa";
    let Some(lab) = Lab::start(test, LabOptions::default()) else {
        return;
    };
    if !support::require_peer(test, &["xorriso", "mtype", "mlabel", "blkid"]) {
        return;
    }
    let Some(sushy) = start_bmc(test, &lab) else {
        return;
    };
    let images = TestImages::make();
    let files = lab.dir().join("images");
    let file = |name: &str, len: usize, seed: u64| {
        let p = files.join(name);
        support::write_pattern_file(&p, len, seed);
        p.display().to_string()
    };
    let (kernel, ramdisk) = (
        file("ipa.kernel", 64 << 10, 1),
        file("ipa.ramdisk", 256 << 10, 2),
    );
    let deploy_iso = file("ipa.iso", 512 << 10, 3);
    let wd = images.path("wd.raw");
    let wd_url = lab.serve_image(&wd, &format!("{}-wd.raw", std::process::id()));
    let uuid = enroll_redfish_node(
        &lab,
        &sushy,
        json!({
            "name": "vmedia-node",
            "driver_info": {"deploy_kernel": kernel, "deploy_ramdisk": ramdisk},
            "instance_info": {"image_source": wd_url, "image_disk_format": "raw",
                "image_checksum": format!("sha256:{}", sha256_file(&wd))},
            "properties": {"capabilities": "boot_mode:bios"},
        }),
    );
    for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
        lab.provision(&uuid, verb);
        lab.wait_state(&uuid, &[state], Duration::from_secs(60));
    }

    let stop = AtomicBool::new(false);
    let events = Mutex::new(Vec::new());
    let boots = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let machine = scope.spawn(|| play_machine(&lab, &sushy, &stop, &events, &boots));
        let _stop_machine = StopOnDrop(&stop);

        // 1. A built deploy ISO, a whole-disk image: active on its disk, every medium gone.
        let done = deploy(&lab, &uuid, &events);
        let image = std::fs::read(&wd).unwrap();
        let mut disk = vec![0u8; image.len()];
        use std::io::Read;
        std::fs::File::open(&lab.disk)
            .unwrap()
            .read_exact(&mut disk)
            .unwrap();
        assert!(disk == image, "the loop device does not hold wd.raw");
        let system = bmc_get(&lab, &sushy, &format!("/redfish/v1/Systems/{SYSTEM_UUID}"));
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Hdd");
        assert_eq!(system["PowerState"], "On");
        let view = bmc_view(&lab, &sushy).unwrap();
        assert!(
            view.cd.is_none() && view.floppy.is_none(),
            "media left inserted"
        );
        assert!(published(&lab).is_empty(), "{:?}", published(&lab));
        assert_eq!(done["driver_internal_info"].get("vmedia"), None);
        undeploy(&lab, &uuid, &events);

        // 2. The iLO way: deploy_iso as it is, the parameters on the floppy.
        patch(
            &lab,
            &uuid,
            json!([
                {"op": "remove", "path": "/driver_info/deploy_kernel"},
                {"op": "remove", "path": "/driver_info/deploy_ramdisk"},
                {"op": "add", "path": "/driver_info/deploy_iso", "value": deploy_iso},
            ]),
        );
        deploy(&lab, &uuid, &events);
        assert!(bmc_view(&lab, &sushy).unwrap().cd.is_none());
        assert!(published(&lab).is_empty());
        undeploy(&lab, &uuid, &events);

        // 3. A partition image: the instance boots an ISO whose command line names the root
        // UUID the agent read from the disk.
        let part = images.path("part.raw");
        let part_url = lab.serve_image(&part, &format!("{}-part.raw", std::process::id()));
        let (os_kernel, os_initrd) = (
            file("os.kernel", 48 << 10, 4),
            file("os.initrd", 96 << 10, 5),
        );
        patch(
            &lab,
            &uuid,
            json!([
                {"op": "remove", "path": "/driver_info/deploy_iso"},
                {"op": "add", "path": "/driver_info/deploy_kernel", "value": kernel},
                {"op": "add", "path": "/driver_info/deploy_ramdisk", "value": ramdisk},
                {"op": "replace", "path": "/instance_info", "value": {
                    "image_source": part_url, "image_disk_format": "raw",
                    "image_checksum": format!("sha256:{}", sha256_file(&part)),
                    "kernel": os_kernel, "ramdisk": os_initrd, "root_mb": 64}},
            ]),
        );
        deploy(&lab, &uuid, &events);
        let view = bmc_view(&lab, &sushy).unwrap();
        let cd = view.cd.expect("the instance ISO is inserted");
        assert!(basename(&cd).starts_with("boot-"), "{cd}");
        let boot_iso = downloaded(&sushy, &cd).expect("the emulator's copy of the boot ISO");
        let cmdline = iso_cmdline(&boot_iso, false);
        assert_eq!(param(&cmdline, "ipa-agent-token"), None, "{cmdline:?}");
        let root = param(&cmdline, "root").expect("root= on the instance command line");
        let on_disk = fs_uuid(Path::new(&root_partition(&lab.disk, 64 << 20)));
        assert_eq!(root, format!("UUID={on_disk}"), "{cmdline:?}");
        let system = bmc_get(&lab, &sushy, &format!("/redfish/v1/Systems/{SYSTEM_UUID}"));
        assert_eq!(system["Boot"]["BootSourceOverrideTarget"], "Cd");
        assert_eq!(system["PowerState"], "On");
        assert_eq!(published(&lab).len(), 1, "{:?}", published(&lab));

        stop.store(true, Ordering::SeqCst);
        machine.join().expect("the machine thread");
        assert_eq!(
            lab.boots(),
            3,
            "one agent per deploy, none for the instance"
        );
    });
}
