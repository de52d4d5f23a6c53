//! The IPMI client's one error type. Every variant that talks to a BMC names it
//! (`address:port`) and the ipmitool command, and carries what ipmitool printed on stderr
//! (trimmed, noise lines removed). The password never reaches ipmitool's arguments, so it
//! cannot reach these messages either.

use std::path::PathBuf;
use std::time::Duration;

use super::bootdev::{BootDeviceRequest, BootFlags};
use super::power::PowerStatus;

#[derive(Debug, thiserror::Error)]
pub enum IpmiError {
    /// A bad `[ipmi]` setting, refused at start.
    #[error("[ipmi] {key} = {value}: {reason}")]
    Settings {
        key: &'static str,
        value: String,
        reason: String,
    },

    /// The node's driver_info cannot drive a BMC; nothing was sent.
    #[error("invalid driver_info: {key} = {value}: {reason}")]
    DriverInfo {
        key: &'static str,
        value: String,
        reason: String,
    },

    #[error("cannot run {} for `{command}` on BMC {bmc}: {source}", program.display())]
    Spawn {
        program: PathBuf,
        bmc: String,
        command: String,
        #[source]
        source: std::io::Error,
    },

    /// The BMC answered but refused the session: wrong user or password, or a privilege level
    /// or cipher suite it does not grant. Never retried (BMCs lock accounts out).
    #[error(
        "BMC {bmc} refused the session for `{command}`: authentication failed (check ipmi_username, \
         ipmi_password, ipmi_priv_level and ipmi_cipher_suite); ipmitool: {stderr}"
    )]
    Authentication {
        bmc: String,
        command: String,
        stderr: String,
    },

    /// Nothing answered (wrong address or port, BMC down, network), after every retry.
    #[error(
        "BMC {bmc} did not answer `{command}` ({attempts} attempt(s) over {:.1} s); ipmitool: {stderr}",
        elapsed.as_secs_f64()
    )]
    Unreachable {
        bmc: String,
        command: String,
        attempts: u32,
        elapsed: Duration,
        stderr: String,
    },

    /// ipmitool itself did not finish in time and was killed, after every retry.
    #[error(
        "ipmitool `{command}` for BMC {bmc} did not finish within {} s and was killed ({attempts} attempt(s))",
        timeout.as_secs()
    )]
    Timeout {
        bmc: String,
        command: String,
        timeout: Duration,
        attempts: u32,
    },

    /// The session was fine but the BMC refused or does not support the command (an IPMI
    /// completion code such as "Insufficient privilege level" or "Invalid data field").
    #[error("BMC {bmc} refused `{command}`: {stderr}")]
    Refused {
        bmc: String,
        command: String,
        stderr: String,
    },

    /// ipmitool failed in a way none of the above explains.
    #[error(
        "ipmitool `{command}` for BMC {bmc} failed ({status}, {attempts} attempt(s)): {stderr}"
    )]
    Failed {
        bmc: String,
        command: String,
        status: String,
        attempts: u32,
        stderr: String,
    },

    #[error(
        "BMC {bmc} answered `{command}` with output ironboot does not understand ({reason}): {output:?}"
    )]
    UnexpectedOutput {
        bmc: String,
        command: String,
        reason: String,
        output: String,
    },

    /// `chassis bootdev` exited 0, but boot parameter 5 read back differs from what was asked.
    #[error(
        "BMC {bmc} did not keep the boot device: asked for {asked}, boot parameter 5 now holds {held}"
    )]
    BootDeviceMismatch {
        bmc: String,
        asked: BootDeviceRequest,
        held: BootFlags,
    },

    /// The command was accepted but the BMC never reported the expected power state.
    #[error(
        "BMC {bmc} accepted `{command}` but did not report power {target} within {} s (last read: {last})",
        timeout.as_secs()
    )]
    PowerStateTimeout {
        bmc: String,
        command: String,
        target: PowerStatus,
        timeout: Duration,
        last: PowerStatus,
    },
}
