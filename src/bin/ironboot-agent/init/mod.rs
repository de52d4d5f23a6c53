//! PID 1 of the deploy ramdisk: mount the pseudo filesystems, load the kernel modules the
//! ramdisk lists (NICs, disks), bring every NIC up with DHCP (Debian's kernel has no `ip=`
//! autoconfiguration built in), reap orphans, then run the agent — again after a pause if it
//! stops, as a service manager would restart it.

mod dhcp;
mod kmod;
mod net;

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use crate::settings::{Settings, parse_bootif, parse_cmdline};

/// Printed once init runs (tests wait for it on the serial console).
pub const BANNER: &str = "ironboot-agent: ramdisk init";

fn mount(source: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let (s, t, f) = (
        CString::new(source),
        CString::new(target),
        CString::new(fstype),
    );
    let (Ok(s), Ok(t), Ok(f)) = (s, t, f) else {
        return;
    };
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // EBUSY: already mounted (the kernel may have mounted devtmpfs itself).
        if e.raw_os_error() != Some(libc::EBUSY) {
            eprintln!("ironboot-agent: mount {fstype} on {target}: {e}");
        }
    }
}

fn mount_all() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("devpts", "/dev/pts", "devpts");
    mount("tmpfs", "/run", "tmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
}

/// Orphans re-parented to PID 1 must be waited for, or they stay zombies.
fn spawn_reaper() {
    std::thread::spawn(|| {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid <= 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    });
}

fn set_hostname(name: &str) {
    // SAFETY: the pointer and length describe a valid byte string.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// Runs the ramdisk; never returns.
pub fn run_as_pid1() -> ! {
    mount_all();
    let params = std::fs::read_to_string("/proc/cmdline")
        .map(|t| parse_cmdline(&t))
        .unwrap_or_default();
    let logs = crate::logbuf::install(params.contains_key("ipa-debug"));
    eprintln!("{BANNER} ({})", env!("CARGO_PKG_VERSION"));
    set_hostname("ironboot-agent");
    spawn_reaper();
    kmod::load_listed(Path::new(kmod::LOAD_LIST));
    let bootif = params.get("BOOTIF").and_then(|b| parse_bootif(b).ok());
    net::bring_up(bootif.as_ref());
    loop {
        match Settings::for_init() {
            Ok(settings) => match tokio::runtime::Runtime::new() {
                Ok(rt) => {
                    if let Err(e) = rt.block_on(crate::agent::run(settings, logs.clone())) {
                        tracing::error!(error = %e, "the agent stopped; starting it again in 10 s");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot start the async runtime"),
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot configure the agent; trying again in 10 s")
            }
        }
        std::thread::sleep(Duration::from_secs(10));
    }
}
