//! Virtual media deploys with the REAL ironic-python-agent 13.0.0, in the IPA lab's sandbox
//! (tests/it/support/ipa.rs): ironboot, sushy-tools (the BMC, in the sandbox's network
//! namespace so that its InsertMedia downloads from ironboot's HTTP server there) and the
//! agent. The harness plays the machine behind the BMC: when the emulated system is powered
//! on with a deploy medium inserted, it reads the ISO (xorriso) or the floppy (mtools) ironboot
//! published — the copy the BMC downloaded — takes `ipa-api-url` and `ipa-agent-token` from it
//! and starts the sandboxed agent with them; when the system is powered off it stops the
//! agent. One node is deployed three times: a built ISO with a whole-disk image, the operator's
//! `deploy_iso` with a parameters floppy (the iLO way), and a partition image that ends
//! booting an instance ISO whose command line carries the root UUID the agent read.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::ipa::{AGENT_MAC, Lab, LabOptions, TestImages, sha256_file};
use support::sushy::{Options, SYSTEM_UUID, Sushy};
use support::vmedia_lab::{basename, floppy_parameters, iso_cmdline, param};

const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);

/// A Redfish document of the emulator, read from inside the sandbox.
fn try_bmc_get(lab: &Lab, sushy: &Sushy, path: &str) -> Result<Value, String> {
    let (ok, out, err) = support::run(
        lab.in_netns("curl")
            .args(["-sf", "-m", "10"])
            .arg(format!("{}{path}", sushy.url())),
    );
    if !ok {
        return Err(format!("GET {path} from the emulator: {err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("GET {path}: {e}: {out}"))
}

fn bmc_get(lab: &Lab, sushy: &Sushy, path: &str) -> Value {
    try_bmc_get(lab, sushy, path).unwrap_or_else(|e| panic!("{e}"))
}

/// What the BMC holds for the system: power, and the images in its CD and floppy slots.
#[derive(Debug)]
struct BmcView {
    power_on: bool,
    cd: Option<String>,
    floppy: Option<String>,
}

fn bmc_view(lab: &Lab, sushy: &Sushy) -> Result<BmcView, String> {
    let system = format!("/redfish/v1/Systems/{SYSTEM_UUID}");
    let slot = |name: &str| -> Result<Option<String>, String> {
        let doc = try_bmc_get(lab, sushy, &format!("{system}/VirtualMedia/{name}"))?;
        let image = doc["Image"].as_str().unwrap_or_default().to_string();
        Ok((doc["Inserted"] == true && !image.is_empty()).then_some(image))
    };
    Ok(BmcView {
        power_on: try_bmc_get(lab, sushy, &system)?["PowerState"] == "On",
        cd: slot("Cd")?,
        floppy: slot("Floppy")?,
    })
}

/// The copy of `url` the emulator downloaded.
fn downloaded(sushy: &Sushy, url: &str) -> Option<Vec<u8>> {
    let name = basename(url);
    sushy
        .downloaded()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b)
}

/// The agent's parameters in what is inserted: the floppy's `parameters.txt` when there is
/// one, else the CD's kernel command line (an instance ISO has no agent token, so `None`).
fn agent_parameters(sushy: &Sushy, view: &BmcView) -> Result<Option<(String, String)>, String> {
    let copy = |url: &str| downloaded(sushy, url).ok_or(format!("no copy of {url} yet"));
    let params: Vec<(String, String)> = match (&view.floppy, &view.cd) {
        (Some(floppy), _) => floppy_parameters(&copy(floppy)?)
            .1
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        (None, Some(cd)) => iso_cmdline(&copy(cd)?, false),
        (None, None) => return Ok(None),
    };
    Ok(param(&params, "ipa-api-url")
        .zip(param(&params, "ipa-agent-token"))
        .map(|(api, token)| (api.to_string(), token.to_string())))
}

/// The machine behind the BMC, until `stop`: boots the agent from the inserted media when the
/// system is powered on, stops it when the system is powered off. What it saw and did goes to
/// `events` (a test failing shows them); a failed look is retried on the next tick.
fn play_machine(lab: &Lab, sushy: &Sushy, stop: &AtomicBool, events: &Mutex<Vec<String>>) {
    let started = Instant::now();
    let note = |what: String| {
        let line = format!("{:7.1} s {what}", started.elapsed().as_secs_f64());
        events.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    };
    let mut booted = false;
    let mut last = String::new();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        let view = match bmc_view(lab, sushy) {
            Ok(v) => v,
            Err(e) => {
                note(e);
                continue;
            }
        };
        let seen = format!("{view:?}");
        if seen != last {
            note(format!("BMC: {seen}"));
            last = seen;
        }
        if !view.power_on {
            if booted {
                lab.stop_agent();
                note("powered off: agent stopped".into());
            }
            booted = false;
            continue;
        }
        if booted {
            continue;
        }
        match agent_parameters(sushy, &view) {
            Ok(Some((api, token))) => {
                lab.boot_agent_from_media(&api, &token);
                note(format!("agent started from the media (ipa-api-url {api})"));
                booted = true;
            }
            Ok(None) => {}
            Err(e) => note(e),
        }
    }
}

/// Waits until the node is in one of `states`; on timeout panics with the machine's events
/// and the lab's logs.
fn wait_state(lab: &Lab, uuid: &str, states: &[&str], events: &Mutex<Vec<String>>) -> Value {
    let deadline = Instant::now() + DEPLOY_TIMEOUT;
    loop {
        let n = lab.node(uuid);
        let state = n["provision_state"].as_str().unwrap_or_default();
        if states.contains(&state) && n["reservation"].is_null() {
            return n;
        }
        if Instant::now() > deadline {
            let events = events.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
            panic!(
                "node {uuid} is {state:?} (last_error {}), not {states:?}\n--- machine ---\n{events}\n{}",
                n["last_error"],
                lab.log_tails()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn deploy(lab: &Lab, uuid: &str, events: &Mutex<Vec<String>>) -> Value {
    lab.provision(uuid, "active");
    let done = wait_state(lab, uuid, &["active", "deploy failed"], events);
    assert_eq!(
        done["provision_state"],
        "active",
        "last_error: {}\n{}",
        done["last_error"],
        lab.log_tails()
    );
    done
}

fn undeploy(lab: &Lab, uuid: &str, events: &Mutex<Vec<String>>) {
    lab.provision(uuid, "deleted");
    wait_state(lab, uuid, &["available"], events);
}

fn published(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.dir().join("data/httpboot/redfish"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn patch(lab: &Lab, uuid: &str, ops: Value) {
    let (s, body) = lab.api("PATCH", &format!("/v1/nodes/{uuid}"), Some(&ops));
    assert_eq!(s, 200, "{body}");
}

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
    let Some(sushy) = Sushy::start(
        test,
        Options {
            auth: false,
            quick_power: true,
            netns: Some(lab.netns()),
            ..Options::default()
        },
    ) else {
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
    let (s, node) = lab.api(
        "POST",
        "/v1/nodes",
        Some(&json!({
            "name": "vmedia-node", "driver": "redfish",
            "driver_info": {"redfish_address": sushy.url(),
                "redfish_system_id": format!("/redfish/v1/Systems/{SYSTEM_UUID}"),
                "deploy_kernel": kernel, "deploy_ramdisk": ramdisk},
            "instance_info": {"image_source": wd_url, "image_disk_format": "raw",
                "image_checksum": format!("sha256:{}", sha256_file(&wd))},
            "properties": {"capabilities": "boot_mode:bios"},
        })),
    );
    assert_eq!(s, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let (s, port) = lab.api(
        "POST",
        "/v1/ports",
        Some(&json!({"address": AGENT_MAC, "node_uuid": uuid})),
    );
    assert_eq!(s, 201, "{port}");
    for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
        lab.provision(&uuid, verb);
        lab.wait_state(&uuid, &[state], Duration::from_secs(60));
    }

    let stop = AtomicBool::new(false);
    let events = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        let machine = scope.spawn(|| play_machine(&lab, &sushy, &stop, &events));
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

/// Stops the machine thread when the test body panics (a scoped thread must end).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
