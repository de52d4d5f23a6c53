//! The IPMI client (`ironboot::bmc::ipmi`) with the real ipmitool against OpenIPMI's
//! `ipmi_sim`, whose chassis powers a QEMU guest (`support::ipmi_sim`, `support::bmc_board`).
//!
//! Every power action is checked three ways: what the client returns, what ipmitool run by
//! hand reports, and what happened to the QEMU process (started, gone, restarted with which
//! boot path). Boot devices are checked in boot parameter 5, in what ipmi_sim handed the
//! board, and in the QEMU command line and firmware output of the next power on.
//!
//! ipmi_sim keeps only the device of the boot flags (persistent and UEFI bits read back as 0),
//! so most boot-device checks run with `boot_flags_check = "device"`; the strict default is
//! checked to report exactly that loss.

use crate::support;

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironboot::bmc::ipmi::{
    BootDevice, BootDeviceRequest, BootFlagsCheck, BootSelector, IpmiClient, IpmiError,
    IpmiSettings, Ipmitool, PowerStatus, SoftOff,
};
use ironboot::model::PowerState;
use serde_json::json;
use support::ipmi_sim::{ADMIN, IpmiSim, VIEWER};

/// How long a TCG guest may take to print its marker after power on (2 cores, shared).
const BOOT_LIMIT: Duration = Duration::from_secs(150);

fn tool(tweak: impl FnOnce(&mut IpmiSettings)) -> Ipmitool {
    let mut s = IpmiSettings {
        command_timeout_secs: 15,
        command_retry_timeout_secs: 5,
        min_command_interval_ms: 20,
        lan_timeout_secs: 1,
        lan_retries: 2,
        power_state_change_timeout_secs: 30,
        soft_power_off_timeout_secs: 3,
        poll_interval_ms: 100,
        ..IpmiSettings::default()
    };
    tweak(&mut s);
    Ipmitool::new(s, None).unwrap()
}

fn admin(sim: &IpmiSim, tool: &Ipmitool) -> IpmiClient {
    tool.client_for(&sim.driver_info()).unwrap()
}

/// A live QEMU process (a zombie or a recycled PID would not have this command line).
fn qemu_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains("qemu-system"))
}

/// Waits until the guest's serial console, from byte `from` on (it is appended across boots),
/// shows `needle`, and returns that part; on timeout, fails with its tail and QEMU's log.
async fn wait_for_console(sim: &IpmiSim, from: usize, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let console = sim.board.console();
        let new = console.get(from..).unwrap_or_default();
        if new.contains(needle) {
            return new.to_string();
        }
        if started.elapsed() > BOOT_LIMIT {
            let tail: Vec<&str> = new.lines().rev().take(40).collect();
            panic!(
                "{needle:?} not on the console within {BOOT_LIMIT:?}; console tail (newest first):\n{}\nQEMU log:\n{}",
                tail.join("\n"),
                sim.board.qemu_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn request(device: BootDevice, persistent: bool, efi: bool) -> BootDeviceRequest {
    BootDeviceRequest {
        device,
        persistent,
        efi,
    }
}

#[tokio::test]
async fn power_on_status_and_off_drive_a_real_guest() {
    let test = "ipmi_client::power_on_status_and_off_drive_a_real_guest";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tool = tool(|_| {});
    let bmc = admin(&sim, &tool);
    assert_eq!(bmc.power_status().await.unwrap(), PowerStatus::Off);
    assert_eq!(sim.power_by_hand(), "off");
    assert!(sim.board.running_pid().is_none());

    let t0 = Instant::now();
    bmc.power_on(None).await.unwrap();
    let on_after = t0.elapsed();
    assert_eq!(bmc.power_status().await.unwrap(), PowerStatus::On);
    assert_eq!(sim.power_by_hand(), "on");
    let pid = sim.board.running_pid().expect("no guest after power on");
    assert!(qemu_alive(pid));
    // The guest really runs: the kit's /init prints its marker and the command line the
    // board gave it (disk, the default boot device: the "installed OS").
    let cmdline = format!(
        "{}console=ttyS0 ipmi_boot=1 ipmi_bootdev=default",
        support::guest::CMDLINE_PREFIX
    );
    let console = wait_for_console(&sim, 0, &cmdline).await;
    let booted = t0.elapsed();
    assert!(console.contains(support::guest::MARKER), "{console}");

    let t1 = Instant::now();
    bmc.power_off(None).await.unwrap();
    let off_after = t1.elapsed();
    assert_eq!(bmc.power_status().await.unwrap(), PowerStatus::Off);
    assert_eq!(sim.power_by_hand(), "off");
    assert!(!qemu_alive(pid), "QEMU {pid} still runs after power off");
    let events = sim.board.events();
    let on = events.iter().position(|e| e == "set power 1").unwrap();
    let off = events.iter().position(|e| e == "set power 0").unwrap();
    assert!(on < off, "{events:?}");
    assert_eq!(sim.board.boots().len(), 1);
    eprintln!("power on {on_after:?}, guest marker {booted:?} after it, power off {off_after:?}");
}

#[tokio::test]
async fn reset_cycle_and_reboot_restart_the_guest() {
    let test = "ipmi_client::reset_cycle_and_reboot_restart_the_guest";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tool = tool(|_| {});
    let bmc = admin(&sim, &tool);
    bmc.power_on(None).await.unwrap();
    let first = sim.board.running_pid().unwrap();

    // The board resets cold (stop + start with the current boot device): a new process.
    bmc.power_reset(None).await.unwrap();
    let second = sim.board.running_pid().expect("no guest after reset");
    assert_ne!(first, second);
    assert!(!qemu_alive(first) && qemu_alive(second));
    assert_eq!(sim.power_by_hand(), "on");
    assert!(sim.board.events().contains(&"set reset 1".to_string()));

    // ipmi_sim cycles as "power 0" now and "power 1" one second later, from its own timer.
    let before = sim.board.events().len();
    let t0 = Instant::now();
    bmc.power_cycle(None).await.unwrap();
    let cycled = t0.elapsed();
    let third = sim.board.running_pid().expect("no guest after cycle");
    assert!(!qemu_alive(second) && qemu_alive(third));
    let events = sim.board.events()[before..].to_vec();
    let off = events.iter().position(|e| e == "set power 0").unwrap();
    let on = events.iter().position(|e| e == "set power 1").unwrap();
    assert!(off < on, "{events:?}");
    assert!(cycled >= Duration::from_millis(900), "{cycled:?}");

    // Reboot is Ironic's: off, then on.
    let before = sim.board.events().len();
    bmc.set_power_state(PowerState::Rebooting, None)
        .await
        .unwrap();
    let fourth = sim.board.running_pid().expect("no guest after reboot");
    assert!(!qemu_alive(third) && qemu_alive(fourth));
    let events: Vec<String> = sim.board.events()[before..]
        .iter()
        .filter(|e| e.starts_with("set "))
        .cloned()
        .collect();
    assert_eq!(events, ["set power 0", "set power 1"]);
    assert_eq!(sim.board.boots().len(), 4);

    assert_eq!(
        bmc.set_power_state(PowerState::Off, None).await.unwrap(),
        PowerStatus::Off
    );
    assert!(!qemu_alive(fourth));
    assert_eq!(sim.power_by_hand(), "off");
}

#[tokio::test]
async fn soft_power_off_that_never_completes_falls_back_to_hard_off() {
    let test = "ipmi_client::soft_power_off_that_never_completes_falls_back_to_hard_off";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let tool = tool(|_| {});
    let bmc = admin(&sim, &tool);
    bmc.power_on(None).await.unwrap();
    let pid = sim.board.running_pid().unwrap();

    let t0 = Instant::now();
    let outcome = bmc
        .soft_power_off(Some(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        SoftOff::ForcedOff {
            waited: Duration::from_secs(3)
        }
    );
    assert!(t0.elapsed() >= Duration::from_secs(3));
    // The button really reached QEMU, the guest ignored it, then the hard power off.
    let events = sim.board.events();
    let soft = events.iter().position(|e| e == "set shutdown 1").unwrap();
    assert_eq!(events[soft + 1], "acpi power button sent", "{events:?}");
    let off = events.iter().position(|e| e == "set power 0").unwrap();
    assert!(soft < off, "{events:?}");
    assert!(!qemu_alive(pid));
    assert_eq!(sim.power_by_hand(), "off");
}

#[tokio::test]
async fn soft_power_off_completes_when_the_os_obeys() {
    let test = "ipmi_client::soft_power_off_completes_when_the_os_obeys";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    sim.board.behave(|b| b.obey_soft_off = true);
    let tool = tool(|_| {});
    let bmc = admin(&sim, &tool);
    bmc.power_on(None).await.unwrap();
    let pid = sim.board.running_pid().unwrap();

    let outcome = bmc
        .set_power_state(PowerState::SoftOff, Some(Duration::from_secs(20)))
        .await;
    assert_eq!(outcome.unwrap(), PowerStatus::Off);
    assert!(!qemu_alive(pid));
    // Off by itself: the BMC was never asked for a hard power off.
    let events = sim.board.events();
    assert!(events.contains(&"set shutdown 1".to_string()), "{events:?}");
    assert!(!events.contains(&"set power 0".to_string()), "{events:?}");
    // The same through soft_power_off, which says how it ended.
    bmc.power_on(None).await.unwrap();
    let outcome = bmc
        .soft_power_off(Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(
        matches!(outcome, SoftOff::Completed { after } if after < Duration::from_secs(20)),
        "{outcome:?}; board events {:?}",
        sim.board.events()
    );
}

#[tokio::test]
async fn boot_devices_are_set_read_back_and_reach_the_guest() {
    let test = "ipmi_client::boot_devices_are_set_read_back_and_reach_the_guest";
    let Some(sim) = IpmiSim::start(test, true) else {
        return;
    };
    let lenient = tool(|s| s.boot_flags_check = BootFlagsCheck::Device);
    let bmc = admin(&sim, &lenient);
    // (asked, what ipmi_sim hands the board, what `bootparam get 5` prints)
    let cases = [
        (request(BootDevice::Pxe, false, false), "pxe", "Force PXE"),
        (
            request(BootDevice::Disk, true, false),
            "default",
            "Force Boot from default Hard-Drive",
        ),
        (
            request(BootDevice::Cdrom, false, true),
            "cdrom",
            "Force Boot from CD/DVD",
        ),
        (
            request(BootDevice::Bios, true, true),
            "bios",
            "Force Boot into BIOS Setup",
        ),
        (request(BootDevice::Pxe, true, true), "pxe", "Force PXE"),
    ];
    for (asked, stored, text) in cases {
        let held = bmc.set_boot_device(asked).await.unwrap();
        assert_eq!(held.device(), Some(asked.device), "{asked}");
        // ipmi_sim's quirk: only the device survives.
        assert!(!held.persistent && !held.efi && !held.valid, "{held}");
        assert_eq!(bmc.get_boot_device().await.unwrap(), held);
        assert_eq!(sim.board.stored_boot(), stored);
        let (ok, out, err) = sim.ipmitool(&["chassis", "bootparam", "get", "5"]);
        assert!(ok, "{err}");
        assert!(
            out.contains(&format!("Boot Device Selector : {text}")),
            "{out}"
        );
        assert_eq!(
            sim.board.events().last().map(String::as_str),
            Some("get boot"),
        );
        assert!(sim.board.events().contains(&format!("set boot {stored}")));
    }

    // The strict default reports the loss, naming what was asked and what the BMC holds.
    let strict = admin(&sim, &tool(|_| {}));
    let err = strict
        .set_boot_device(request(BootDevice::Disk, true, false))
        .await
        .unwrap_err();
    match &err {
        IpmiError::BootDeviceMismatch { held, .. } => {
            assert_eq!(held.selector, BootSelector::Disk)
        }
        other => panic!("{other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{}", sim.port)), "{msg}");
    assert!(
        msg.contains("asked for disk (persistent, legacy BIOS)"),
        "{msg}"
    );
    assert!(
        msg.contains("holds disk (next boot only, legacy BIOS"),
        "{msg}"
    );
    let held = strict
        .set_boot_device(request(BootDevice::Pxe, false, false))
        .await
        .unwrap();
    assert_eq!(held.selector, BootSelector::Pxe);

    // The next power on boots the way the boot device says: iPXE for pxe...
    bmc.power_on(None).await.unwrap();
    let boot = sim.board.boots().last().cloned().unwrap();
    assert_eq!(boot.bootdev, "pxe");
    assert!(
        boot.qemu_args.join(" ").contains("-boot order=n"),
        "{boot:?}"
    );
    let out = wait_for_console(&sim, 0, "Booting from DVD/CD").await;
    let ipxe = out
        .find("iPXE initialising devices")
        .expect("iPXE never ran");
    assert!(
        ipxe < out.find("Booting from DVD/CD").unwrap(),
        "network first:\n{out}"
    );
    // ...and the CD for cdrom, at the next reset.
    bmc.set_boot_device(request(BootDevice::Cdrom, false, false))
        .await
        .unwrap();
    let before = sim.board.console().len();
    bmc.power_reset(None).await.unwrap();
    let boot = sim.board.boots().last().cloned().unwrap();
    assert_eq!(boot.bootdev, "cdrom");
    assert!(
        boot.qemu_args.join(" ").contains("-boot order=d"),
        "{boot:?}"
    );
    let out = wait_for_console(&sim, before, "Booting from DVD/CD").await;
    let cd = out.find("Booting from DVD/CD").unwrap();
    let ipxe = out.find("iPXE initialising devices");
    assert!(ipxe.is_none_or(|at| at > cd), "CD first:\n{out}");
    bmc.power_off(None).await.unwrap();
    assert_eq!(sim.board.boots().len(), 2);
}

#[tokio::test]
async fn wrong_credentials_are_an_authentication_error_naming_the_bmc() {
    let test = "ipmi_client::wrong_credentials_are_an_authentication_error_naming_the_bmc";
    let Some(sim) = IpmiSim::start(test, false) else {
        return;
    };
    let tool = tool(|s| s.command_retry_timeout_secs = 10);
    for (user, password) in [(ADMIN.0, "Wr0ng-pw-42"), ("nosuchuser", ADMIN.1)] {
        let bmc = tool
            .client_for(&sim.driver_info_as(user, password))
            .unwrap();
        let t0 = Instant::now();
        let err = bmc.power_status().await.unwrap_err();
        let took = t0.elapsed();
        assert!(
            matches!(err, IpmiError::Authentication { .. }),
            "{user}: {err}"
        );
        // Not retried (BMCs lock accounts out): well under the 10 s retry window.
        assert!(took < Duration::from_secs(3), "{user}: {took:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("BMC 127.0.0.1:{}", sim.port)),
            "{msg}"
        );
        assert!(msg.contains("`power status`"), "{msg}");
        assert!(msg.contains("RAKP 2"), "{msg}");
        assert!(!msg.contains(password), "{msg}");
    }
    // The right ones work on the same BMC.
    assert_eq!(
        admin(&sim, &tool).power_status().await.unwrap(),
        PowerStatus::Off
    );
}

#[tokio::test]
async fn an_unreachable_bmc_fails_within_bounds() {
    let test = "ipmi_client::an_unreachable_bmc_fails_within_bounds";
    if !support::require_peer(test, &["ipmitool"]) {
        return;
    }
    // Bound and never read: datagrams vanish without an ICMP error, like a BMC that is down.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let tool = tool(|s| {
        s.lan_timeout_secs = 1;
        s.lan_retries = 1;
        s.command_timeout_secs = 10;
        s.command_retry_timeout_secs = 3;
        s.min_command_interval_ms = 500;
    });
    let bmc = tool
        .client_for(
            json!({"ipmi_address": "127.0.0.1", "ipmi_port": port,
                   "ipmi_username": "admin", "ipmi_password": "Unr3ach-pw"})
            .as_object()
            .unwrap(),
        )
        .unwrap();
    let t0 = Instant::now();
    let err = bmc.power_status().await.unwrap_err();
    let took = t0.elapsed();
    match &err {
        IpmiError::Unreachable { attempts, .. } => assert!(*attempts >= 2, "{err}"),
        other => panic!("{other}"),
    }
    // Each try is bounded by -N 1 -R 1 (~2 s); tries stop once 3 s have passed.
    assert!(took < Duration::from_secs(9), "{took:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "BMC 127.0.0.1:{port} did not answer `power status`"
        )),
        "{msg}"
    );
    assert!(!msg.contains("Unr3ach-pw"), "{msg}");
    eprintln!("unreachable BMC reported after {took:?}: {msg}");
}

#[tokio::test]
async fn a_bmc_that_refuses_boot_devices_is_reported() {
    let test = "ipmi_client::a_bmc_that_refuses_boot_devices_is_reported";
    let Some(sim) = IpmiSim::start(test, false) else {
        return;
    };
    let tool = tool(|_| {});
    // A user-privilege session: reads are allowed, the BMC refuses Set System Boot Options
    // (completion code 0xd4) and ipmitool still exits 0.
    let mut info = sim.driver_info_as(VIEWER.0, VIEWER.1);
    info.insert("ipmi_priv_level".into(), json!("USER"));
    let viewer = tool.client_for(&info).unwrap();
    assert_eq!(viewer.power_status().await.unwrap(), PowerStatus::Off);
    let err = viewer
        .set_boot_device(request(BootDevice::Pxe, false, false))
        .await
        .unwrap_err();
    match &err {
        IpmiError::Refused {
            command, stderr, ..
        } => {
            assert_eq!(command, "chassis bootdev pxe");
            assert!(stderr.contains("Insufficient privilege level"), "{stderr}");
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains(&format!("BMC 127.0.0.1:{}", sim.port))
    );
    assert!(!sim.board.events().iter().any(|e| e.starts_with("set boot")));
    // Power control is refused too (there ipmitool exits 1).
    let err = viewer.power_on(None).await.unwrap_err();
    assert!(matches!(err, IpmiError::Refused { .. }), "{err}");

    // A board that refuses the device: ipmi_sim answers 0xff, ipmitool exits 0.
    let bmc = admin(&sim, &tool);
    sim.board.behave(|b| b.refuse_boot_devices = true);
    let err = bmc
        .set_boot_device(request(BootDevice::Cdrom, false, false))
        .await
        .unwrap_err();
    match &err {
        IpmiError::Refused { stderr, .. } => {
            assert!(stderr.contains("Unspecified error"), "{stderr}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(sim.board.stored_boot(), "default");

    // A BMC that accepts the device and holds another: only the read-back can tell.
    sim.board.behave(|b| {
        b.refuse_boot_devices = false;
        b.claim_boot = Some("cdrom");
    });
    let err = bmc
        .set_boot_device(request(BootDevice::Pxe, false, false))
        .await
        .unwrap_err();
    match &err {
        IpmiError::BootDeviceMismatch { asked, held, .. } => {
            assert_eq!(asked.device, BootDevice::Pxe);
            assert_eq!(held.selector, BootSelector::Cdrom);
        }
        other => panic!("{other}"),
    }
    assert_eq!(sim.board.stored_boot(), "pxe");
}

/// Collects `tracing` output of the current thread (the test's runtime is single-threaded).
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_password_never_reaches_a_command_line_an_error_or_a_log() {
    let test = "ipmi_client::the_password_never_reaches_a_command_line_an_error_or_a_log";
    let Some(sim) = IpmiSim::start(test, false) else {
        return;
    };
    // With a single registered dispatcher, tracing-core computes a callsite's interest
    // against whichever thread registers it first, and other tests' threads have none
    // ("never"). A second, inert dispatcher makes it consult every registered one.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // 1. Every ipmitool the client starts, through a wrapper that records its arguments.
    let argv_log = sim.dir().join("argv.log");
    let wrapper = sim.dir().join("ipmitool-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\nprintf '%s\\n' \"ARGS $*\" >> {}\nexec ipmitool \"$@\"\n",
            argv_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapped = tool(|s| s.ipmitool = wrapper.clone());
    let bmc = admin(&sim, &wrapped);
    assert_eq!(bmc.power_status().await.unwrap(), PowerStatus::Off);
    bmc.set_boot_device(request(BootDevice::Pxe, false, false))
        .await
        .unwrap();
    let wrong = wrapped
        .client_for(&sim.driver_info_as(ADMIN.0, "Wr0ng-pw-99"))
        .unwrap();
    let auth_err = wrong.power_status().await.unwrap_err().to_string();
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert_eq!(argv.lines().count(), 5, "{argv}");
    for line in argv.lines() {
        assert!(line.contains(" -E "), "{line}");
        assert!(
            !line.contains(ADMIN.1) && !line.contains("Wr0ng-pw-99"),
            "{line}"
        );
        assert!(!line.contains(" -P"), "{line}");
    }

    // 2. A running ipmitool seen from outside, as `ps` would (a silent BMC keeps it running).
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let slow = tool(|s| {
        s.lan_timeout_secs = 1;
        s.lan_retries = 2;
        s.command_retry_timeout_secs = 0;
    });
    let silent_bmc = slow
        .client_for(
            &json!({"ipmi_address": "127.0.0.1", "ipmi_port": port,
                            "ipmi_username": "admin", "ipmi_password": ADMIN.1})
            .as_object()
            .unwrap()
            .clone(),
        )
        .unwrap();
    let watcher = tokio::task::spawn_blocking(move || support::ipmi_sim::watch_ipmitool(port));
    let unreachable = silent_bmc.power_status().await.unwrap_err().to_string();
    let (cmdline, environ) = watcher
        .await
        .unwrap()
        .expect("never saw the ipmitool process");
    assert!(cmdline.contains(&format!("-p\0{port}\0")), "{cmdline:?}");
    assert!(!cmdline.contains(ADMIN.1), "{cmdline:?}");
    // It is in the environment, which only the owner (and root) can read.
    assert!(environ.contains(&format!("IPMI_PASSWORD={}", ADMIN.1)));

    // 3. Errors and logs.
    for msg in [&auth_err, &unreachable] {
        assert!(
            !msg.contains(ADMIN.1) && !msg.contains("Wr0ng-pw-99"),
            "{msg}"
        );
    }
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(logged.contains("ipmitool ran"), "nothing logged:\n{logged}");
    assert!(logged.contains("RAKP 2 HMAC is invalid"), "{logged}");
    assert!(
        !logged.contains(ADMIN.1) && !logged.contains("Wr0ng-pw-99"),
        "{logged}"
    );
}

#[tokio::test]
async fn ipmi_1_5_works_and_an_unsupported_cipher_suite_is_refused() {
    let test = "ipmi_client::ipmi_1_5_works_and_an_unsupported_cipher_suite_is_refused";
    let Some(sim) = IpmiSim::start(test, false) else {
        return;
    };
    let tool = tool(|_| {});
    let mut lan = sim.driver_info();
    lan.insert("ipmi_protocol_version".into(), json!("1.5"));
    let bmc = tool.client_for(&lan).unwrap();
    assert_eq!(bmc.power_status().await.unwrap(), PowerStatus::Off);

    // Suites 15-17 (SHA-256) are not in ipmi_sim.
    let mut sha256 = sim.driver_info();
    sha256.insert("ipmi_cipher_suite".into(), json!(17));
    let err = tool
        .client_for(&sha256)
        .unwrap()
        .power_status()
        .await
        .unwrap_err();
    assert!(matches!(err, IpmiError::Authentication { .. }), "{err}");
    assert!(
        err.to_string().contains("invalid authentication algorithm"),
        "{err}"
    );
}
