//! The deploy ramdisk: `ironboot ramdisk build` packs `ironboot-agent` as `/init` with the
//! kernel modules it needs into `agent.initramfs` (gzipped newc cpio) next to the kernel as
//! `agent.kernel` — what a node's `deploy_kernel` / `deploy_ramdisk` point at.
//!
//! - [`kernel`]: the kernel and its modules (an image, a `.deb`, or Debian's
//!   `linux-image-amd64`, installed or fetched with apt into the cache);
//! - [`modules`]: NIC and disk drivers with their dependencies, in load order (the agent's
//!   init loads them from `/lib/modules/ironboot-modules.load`);
//! - [`elf`]: a statically linked agent goes in as it is; a dynamically linked one brings its
//!   loader and libraries; both lose their debug information;
//! - [`cpio`]: the archive, reproducible (same inputs, same bytes).

pub mod cli;
pub mod cpio;
pub mod elf;
pub mod kernel;
pub mod modules;

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Output file names in the output directory.
pub const KERNEL_FILE: &str = "agent.kernel";
pub const INITRAMFS_FILE: &str = "agent.initramfs";
/// Where init finds the modules to load (relative to the archive root).
pub const MODULE_LIST: &str = "lib/modules/ironboot-modules.load";
const AGENT_PATH: &str = "usr/bin/ironboot-agent";
/// Searched for the libraries of a dynamically linked agent.
const LIBRARY_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
/// The largest initramfs this builder will write (the bound; a few MiB is normal).
pub const MAX_INITRAMFS_BYTES: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RamdiskError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {reason}")]
    Tool { what: String, reason: String },
    #[error("{0} is not a bzImage kernel (no setup header with a version)")]
    NotAKernel(PathBuf),
    #[error(
        "no modules for kernel {release} in {looked_at} (give --modules DIR, or the kernel's .deb as --kernel)"
    )]
    NoModules { release: String, looked_at: PathBuf },
    #[error("module dependency loop at {0}")]
    ModuleLoop(String),
    #[error("the agent {path}: {source}")]
    Agent {
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
    #[error("the agent needs {name}, found in none of {LIBRARY_DIRS:?}")]
    Library { name: String },
    #[error("the initramfs would be {bytes} bytes, more than the {MAX_INITRAMFS_BYTES} allowed")]
    TooLarge { bytes: u64 },
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// A bzImage or a `linux-image-*.deb`; `None`: Debian's `linux-image-amd64`.
    pub kernel: Option<PathBuf>,
    /// The module tree of an image given by path (default `/lib/modules/<release>`).
    pub modules_dir: Option<PathBuf>,
    /// The `ironboot-agent` binary.
    pub agent: PathBuf,
    pub output: PathBuf,
    /// Downloaded and unpacked kernel packages.
    pub cache_dir: PathBuf,
    /// Modules besides [`modules::DEFAULT_MODULES`].
    pub extra_modules: Vec<String>,
    /// Pack only these modules (instead of the defaults and the extras).
    pub only_modules: Option<Vec<String>>,
    /// CA certificates for https image URLs (copied to `/etc/ssl/certs/ca-certificates.crt`).
    pub ca_bundle: Option<PathBuf>,
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
    pub kernel_origin: String,
    pub modules: Vec<String>,
    pub missing_modules: Vec<String>,
    /// Libraries packed for a dynamically linked agent (empty when static).
    pub libraries: Vec<String>,
    pub initramfs_bytes: u64,
    pub content_bytes: u64,
    pub initramfs_sha256: String,
}

fn read(path: &Path) -> Result<Vec<u8>, RamdiskError> {
    std::fs::read(path).map_err(|source| RamdiskError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn find_library(name: &str) -> Result<PathBuf, RamdiskError> {
    LIBRARY_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| RamdiskError::Library {
            name: name.to_string(),
        })
}

/// Adds the agent (stripped) and, when it is dynamically linked, its loader and libraries.
fn add_agent(a: &mut cpio::Archive, agent: &Path) -> Result<Vec<String>, RamdiskError> {
    let bytes = read(agent)?;
    let bad = |source| RamdiskError::Agent {
        path: agent.to_path_buf(),
        source,
    };
    let linkage = elf::linkage(&bytes).map_err(bad)?;
    a.file(AGENT_PATH, 0o755, elf::strip(&bytes).map_err(bad)?);
    a.symlink("init", AGENT_PATH);
    let mut libraries = Vec::new();
    let Some(interp) = linkage.interpreter else {
        return Ok(libraries);
    };
    a.file(
        &interp,
        0o755,
        read(&std::fs::canonicalize(&interp).unwrap_or(interp.clone().into()))?,
    );
    libraries.push(interp);
    let mut queue = linkage.needed;
    while let Some(name) = queue.pop() {
        let dest = format!("lib/x86_64-linux-gnu/{name}");
        if a.contains(&dest) {
            continue;
        }
        let src = find_library(&name)?;
        let lib = read(&std::fs::canonicalize(&src).unwrap_or(src))?;
        if let Ok(l) = elf::linkage(&lib) {
            queue.extend(l.needed);
        }
        a.file(&dest, 0o755, lib);
        libraries.push(dest);
    }
    Ok(libraries)
}

fn gzip(data: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    // mtime 0 and no file name in the header: the output depends on the content only.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(data)?;
    gz.finish()
}

/// Builds `agent.kernel` and `agent.initramfs` in `req.output`.
pub fn build(req: &BuildRequest, say: &mut dyn FnMut(&str)) -> Result<BuildReport, RamdiskError> {
    let tree = kernel::resolve(
        req.kernel.as_deref(),
        req.modules_dir.as_deref(),
        &req.cache_dir,
        say,
    )?;
    let wanted: Vec<String> = match &req.only_modules {
        Some(only) => only.clone(),
        None => modules::DEFAULT_MODULES
            .iter()
            .map(|m| m.to_string())
            .chain(req.extra_modules.iter().cloned())
            .collect(),
    };
    let set = modules::resolve(&tree, &wanted)?;
    let mut a = cpio::Archive::default();
    for d in ["dev", "proc", "sys", "run", "tmp", "etc", "mnt"] {
        a.dir(d);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    a.char_device("dev/console", 5, 1);
    a.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n".to_vec());
    a.file("etc/nsswitch.conf", 0o644, b"hosts: files dns\n".to_vec());
    if let Some(ca) = req.ca_bundle.as_deref().filter(|p| p.is_file()) {
        a.file("etc/ssl/certs/ca-certificates.crt", 0o644, read(ca)?);
    }
    let libraries = add_agent(&mut a, &req.agent)?;
    let mut list = String::new();
    for rel in &set.files {
        let path = format!("{}/{rel}", tree.release);
        a.file(
            &format!("lib/modules/{path}"),
            0o644,
            read(&tree.modules.join(rel))?,
        );
        list.push_str(&path);
        list.push('\n');
    }
    a.file(MODULE_LIST, 0o644, list.into_bytes());
    let content_bytes = a.content_bytes();
    let packed = gzip(&a.finish(0)).map_err(|source| RamdiskError::Write {
        path: req.output.join(INITRAMFS_FILE),
        source,
    })?;
    if packed.len() as u64 > MAX_INITRAMFS_BYTES {
        return Err(RamdiskError::TooLarge {
            bytes: packed.len() as u64,
        });
    }
    let write = |name: &str, bytes: &[u8]| {
        let path = req.output.join(name);
        crate::fsutil::ensure_dir(&req.output)
            .and_then(|()| crate::fsutil::write_atomic(&path, bytes))
            .map(|()| path.clone())
            .map_err(|source| RamdiskError::Write { path, source })
    };
    let initramfs = write(INITRAMFS_FILE, &packed)?;
    let kernel = write(KERNEL_FILE, &read(&tree.image)?)?;
    Ok(BuildReport {
        kernel,
        initramfs,
        release: tree.release,
        kernel_origin: tree.origin,
        modules: set.files,
        missing_modules: set.missing,
        libraries,
        initramfs_bytes: packed.len() as u64,
        content_bytes,
        initramfs_sha256: hex::encode(Sha256::digest(&packed)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kernel tree good enough for the builder: a setup header with a version, two modules.
    fn fake_kernel(dir: &Path) -> (PathBuf, PathBuf) {
        let mut image = vec![0u8; 0x400];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        image[0x300..0x312].copy_from_slice(b"6.1.0-99-amd64 (x)");
        let kernel = dir.join("vmlinuz");
        std::fs::write(&kernel, &image).unwrap();
        let modules = dir.join("lib/modules/6.1.0-99-amd64");
        for (rel, depends) in [
            ("kernel/drivers/virtio/virtio_pci.ko", ""),
            ("kernel/drivers/block/virtio_blk.ko", "virtio_pci"),
        ] {
            let p = modules.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("\0license=GPL\0depends={depends}\0")).unwrap();
        }
        (kernel, modules)
    }

    #[test]
    fn the_same_inputs_give_the_same_ramdisk() {
        let dir = tempfile::tempdir().unwrap();
        let (kernel, modules) = fake_kernel(dir.path());
        let build_into = |out: &str| {
            let req = BuildRequest {
                kernel: Some(kernel.clone()),
                modules_dir: Some(modules.clone()),
                // Any dynamically linked ELF program does as the agent.
                agent: ["/usr/bin/echo", "/bin/echo"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| std::env::current_exe().unwrap()),
                output: dir.path().join(out),
                cache_dir: dir.path().join("cache"),
                extra_modules: vec![],
                only_modules: Some(vec!["virtio_blk".into(), "e1000".into()]),
                ca_bundle: None,
            };
            build(&req, &mut |_| {}).unwrap()
        };
        let one = build_into("one");
        let two = build_into("two");
        assert_eq!(one.initramfs_sha256, two.initramfs_sha256);
        assert_eq!(
            std::fs::read(&one.initramfs).unwrap(),
            std::fs::read(&two.initramfs).unwrap()
        );
        assert_eq!(one.release, "6.1.0-99-amd64");
        assert_eq!(
            one.modules,
            [
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/block/virtio_blk.ko"
            ]
        );
        assert_eq!(one.missing_modules, ["e1000"]);
        assert!(
            one.libraries.iter().any(|l| l.ends_with("libc.so.6")),
            "{:?}",
            one.libraries
        );
        assert_eq!(
            std::fs::read(&one.kernel).unwrap(),
            std::fs::read(&kernel).unwrap()
        );
    }
}
