//! The client against a stand-in ipmitool (a bash script): argument and environment
//! hand-over, timeouts, retries, per-BMC serialisation, refusals ipmitool exits 0 on, the
//! boot-device read-back and the soft power off fallback. The real ipmitool against a real
//! BMC simulator is in `tests/it/ipmi_client.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

struct Fake {
    dir: tempfile::TempDir,
}

impl Fake {
    /// A stand-in ipmitool whose body sees `$LOG` (a log file in its directory) and `$DIR`.
    fn new(body: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = format!(
            "#!/bin/bash\nDIR={d}\nLOG={d}/log\n{body}\n",
            d = dir.path().display()
        );
        let path = dir.path().join("ipmitool");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("ipmitool")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tool(&self, tweak: impl FnOnce(&mut IpmiSettings)) -> Ipmitool {
        let mut s = IpmiSettings {
            ipmitool: self.path(),
            command_timeout_secs: 3,
            command_retry_timeout_secs: 0,
            min_command_interval_ms: 10,
            lan_timeout_secs: 1,
            lan_retries: 1,
            poll_interval_ms: 20,
            ..IpmiSettings::default()
        };
        tweak(&mut s);
        Ipmitool::new(s, Some(IpmiMetrics::default())).unwrap()
    }
}

fn client(tool: &Ipmitool, port: u16) -> IpmiClient {
    tool.client_for(
        json!({
            "ipmi_address": "127.0.0.1",
            "ipmi_port": port,
            "ipmi_username": "admin",
            "ipmi_password": "pw-Zq81x",
        })
        .as_object()
        .unwrap(),
    )
    .unwrap()
}

const PXE: BootDeviceRequest = BootDeviceRequest {
    device: BootDevice::Pxe,
    persistent: false,
    efi: false,
};

#[tokio::test]
async fn password_goes_through_the_environment_only() {
    let fake = Fake::new(
        r#"echo "ARGS $*" >> $LOG; echo "ENV $(env | sort | tr '\n' ' ')" >> $LOG
echo "Chassis Power is on""#,
    );
    let tool = fake.tool(|_| {});
    assert_eq!(
        client(&tool, 623).power_status().await.unwrap(),
        PowerStatus::On
    );
    let log = fake.log();
    let args = log.lines().find(|l| l.starts_with("ARGS")).unwrap();
    assert_eq!(
        args,
        "ARGS -I lanplus -H 127.0.0.1 -p 623 -L ADMINISTRATOR -U admin -C 3 -E -N 1 -R 1 -v power status"
    );
    let env = log.lines().find(|l| l.starts_with("ENV")).unwrap();
    assert!(env.contains("IPMI_PASSWORD=pw-Zq81x"), "{env}");
    assert!(env.contains("LC_ALL=C"), "{env}");
    // Nothing of the caller's environment but PATH.
    assert!(!env.contains("HOME="), "{env}");
}

#[tokio::test]
async fn a_hanging_ipmitool_is_killed_at_the_timeout() {
    let fake = Fake::new("echo $$ > $DIR/pid\nexec sleep 30");
    let tool = fake.tool(|_| {});
    let started = Instant::now();
    let err = client(&tool, 623).power_status().await.unwrap_err();
    assert!(
        matches!(err, IpmiError::Timeout { attempts: 1, .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:623") && msg.contains("power status"),
        "{msg}"
    );
    let pid = std::fs::read_to_string(fake.dir().join("pid")).unwrap();
    // Killed: gone, or a zombie waiting for tokio's reaper (empty cmdline).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        if cmdline.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} still runs {cmdline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const NO_ANSWER: &str = r#"echo try >> $LOG
echo "Get Auth Capabilities error" >&2
echo "Error: Unable to establish IPMI v2 / RMCP+ session" >&2
exit 1"#;

#[tokio::test]
async fn silence_is_retried_within_the_retry_timeout() {
    let fake = Fake::new(NO_ANSWER);
    let tool = fake.tool(|s| {
        s.command_retry_timeout_secs = 1;
        s.min_command_interval_ms = 150;
    });
    let started = Instant::now();
    let err = client(&tool, 623).power_status().await.unwrap_err();
    let tries = fake.log().lines().count() as u32;
    match &err {
        IpmiError::Unreachable { attempts, .. } => assert_eq!(*attempts, tries),
        other => panic!("{other}"),
    }
    assert!(tries >= 3, "{tries} tries");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.to_string().contains("Get Auth Capabilities error"),
        "{err}"
    );
}

#[tokio::test]
async fn authentication_failures_are_not_retried_and_hide_the_password() {
    let fake = Fake::new(
        r#"echo try >> $LOG
echo "Loading IANA PEN Registry..." >&2
echo "> RAKP 2 HMAC is invalid" >&2
echo "Error: Unable to establish IPMI v2 / RMCP+ session" >&2
exit 1"#,
    );
    let tool = fake.tool(|s| s.command_retry_timeout_secs = 5);
    let err = client(&tool, 6230).power_on(None).await.unwrap_err();
    assert!(matches!(err, IpmiError::Authentication { .. }), "{err}");
    assert_eq!(fake.log().lines().count(), 1);
    let msg = err.to_string();
    assert!(msg.contains("127.0.0.1:6230"), "{msg}");
    assert!(msg.contains("`power on`"), "{msg}");
    assert!(msg.contains("RAKP 2 HMAC is invalid"), "{msg}");
    assert!(!msg.contains("Loading IANA"), "{msg}");
    assert!(!msg.contains("pw-Zq81x"), "{msg}");
}

#[tokio::test]
async fn one_command_at_a_time_per_bmc() {
    let fake = Fake::new(
        r#"echo "start $(date +%s.%N)" >> $LOG; sleep 0.2; echo "end $(date +%s.%N)" >> $LOG
echo "Chassis Power is off""#,
    );
    let tool = fake.tool(|s| s.min_command_interval_ms = 100);
    // Two nodes' clients, same BMC: the registry is shared through the Ipmitool.
    let (a, b) = (client(&tool, 623), client(&tool, 623));
    let (x, y, z) = tokio::join!(a.power_status(), b.power_status(), a.power_status());
    for r in [x, y, z] {
        assert_eq!(r.unwrap(), PowerStatus::Off);
    }
    let events: Vec<(String, f64)> = fake
        .log()
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').unwrap();
            (what.to_string(), at.parse().unwrap())
        })
        .collect();
    assert_eq!(events.len(), 6, "{events:?}");
    for pair in events.chunks(2) {
        assert_eq!(
            (pair[0].0.as_str(), pair[1].0.as_str()),
            ("start", "end"),
            "{events:?}"
        );
    }
    for w in events.windows(2).skip(1).step_by(2) {
        // end of one run → start of the next: at least the interval.
        assert!(w[1].1 - w[0].1 >= 0.1, "{events:?}");
    }
}

#[tokio::test]
async fn a_refused_boot_device_is_an_error_although_ipmitool_exits_0() {
    let fake = Fake::new(
        r#"echo "$*" >> $LOG
case "$*" in
  *bootdev*) echo "Set Chassis Boot Parameter 5 failed: Insufficient privilege level" >&2 ;;
esac
exit 0"#,
    );
    let tool = fake.tool(|_| {});
    let err = client(&tool, 623).set_boot_device(PXE).await.unwrap_err();
    match &err {
        IpmiError::Refused {
            stderr, command, ..
        } => {
            assert_eq!(command, "chassis bootdev pxe");
            assert!(stderr.contains("Insufficient privilege level"), "{stderr}");
        }
        other => panic!("{other}"),
    }
    // Boot parameter 3 first, as Ironic does; no read-back after a refusal.
    let log = fake.log();
    let cmds: Vec<&str> = log
        .lines()
        .map(|l| l.split(" -v ").nth(1).unwrap())
        .collect();
    assert_eq!(cmds, ["raw 0x00 0x08 0x03 0x08", "chassis bootdev pxe"]);
}

#[tokio::test]
async fn the_read_back_decides() {
    // The BMC accepts everything and always holds "disk, next boot only".
    let fake = Fake::new(
        r#"echo "$*" >> $LOG
case "$*" in
  *"bootparam get 5"*) echo "Boot parameter data: 0008000000" ;;
  *bootdev*) echo "Set Boot Device to $9" ;;
esac
exit 0"#,
    );
    let tool = fake.tool(|_| {});
    let c = client(&tool, 623);
    let err = c.set_boot_device(PXE).await.unwrap_err();
    match &err {
        IpmiError::BootDeviceMismatch { asked, held, .. } => {
            assert_eq!(*asked, PXE);
            assert_eq!(held.selector, BootSelector::Disk);
        }
        other => panic!("{other}"),
    }
    assert_eq!(
        err.to_string(),
        "BMC 127.0.0.1:623 did not keep the boot device: asked for pxe (next boot only, legacy BIOS), \
         boot parameter 5 now holds disk (next boot only, legacy BIOS; flags not marked valid)"
    );
    let disk = BootDeviceRequest {
        device: BootDevice::Disk,
        persistent: true,
        efi: false,
    };
    // Strict: persistence lost is a mismatch; device-only: accepted, flags returned.
    assert!(matches!(
        c.set_boot_device(disk).await,
        Err(IpmiError::BootDeviceMismatch { .. })
    ));
    let lenient = fake.tool(|s| s.boot_flags_check = BootFlagsCheck::Device);
    let held = client(&lenient, 623).set_boot_device(disk).await.unwrap();
    assert!(!held.persistent);
    assert!(
        fake.log()
            .contains("chassis bootdev disk options=persistent")
    );
}

#[tokio::test]
async fn soft_power_off_falls_back_to_hard_off() {
    // A BMC whose node ignores the power button: only `power off` turns it off.
    let fake = Fake::new(
        r#"echo "$*" >> $LOG
case "$*" in
  *"power status") if [ -e $DIR/off ]; then echo "Chassis Power is off"; else echo "Chassis Power is on"; fi ;;
  *"power off") touch $DIR/off; echo "Chassis Power Control: Down/Off" ;;
  *"power soft") echo "Chassis Power Control: Soft" ;;
esac"#,
    );
    let tool = fake.tool(|_| {});
    let started = Instant::now();
    let out = client(&tool, 623)
        .soft_power_off(Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(
        out,
        SoftOff::ForcedOff {
            waited: Duration::from_millis(300)
        }
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let log = fake.log();
    let soft = log.find("power soft").unwrap();
    let off = log.find("power off").unwrap();
    assert!(soft < off, "{log}");
    assert_eq!(
        tool.metrics().unwrap().soft_off_fallbacks.get(),
        1,
        "fallback counted"
    );
}

#[tokio::test]
async fn a_power_state_never_reached_fails_after_the_timeout() {
    let fake = Fake::new(r#"case "$*" in *"power status") echo "Chassis Power is off" ;; esac"#);
    let tool = fake.tool(|_| {});
    let err = client(&tool, 623)
        .power_on(Some(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IpmiError::PowerStateTimeout {
                target: PowerStatus::On,
                last: PowerStatus::Off,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`power on`"), "{err}");
}

#[tokio::test]
async fn a_missing_ipmitool_is_named() {
    let fake = Fake::new("");
    let tool = fake.tool(|s| s.ipmitool = PathBuf::from("/nonexistent/ipmitool"));
    let err = client(&tool, 623).power_status().await.unwrap_err();
    assert!(matches!(err, IpmiError::Spawn { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ipmitool"), "{err}");
}
