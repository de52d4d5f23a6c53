//! The machine: flushing disks and powering off or rebooting. As PID 1 of the ramdisk that
//! is the reboot(2) system call (nothing else is left to stop); as an ordinary process it is
//! the process ending, so a test's "BMC" sees the machine go off and a host is never touched.

use crate::settings::PowerRole;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Off,
    Reboot,
}

/// Flushes every filesystem and block device buffer.
pub fn sync() {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
}

/// Powers off or reboots; returns only when that failed.
pub fn power(role: PowerRole, action: PowerAction) {
    sync();
    match role {
        PowerRole::Init => {
            let cmd = match action {
                PowerAction::Off => libc::RB_POWER_OFF,
                PowerAction::Reboot => libc::RB_AUTOBOOT,
            };
            // SAFETY: reboot(2) with a valid command; as PID 1 we hold CAP_SYS_BOOT.
            let rc = unsafe { libc::reboot(cmd) };
            tracing::error!(rc, error = %std::io::Error::last_os_error(), ?action, "reboot(2) failed");
        }
        PowerRole::Process => {
            tracing::info!(
                ?action,
                "not a ramdisk: the agent process ends instead of the machine"
            );
            std::process::exit(0);
        }
    }
}
