//! Kernel modules: the ramdisk builder writes the modules it packed, dependencies first, one
//! path per line, into [`LOAD_LIST`]; init loads them in that order with finit_module(2). A
//! driver without its hardware loads and does nothing; failures are logged, not fatal.

use std::os::fd::AsRawFd;
use std::path::Path;

/// The load list inside the ramdisk (paths relative to `/lib/modules`).
pub const LOAD_LIST: &str = "/lib/modules/ironboot-modules.load";
/// finit_module flag for `.ko.xz` / `.ko.zst` (the kernel decompresses them itself).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// Loads every module listed; returns how many loaded.
pub fn load_listed(list: &Path) -> usize {
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(list = %list.display(), error = %e, "no module list: loading no modules");
            return 0;
        }
    };
    let base = list.parent().unwrap_or(Path::new("/"));
    let mut loaded = 0;
    for rel in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = base.join(rel);
        match load(&path) {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => loaded += 1,
            Err(e) => tracing::warn!(module = %path.display(), error = %e, "module not loaded"),
        }
    }
    tracing::info!(loaded, "kernel modules loaded");
    loaded
}

fn load(path: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
    let name = path.to_string_lossy();
    let flags = if name.ends_with(".xz") || name.ends_with(".zst") || name.ends_with(".gz") {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let no_params = c"";
    // SAFETY: finit_module(fd, params, flags) with an open descriptor and a NUL-terminated
    // (empty) parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            f.as_raw_fd(),
            no_params.as_ptr(),
            flags,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
