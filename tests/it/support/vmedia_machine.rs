//! The machine behind an emulated Redfish BMC, for tests that boot the REAL
//! ironic-python-agent from virtual media (tests/it/vmedia_ipa*.rs): sushy-tools runs in the IPA
//! lab's network namespace, so that its InsertMedia downloads from ironboot's HTTP server
//! there. When the emulated system is powered on with an agent medium inserted, the machine
//! reads the ISO (xorriso) or the floppy (mtools) ironboot published — the copy the BMC
//! downloaded — takes `ipa-api-url`, `ipa-agent-token` and, for an inspection,
//! `ipa-inspection-callback-url` from it and starts the sandboxed agent with them; when the
//! system is powered off it stops the agent.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::ipa::{AGENT_MAC, Lab};
use super::sushy::{Options, SYSTEM_UUID, Sushy};
use super::vmedia_lab::{basename, floppy_parameters, iso_cmdline, param};

/// How long a deploy (or any other agent flow) may take.
pub const DEPLOY_TIMEOUT: Duration = Duration::from_secs(240);

/// A Redfish document of the emulator, read from inside the sandbox.
pub fn try_bmc_get(lab: &Lab, sushy: &Sushy, path: &str) -> Result<Value, String> {
    let (ok, out, err) = super::run(
        lab.in_netns("curl")
            .args(["-sf", "-m", "10"])
            .arg(format!("{}{path}", sushy.url())),
    );
    if !ok {
        return Err(format!("GET {path} from the emulator: {err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("GET {path}: {e}: {out}"))
}

pub fn bmc_get(lab: &Lab, sushy: &Sushy, path: &str) -> Value {
    try_bmc_get(lab, sushy, path).unwrap_or_else(|e| panic!("{e}"))
}

/// What the BMC holds for the system: power, and the images in its CD and floppy slots.
#[derive(Debug)]
pub struct BmcView {
    pub power_on: bool,
    pub cd: Option<String>,
    pub floppy: Option<String>,
}

pub fn bmc_view(lab: &Lab, sushy: &Sushy) -> Result<BmcView, String> {
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
pub fn downloaded(sushy: &Sushy, url: &str) -> Option<Vec<u8>> {
    let name = basename(url);
    sushy
        .downloaded()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| b)
}

/// What the machine reads from the inserted media to boot the agent.
#[derive(Debug, Clone)]
pub struct AgentBoot {
    pub api: String,
    pub token: String,
    /// `ipa-inspection-callback-url`, on the media of an inspection.
    pub inspection: Option<String>,
    /// The CD it booted from (the BMC drops its copy at eject, so the machine keeps one).
    pub cd: Option<Image>,
}

/// A medium's bytes (shown by length).
#[derive(Clone)]
pub struct Image(pub Vec<u8>);

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

/// The agent's parameters in what is inserted: the floppy's `parameters.txt` when there is
/// one, else the CD's kernel command line (an instance ISO has no agent token, so `None`).
pub fn agent_parameters(sushy: &Sushy, view: &BmcView) -> Result<Option<AgentBoot>, String> {
    let copy = |url: &str| downloaded(sushy, url).ok_or(format!("no copy of {url} yet"));
    let cd = view.cd.as_deref().map(copy).transpose()?;
    let params: Vec<(String, String)> = match (&view.floppy, &cd) {
        (Some(floppy), _) => floppy_parameters(&copy(floppy)?)
            .1
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        (None, Some(iso)) => iso_cmdline(iso, false),
        (None, None) => return Ok(None),
    };
    let inspection = param(&params, "ipa-inspection-callback-url").map(str::to_string);
    Ok(param(&params, "ipa-api-url")
        .zip(param(&params, "ipa-agent-token"))
        .map(|(api, token)| AgentBoot {
            api: api.to_string(),
            token: token.to_string(),
            inspection,
            cd: cd.map(Image),
        }))
}

/// The machine behind the BMC, until `stop`: boots the agent from the inserted media when the
/// system is powered on, stops it when the system is powered off. What it saw and did goes to
/// `events` (a test failing shows them), each agent it booted to `boots`; a failed look is
/// retried on the next tick.
pub fn play_machine(
    lab: &Lab,
    sushy: &Sushy,
    stop: &AtomicBool,
    events: &Mutex<Vec<String>>,
    boots: &Mutex<Vec<AgentBoot>>,
) {
    let started = Instant::now();
    let note = |what: String| {
        let line = format!("{:7.1} s {what}", started.elapsed().as_secs_f64());
        events.lock().unwrap_or_else(|p| p.into_inner()).push(line);
    };
    // The running agent's token, and the media last looked at while it runs.
    let mut running: Option<String> = None;
    let mut looked_at: Option<(Option<String>, Option<String>)> = None;
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
            if running.take().is_some() {
                lab.stop_agent();
                note("powered off: agent stopped".into());
            }
            looked_at = None;
            continue;
        }
        // A power cycle shorter than a tick is seen as new agent media (another token) while
        // the old agent runs: the machine rebooted into them. Media ejected under a running
        // agent (rescue leaves its ramdisk running) are not a reboot.
        let media = (view.cd.clone(), view.floppy.clone());
        if looked_at.as_ref() == Some(&media) {
            continue;
        }
        match agent_parameters(sushy, &view) {
            Ok(Some(boot)) if running.as_deref() != Some(boot.token.as_str()) => {
                if running.is_some() {
                    lab.stop_agent();
                    note("rebooted into new media: agent stopped".into());
                }
                lab.boot_agent_from_media(&boot.api, &boot.token, boot.inspection.as_deref());
                note(format!(
                    "agent started from the media (ipa-api-url {}, inspection {:?})",
                    boot.api, boot.inspection
                ));
                running = Some(boot.token.clone());
                boots.lock().unwrap_or_else(|p| p.into_inner()).push(boot);
                looked_at = Some(media);
            }
            Ok(_) if running.is_some() => looked_at = Some(media),
            Ok(_) => {}
            Err(e) => note(e),
        }
    }
}

/// The BMC: sushy-tools in the lab's network namespace (so its InsertMedia downloads from
/// ironboot's HTTP server there), without auth, powering at once; `None` when it cannot run.
pub fn start_bmc(test: &str, lab: &Lab) -> Option<Sushy> {
    Sushy::start(
        test,
        Options {
            auth: false,
            quick_power: true,
            netns: Some(lab.netns()),
            ..Options::default()
        },
    )
}

/// Enrolls a `redfish` node of the emulator's system (its address and system id added to
/// `body`'s `driver_info`), with a port of the lab agent's MAC; its uuid.
pub fn enroll_redfish_node(lab: &Lab, sushy: &Sushy, mut body: Value) -> String {
    body["driver"] = json!("redfish");
    body["driver_info"]["redfish_address"] = json!(sushy.url());
    body["driver_info"]["redfish_system_id"] = json!(format!("/redfish/v1/Systems/{SYSTEM_UUID}"));
    let (s, node) = lab.api("POST", "/v1/nodes", Some(&body));
    assert_eq!(s, 201, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();
    let (s, port) = lab.api(
        "POST",
        "/v1/ports",
        Some(&json!({"address": AGENT_MAC, "node_uuid": uuid})),
    );
    assert_eq!(s, 201, "{port}");
    uuid
}

/// Waits until the node is in one of `states`; on timeout panics with the machine's events
/// and the lab's logs.
pub fn wait_state(lab: &Lab, uuid: &str, states: &[&str], events: &Mutex<Vec<String>>) -> Value {
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

pub fn deploy(lab: &Lab, uuid: &str, events: &Mutex<Vec<String>>) -> Value {
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

pub fn undeploy(lab: &Lab, uuid: &str, events: &Mutex<Vec<String>>) {
    lab.provision(uuid, "deleted");
    wait_state(lab, uuid, &["available"], events);
}

pub fn published(lab: &Lab) -> Vec<String> {
    std::fs::read_dir(lab.dir().join("data/httpboot/redfish"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn patch(lab: &Lab, uuid: &str, ops: Value) {
    let (s, body) = lab.api("PATCH", &format!("/v1/nodes/{uuid}"), Some(&ops));
    assert_eq!(s, 200, "{body}");
}

/// Stops the machine thread when the test body panics (a scoped thread must end).
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
