//! The `ipmi` and `manual-management` hardware types end to end: the real `ironboot serve`,
//! driven through its API (and python-ironicclient), powers and boots nodes whose BMC is
//! OpenIPMI's `ipmi_sim` with a board that runs a QEMU guest (`support::ipmi_sim`,
//! `support::bmc_board`). What ironboot reports is checked against what the BMC was asked
//! (the board's record), what ipmitool run by hand says, and what happened to the QEMU process.
//!
//! ironboot runs ipmitool through a wrapper that records every command line, so the tests can
//! see what it sent (`options=persistent`) and that no password was among it. ipmi_sim keeps
//! only the device of the boot flags: the servers run with `boot_flags_check = "device"`.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use support::bmc_board::GUEST_MAC;
use support::ipmi_sim::{ADMIN, IpmiSim};
use support::netboot::{NetbootLab, callback_path};
use support::server::Server;

const API_VERSION: &str = "1.80";
/// What the stand-in agent reports for the whole-disk image (its MBR signature).
const DISK_ID: &str = "0x5eedd15c";

/// `[ipmi]` for a simulator on loopback: short waits, fast polls, the device-only read-back,
/// and `ipmitool` = the recording wrapper. The power state sync is off (its test turns it on),
/// so that every BMC call a test sees is one it caused.
fn ipmi_env(ipmitool: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("IPMITOOL", ipmitool.display().to_string()),
        ("COMMAND_TIMEOUT_SECS", "10".into()),
        ("COMMAND_RETRY_TIMEOUT_SECS", "3".into()),
        ("MIN_COMMAND_INTERVAL_MS", "20".into()),
        ("LAN_TIMEOUT_SECS", "1".into()),
        ("LAN_RETRIES", "1".into()),
        ("POWER_STATE_CHANGE_TIMEOUT_SECS", "30".into()),
        ("SOFT_POWER_OFF_TIMEOUT_SECS", "3".into()),
        ("POLL_INTERVAL_MS", "200".into()),
        ("BOOT_FLAGS_CHECK", "device".into()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("IRONBOOT_IPMI__{k}"), v))
    .collect();
    env.push((
        "IRONBOOT_CONDUCTOR__SYNC_POWER_STATE_INTERVAL".into(),
        "0".into(),
    ));
    env
}

/// Writes `<dir>/ipmitool`: appends `ARGS <its arguments>` to `<dir>/ipmitool-argv.log`, then
/// runs the real ipmitool.
fn recording_ipmitool(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("ipmitool");
    let log = dir.join("ipmitool-argv.log");
    std::fs::write(
        &path,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"ARGS $*\" >> {}\nexec ipmitool \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The commands (`power on`, `chassis bootdev disk options=persistent`, ...) the wrapper in
/// `dir` saw, in order; every line also checked for the password hand-over.
fn ipmitool_commands(dir: &Path, secrets: &[&str]) -> Vec<String> {
    let log = std::fs::read_to_string(dir.join("ipmitool-argv.log")).unwrap_or_default();
    log.lines()
        .map(|line| {
            for secret in secrets {
                assert!(!line.contains(secret), "password on a command line: {line}");
            }
            assert!(!line.contains(" -P "), "{line}");
            let (_, cmd) = line.split_once(" -v ").expect("ironboot runs ipmitool -v");
            cmd.to_string()
        })
        .collect()
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Blocking calls to ironboot's API (tests here are synchronous: the fixtures are).
struct Api {
    base: String,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Api {
    fn new(base: String) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Api {
            base,
            rt,
            client: support::http_client(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        self.rt.block_on(async {
            let mut req = self
                .client
                .request(method, &url)
                .header("X-OpenStack-Ironic-API-Version", API_VERSION);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    }

    fn create(&self, body: Value) -> Value {
        let (s, n) = self.call(reqwest::Method::POST, "/v1/nodes", Some(body));
        assert_eq!(s, 201, "{n}");
        n
    }

    /// A port on `node` (a name or UUID; ports name their node by UUID, as in Ironic).
    fn port(&self, node: &str, mac: &str) {
        let uuid = self.node(node)["uuid"].clone();
        let (s, p) = self.call(
            reqwest::Method::POST,
            "/v1/ports",
            Some(json!({"address": mac, "node_uuid": uuid})),
        );
        assert_eq!(s, 201, "{p}");
    }

    fn node(&self, ident: &str) -> Value {
        let (s, n) = self.call(reqwest::Method::GET, &format!("/v1/nodes/{ident}"), None);
        assert_eq!(s, 200, "{n}");
        n
    }

    fn provision(&self, ident: &str, target: &str) {
        let (s, b) = self.call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{ident}/states/provision"),
            Some(json!({ "target": target })),
        );
        assert_eq!(s, 202, "{target} of {ident}: {b}");
    }

    fn power(&self, ident: &str, target: &str) {
        let (s, b) = self.call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{ident}/states/power"),
            Some(json!({ "target": target })),
        );
        assert_eq!(s, 202, "{target} of {ident}: {b}");
    }

    /// Waits (up to `limit`) until the released node satisfies `done`.
    fn wait(&self, ident: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let n = self.node(ident);
            if n["reservation"].is_null() && done(&n) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "node {ident} did not get there within {limit:?}: {n}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_state(&self, ident: &str, state: &str) -> Value {
        self.wait(ident, Duration::from_secs(90), |n| {
            n["provision_state"] == state
        })
    }

    /// Waits for a power action to end (no target left) and returns the node.
    fn wait_power_done(&self, ident: &str) -> Value {
        self.wait(ident, Duration::from_secs(90), |n| {
            n["target_power_state"].is_null()
        })
    }

    fn metrics(&self) -> String {
        let (_, m) = self.call(reqwest::Method::GET, "/metrics", None);
        m.as_str().unwrap_or_default().to_string()
    }
}

/// The value of the sample `name` (with its labels) in Prometheus text; 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A running QEMU process (a zombie or a recycled PID has another command line).
fn qemu_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
}

/// An `ipmi` node on `sim` (administrator), booting in BIOS mode like the board's SeaBIOS.
fn ipmi_node(name: &str, driver_info: Map<String, Value>) -> Value {
    json!({
        "name": name,
        "driver": "ipmi",
        "driver_info": driver_info,
        "properties": {"capabilities": "boot_mode:bios"},
    })
}

/// Power on, reboot, soft power off and power off through the API, each seen on the board and
/// the QEMU process; the state each time as ipmitool by hand reads it.
#[test]
fn power_actions_through_the_api_drive_the_guest() {
    let test = "ipmi_hardware::power_actions_through_the_api_drive_the_guest";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let env = ipmi_env(&recording_ipmitool(tmp.path()));
    let server = Server::start_with(&[], &env_refs(&env));
    let api = Api::new(server.api_url());

    let created = api.create(ipmi_node("ipmi-power", sim.driver_info()));
    assert_eq!(created["power_interface"], "ipmitool");
    assert_eq!(created["boot_interface"], "pxe");
    assert_eq!(created["deploy_interface"], "direct");
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    // Verification reads the power state from the BMC.
    api.provision("ipmi-power", "manage");
    let n = api.wait_state("ipmi-power", "manageable");
    assert_eq!(n["power_state"], "power off");

    api.power("ipmi-power", "power on");
    let n = api.wait_power_done("ipmi-power");
    assert_eq!(n["power_state"], "power on", "{n}");
    assert!(n["last_error"].is_null(), "{n}");
    let first = sim.board.running_pid().expect("no guest after power on");
    assert!(qemu_alive(first));
    assert_eq!(sim.power_by_hand(), "on");

    // Ironic's reboot: off, then on; the board restarts QEMU.
    let before = sim.board.events().len();
    api.power("ipmi-power", "rebooting");
    let n = api.wait_power_done("ipmi-power");
    assert_eq!(n["power_state"], "power on", "{n}");
    let second = sim.board.running_pid().expect("no guest after reboot");
    assert!(second != first && !qemu_alive(first) && qemu_alive(second));
    let sets: Vec<String> = sim.board.events()[before..]
        .iter()
        .filter(|e| e.starts_with("set "))
        .cloned()
        .collect();
    assert_eq!(sets, ["set power 0", "set power 1"]);

    // The guest ignores the ACPI power button: after soft_power_off_timeout_secs (3 s) the
    // node is powered off hard.
    let before = sim.board.events().len();
    let t0 = Instant::now();
    api.power("ipmi-power", "soft power off");
    let n = api.wait_power_done("ipmi-power");
    let took = t0.elapsed();
    assert_eq!(n["power_state"], "power off", "{n}");
    assert!(n["last_error"].is_null(), "{n}");
    assert!(took >= Duration::from_secs(3), "{took:?}");
    let events = sim.board.events()[before..].to_vec();
    let button = events.iter().position(|e| e == "acpi power button sent");
    let off = events.iter().position(|e| e == "set power 0");
    assert!(
        matches!((button, off), (Some(b), Some(o)) if b < o),
        "{events:?}"
    );
    assert!(!qemu_alive(second));
    assert_eq!(sim.power_by_hand(), "off");
    assert!(
        server
            .log()
            .contains("did not power off after the ACPI power button"),
        "the fallback is not logged"
    );

    api.power("ipmi-power", "power on");
    assert_eq!(api.wait_power_done("ipmi-power")["power_state"], "power on");
    let third = sim.board.running_pid().expect("no guest after power on");
    api.power("ipmi-power", "power off");
    assert_eq!(
        api.wait_power_done("ipmi-power")["power_state"],
        "power off"
    );
    assert!(!qemu_alive(third));
    assert_eq!(sim.board.boots().len(), 3);

    let commands = ipmitool_commands(tmp.path(), &[ADMIN.1]);
    for want in ["power on", "power off", "power soft", "power status"] {
        assert!(commands.iter().any(|c| c == want), "{want}: {commands:?}");
    }
    // Two power ons, and the one of the reboot.
    let metrics = api.metrics();
    assert_eq!(
        metric(
            &metrics,
            r#"ironboot_ipmi_commands_total{command="power on",outcome="ok"}"#
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "ironboot_ipmi_soft_power_off_fallbacks_total"),
        1.0
    );
    assert!(!server.log().contains(ADMIN.1), "password in the log");
}

/// A node whose deploy files exist (they are only placed, never booted, when the BMC refuses).
fn deployable(dir: &Path, name: &str, driver_info: Map<String, Value>) -> Value {
    let file = |n: &str, len: usize| {
        let path = dir.join(n);
        support::write_pattern_file(&path, len, len as u64);
        format!("file://{}", path.display())
    };
    let mut node = ipmi_node(name, driver_info);
    node["driver_info"]["deploy_kernel"] = json!(file("kernel", 4096));
    node["driver_info"]["deploy_ramdisk"] = json!(file("ramdisk", 8192));
    node["instance_info"] = json!({"image_source": file("disk.raw", 65536)});
    node
}

/// Wrong credentials and a BMC that does not answer fail verification; a BMC that refuses the
/// boot device fails the deploy. Each `last_error` names the BMC and what it said; no password
/// appears in an error, the log, or a command line (checked on the running ipmitool too).
#[test]
fn bmc_failures_name_the_bmc_and_never_show_the_password() {
    let test = "ipmi_hardware::bmc_failures_name_the_bmc_and_never_show_the_password";
    let Some(sim) = IpmiSim::start(test, false) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let env = ipmi_env(&recording_ipmitool(tmp.path()));
    let server = Server::start_with(&[], &env_refs(&env));
    let api = Api::new(server.api_url());
    let bmc = format!("BMC 127.0.0.1:{}", sim.port);
    let (wrong_pw, silent_pw) = ("Wr0ng-pw-x81", "S1lent-pw-q4");

    // 1. Wrong password: verification fails at once (never retried) and the node stays enroll.
    api.create(ipmi_node(
        "bad-creds",
        sim.driver_info_as(ADMIN.0, wrong_pw),
    ));
    api.provision("bad-creds", "manage");
    let n = api.wait("bad-creds", Duration::from_secs(30), |n| {
        n["provision_state"] == "enroll" && !n["last_error"].is_null()
    });
    let err = n["last_error"].as_str().unwrap();
    eprintln!("wrong password: {err}");
    assert!(err.contains(&format!("{bmc} refused the session")), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(n["power_state"].is_null(), "{n}");
    // A power action on it fails the same way, and says which action.
    api.power("bad-creds", "power on");
    let n = api.wait_power_done("bad-creds");
    let err = n["last_error"].as_str().unwrap();
    assert!(
        err.contains("failed to power on node bad-creds") && err.contains(&bmc),
        "{err}"
    );

    // 2. A BMC that does not answer: a socket that never reads.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut info = sim.driver_info_as(ADMIN.0, silent_pw);
    info.insert("ipmi_port".into(), json!(silent_port));
    api.create(ipmi_node("no-answer", info));
    let watcher = std::thread::spawn(move || support::ipmi_sim::watch_ipmitool(silent_port));
    api.provision("no-answer", "manage");
    let (cmdline, environ) = watcher
        .join()
        .unwrap()
        .expect("never saw ironboot's ipmitool");
    // What `ps` shows any user: no password. It is in the environment, which only the
    // process's owner can read.
    assert!(!cmdline.contains(silent_pw), "{cmdline:?}");
    assert!(environ.contains(&format!("IPMI_PASSWORD={silent_pw}")));
    let own = std::fs::read(format!(
        "/proc/{}/cmdline",
        server.child.as_ref().unwrap().id()
    ))
    .unwrap();
    assert!(!String::from_utf8_lossy(&own).contains(silent_pw));
    let n = api.wait("no-answer", Duration::from_secs(60), |n| {
        n["provision_state"] == "enroll" && !n["last_error"].is_null()
    });
    let err = n["last_error"].as_str().unwrap();
    eprintln!("no answer: {err}");
    assert!(
        err.contains(&format!(
            "BMC 127.0.0.1:{silent_port} did not answer `power status`"
        )),
        "{err}"
    );

    // 3. A board that refuses boot devices: ipmitool exits 0, ironboot still sees the refusal
    // and the deploy fails before the node is powered on; it is left powered off.
    sim.board.behave(|b| b.refuse_boot_devices = true);
    api.create(deployable(tmp.path(), "no-bootdev", sim.driver_info()));
    api.port("no-bootdev", GUEST_MAC);
    api.provision("no-bootdev", "manage");
    api.wait_state("no-bootdev", "manageable");
    api.provision("no-bootdev", "provide");
    api.wait_state("no-bootdev", "available");
    api.provision("no-bootdev", "deploy");
    let n = api.wait_state("no-bootdev", "deploy failed");
    let err = n["last_error"].as_str().unwrap();
    eprintln!("boot device refused: {err}");
    assert!(
        err.contains(&format!("{bmc} refused `chassis bootdev pxe`"))
            && err.contains("Unspecified error"),
        "{err}"
    );
    assert_eq!(n["power_state"], "power off", "{n}");
    assert!(!sim.board.events().contains(&"set power 1".to_string()));

    // 4. A BMC that accepts the device and keeps another: only the read-back shows it.
    sim.board.behave(|b| {
        b.refuse_boot_devices = false;
        b.claim_boot = Some("cdrom");
    });
    api.provision("no-bootdev", "deploy");
    let n = api.wait("no-bootdev", Duration::from_secs(60), |n| {
        n["provision_state"] == "deploy failed" && n["last_error"] != err
    });
    let err = n["last_error"].as_str().unwrap();
    eprintln!("boot device not kept: {err}");
    assert!(
        err.contains(&format!("{bmc} did not keep the boot device"))
            && err.contains("asked for pxe")
            && err.contains("now holds cdrom"),
        "{err}"
    );

    let log = server.log();
    for secret in [ADMIN.1, wrong_pw, silent_pw] {
        assert!(!log.contains(secret), "{secret} in the service log");
        for node in ["bad-creds", "no-answer", "no-bootdev"] {
            assert!(!api.node(node).to_string().contains(secret));
        }
    }
    let commands = ipmitool_commands(tmp.path(), &[ADMIN.1, wrong_pw, silent_pw]);
    assert!(
        commands.iter().any(|c| c == "chassis bootdev pxe"),
        "{commands:?}"
    );
}

/// The whole deploy of an `ipmi` node with `ipxe` boot: ironboot sets the boot device to pxe
/// and powers the node on over IPMI; the guest the board starts network-boots ironboot's
/// deploy ramdisk (the test kit's stand-in) and calls back; the test plays the agent; ironboot
/// powers the node off, sets the boot device to disk (persistent) and powers it on into its
/// "installed OS".
#[test]
fn an_ipxe_deploy_boots_the_ramdisk_then_the_disk_over_ipmi() {
    let test = "ipmi_hardware::an_ipxe_deploy_boots_the_ramdisk_then_the_disk_over_ipmi";
    let Some(lab) = NetbootLab::start(test, &[], |dir, _, _| ipmi_env(&recording_ipmitool(dir)))
    else {
        return;
    };
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let boot_ipxe = format!("{}/boot.ipxe", lab.guest_http());
    sim.board.behave(|b| b.pxe_bootfile = Some(boot_ipxe));
    let api = Api::new(lab.server.api_url());
    let uuid = "9e1f0a52-6b3c-4d7e-8f90-a1b2c3d4e5f6";
    std::fs::write(lab.http_root().join(callback_path(uuid)), b"called back\n").unwrap();
    let image = lab.dir.path().join("disk.raw");
    support::write_pattern_file(&image, 1024 * 1024, 11);
    let mut node = ipmi_node("ipmi-deploy", sim.driver_info());
    node["uuid"] = json!(uuid);
    node["boot_interface"] = json!("ipxe");
    let info = node["driver_info"].as_object_mut().unwrap();
    info.insert(
        "deploy_kernel".into(),
        json!(format!("file://{}", lab.kit.kernel.display())),
    );
    info.insert(
        "deploy_ramdisk".into(),
        json!(format!("file://{}", lab.kit.initrd.display())),
    );
    info.insert(
        "kernel_append_params".into(),
        json!(lab.kernel_append_params(uuid)),
    );
    node["instance_info"] = json!({"image_source": format!("file://{}", image.display())});
    api.create(node);
    api.port(uuid, GUEST_MAC);

    let t0 = Instant::now();
    lab.deploy_until_wait_call_back(uuid);
    // The board was asked for pxe, then power: its first boot is the network path.
    let boots = sim.board.boots();
    assert_eq!(boots.len(), 1, "{boots:?}");
    assert_eq!(boots[0].bootdev, "pxe");
    let cmdline = wait_for_console(&sim, 0, "IRONBOOT-CALLBACK-OK");
    let seen = cmdline_line(&cmdline).expect("the ramdisk printed no command line");
    for want in [
        format!("ipa-api-url=http://10.0.2.2:{}", lab.api_port),
        "BOOTIF=01-52-54-00-12-34-56".to_string(),
        format!("cb={}/{}", lab.guest_http(), callback_path(uuid)),
    ] {
        assert!(seen.contains(&want), "{want:?} not in {seen:?}");
    }
    assert!(
        lab.access_log_statuses(&format!("/{}", callback_path(uuid)))
            .contains(&200)
    );
    let ramdisk_after = t0.elapsed();

    // The agent's part; then ironboot finishes over IPMI.
    let console_before = sim.board.console().len();
    let agent = lab.fake_agent(DISK_ID);
    let n = lab.finish_deploy(uuid, GUEST_MAC, &agent);
    assert_eq!(n["power_state"], "power on", "{n}");
    assert!(n["last_error"].is_null(), "{n}");
    let boots = sim.board.boots();
    assert_eq!(boots.len(), 2, "{boots:?}");
    assert!(!qemu_alive(boots[0].pid), "the ramdisk still runs");
    assert_eq!(boots[1].bootdev, "default");
    assert_eq!(sim.board.running_pid(), Some(boots[1].pid));
    let events = sim.board.events();
    let pxe = events.iter().position(|e| e == "set boot pxe").unwrap();
    let disk = events
        .iter()
        .rposition(|e| e == "set boot default")
        .unwrap();
    assert!(pxe < disk, "{events:?}");
    // What ironboot sent: pxe for the next boot only, then disk for every boot (ipmi_sim keeps
    // only the device, so the persistence is checked on ipmitool's command line).
    let commands = ipmitool_commands(lab.dir.path(), &[ADMIN.1]);
    let bootdevs: Vec<&String> = commands
        .iter()
        .filter(|c| c.starts_with("chassis bootdev"))
        .collect();
    assert_eq!(
        bootdevs,
        [
            "chassis bootdev pxe",
            "chassis bootdev disk options=persistent"
        ]
    );
    // The node boots its "installed OS" (the board's disk path): the kit's /init runs there.
    let instance = wait_for_console(
        &sim,
        console_before,
        &format!(
            "{}console=ttyS0 ipmi_boot=2 ipmi_bootdev=default",
            support::guest::CMDLINE_PREFIX
        ),
    );
    assert!(instance.contains(support::guest::MARKER), "{instance}");
    eprintln!(
        "ramdisk called back {:.1} s after deploy; active and booted from disk after {:.1} s",
        ramdisk_after.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(!lab.server.log().contains(ADMIN.1));
}

/// How long a TCG guest may take to show something on its console (2 shared cores).
const CONSOLE_LIMIT: Duration = Duration::from_secs(150);

/// Waits until the board's console from byte `from` on shows `needle`; returns that part.
fn wait_for_console(sim: &IpmiSim, from: usize, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let console = sim.board.console();
        let new = console.get(from..).unwrap_or_default();
        if new.contains(needle) {
            return new.to_string();
        }
        if started.elapsed() > CONSOLE_LIMIT {
            let tail: Vec<&str> = new.lines().rev().take(40).collect();
            panic!(
                "{needle:?} not on the console within {CONSOLE_LIMIT:?}; tail (newest first):\n{}\nQEMU log:\n{}",
                tail.join("\n"),
                sim.board.qemu_log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cmdline_line(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        l.find(support::guest::CMDLINE_PREFIX).map(|at| {
            l[at + support::guest::CMDLINE_PREFIX.len()..]
                .trim_end()
                .to_string()
        })
    })
}

/// The power state sync follows a node switched on and off behind ironboot's back, and puts a
/// node whose BMC stopped answering in maintenance after `power_state_sync_max_retries`.
#[test]
fn power_sync_follows_the_hardware_and_gives_up_on_a_silent_bmc() {
    let test = "ipmi_hardware::power_sync_follows_the_hardware_and_gives_up_on_a_silent_bmc";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut env = ipmi_env(&recording_ipmitool(tmp.path()));
    // One ipmitool run per read (-N 1 -R 1): a silent BMC costs about two seconds.
    for (k, v) in [
        ("IRONBOOT_IPMI__COMMAND_RETRY_TIMEOUT_SECS", "0"),
        ("IRONBOOT_CONDUCTOR__SYNC_POWER_STATE_INTERVAL", "1"),
        ("IRONBOOT_CONDUCTOR__POWER_STATE_SYNC_MAX_RETRIES", "2"),
    ] {
        env.push((k.into(), v.into()));
    }
    let server = Server::start_with(&[], &env_refs(&env));
    let api = Api::new(server.api_url());
    api.create(ipmi_node("synced", sim.driver_info()));
    api.create(ipmi_node("goes-silent", sim.driver_info()));
    for n in ["synced", "goes-silent"] {
        api.provision(n, "manage");
        assert_eq!(api.wait_state(n, "manageable")["power_state"], "power off");
    }
    let limit = Duration::from_secs(20);

    // Behind ironboot's back: ipmitool by hand.
    let (ok, _, err) = sim.ipmitool(&["power", "on"]);
    assert!(ok, "{err}");
    let t0 = Instant::now();
    api.wait("synced", limit, |n| n["power_state"] == "power on");
    let seen_on = t0.elapsed();
    assert!(sim.board.running_pid().is_some());
    let (ok, _, err) = sim.ipmitool(&["power", "off"]);
    assert!(ok, "{err}");
    let t0 = Instant::now();
    let n = api.wait("synced", limit, |n| n["power_state"] == "power off");
    let seen_off = t0.elapsed();
    assert!(!n["maintenance"].as_bool().unwrap(), "{n}");

    // The other node's BMC goes silent (its driver_info now points at a socket that never
    // reads): three failed reads in a row, then maintenance with the reason.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (s, b) = api.call(
        reqwest::Method::PATCH,
        "/v1/nodes/goes-silent",
        Some(json!([{"op": "replace", "path": "/driver_info/ipmi_port", "value": silent_port}])),
    );
    assert_eq!(s, 200, "{b}");
    let t0 = Instant::now();
    let n = api.wait("goes-silent", Duration::from_secs(40), |n| {
        n["maintenance"] == true
    });
    let reason = n["maintenance_reason"].as_str().unwrap();
    assert!(reason.contains("failed 3 times in a row"), "{reason}");
    assert!(
        reason.contains(&format!(
            "BMC 127.0.0.1:{silent_port} did not answer `power status`"
        )),
        "{reason}"
    );
    assert_eq!(n["last_error"], n["maintenance_reason"]);
    assert!(n["power_state"].is_null(), "{n}");
    assert_eq!(n["provision_state"], "manageable");
    eprintln!(
        "sync saw power on after {seen_on:?}, power off after {seen_off:?}; silent BMC in maintenance after {:?}",
        t0.elapsed()
    );
    // The reachable node is not touched by the other's failures.
    let synced = api.node("synced");
    assert!(!synced["maintenance"].as_bool().unwrap(), "{synced}");
    let metrics = api.metrics();
    let outcome = |o: &str| {
        metric(
            &metrics,
            &format!("ironboot_power_sync_nodes_total{{outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(outcome("maintenance"), 1.0, "{metrics}");
    assert!(outcome("read_failed") >= 2.0, "{metrics}");
    assert!(outcome("recorded") >= 2.0, "{metrics}");
    drop(silent);
}

/// `manual-management`: power is recorded, not carried out, and the boot device is left to
/// the operator; the deploy then waits for the ramdisk the operator boots.
#[test]
fn manual_management_records_power_and_leaves_the_boot_order_to_the_operator() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start();
    let api = Api::new(server.api_url());
    let (s, drivers) = api.call(reqwest::Method::GET, "/v1/drivers", None);
    assert_eq!(s, 200);
    let names: Vec<&str> = drivers["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for want in ["fake-hardware", "ipmi", "manual-management"] {
        assert!(names.contains(&want), "{want} not in {names:?}");
    }

    let mut body = deployable(tmp.path(), "by-hand", Map::new());
    body["driver"] = json!("manual-management");
    let n = api.create(body);
    assert_eq!(n["power_interface"], "fake");
    assert_eq!(n["boot_interface"], "pxe");
    assert_eq!(n["deploy_interface"], "direct");
    api.port("by-hand", "52:54:00:aa:bb:01");
    api.provision("by-hand", "manage");
    api.wait_state("by-hand", "manageable");
    api.provision("by-hand", "provide");
    api.wait_state("by-hand", "available");
    api.power("by-hand", "power on");
    let n = api.wait_power_done("by-hand");
    assert_eq!(n["power_state"], "power on");
    let calls = n["driver_internal_info"]["fake_calls"].to_string();
    assert!(calls.contains("power.set_power_state:power on"), "{calls}");

    // The deploy prepares the network boot and waits for the agent the operator boots.
    api.provision("by-hand", "deploy");
    let n = api.wait_state("by-hand", "wait call-back");
    assert!(n["last_error"].is_null(), "{n}");
    let log = server.log();
    assert!(
        log.contains("manual management: boot device not set by ironboot"),
        "{log}"
    );
    let uuid = n["uuid"].as_str().unwrap();
    assert!(
        server
            .data_dir
            .join(format!("tftpboot/{uuid}/config"))
            .is_file()
    );
}

/// python-ironicclient enrolls an `ipmi` node with Ironic's driver_info keys, manages,
/// provides and powers it; the BMC's guest follows.
#[test]
fn baremetal_cli_enrolls_and_powers_an_ipmi_node() {
    let test = "ipmi_hardware::baremetal_cli_enrolls_and_powers_an_ipmi_node";
    let Some(bin) = support::pyenv::baremetal_cli(test) else {
        return;
    };
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let env = ipmi_env(&recording_ipmitool(tmp.path()));
    let server = Server::start_with(&[], &env_refs(&env));
    let home = tempfile::tempdir().unwrap();
    let baremetal = |args: &[&str]| -> String {
        let (ok, out, err) = support::run(
            Command::new("timeout")
                .arg("120")
                .arg(&bin)
                .args(args)
                .env("OS_AUTH_TYPE", "none")
                .env("OS_ENDPOINT", server.api_url())
                .env("HOME", home.path())
                .env_remove("OS_CLOUD"),
        );
        assert!(
            ok,
            "baremetal {} failed:\nstdout: {out}\nstderr: {err}",
            args.join(" ")
        );
        assert!(!out.contains(ADMIN.1) && !err.contains(ADMIN.1));
        out
    };
    let json = |args: &[&str]| -> Value {
        let out = baremetal(&[args, &["-f", "json"]].concat());
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };

    let drivers = json(&["driver", "list"]).to_string();
    assert!(
        drivers.contains("\"ipmi\"") && drivers.contains("\"manual-management\""),
        "{drivers}"
    );
    let port = sim.port.to_string();
    let created = json(&[
        "node",
        "create",
        "--driver",
        "ipmi",
        "--name",
        "cli-ipmi",
        "--driver-info",
        "ipmi_address=127.0.0.1",
        "--driver-info",
        &format!("ipmi_port={port}"),
        "--driver-info",
        &format!("ipmi_username={}", ADMIN.0),
        "--driver-info",
        &format!("ipmi_password={}", ADMIN.1),
        "--property",
        "capabilities=boot_mode:bios",
    ]);
    assert_eq!(created["driver"], "ipmi");
    assert_eq!(created["power_interface"], "ipmitool");
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    assert_eq!(created["provision_state"], "enroll");

    baremetal(&["node", "manage", "cli-ipmi", "--wait", "60"]);
    let shown = json(&["node", "show", "cli-ipmi"]);
    assert_eq!(shown["provision_state"], "manageable");
    assert_eq!(shown["power_state"], "power off");
    baremetal(&["node", "provide", "cli-ipmi", "--wait", "60"]);
    assert_eq!(
        json(&["node", "show", "cli-ipmi"])["provision_state"],
        "available"
    );

    // The API answers 202 at once (as Ironic does); the action runs in the background.
    let power_becomes = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let shown = json(&["node", "show", "cli-ipmi"]);
            if shown["power_state"] == want && shown["target_power_state"].is_null() {
                return shown;
            }
            assert!(Instant::now() < deadline, "never {want}: {shown}");
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    baremetal(&["node", "power", "on", "cli-ipmi"]);
    assert!(power_becomes("power on")["last_error"].is_null());
    let pid = sim.board.running_pid().expect("no guest after power on");
    assert!(qemu_alive(pid));
    assert_eq!(sim.power_by_hand(), "on");
    baremetal(&["node", "power", "off", "cli-ipmi"]);
    power_becomes("power off");
    assert!(!qemu_alive(pid));
    assert_eq!(sim.power_by_hand(), "off");
    assert!(!server.log().contains(ADMIN.1));
    ipmitool_commands(tmp.path(), &[ADMIN.1]);
}
