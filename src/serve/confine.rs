//! Confinement of client-supplied file names to the served roots, shared by TFTP and HTTP.
//!
//! A name is checked lexically (no NUL or control characters, no `..` after mapping `\` to
//! `/`, bounded length), resolved against the serve root with every symlink followed, and
//! served only if the real path lies under one of the allowed roots. The file is then opened
//! without following a final symlink and the opened descriptor's real path is checked again,
//! so a link swapped in between the check and the open is caught as well.
//!
//! Files being written carry a temporary name ([`crate::fsutil::TEMP_PREFIX`]) until they are
//! complete and renamed; such a name, or a path resolving to one, is answered as missing, so
//! a partial file (or one a crash left behind) is never served.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Longest name accepted (bytes); real boot file names are far shorter.
pub const MAX_NAME_LEN: usize = 1024;

/// Why a name was not served. The variants map to TFTP error codes and HTTP statuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Lexically unacceptable (traversal, NUL, control characters, too long, empty).
    #[error("refused name: {0}")]
    BadName(&'static str),
    /// Resolves (through symlinks) outside every allowed root.
    #[error("resolves outside the served roots")]
    Outside,
    /// Does not exist, or is not a regular file.
    #[error("no such file")]
    NotFound,
    /// Exists but could not be opened or inspected.
    #[error("cannot open: {0}")]
    Unreadable(String),
}

impl Refusal {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::BadName(_) => "bad_name",
            Refusal::Outside => "outside_root",
            Refusal::NotFound => "not_found",
            Refusal::Unreadable(_) => "unreadable",
        }
    }
}

/// Error creating a [`Confinement`].
#[derive(Debug, thiserror::Error)]
#[error("served root {}: {source}", path.display())]
pub struct RootError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// A served root plus the roots its symlinks may lead into.
#[derive(Debug, Clone)]
pub struct Confinement {
    base: PathBuf,
    allowed: Vec<PathBuf>,
}

/// An opened, confined regular file.
#[derive(Debug)]
pub struct OpenedFile {
    pub file: File,
    /// The real path (no symlinks) of what was opened.
    pub real_path: PathBuf,
    pub len: u64,
    pub modified: Option<std::time::SystemTime>,
}

impl Confinement {
    /// Serves names relative to `root`; symlinks may resolve into `root` or any of `also`
    /// (e.g. the image cache). Every root must exist.
    pub fn new(root: &Path, also: &[PathBuf]) -> Result<Self, RootError> {
        let canon = |p: &Path| {
            p.canonicalize().map_err(|source| RootError {
                path: p.to_path_buf(),
                source,
            })
        };
        let base = canon(root)?;
        let mut allowed = vec![base.clone()];
        for p in also {
            allowed.push(canon(p)?);
        }
        Ok(Self { base, allowed })
    }

    /// The canonical serve root.
    pub fn root(&self) -> &Path {
        &self.base
    }

    /// Checks `name` lexically and returns its path under the root (symlinks not resolved).
    /// Leading `/` is dropped (GRUB asks for `/grub/grub.cfg`, pxelinux for `pxelinux.0`).
    pub fn lexical(&self, name: &str) -> Result<PathBuf, Refusal> {
        if name.len() > MAX_NAME_LEN {
            return Err(Refusal::BadName("longer than 1024 bytes"));
        }
        if name.contains('\0') {
            return Err(Refusal::BadName("contains NUL"));
        }
        if name.chars().any(char::is_control) {
            return Err(Refusal::BadName("contains a control character"));
        }
        // Windows-style clients send `\`; mapping it first means `..\` is caught as `..`.
        let mapped = name.replace('\\', "/");
        let mut path = self.base.clone();
        let mut parts = 0;
        for component in Path::new(&mapped).components() {
            match component {
                Component::Normal(part) if is_temporary(part) => return Err(Refusal::NotFound),
                Component::Normal(part) => {
                    path.push(part);
                    parts += 1;
                }
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => return Err(Refusal::BadName("contains '..'")),
                Component::Prefix(_) => return Err(Refusal::BadName("has a path prefix")),
            }
        }
        if parts == 0 {
            return Err(Refusal::BadName("names no file"));
        }
        Ok(path)
    }

    /// Resolves and opens `name` for reading, or says why not. Blocking (a few syscalls).
    pub fn open(&self, name: &str) -> Result<OpenedFile, Refusal> {
        let path = self.lexical(name)?;
        let real = match path.canonicalize() {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return Err(Refusal::NotFound),
            Err(e) => return Err(Refusal::Unreadable(e.to_string())),
        };
        if !self.is_allowed(&real) {
            return Err(Refusal::Outside);
        }
        if real.components().any(|c| is_temporary(c.as_os_str())) {
            return Err(Refusal::NotFound);
        }
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&real)
        {
            Ok(f) => f,
            Err(e) if is_missing(&e) => return Err(Refusal::NotFound),
            // ELOOP: the final component became a symlink after canonicalisation.
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(Refusal::Outside),
            Err(e) => return Err(Refusal::Unreadable(e.to_string())),
        };
        // The descriptor's own path catches a directory component swapped for a symlink
        // between canonicalize() and open().
        let fd_path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(opened) = std::fs::read_link(&fd_path)
            && (opened != real || !self.is_allowed(&opened))
        {
            return Err(Refusal::Outside);
        }
        let meta = file
            .metadata()
            .map_err(|e| Refusal::Unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(Refusal::NotFound);
        }
        // O_NONBLOCK only kept the open from hanging on a FIFO; regular files ignore it.
        Ok(OpenedFile {
            file,
            real_path: real,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    fn is_allowed(&self, real: &Path) -> bool {
        self.allowed.iter().any(|root| real.starts_with(root))
    }
}

/// A name `fsutil` gives a file while it is being written.
fn is_temporary(part: &std::ffi::OsStr) -> bool {
    part.as_encoded_bytes()
        .starts_with(crate::fsutil::TEMP_PREFIX.as_bytes())
}

fn is_missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, Confinement) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let cache = d.path().join("cache");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(root.join("vmlinuz"), b"k").unwrap();
        std::fs::write(root.join("sub/file.txt"), b"f").unwrap();
        std::fs::write(cache.join("master"), b"m").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        symlink("../secret", root.join("escape")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("../cache/master", root.join("cached")).unwrap();
        symlink("sub/file.txt", root.join("inside")).unwrap();
        std::fs::write(root.join(".ironboot-tmp-0a1b-vmlinuz"), b"partial").unwrap();
        std::fs::write(root.join("sub/.ironboot-tmp-0a1b-file.txt"), b"partial").unwrap();
        symlink(".ironboot-tmp-0a1b-vmlinuz", root.join("to-temp")).unwrap();
        let c = Confinement::new(&root, &[cache]).unwrap();
        (d, c)
    }

    #[test]
    fn serves_names_inside_in_every_spelling() {
        let (_d, c) = setup();
        for name in [
            "vmlinuz",
            "/vmlinuz",
            "./vmlinuz",
            "sub/file.txt",
            "sub\\file.txt",
            "/sub//file.txt",
            "inside",
            "cached",
        ] {
            let f = c.open(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(f.real_path.starts_with(c.root()) || f.real_path.ends_with("cache/master"));
        }
    }

    #[test]
    fn refuses_traversal_and_escapes() {
        let (_d, c) = setup();
        let long = "a/".repeat(600);
        for (name, want) in [
            ("../secret", "bad_name"),
            ("/../secret", "bad_name"),
            ("sub/../../secret", "bad_name"),
            ("..\\secret", "bad_name"),
            ("\\..\\secret", "bad_name"),
            ("sub/..", "bad_name"),
            ("", "bad_name"),
            ("/", "bad_name"),
            ("vmlinuz\0.txt", "bad_name"),
            ("vm\nlinuz", "bad_name"),
            (long.as_str(), "bad_name"),
            ("escape", "outside_root"),
            ("slash/etc/passwd", "outside_root"),
            ("slash", "outside_root"),
            ("/etc/passwd", "not_found"),
            ("sub", "not_found"),
            ("vmlinuz/x", "not_found"),
            (".ironboot-tmp-0a1b-vmlinuz", "not_found"),
            ("sub/.ironboot-tmp-0a1b-file.txt", "not_found"),
            ("to-temp", "not_found"),
        ] {
            let got = c.open(name).expect_err(name);
            assert_eq!(got.label(), want, "{name:?}: {got}");
        }
    }
}
