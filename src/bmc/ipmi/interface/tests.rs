//! The `ipmitool` interfaces against a stand-in ipmitool (a bash script keeping the chassis
//! power and boot parameter 5 in files): what they send for a node, how driver_info and
//! failures reach the conductor, and `ipmi_force_boot_device`. The real ipmitool against
//! ipmi_sim, through `ironboot serve`, is in `tests/it/ipmi_hardware.rs`.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use super::*;
use crate::bmc::ipmi::{IpmiSettings, Ipmitool};
use crate::driver::{BootTarget, ManagementInterface, PowerError, PowerInterface};
use crate::model::{HardwareType, PowerState};

/// A BMC in a script: `power status|on|off`, `chassis bootdev <dev> [options=...]` (boot
/// parameter 5 as the IPMI spec encodes it), `chassis bootparam get 5`, `raw` (accepted).
/// `$DIR/refuse` makes power commands fail as a BMC refusing them does.
const BMC: &str = r#"echo "$*" >> $LOG
while [ "$1" != "-v" ]; do shift; done; shift
case "$1 $2" in
  "power status") echo "Chassis Power is $(cat $DIR/power 2>/dev/null || echo off)" ;;
  "power on"|"power off")
    if [ -e $DIR/refuse ]; then
      echo "Set Chassis Power Control to Up/On failed: Insufficient privilege level" >&2; exit 1
    fi
    echo "${2}" > $DIR/power; echo "Chassis Power Control: ok" ;;
  "chassis bootdev")
    case $3 in pxe) d2=04 ;; disk) d2=08 ;; cdrom) d2=14 ;; bios) d2=18 ;; esac
    d1=$((0x80))
    case "$4" in *persistent*) d1=$((d1 | 0x40)) ;; esac
    case "$4" in *efiboot*) d1=$((d1 | 0x20)) ;; esac
    printf '%02x%s000000\n' $d1 $d2 > $DIR/bootparam; echo "Set Boot Device to $3" ;;
  "chassis bootparam") echo "Boot parameter data: $(cat $DIR/bootparam 2>/dev/null || echo 0000000000)" ;;
  "raw 0x00") ;;
  *) echo "unexpected: $*" >&2; exit 1 ;;
esac"#;

struct Bmc {
    dir: tempfile::TempDir,
    tool: Ipmitool,
}

impl Bmc {
    fn new() -> Bmc {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipmitool");
        let script = format!(
            "#!/bin/bash\nDIR={d}\nLOG={d}/log\n{BMC}\n",
            d = dir.path().display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let settings = IpmiSettings {
            ipmitool: path,
            command_timeout_secs: 5,
            command_retry_timeout_secs: 0,
            min_command_interval_ms: 0,
            lan_timeout_secs: 1,
            lan_retries: 1,
            poll_interval_ms: 10,
            ..IpmiSettings::default()
        };
        let tool = Ipmitool::new(settings, None).unwrap();
        Bmc { dir, tool }
    }

    /// The commands ipmitool was run with (session options dropped), oldest first.
    fn commands(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(" -v ").map(|(_, cmd)| cmd.to_string()))
            .filter(|c| !c.starts_with("raw "))
            .collect()
    }

    fn clear_log(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("log"));
    }

    fn power(&self) -> IpmitoolPower {
        IpmitoolPower::new(self.tool.clone(), BootMode::Bios)
    }

    fn management(&self) -> IpmitoolManagement {
        IpmitoolManagement::new(self.tool.clone(), BootMode::Bios)
    }
}

fn ctx(extra: serde_json::Value) -> NodeContext {
    let mut node = Node::new(
        uuid::Uuid::new_v4(),
        HardwareType::find("ipmi").unwrap(),
        crate::model::now(),
    );
    node.name = Some("rack1-n7".into());
    let mut info = json!({
        "ipmi_address": "127.0.0.1",
        "ipmi_username": "admin",
        "ipmi_password": "S3cret-pw-19",
    });
    for (k, v) in extra.as_object().unwrap() {
        info[k] = v.clone();
    }
    node.driver_info = info.as_object().unwrap().clone();
    NodeContext::new(node, vec![])
}

#[tokio::test]
async fn boot_devices_carry_persistence_and_the_nodes_boot_mode() {
    let bmc = Bmc::new();
    let mgmt = bmc.management();
    let mut bios = ctx(json!({}));
    mgmt.set_boot_device(&mut bios, BootTarget::once(BootDevice::Pxe))
        .await
        .unwrap();
    let mut uefi = ctx(json!({}));
    uefi.node
        .properties
        .insert("capabilities".into(), json!("boot_mode:uefi"));
    mgmt.set_boot_device(&mut uefi, BootTarget::persistent(BootDevice::Disk))
        .await
        .unwrap();
    assert_eq!(
        bmc.commands(),
        [
            "chassis bootdev pxe",
            "chassis bootparam get 5",
            "chassis bootdev disk options=persistent,efiboot",
            "chassis bootparam get 5",
        ]
    );
    assert_eq!(
        mgmt.get_boot_device(&mut uefi).await.unwrap(),
        Some(BootTarget::persistent(BootDevice::Disk))
    );
    assert_eq!(
        mgmt.supported_boot_devices(&uefi),
        [
            BootDevice::Pxe,
            BootDevice::Disk,
            BootDevice::Cdrom,
            BootDevice::Bios
        ]
    );
    let err = mgmt
        .set_boot_device(&mut bios, BootTarget::once(BootDevice::Floppy))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot boot node rack1-n7 from floppy") && err.contains("pxe, disk"),
        "{err}"
    );
}

#[tokio::test]
async fn power_actions_report_and_record_the_state_the_bmc_reaches() {
    let bmc = Bmc::new();
    let power = bmc.power();
    let mut node = ctx(json!({}));
    assert_eq!(
        power.get_power_state(&mut node).await.unwrap(),
        PowerState::Off
    );
    power
        .set_power_state(&mut node, PowerState::On)
        .await
        .unwrap();
    assert_eq!(node.node.power_state, Some(PowerState::On));
    power
        .set_power_state(&mut node, PowerState::Rebooting)
        .await
        .unwrap();
    assert_eq!(node.node.power_state, Some(PowerState::On));
    let cmds = bmc.commands();
    let actions: Vec<&String> = cmds.iter().filter(|c| *c != "power status").collect();
    assert_eq!(actions, ["power on", "power off", "power on"], "{cmds:?}");

    // A refusal names the interface, the action, the node and the BMC, keeps the client's
    // error as its cause and never shows the password.
    std::fs::write(bmc.dir.path().join("refuse"), "").unwrap();
    let err = power
        .set_power_state(&mut node, PowerState::Off)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("power interface ipmitool failed to power off node rack1-n7: BMC 127.0.0.1:623 refused `power off`"),
        "{msg}"
    );
    assert!(msg.contains("Insufficient privilege level"), "{msg}");
    assert!(!msg.contains("S3cret-pw-19"), "{msg}");
    let cause = std::error::Error::source(&err).expect("the client's error is kept");
    assert!(cause.downcast_ref::<IpmiError>().is_some(), "{cause:?}");
    assert_eq!(node.node.power_state, Some(PowerState::On));
}

#[tokio::test]
async fn driver_info_is_checked_without_contacting_the_bmc() {
    let bmc = Bmc::new();
    let mut node = ctx(json!({}));
    node.node.driver_info.remove("ipmi_address");
    let err = bmc.power().validate(&node).unwrap_err();
    assert!(matches!(err, PowerError::InvalidDriverInfo { .. }));
    assert_eq!(
        err.to_string(),
        "power interface ipmitool: driver_info is missing or invalid: ipmi_address = (missing): is required"
    );
    let mut node = ctx(json!({"ipmi_password": "x".repeat(21)}));
    let err = bmc.management().validate(&node).unwrap_err().to_string();
    assert!(err.contains("ipmi_password = ******"), "{err}");
    assert!(!err.contains(&"x".repeat(21)), "{err}");
    let err = bmc
        .power()
        .get_power_state(&mut node)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ipmi_password"), "{err}");
    bmc.power().validate(&ctx(json!({}))).unwrap();
    assert!(bmc.commands().is_empty(), "{:?}", bmc.commands());
}

#[tokio::test]
async fn force_boot_device_sends_once_and_again_before_every_power_on() {
    let bmc = Bmc::new();
    let (power, mgmt) = (bmc.power(), bmc.management());
    let mut node = ctx(json!({"ipmi_force_boot_device": "true"}));

    // Persistent disk: sent as next-boot-only, remembered, reported as persistent.
    mgmt.set_boot_device(&mut node, BootTarget::persistent(BootDevice::Disk))
        .await
        .unwrap();
    assert_eq!(
        node.node.driver_internal_info["persistent_boot_device"],
        "disk"
    );
    assert_eq!(
        mgmt.get_boot_device(&mut node).await.unwrap(),
        Some(BootTarget::persistent(BootDevice::Disk))
    );
    power
        .set_power_state(&mut node, PowerState::On)
        .await
        .unwrap();
    let sent: Vec<String> = bmc
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("chassis bootdev") || c == "power on")
        .collect();
    assert_eq!(
        sent,
        ["chassis bootdev disk", "chassis bootdev disk", "power on"]
    );

    // A one-time pxe in between is used by the next power on only.
    bmc.clear_log();
    mgmt.set_boot_device(&mut node, BootTarget::once(BootDevice::Pxe))
        .await
        .unwrap();
    assert_eq!(
        node.node.driver_internal_info["is_next_boot_persistent"],
        false
    );
    power
        .set_power_state(&mut node, PowerState::Rebooting)
        .await
        .unwrap();
    assert!(
        !node
            .node
            .driver_internal_info
            .contains_key("is_next_boot_persistent")
    );
    power
        .set_power_state(&mut node, PowerState::Rebooting)
        .await
        .unwrap();
    let sent: Vec<String> = bmc
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("chassis bootdev") || c.starts_with("power o"))
        .collect();
    assert_eq!(
        sent,
        [
            "chassis bootdev pxe",
            "power off",
            "power on",
            "chassis bootdev disk",
            "power off",
            "power on"
        ]
    );
}
