//! Boot device: `chassis bootdev` and the read-back of boot parameter 5 (boot flags).
//!
//! ipmitool exits 0 when the BMC refuses a boot device (it prints `Set Chassis Boot Parameter
//! 5 failed: ...` and carries on), and some BMCs accept the request and keep something else,
//! so every set is followed by `chassis bootparam get 5`. The flags are decoded from the raw
//! `Boot parameter data:` bytes (IPMI 2.0 table 28-14), not from ipmitool's prose:
//! data 1 bit 7 = flags valid, bit 6 = persistent, bit 5 = UEFI; data 2 bits 5..2 = device.
//!
//! The valid bit is reported but never checked: OpenIPMI's ipmi_sim always reads it back as 0
//! while honouring the device, and a BMC may clear it once the firmware has booted.

use std::fmt;

use tracing::{info, warn};

use super::IpmiClient;
use super::classify::clip;
use super::error::IpmiError;
use super::settings::BootFlagsCheck;
use super::tool::Cmd;

/// A boot device ironboot can ask for (Ironic's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    /// Firmware setup.
    Bios,
}

impl BootDevice {
    /// Ironic's name, also ipmitool's `chassis bootdev` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
        }
    }

    /// From Ironic's name (`pxe`, `disk`, `cdrom`, `bios`).
    pub fn from_ironic(name: &str) -> Option<Self> {
        match name {
            "pxe" => Some(BootDevice::Pxe),
            "disk" => Some(BootDevice::Disk),
            "cdrom" => Some(BootDevice::Cdrom),
            "bios" => Some(BootDevice::Bios),
            _ => None,
        }
    }
}

impl fmt::Display for BootDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to set: the device, for every boot or the next one only, in UEFI or legacy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootDeviceRequest {
    pub device: BootDevice,
    pub persistent: bool,
    /// UEFI boot (`options=efiboot`); legacy BIOS otherwise.
    pub efi: bool,
}

impl fmt::Display for BootDeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({})",
            self.device,
            options_text(self.persistent, self.efi)
        )
    }
}

fn options_text(persistent: bool, efi: bool) -> String {
    format!(
        "{}, {}",
        if persistent {
            "persistent"
        } else {
            "next boot only"
        },
        if efi { "UEFI" } else { "legacy BIOS" }
    )
}

/// The device selector of boot flags (data 2, bits 5..2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootSelector {
    NoOverride,
    Pxe,
    Disk,
    DiskSafeMode,
    Diagnostic,
    Cdrom,
    Bios,
    RemoteFloppy,
    RemoteCdrom,
    RemotePrimaryMedia,
    RemoteDisk,
    Floppy,
    Reserved(u8),
}

impl BootSelector {
    fn from_bits(bits: u8) -> Self {
        match bits {
            0x0 => BootSelector::NoOverride,
            0x1 => BootSelector::Pxe,
            0x2 => BootSelector::Disk,
            0x3 => BootSelector::DiskSafeMode,
            0x4 => BootSelector::Diagnostic,
            0x5 => BootSelector::Cdrom,
            0x6 => BootSelector::Bios,
            0x7 => BootSelector::RemoteFloppy,
            0x8 => BootSelector::RemoteCdrom,
            0x9 => BootSelector::RemotePrimaryMedia,
            0xb => BootSelector::RemoteDisk,
            0xf => BootSelector::Floppy,
            other => BootSelector::Reserved(other),
        }
    }

    /// The settable device this selector means, if any.
    pub fn device(self) -> Option<BootDevice> {
        match self {
            BootSelector::Pxe => Some(BootDevice::Pxe),
            BootSelector::Disk => Some(BootDevice::Disk),
            BootSelector::Cdrom => Some(BootDevice::Cdrom),
            BootSelector::Bios => Some(BootDevice::Bios),
            _ => None,
        }
    }

    /// Ironic's name for `GET .../management/boot_device` (`None`: no override or a device
    /// Ironic has no name for).
    pub fn ironic_name(self) -> Option<&'static str> {
        match self {
            BootSelector::DiskSafeMode => Some("safe"),
            BootSelector::Floppy => Some("floppy"),
            other => other.device().map(BootDevice::as_str),
        }
    }
}

impl fmt::Display for BootSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootSelector::NoOverride => f.write_str("no override"),
            BootSelector::DiskSafeMode => f.write_str("disk (safe mode)"),
            BootSelector::Diagnostic => f.write_str("diagnostic partition"),
            BootSelector::RemoteFloppy => f.write_str("remote floppy"),
            BootSelector::RemoteCdrom => f.write_str("remote cdrom"),
            BootSelector::RemotePrimaryMedia => f.write_str("remote primary media"),
            BootSelector::RemoteDisk => f.write_str("remote disk"),
            BootSelector::Floppy => f.write_str("floppy"),
            BootSelector::Reserved(b) => write!(f, "reserved selector {b:#x}"),
            other => f.write_str(other.device().map_or("?", BootDevice::as_str)),
        }
    }
}

/// Boot parameter 5 as the BMC holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootFlags {
    pub selector: BootSelector,
    pub persistent: bool,
    pub efi: bool,
    /// The "boot flags valid" bit (not checked; see the module docs).
    pub valid: bool,
}

impl BootFlags {
    /// Decodes data bytes 1 and 2 of boot parameter 5 (more may follow).
    pub fn from_data(data: &[u8]) -> Option<Self> {
        let [d1, d2, ..] = *data else { return None };
        Some(Self {
            valid: d1 & 0x80 != 0,
            persistent: d1 & 0x40 != 0,
            efi: d1 & 0x20 != 0,
            selector: BootSelector::from_bits((d2 >> 2) & 0x0f),
        })
    }

    /// Reads the `Boot parameter data: 0004000000` line of `chassis bootparam get 5`.
    pub fn parse_bootparam_output(stdout: &str) -> Result<Self, String> {
        let hex = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("Boot parameter data:"))
            .ok_or("no \"Boot parameter data:\" line")?
            .trim();
        let data = hex::decode(hex).map_err(|e| format!("boot parameter data {hex:?}: {e}"))?;
        Self::from_data(&data)
            .ok_or_else(|| format!("boot parameter data {hex:?} is shorter than 2 bytes"))
    }

    /// The device it selects, if ironboot can set it.
    pub fn device(&self) -> Option<BootDevice> {
        self.selector.device()
    }
}

impl fmt::Display for BootFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}",
            self.selector,
            options_text(self.persistent, self.efi)
        )?;
        if !self.valid {
            f.write_str("; flags not marked valid")?;
        }
        f.write_str(")")
    }
}

/// Whether `held` is what `asked` wanted, under `check`.
fn matches(asked: &BootDeviceRequest, held: &BootFlags, check: BootFlagsCheck) -> bool {
    let device = held.device() == Some(asked.device);
    let options = held.persistent == asked.persistent && held.efi == asked.efi;
    match check {
        BootFlagsCheck::Strict => device && options,
        BootFlagsCheck::Device => device,
    }
}

impl IpmiClient {
    /// Sets the boot device and reads it back. Returns what the BMC holds; fails with
    /// [`IpmiError::Refused`] when the BMC refuses it (even though ipmitool exits 0) and with
    /// [`IpmiError::BootDeviceMismatch`] when it holds something else (under `boot_flags_check`).
    pub async fn set_boot_device(&self, asked: BootDeviceRequest) -> Result<BootFlags, IpmiError> {
        if self.info.disable_boot_timeout {
            self.disable_boot_flag_timeout().await?;
        }
        let mut words = vec!["chassis", "bootdev", asked.device.as_str()];
        let options = match (asked.persistent, asked.efi) {
            (true, true) => Some("options=persistent,efiboot"),
            (true, false) => Some("options=persistent"),
            (false, true) => Some("options=efiboot"),
            (false, false) => None,
        };
        words.extend(options);
        let cmd = Cmd {
            label: "chassis bootdev",
            words: &words,
            refused_if: Some("Set Chassis Boot Parameter 5"),
        };
        self.tool.run(&self.info, cmd).await?;
        let held = self.get_boot_device().await?;
        let check = self.tool.settings().boot_flags_check;
        if !matches(&asked, &held, check) {
            if let Some(m) = self.tool.metrics() {
                m.boot_device_mismatches.inc();
            }
            return Err(IpmiError::BootDeviceMismatch {
                bmc: self.info.bmc(),
                asked,
                held,
            });
        }
        if !matches(&asked, &held, BootFlagsCheck::Strict) {
            warn!(bmc = %self.info.bmc(), %asked, %held,
                  "BMC kept the boot device but not its persistence or UEFI flag (boot_flags_check = device)");
        } else {
            info!(bmc = %self.info.bmc(), %asked, "boot device set and read back");
        }
        Ok(held)
    }

    /// `chassis bootparam get 5`: the boot device the BMC holds now.
    pub async fn get_boot_device(&self) -> Result<BootFlags, IpmiError> {
        let cmd = Cmd {
            label: "chassis bootparam get 5",
            words: &["chassis", "bootparam", "get", "5"],
            refused_if: None,
        };
        let out = self.tool.run(&self.info, cmd).await?;
        BootFlags::parse_bootparam_output(&out.stdout).map_err(|reason| {
            IpmiError::UnexpectedOutput {
                bmc: self.info.bmc(),
                command: "chassis bootparam get 5".into(),
                reason,
                output: clip(out.stdout.trim()),
            }
        })
    }

    /// Boot parameter 3 ("don't clear the valid bit after 60 s"), as Ironic sends before a
    /// boot device unless `ipmi_disable_boot_timeout` is false. A BMC that refuses it still
    /// gets the boot device (the read-back decides); any other failure stops here.
    async fn disable_boot_flag_timeout(&self) -> Result<(), IpmiError> {
        let cmd = Cmd {
            label: "raw boot parameter 3",
            words: &["raw", "0x00", "0x08", "0x03", "0x08"],
            refused_if: None,
        };
        match self.tool.run(&self.info, cmd).await {
            Ok(_) => Ok(()),
            Err(e @ IpmiError::Refused { .. }) => {
                warn!(bmc = %self.info.bmc(), error = %e,
                      "BMC refused to keep boot flags past 60 s; setting the boot device anyway");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `chassis bootparam get 5` from ipmitool 1.8.19 against ipmi_sim 2.0.33 after
    /// `chassis bootdev pxe options=persistent,efiboot` (both options dropped by the BMC).
    const IPMI_SIM_PXE: &str = "Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: 0004000000
 Boot Flags :
   - Boot Flag Invalid
   - Options apply to only next boot
   - BIOS PC Compatible (legacy) boot 
   - Boot Device Selector : Force PXE
   - BIOS verbosity : System Default
   - Console Redirection control : Console redirection occurs per BIOS configuration setting (default)
   - BIOS Mux Control Override : BIOS uses recommended setting of the mux at the end of POST
";

    /// What a BMC that keeps every bit answers after `bootdev disk options=persistent,efiboot`.
    const PERSISTENT_UEFI_DISK: &str = "Boot parameter version: 1
Boot parameter 5 is valid/unlocked
Boot parameter data: e008000000
 Boot Flags :
   - Boot Flag Valid
   - Options apply to all future boots
   - BIOS EFI boot 
   - Boot Device Selector : Force Boot from default Hard-Drive
";

    fn flags(selector: BootSelector, persistent: bool, efi: bool, valid: bool) -> BootFlags {
        BootFlags {
            selector,
            persistent,
            efi,
            valid,
        }
    }

    #[test]
    fn ipmitool_output_is_decoded_from_the_data_bytes() {
        assert_eq!(
            BootFlags::parse_bootparam_output(IPMI_SIM_PXE).unwrap(),
            flags(BootSelector::Pxe, false, false, false)
        );
        assert_eq!(
            BootFlags::parse_bootparam_output(PERSISTENT_UEFI_DISK).unwrap(),
            flags(BootSelector::Disk, true, true, true)
        );
        for (hex, selector) in [
            ("0000000000", BootSelector::NoOverride),
            ("8014000000", BootSelector::Cdrom),
            ("8018000000", BootSelector::Bios),
            ("800c000000", BootSelector::DiskSafeMode),
            ("803c000000", BootSelector::Floppy),
            ("8028000000", BootSelector::Reserved(0xa)),
            // Bits outside 5..2 of data 2 (CMOS clear, keyboard lock, ...) are not the device.
            ("80c3000000", BootSelector::NoOverride),
        ] {
            let out = format!("Boot parameter data: {hex}\n");
            let got = BootFlags::parse_bootparam_output(&out).unwrap();
            assert_eq!(got.selector, selector, "{hex}");
        }
    }

    #[test]
    fn unreadable_output_is_refused() {
        assert!(BootFlags::parse_bootparam_output("Boot parameter version: 1\n").is_err());
        assert!(BootFlags::parse_bootparam_output("Boot parameter data: 0\n").is_err());
        assert!(BootFlags::parse_bootparam_output("Boot parameter data: 00\n").is_err());
        assert!(BootFlags::parse_bootparam_output("Boot parameter data: zz04\n").is_err());
    }

    #[test]
    fn names_match_ironic() {
        for name in ["pxe", "disk", "cdrom", "bios"] {
            assert_eq!(BootDevice::from_ironic(name).unwrap().as_str(), name);
        }
        assert_eq!(BootDevice::from_ironic("floppy"), None);
        assert_eq!(BootSelector::DiskSafeMode.ironic_name(), Some("safe"));
        assert_eq!(BootSelector::Cdrom.ironic_name(), Some("cdrom"));
        assert_eq!(BootSelector::NoOverride.ironic_name(), None);
    }

    #[test]
    fn read_back_is_checked_as_configured() {
        let asked = BootDeviceRequest {
            device: BootDevice::Pxe,
            persistent: true,
            efi: true,
        };
        let dropped = flags(BootSelector::Pxe, false, false, false);
        assert!(!matches(&asked, &dropped, BootFlagsCheck::Strict));
        assert!(matches(&asked, &dropped, BootFlagsCheck::Device));
        let other = flags(BootSelector::Disk, true, true, true);
        assert!(!matches(&asked, &other, BootFlagsCheck::Device));
        assert!(matches(
            &asked,
            &flags(BootSelector::Pxe, true, true, true),
            BootFlagsCheck::Strict
        ));
        assert_eq!(asked.to_string(), "pxe (persistent, UEFI)");
        assert_eq!(
            dropped.to_string(),
            "pxe (next boot only, legacy BIOS; flags not marked valid)"
        );
    }
}
