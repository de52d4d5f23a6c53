//! Power: status, on, off, soft off, reset, cycle, reboot — each action waits until the BMC
//! reports the state it should lead to (bounded), as Ironic's `node_wait_for_power_state` does.
//!
//! Soft power off sends the ACPI power button and waits `soft_power_off_timeout`; an OS that
//! ignores it (or none at all: ipmi_sim's guests, a machine in firmware) gets a hard power off
//! after that, and the caller is told so ([`SoftOff::ForcedOff`]). Reboot is off then on, as
//! in Ironic, so that the boot device set before it is honoured by a cold boot.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::IpmiClient;
use super::error::IpmiError;
use super::tool::Cmd;
use crate::model::PowerState;

/// The chassis power as the BMC reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerStatus {
    On,
    Off,
}

impl PowerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerStatus::On => "on",
            PowerStatus::Off => "off",
        }
    }
}

impl fmt::Display for PowerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<PowerStatus> for PowerState {
    fn from(s: PowerStatus) -> Self {
        match s {
            PowerStatus::On => PowerState::On,
            PowerStatus::Off => PowerState::Off,
        }
    }
}

/// How a soft power off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftOff {
    /// The OS shut down by itself.
    Completed { after: Duration },
    /// It was still on after `waited`: ironboot powered it off hard.
    ForcedOff { waited: Duration },
}

/// `ipmitool power ...` sub-commands.
#[derive(Debug, Clone, Copy)]
enum Control {
    On,
    Off,
    Soft,
    Reset,
    Cycle,
}

impl Control {
    fn label(self) -> &'static str {
        match self {
            Control::On => "power on",
            Control::Off => "power off",
            Control::Soft => "power soft",
            Control::Reset => "power reset",
            Control::Cycle => "power cycle",
        }
    }
}

impl IpmiClient {
    /// `power status`: what the BMC reports now.
    pub async fn power_status(&self) -> Result<PowerStatus, IpmiError> {
        let cmd = Cmd {
            label: "power status",
            words: &["power", "status"],
            refused_if: None,
        };
        let out = self.tool.run(&self.info, cmd).await?;
        match out.stdout.trim() {
            "Chassis Power is on" => Ok(PowerStatus::On),
            "Chassis Power is off" => Ok(PowerStatus::Off),
            other => Err(IpmiError::UnexpectedOutput {
                bmc: self.info.bmc(),
                command: "power status".into(),
                reason: "expected \"Chassis Power is on\" or \"... off\"".into(),
                output: other.to_string(),
            }),
        }
    }

    /// `power on`, then waits until the BMC reports on. `timeout`: instead of
    /// `power_state_change_timeout_secs`.
    pub async fn power_on(&self, timeout: Option<Duration>) -> Result<(), IpmiError> {
        self.control(Control::On).await?;
        self.wait_for(PowerStatus::On, Control::On, self.change_timeout(timeout))
            .await
    }

    /// `power off` (hard), then waits until the BMC reports off.
    pub async fn power_off(&self, timeout: Option<Duration>) -> Result<(), IpmiError> {
        self.control(Control::Off).await?;
        self.wait_for(PowerStatus::Off, Control::Off, self.change_timeout(timeout))
            .await
    }

    /// `power soft` (ACPI power button), waits up to `timeout` (default
    /// `soft_power_off_timeout_secs`) for off, then powers off hard if it is still on.
    pub async fn soft_power_off(&self, timeout: Option<Duration>) -> Result<SoftOff, IpmiError> {
        let timeout = timeout.unwrap_or_else(|| self.tool.settings().soft_power_off_timeout());
        let started = Instant::now();
        self.control(Control::Soft).await?;
        match self
            .wait_for(PowerStatus::Off, Control::Soft, timeout)
            .await
        {
            Ok(()) => Ok(SoftOff::Completed {
                after: started.elapsed(),
            }),
            Err(IpmiError::PowerStateTimeout { .. }) => {
                warn!(bmc = %self.info.bmc(), timeout_secs = timeout.as_secs_f64(),
                      "the node did not power off after the ACPI power button; powering it off hard");
                if let Some(m) = self.tool.metrics() {
                    m.soft_off_fallbacks.inc();
                }
                self.power_off(None).await?;
                Ok(SoftOff::ForcedOff { waited: timeout })
            }
            Err(e) => Err(e),
        }
    }

    /// `power reset` (hard reset of a running node), then waits until the BMC reports on. A
    /// node that is off stays off on most BMCs: this then fails with the state timeout.
    pub async fn power_reset(&self, timeout: Option<Duration>) -> Result<(), IpmiError> {
        self.control(Control::Reset).await?;
        self.wait_for(
            PowerStatus::On,
            Control::Reset,
            self.change_timeout(timeout),
        )
        .await
    }

    /// `power cycle` (off, then on after the BMC's delay), then waits until it reports on.
    pub async fn power_cycle(&self, timeout: Option<Duration>) -> Result<(), IpmiError> {
        self.control(Control::Cycle).await?;
        self.wait_for(
            PowerStatus::On,
            Control::Cycle,
            self.change_timeout(timeout),
        )
        .await
    }

    /// Ironic's reboot: `power off` unless already off (each wait bounded by `timeout`), then
    /// `power on`.
    pub async fn reboot(&self, timeout: Option<Duration>) -> Result<(), IpmiError> {
        if self.power_status().await? == PowerStatus::On {
            self.power_off(timeout).await?;
        }
        self.power_on(timeout).await
    }

    /// Soft power off (with its hard fallback), then on.
    pub async fn soft_reboot(&self, timeout: Option<Duration>) -> Result<SoftOff, IpmiError> {
        let off = match self.power_status().await? {
            PowerStatus::On => self.soft_power_off(timeout).await?,
            PowerStatus::Off => SoftOff::Completed {
                after: Duration::ZERO,
            },
        };
        self.power_on(None).await?;
        Ok(off)
    }

    /// What a power interface's `set_power_state` needs: moves the node to `target` and
    /// returns the state the BMC reports at the end. `timeout` is Ironic's per-request
    /// timeout (soft states: the soft power off wait; others: each state change).
    pub async fn set_power_state(
        &self,
        target: PowerState,
        timeout: Option<Duration>,
    ) -> Result<PowerStatus, IpmiError> {
        match target {
            PowerState::On => self.power_on(timeout).await?,
            PowerState::Off => self.power_off(timeout).await?,
            PowerState::Rebooting => self.reboot(timeout).await?,
            PowerState::SoftOff => {
                self.soft_power_off(timeout).await?;
            }
            PowerState::SoftRebooting => {
                self.soft_reboot(timeout).await?;
            }
        }
        Ok(match target {
            PowerState::Off | PowerState::SoftOff => PowerStatus::Off,
            _ => PowerStatus::On,
        })
    }

    fn change_timeout(&self, timeout: Option<Duration>) -> Duration {
        timeout.unwrap_or_else(|| self.tool.settings().power_state_change_timeout())
    }

    async fn control(&self, control: Control) -> Result<(), IpmiError> {
        let label = control.label();
        let words: Vec<&str> = label.split(' ').collect();
        let cmd = Cmd {
            label,
            words: &words,
            refused_if: Some("Set Chassis Power Control"),
        };
        self.tool.run(&self.info, cmd).await?;
        info!(bmc = %self.info.bmc(), command = label, "BMC accepted the power command");
        Ok(())
    }

    /// Polls `power status` every `poll_interval_ms` until it reads `target`.
    async fn wait_for(
        &self,
        target: PowerStatus,
        after: Control,
        timeout: Duration,
    ) -> Result<(), IpmiError> {
        let deadline = Instant::now() + timeout;
        let poll = self.tool.settings().poll_interval();
        loop {
            let now = self.power_status().await?;
            if now == target {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(IpmiError::PowerStateTimeout {
                    bmc: self.info.bmc(),
                    command: after.label().to_string(),
                    target,
                    timeout,
                    last: now,
                });
            }
            tokio::time::sleep(poll.min(left)).await;
        }
    }
}
