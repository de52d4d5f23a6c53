//! Disks: which block devices the agent may write, which one root device hints choose, and
//! the low-level pieces for writing them (partition tables, filesystem probes, erasing).
//!
//! In a ramdisk every local disk (from `/sys/block`, without loop, RAM, optical, floppy and
//! removable devices) is a candidate; outside one only the `--disk` paths given are, so a
//! test can never reach a host disk. Writes address the whole device at byte offsets (a
//! partition is a region of its disk), so a plain file works as a disk too.

pub mod erase;
pub mod fs;
pub mod hints;
pub mod region;
pub mod table;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::settings::DiskScope;

/// IPA's smallest install target when no root device hints are given (4 GiB).
pub const MIN_DISK_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the size of {path}: {source}")]
    Size {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error("{0}")]
    NotFound(String),
    #[error("invalid root device hints: {0}")]
    BadHints(String),
}

/// One candidate install target and what root device hints can match on.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDevice {
    pub path: PathBuf,
    /// Kernel name (`vda`), or the file name outside a ramdisk.
    pub name: String,
    pub size: u64,
    /// Logical sector size (partition tables count in these).
    pub sector: u64,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub rotational: bool,
    pub hctl: Option<String>,
}

impl BlockDevice {
    /// IPA's `BlockDevice` fields (the inventory shape).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.path.display().to_string(), "size": self.size,
            "model": self.model, "vendor": self.vendor, "serial": self.serial,
            "wwn": self.wwn, "rotational": self.rotational, "hctl": self.hctl,
            "logical_sectors": self.sector, "physical_sectors": self.sector,
        })
    }
}

/// The size in bytes of an open block device or file.
pub fn device_size(f: &File) -> std::io::Result<u64> {
    let meta = f.metadata()?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    // BLKGETSIZE64 = _IOR(0x12, 114, u64)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid and aligned.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// Asks the kernel to read a block device's partition table again (partitions appear as
/// `/dev/vda1`...). Files and busy devices are left alone: nothing here depends on the
/// partition nodes, the agent addresses partitions by offset.
pub fn reread_partitions(f: &File) {
    if f.metadata().is_ok_and(|m| m.is_file()) {
        return;
    }
    // BLKRRPART = _IO(0x12, 95)
    const BLKRRPART: libc::c_ulong = 0x125f;
    // SAFETY: BLKRRPART takes no argument.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "the kernel did not re-read the partition table");
    }
}

/// Opens a target for reading and writing.
pub fn open_rw(path: &Path) -> Result<File, DiskError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn sys_text(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Kernel block devices that are never install targets.
fn skipped_name(name: &str) -> bool {
    [
        "loop", "ram", "zram", "sr", "fd", "dm-", "md", "nbd", "mtdblock", "zd",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A disk from `/sys/block/<name>`.
fn from_sysfs(name: &str) -> Option<BlockDevice> {
    let sys = Path::new("/sys/block").join(name);
    if sys_text(sys.join("removable")).as_deref() == Some("1") {
        return None;
    }
    let sectors: u64 = sys_text(sys.join("size"))?.parse().ok()?;
    if sectors == 0 {
        return None;
    }
    let hctl = std::fs::read_link(sys.join("device"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.split(':').count() == 4);
    Some(BlockDevice {
        path: PathBuf::from("/dev").join(name),
        name: name.to_string(),
        size: sectors * 512,
        sector: sys_text(sys.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(512),
        model: sys_text(sys.join("device/model")),
        vendor: sys_text(sys.join("device/vendor")),
        serial: sys_text(sys.join("device/serial")).or_else(|| sys_text(sys.join("serial"))),
        wwn: sys_text(sys.join("device/wwid")).or_else(|| sys_text(sys.join("wwid"))),
        rotational: sys_text(sys.join("queue/rotational")).as_deref() == Some("1"),
        hctl,
    })
}

/// A disk given by path (outside a ramdisk).
fn from_path(path: &Path) -> Result<BlockDevice, DiskError> {
    let f = File::open(path).map_err(|source| DiskError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let meta = f.metadata().map_err(|source| DiskError::Size {
        path: path.to_path_buf(),
        source,
    })?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.is_file() && !meta.file_type().is_block_device() {
        return Err(DiskError::NotADisk {
            path: path.to_path_buf(),
        });
    }
    let size = device_size(&f).map_err(|source| DiskError::Size {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BlockDevice {
        path: path.to_path_buf(),
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        sector: 512,
        model: None,
        vendor: None,
        serial: None,
        wwn: None,
        rotational: false,
        hctl: None,
    })
}

/// Every candidate install target, sorted by name.
pub fn list(scope: &DiskScope) -> Result<Vec<BlockDevice>, DiskError> {
    match scope {
        DiskScope::Only(paths) => paths.iter().map(|p| from_path(p)).collect(),
        DiskScope::Machine => {
            let mut names: Vec<String> = std::fs::read_dir("/sys/block")
                .map_err(|source| DiskError::Open {
                    path: "/sys/block".into(),
                    source,
                })?
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !skipped_name(n))
                .collect();
            names.sort();
            Ok(names.iter().filter_map(|n| from_sysfs(n)).collect())
        }
    }
}

/// Root device hints of a node: `instance_info.root_device`, else `properties.root_device`.
pub fn node_hints(node: Option<&Value>) -> Map<String, Value> {
    let Some(node) = node else {
        return Map::new();
    };
    ["instance_info", "properties"]
        .iter()
        .find_map(|k| node.get(*k)?.get("root_device")?.as_object().cloned())
        .unwrap_or_default()
}

/// The install target: the first disk matching the hints, or without hints the first disk of
/// at least 4 GiB (any size outside a ramdisk, where the disks are given explicitly).
pub fn install_device(
    scope: &DiskScope,
    hints: &Map<String, Value>,
) -> Result<BlockDevice, DiskError> {
    let devices = list(scope)?;
    if devices.is_empty() {
        return Err(DiskError::NotFound(
            "No suitable device was found for deployment: the machine has no disks".into(),
        ));
    }
    if !hints.is_empty() {
        let parsed = hints::Hints::parse(hints).map_err(DiskError::BadHints)?;
        return devices
            .into_iter()
            .find(|d| parsed.matches(d))
            .ok_or_else(|| {
                DiskError::NotFound(format!(
                    "No suitable device was found for deployment using these hints {}",
                    Value::Object(hints.clone())
                ))
            });
    }
    let min = match scope {
        DiskScope::Machine => MIN_DISK_BYTES,
        DiskScope::Only(_) => 0,
    };
    let found: Vec<String> = devices
        .iter()
        .map(|d| format!("{} ({} bytes)", d.path.display(), d.size))
        .collect();
    devices.into_iter().find(|d| d.size >= min).ok_or_else(|| {
        DiskError::NotFound(format!(
            "No suitable device was found for deployment - root device hints were not \
             provided and all found block devices are smaller than {min}B: {}",
            found.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_paths_are_the_only_candidates_and_hints_pick_among_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        std::fs::write(&a, vec![0u8; 4096]).unwrap();
        std::fs::write(&b, vec![0u8; 8192]).unwrap();
        let scope = DiskScope::Only(vec![a.clone(), b.clone()]);
        assert_eq!(install_device(&scope, &Map::new()).unwrap().path, a);
        let hints = json!({"name": "b.img"}).as_object().unwrap().clone();
        assert_eq!(install_device(&scope, &hints).unwrap().size, 8192);
        let hints = json!({"serial": "nope"}).as_object().unwrap().clone();
        let e = install_device(&scope, &hints).unwrap_err();
        assert!(e.to_string().contains("hints"), "{e}");
        let missing = DiskScope::Only(vec![dir.path().join("gone")]);
        assert!(matches!(
            install_device(&missing, &Map::new()),
            Err(DiskError::Open { .. })
        ));
        let none = DiskScope::Only(vec![]);
        assert!(matches!(
            install_device(&none, &Map::new()),
            Err(DiskError::NotFound(_))
        ));
    }

    #[test]
    fn hints_come_from_instance_info_first() {
        let node = json!({"instance_info": {"root_device": {"name": "/dev/vdb"}},
                          "properties": {"root_device": {"name": "/dev/vda"}}});
        assert_eq!(node_hints(Some(&node))["name"], "/dev/vdb");
        let node = json!({"instance_info": {}, "properties": {"root_device": {"size": 10}}});
        assert_eq!(node_hints(Some(&node))["size"], 10);
        assert!(node_hints(None).is_empty());
    }
}

#[cfg(test)]
pub mod tests_support {
    /// A program on PATH (unit tests that cross-check with a standard tool when present).
    pub fn which(tool: &str) -> Option<std::path::PathBuf> {
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    }
}
