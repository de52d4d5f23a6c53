//! A small tmpfs mounted for one test (disk-full faults), unmounted on drop. Needs root:
//! callers go through [`Tmpfs::require`], which skips or fails per the peer policy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `"16m"`) at `at`, or `None` after the peer policy's
    /// skip message (a failure under `IRONBOOT_REQUIRE_PEERS=1`).
    pub fn require(test: &str, at: &Path, size: &str) -> Option<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        let is_root = unsafe { libc::geteuid() } == 0;
        if !super::require_condition(test, is_root, "needs root to mount a tmpfs") {
            return None;
        }
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !super::require_condition(test, ok, "mount -t tmpfs failed") {
            return None;
        }
        Some(Tmpfs {
            path: at.to_path_buf(),
        })
    }

    /// Fills the filesystem with `<root>/filler` until a write fails with no space.
    pub fn fill(&self) {
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // The last partial chunk may have fit byte by byte.
        while f.write_all(&[0xa5]).is_ok() {}
        let _ = f.sync_all();
    }

    /// Fills the filesystem, then gives back `bytes` of it.
    pub fn fill_leaving(&self, bytes: u64) {
        self.fill();
        let len = std::fs::metadata(self.filler()).map_or(0, |m| m.len());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.filler())
            .unwrap();
        f.set_len(len.saturating_sub(bytes)).unwrap();
    }

    /// Remounts read-only (`true`) or read-write; `false` when the kernel refused.
    pub fn set_read_only(&self, ro: bool) -> bool {
        Command::new("mount")
            .args(["-o", if ro { "remount,ro" } else { "remount,rw" }])
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A lazy unmount never fails on a server still holding files open; never panics.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
