//! One ComputerSystem: power (`PowerState`, `ComputerSystem.Reset`, waiting for the change)
//! and the boot source override. Virtual media is in `vmedia.rs`.
//!
//! Every read goes to the BMC: nothing about the system's state is cached between calls.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::client::Transport;
use super::error::RedfishError;
use super::odata;

/// `PowerState` of a ComputerSystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
    PoweringOn,
    PoweringOff,
    Paused,
    /// Missing, or a value the standard does not define.
    Unknown,
}

impl PowerState {
    fn parse(s: Option<&str>) -> Self {
        match s {
            Some("On") => PowerState::On,
            Some("Off") => PowerState::Off,
            Some("PoweringOn") => PowerState::PoweringOn,
            Some("PoweringOff") => PowerState::PoweringOff,
            Some("Paused") => PowerState::Paused,
            _ => PowerState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "On",
            PowerState::Off => "Off",
            PowerState::PoweringOn => "PoweringOn",
            PowerState::PoweringOff => "PoweringOff",
            PowerState::Paused => "Paused",
            PowerState::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `ResetType` of `ComputerSystem.Reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetType {
    On,
    ForceOff,
    GracefulShutdown,
    ForceRestart,
    GracefulRestart,
}

impl ResetType {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetType::On => "On",
            ResetType::ForceOff => "ForceOff",
            ResetType::GracefulShutdown => "GracefulShutdown",
            ResetType::ForceRestart => "ForceRestart",
            ResetType::GracefulRestart => "GracefulRestart",
        }
    }
}

impl fmt::Display for ResetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the conductor asks for (Ironic's power states), mapped to a reset and the state that
/// ends the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerTarget {
    On,
    Off,
    SoftOff,
    Reboot,
    SoftReboot,
}

/// Where the next boot goes (`BootSourceOverrideTarget`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootDevice {
    Pxe,
    Cd,
    Hdd,
    Floppy,
    Usb,
    BiosSetup,
}

impl BootDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "Pxe",
            BootDevice::Cd => "Cd",
            BootDevice::Hdd => "Hdd",
            BootDevice::Floppy => "Floppy",
            BootDevice::Usb => "Usb",
            BootDevice::BiosSetup => "BiosSetup",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            BootDevice::Pxe,
            BootDevice::Cd,
            BootDevice::Hdd,
            BootDevice::Floppy,
            BootDevice::Usb,
            BootDevice::BiosSetup,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

/// `BootSourceOverrideEnabled`: the next boot only, or every boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFrequency {
    Once,
    Continuous,
}

impl BootFrequency {
    pub fn as_str(self) -> &'static str {
        match self {
            BootFrequency::Once => "Once",
            BootFrequency::Continuous => "Continuous",
        }
    }
}

/// `BootSourceOverrideMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootMode {
    Uefi,
    Legacy,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Uefi => "UEFI",
            BootMode::Legacy => "Legacy",
        }
    }
}

/// The boot source override as the BMC reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootOverride {
    /// `BootSourceOverrideTarget` (`None` when the BMC reports none or `"None"`).
    pub target: Option<String>,
    /// `BootSourceOverrideEnabled`: `Once`, `Continuous` or `Disabled`.
    pub enabled: Option<String>,
    /// `BootSourceOverrideMode`, where the system has it.
    pub mode: Option<String>,
    /// `BootSourceOverrideTarget@Redfish.AllowableValues` (empty when not listed).
    pub allowed_targets: Vec<String>,
}

impl BootOverride {
    fn from_system(doc: &Value) -> Self {
        let boot = doc.get("Boot").cloned().unwrap_or(Value::Null);
        BootOverride {
            target: odata::string(&boot, "BootSourceOverrideTarget").filter(|t| t != "None"),
            enabled: odata::string(&boot, "BootSourceOverrideEnabled"),
            mode: odata::string(&boot, "BootSourceOverrideMode"),
            allowed_targets: odata::allowable(&boot, "BootSourceOverrideTarget")
                .unwrap_or_default(),
        }
    }

    /// The target as a [`BootDevice`], when it is one of them.
    pub fn device(&self) -> Option<BootDevice> {
        self.target.as_deref().and_then(BootDevice::parse)
    }

    /// `Some(true)` for Continuous, `Some(false)` for Once, `None` otherwise.
    pub fn persistent(&self) -> Option<bool> {
        match self.enabled.as_deref() {
            Some("Continuous") => Some(true),
            Some("Once") => Some(false),
            _ => None,
        }
    }
}

/// A ComputerSystem on a BMC, found by [`super::Redfish::connect`].
pub struct RedfishSystem {
    pub(crate) t: Arc<Transport>,
    pub(crate) path: String,
    pub(crate) root: Value,
}

impl fmt::Debug for RedfishSystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedfishSystem")
            .field("bmc", &self.t.bmc)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedfishSystem {
    pub(crate) fn new(t: Arc<Transport>, path: String, root: Value) -> Self {
        Self { t, path, root }
    }

    /// The BMC, as errors name it (`https://10.0.0.5`).
    pub fn bmc(&self) -> &str {
        &self.t.bmc
    }

    /// The system's `@odata.id` (`/redfish/v1/Systems/1`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The system's document, as the BMC serves it now.
    pub async fn document(&self) -> Result<Value, RedfishError> {
        self.t.get(&self.path).await
    }

    pub async fn power_state(&self) -> Result<PowerState, RedfishError> {
        let doc = self.document().await?;
        Ok(PowerState::parse(
            doc.get("PowerState").and_then(Value::as_str),
        ))
    }

    /// `ComputerSystem.Reset` with `reset`, refused up front when the BMC lists the values it
    /// allows and `reset` is not one of them.
    pub async fn reset(&self, reset: ResetType) -> Result<(), RedfishError> {
        let doc = self.document().await?;
        let action = doc
            .get("Actions")
            .and_then(|a| a.get("#ComputerSystem.Reset"))
            .cloned()
            .unwrap_or(Value::Null);
        let Some(target) = odata::string(&action, "target") else {
            return Err(
                self.not_supported("ComputerSystem.Reset", "the system lists no Reset action")
            );
        };
        let allowed = self.allowed_reset_types(&action).await;
        if let Some(allowed) = &allowed
            && !allowed.iter().any(|a| a == reset.as_str())
        {
            return Err(self.not_supported(
                &format!("ResetType {reset}"),
                &format!("system {} allows {}", self.path, allowed.join(", ")),
            ));
        }
        let result = self
            .t
            .post(&target, &json!({"ResetType": reset.as_str()}))
            .await;
        match (result, allowed) {
            (Ok(_), _) => {
                info!(bmc = %self.t.bmc, system = %self.path, %reset, "reset sent");
                Ok(())
            }
            (Err(e), Some(allowed)) => Err(with_note(
                e,
                format!("the BMC lists ResetType {}", allowed.join(", ")),
            )),
            (Err(e), None) => Err(e),
        }
    }

    /// `ResetType@Redfish.AllowableValues` of the action, or of its `@Redfish.ActionInfo`.
    async fn allowed_reset_types(&self, action: &Value) -> Option<Vec<String>> {
        if let Some(values) = odata::allowable(action, "ResetType") {
            return Some(values);
        }
        let info_path = odata::string(action, "@Redfish.ActionInfo")?;
        let info = self.t.get(&info_path).await.ok()?;
        let param = info
            .get("Parameters")?
            .as_array()?
            .iter()
            .find(|p| p.get("Name").and_then(Value::as_str) == Some("ResetType"))?;
        Some(
            param
                .get("AllowableValues")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        )
    }

    /// Moves the system to `target` and waits (up to `power_state_change_timeout_secs`) until
    /// the BMC reports it: On for On and the reboots, Off for the offs. A system already in
    /// the state asked for (or on its way there) gets no reset; a reboot of a system that is
    /// off powers it on. Returns the state seen last.
    pub async fn set_power(&self, target: PowerTarget) -> Result<PowerState, RedfishError> {
        use PowerState as S;
        let current = self.power_state().await?;
        let (reset, want) = match (target, current) {
            (PowerTarget::On, S::On | S::PoweringOn) => (None, S::On),
            (PowerTarget::On, _) => (Some(ResetType::On), S::On),
            (PowerTarget::Off | PowerTarget::SoftOff, S::Off | S::PoweringOff) => (None, S::Off),
            (PowerTarget::Off, _) => (Some(ResetType::ForceOff), S::Off),
            (PowerTarget::SoftOff, _) => (Some(ResetType::GracefulShutdown), S::Off),
            (PowerTarget::Reboot | PowerTarget::SoftReboot, S::Off) => (Some(ResetType::On), S::On),
            (PowerTarget::Reboot, _) => (Some(ResetType::ForceRestart), S::On),
            (PowerTarget::SoftReboot, _) => (Some(ResetType::GracefulRestart), S::On),
        };
        match reset {
            Some(reset) => self.reset(reset).await?,
            None => debug!(bmc = %self.t.bmc, system = %self.path, %current,
                "already in (or moving to) the power state asked for"),
        }
        self.wait_for_power_state(want, self.t.settings.power_state_change_timeout())
            .await
    }

    /// Polls `PowerState` until it is `want`, for at most `timeout`.
    pub async fn wait_for_power_state(
        &self,
        want: PowerState,
        timeout: Duration,
    ) -> Result<PowerState, RedfishError> {
        let started = Instant::now();
        let poll = self.t.settings.power_state_poll_interval();
        loop {
            let seen = self.power_state().await?;
            if seen == want {
                return Ok(seen);
            }
            let waited = started.elapsed();
            if waited >= timeout {
                return Err(RedfishError::PowerTimeout {
                    bmc: self.t.bmc.clone(),
                    system: self.path.clone(),
                    want: want.to_string(),
                    seen: seen.to_string(),
                    timeout,
                });
            }
            tokio::time::sleep(poll.min(timeout - waited)).await;
        }
    }

    pub async fn boot_override(&self) -> Result<BootOverride, RedfishError> {
        Ok(BootOverride::from_system(&self.document().await?))
    }

    /// Sets the boot source override and reads it back. `mode` is only sent where the system
    /// has `BootSourceOverrideMode` (elsewhere the firmware decides). A target or mode the
    /// BMC does not list in its allowable values is refused before anything is sent.
    pub async fn set_boot_override(
        &self,
        device: BootDevice,
        frequency: BootFrequency,
        mode: Option<BootMode>,
    ) -> Result<BootOverride, RedfishError> {
        let reply = self.t.call(Method::GET, &self.path, None, None).await?;
        let etag = reply
            .header("etag")
            .map(str::to_string)
            .or_else(|| odata::string(&reply.body, "@odata.etag"));
        let Some(boot) = reply.body.get("Boot").filter(|b| b.is_object()) else {
            return Err(
                self.not_supported("boot source override", "the system has no Boot property")
            );
        };
        let mut patch = json!({
            "BootSourceOverrideTarget": device.as_str(),
            "BootSourceOverrideEnabled": frequency.as_str(),
        });
        check_allowed(self, boot, "BootSourceOverrideTarget", device.as_str())?;
        match mode {
            Some(m) if boot.get("BootSourceOverrideMode").is_some() => {
                check_allowed(self, boot, "BootSourceOverrideMode", m.as_str())?;
                patch["BootSourceOverrideMode"] = json!(m.as_str());
            }
            Some(m) => debug!(bmc = %self.t.bmc, system = %self.path, mode = m.as_str(),
                "the system has no BootSourceOverrideMode; boot mode left to the firmware"),
            None => {}
        }
        let body = json!({ "Boot": patch });
        match self.t.patch(&self.path, &body, etag.as_deref()).await {
            // Some BMCs compute ETags inconsistently; one unconditional PATCH is what a client
            // without ETag support sends anyway, and the conductor holds the node's lock.
            Err(e) if etag.is_some() && e.status() == Some(412) => {
                debug!(bmc = %self.t.bmc, "ETag refused (412); patching without If-Match");
                self.t.patch(&self.path, &body, None).await?;
            }
            result => {
                result?;
            }
        }
        info!(bmc = %self.t.bmc, system = %self.path, device = device.as_str(),
            frequency = frequency.as_str(), mode = mode.map(BootMode::as_str), "boot override set");
        self.boot_override().await
    }

    pub(crate) fn not_supported(&self, what: &str, detail: &str) -> RedfishError {
        RedfishError::NotSupported {
            bmc: self.t.bmc.clone(),
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }
}

fn check_allowed(
    system: &RedfishSystem,
    doc: &Value,
    property: &str,
    value: &str,
) -> Result<(), RedfishError> {
    match odata::allowable(doc, property) {
        Some(allowed) if !allowed.iter().any(|a| a == value) => Err(system.not_supported(
            &format!("{property} {value}"),
            &format!(
                "system {} allows {}",
                system.path,
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            ),
        )),
        _ => Ok(()),
    }
}

/// Adds what the BMC allows to the messages of an error it answered.
fn with_note(err: RedfishError, note: String) -> RedfishError {
    match err {
        RedfishError::Status {
            bmc,
            method,
            path,
            status,
            attempts,
            mut messages,
        } => {
            messages.push(note);
            RedfishError::Status {
                bmc,
                method,
                path,
                status,
                attempts,
                messages,
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_override_reads_the_system_document() {
        let doc = json!({"Boot": {
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideTarget": "Cd",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Cd", "Hdd"],
            "BootSourceOverrideMode": "UEFI"}});
        let b = BootOverride::from_system(&doc);
        assert_eq!(b.device(), Some(BootDevice::Cd));
        assert_eq!(b.persistent(), Some(false));
        assert_eq!(b.mode.as_deref(), Some("UEFI"));
        assert_eq!(b.allowed_targets, ["Pxe", "Cd", "Hdd"]);
        let none = BootOverride::from_system(&json!({"Boot": {
            "BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled"}}));
        assert_eq!(none.target, None);
        assert_eq!(none.persistent(), None);
        assert_eq!(
            BootOverride::from_system(&json!({})),
            BootOverride::default()
        );
        let other =
            BootOverride::from_system(&json!({"Boot": {"BootSourceOverrideTarget": "UefiTarget"}}));
        assert_eq!(other.target.as_deref(), Some("UefiTarget"));
        assert_eq!(other.device(), None);
    }

    #[test]
    fn power_states_parse() {
        assert_eq!(
            PowerState::parse(Some("PoweringOn")),
            PowerState::PoweringOn
        );
        assert_eq!(PowerState::parse(Some("on")), PowerState::Unknown);
        assert_eq!(PowerState::parse(None), PowerState::Unknown);
        assert_eq!(PowerState::Off.to_string(), "Off");
    }

    #[test]
    fn notes_join_the_bmc_messages() {
        let e = RedfishError::Status {
            bmc: "b".into(),
            method: "POST".into(),
            path: "/r".into(),
            status: 400,
            attempts: 1,
            messages: vec!["bad reset".into()],
        };
        let e = with_note(e, "the BMC lists ResetType On, ForceOff".into());
        assert!(
            e.to_string()
                .ends_with("bad reset; the BMC lists ResetType On, ForceOff"),
            "{e}"
        );
    }
}
