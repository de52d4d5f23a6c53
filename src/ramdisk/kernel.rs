//! Where the ramdisk's kernel and modules come from: a kernel image (its modules from
//! `--modules` or `/lib/modules/<release>`), a `linux-image-*` `.deb`, or — by default —
//! Debian's `linux-image-amd64`: the installed one, else downloaded with `apt-get download`
//! into the cache (and said so).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::RamdiskError;

/// A kernel image with its module tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelTree {
    pub image: PathBuf,
    /// `6.1.0-57-amd64`
    pub release: String,
    /// `.../lib/modules/<release>`
    pub modules: PathBuf,
    /// Where it came from, for the report.
    pub origin: String,
    /// Unpacked from a package by this builder (its tree may be completed with depmod).
    pub unpacked: bool,
}

/// The release string in a bzImage's setup header (`kernel_version`), e.g. `6.1.0-57-amd64`.
pub fn bzimage_release(b: &[u8]) -> Option<String> {
    if b.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = usize::from(u16::from_le_bytes([*b.get(0x20e)?, *b.get(0x20f)?]));
    if ptr == 0 {
        return None;
    }
    let s = b.get(0x200 + ptr..)?;
    let end = s.iter().position(|c| *c == 0 || *c == b' ')?;
    let release = String::from_utf8_lossy(&s[..end]).into_owned();
    (!release.is_empty()).then_some(release)
}

fn run(cmd: &mut Command, what: &str) -> Result<String, RamdiskError> {
    let out = cmd.output().map_err(|source| RamdiskError::Tool {
        what: what.to_string(),
        reason: source.to_string(),
    })?;
    if !out.status.success() {
        return Err(RamdiskError::Tool {
            what: what.to_string(),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A kernel image given by path.
fn from_image(image: &Path, modules: Option<&Path>) -> Result<KernelTree, RamdiskError> {
    let bytes = std::fs::read(image).map_err(|source| RamdiskError::Read {
        path: image.to_path_buf(),
        source,
    })?;
    let release =
        bzimage_release(&bytes).ok_or_else(|| RamdiskError::NotAKernel(image.to_path_buf()))?;
    let modules = match modules {
        Some(m) => m.to_path_buf(),
        None => Path::new("/lib/modules").join(&release),
    };
    if !modules.join("kernel").is_dir() {
        return Err(RamdiskError::NoModules {
            release,
            looked_at: modules,
        });
    }
    Ok(KernelTree {
        image: image.to_path_buf(),
        release,
        modules,
        origin: format!("kernel image {}", image.display()),
        unpacked: false,
    })
}

/// A `linux-image-*` package, unpacked (once) under `cache`.
fn from_deb(deb: &Path, cache: &Path) -> Result<KernelTree, RamdiskError> {
    let stem = deb
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kernel".into());
    let root = cache.join("unpacked").join(&stem);
    let done = root.join(".unpacked");
    if !done.is_file() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).map_err(|source| RamdiskError::Write {
            path: root.clone(),
            source,
        })?;
        run(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root),
            &format!("dpkg-deb -x {}", deb.display()),
        )?;
        std::fs::write(&done, b"").map_err(|source| RamdiskError::Write { path: done, source })?;
    }
    let release = std::fs::read_dir(root.join("lib/modules"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .ok_or_else(|| RamdiskError::NoModules {
            release: stem.clone(),
            looked_at: root.join("lib/modules"),
        })?;
    Ok(KernelTree {
        image: root.join("boot").join(format!("vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
        release,
        origin: format!("package {}", deb.display()),
        unpacked: true,
    })
}

/// The kernel package `linux-image-amd64` depends on (installed or known to apt).
fn default_package() -> Result<String, RamdiskError> {
    let pick = |text: &str| {
        text.split([',', ' ', '\n'])
            .map(|w| w.trim().trim_start_matches("Depends:").trim())
            .find(|w| {
                w.starts_with("linux-image-") && w.ends_with("-amd64") && *w != "linux-image-amd64"
            })
            .map(String::from)
    };
    if let Ok(deps) = run(
        Command::new("dpkg-query").args(["-W", "-f", "${Depends}", "linux-image-amd64"]),
        "dpkg-query",
    ) && let Some(p) = pick(&deps)
    {
        return Ok(p);
    }
    let deps = run(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        "apt-cache depends linux-image-amd64",
    )?;
    pick(&deps).ok_or_else(|| RamdiskError::Tool {
        what: "apt-cache depends linux-image-amd64".into(),
        reason: "no linux-image-*-amd64 dependency (run apt-get update)".into(),
    })
}

/// `apt-get download <package>` into `cache/debs` (reused when already there).
fn download(
    package: &str,
    cache: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<PathBuf, RamdiskError> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs).map_err(|source| RamdiskError::Write {
        path: debs.clone(),
        source,
    })?;
    let find = || -> Option<PathBuf> {
        std::fs::read_dir(&debs)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
            })
    };
    if let Some(deb) = find() {
        say(&format!("using the cached {}", deb.display()));
        return Ok(deb);
    }
    say(&format!(
        "{package} is not installed: fetching it with apt-get download into {}",
        debs.display()
    ));
    let mut cmd = Command::new("apt-get");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // apt's sandbox user cannot write into a root-owned cache directory.
        cmd.args(["-o", "APT::Sandbox::User=root"]);
    }
    run(
        cmd.arg("download").arg(package).current_dir(&debs),
        &format!("apt-get download {package}"),
    )?;
    find().ok_or_else(|| RamdiskError::Tool {
        what: format!("apt-get download {package}"),
        reason: format!("no {package}_*.deb appeared in {}", debs.display()),
    })
}

/// Resolves the kernel: `kernel` (an image or a `.deb`), else Debian's default kernel.
pub fn resolve(
    kernel: Option<&Path>,
    modules: Option<&Path>,
    cache: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<KernelTree, RamdiskError> {
    match kernel {
        Some(k) if k.extension().is_some_and(|e| e == "deb") => from_deb(k, cache),
        Some(k) => from_image(k, modules),
        None => {
            let package = default_package()?;
            let release = package.trim_start_matches("linux-image-");
            let image = Path::new("/boot").join(format!("vmlinuz-{release}"));
            if image.is_file()
                && Path::new("/lib/modules")
                    .join(release)
                    .join("kernel")
                    .is_dir()
            {
                say(&format!("using the installed {package}"));
                let mut t = from_image(&image, None)?;
                t.origin = format!("installed package {package}");
                return Ok(t);
            }
            let deb = download(&package, cache, say)?;
            from_deb(&deb, cache)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_is_read_from_the_setup_header() {
        let mut b = vec![0u8; 0x400];
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        b[0x300..0x300 + 20].copy_from_slice(b"6.1.0-57-amd64 (dbg)");
        assert_eq!(bzimage_release(&b).as_deref(), Some("6.1.0-57-amd64"));
        b[0x202] = b'X';
        assert_eq!(bzimage_release(&b), None);
    }
}
