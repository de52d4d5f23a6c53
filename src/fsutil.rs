//! Small filesystem helpers shared by every module that makes files appear for nodes.
//!
//! The rule they enforce: a file a node (or a BMC) can fetch appears atomically. It is written
//! under a temporary name in the destination directory, fsynced, renamed into place, and the
//! directory is fsynced so the rename survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode for files that nodes and BMCs fetch (Ironic's `[pxe] file_permission`).
pub const FILE_MODE: u32 = 0o644;
/// Mode for directories created under the served roots.
pub const DIR_MODE: u32 = 0o755;

/// A file being written under a temporary name next to its final path.
///
/// Dropping it without [`AtomicFile::commit`] removes the temporary file, so a failed or
/// cancelled write never leaves anything at (or next to) the destination.
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    mode: u32,
}

impl AtomicFile {
    /// Starts writing `dest`; its parent directory must exist.
    pub fn create(dest: &Path) -> io::Result<Self> {
        Self::create_with_mode(dest, FILE_MODE)
    }

    pub fn create_with_mode(dest: &Path, mode: u32) -> io::Result<Self> {
        let tmp = temp_name_for(dest)?;
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(Self {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
            mode,
        })
    }

    /// The open temporary file, for writers that need `Read + Write + Seek`.
    pub fn file(&mut self) -> &mut File {
        // Invariant: `file` is only taken by `commit`, which consumes `self`.
        self.file.as_mut().expect("AtomicFile used after commit")
    }

    /// The temporary path (useful for tools that want a path, e.g. qemu-img).
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// fsyncs the data, sets the final mode, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        // Invariant: `file` is Some until this call, and `commit` consumes `self`.
        let file = self.file.take().expect("AtomicFile committed twice");
        file.sync_all()?;
        fs::set_permissions(&self.tmp, fs::Permissions::from_mode(self.mode))?;
        drop(file);
        fs::rename(&self.tmp, &self.dest)?;
        sync_parent(&self.dest)?;
        Ok(std::mem::take(&mut self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `bytes` to `dest` atomically with [`FILE_MODE`].
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()?;
    Ok(())
}

/// Places `src` at `dest` atomically: a hard link when both are on one filesystem, else a copy.
/// Returns `true` when it had to copy (callers log that: it doubles disk use).
pub fn link_or_copy_atomic(src: &Path, dest: &Path) -> io::Result<bool> {
    let tmp = temp_name_for(dest)?;
    match fs::hard_link(src, &tmp) {
        Ok(()) => {
            if let Err(e) = fs::rename(&tmp, dest) {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            sync_parent(dest)?;
            Ok(false)
        }
        Err(e)
            if e.raw_os_error() == Some(libc::EXDEV)
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            let mut out = AtomicFile::create(dest)?;
            let mut input = File::open(src)?;
            io::copy(&mut input, out.file())?;
            out.commit()?;
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Creates a relative symlink at `link` pointing to `target`, replacing whatever was there,
/// without a window in which `link` is missing (symlink to a temp name, then rename).
pub fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = temp_name_for(link)?;
    std::os::unix::fs::symlink(target, &tmp)?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(link)
}

/// Creates `dir` and its parents with [`DIR_MODE`].
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Removes a file if it exists; a missing file is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// fsyncs the directory holding `path`, so a rename or link inside it is durable.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)?.sync_all()
}

/// Prefix of every temporary name this module creates; scans at start-up skip (or remove) them.
pub const TEMP_PREFIX: &str = ".ironboot-tmp-";

fn temp_name_for(dest: &Path) -> io::Result<PathBuf> {
    let name = dest.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", dest.display()),
        )
    })?;
    let mut rnd = [0u8; 6];
    getrandom::fill(&mut rnd).map_err(|e| io::Error::other(e.to_string()))?;
    let tmp_name = format!(
        "{TEMP_PREFIX}{}-{}",
        hex::encode(rnd),
        name.to_string_lossy()
    );
    Ok(dest.with_file_name(tmp_name))
}

/// Removes every file under `root` whose name is temporary (what a crash left between the
/// write and the rename), without following symlinks. Returns what it removed. Only for
/// directories this process owns, at start, before anything else writes into them.
pub fn remove_temp_files(root: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let kind = entry.file_type()?;
            let path = entry.path();
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
                && !kind.is_dir()
            {
                remove_if_exists(&path)?;
                removed.push(path);
            } else if kind.is_dir() {
                dirs.push(path);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// Bytes an unprivileged writer can still use on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable statvfs storage.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Writes, fsyncs and removes a small temporary file in `dir`: proves the directory can be
/// written now (not read-only, not out of space or inodes).
pub fn write_probe(dir: &Path) -> io::Result<()> {
    let mut f = AtomicFile::create(&dir.join("write-probe"))?;
    f.write_all(&[0u8; 4096])?;
    f.file().sync_all()?;
    // Dropping without commit removes the temporary file.
    Ok(())
}

/// Formats a byte count for humans (binary units, one decimal).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Asks the kernel to start writing a range back now (without waiting), so that a later
/// fsync has little left to do instead of the whole file.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the descriptor is open for the lifetime of `file`; the call only schedules I/O.
    // Failure is harmless (the final fsync writes everything), so its result is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("config");
        let mut f = AtomicFile::create(&dest).unwrap();
        f.write_all(b"hello").unwrap();
        assert!(!dest.exists());
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn link_shares_inode_and_symlink_replaces() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("master");
        fs::write(&src, b"data").unwrap();
        let dest = dir.path().join("copy");
        assert!(!link_or_copy_atomic(&src, &dest).unwrap());
        assert_eq!(
            fs::metadata(&src).unwrap().ino(),
            fs::metadata(&dest).unwrap().ino()
        );
        let link = dir.path().join("link");
        symlink_atomic(Path::new("master"), &link).unwrap();
        symlink_atomic(Path::new("copy"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("copy"));
    }

    #[test]
    fn leftovers_of_a_crash_are_found_anywhere_and_nothing_else_goes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("node/pxelinux.cfg");
        fs::create_dir_all(&sub).unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join(".ironboot-tmp-keep"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        for f in [
            ".ironboot-tmp-1-config",
            "config",
            "node/.ironboot-tmp-2-kernel",
        ] {
            fs::write(dir.path().join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("config", sub.join(".ironboot-tmp-3-01-aa")).unwrap();
        let removed = remove_temp_files(dir.path()).unwrap();
        assert_eq!(removed.len(), 3, "{removed:?}");
        assert!(dir.path().join("config").exists());
        assert!(
            outside.path().join(".ironboot-tmp-keep").exists(),
            "followed a symlink"
        );
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
