//! What the full-deploy tests deploy and boot, built from the test kit (`support::guest`):
//! - the deploy ramdisk, made by `ironboot ramdisk build` with this build's `ironboot-agent`
//!   (Debian's kernel fetched with apt into the test cache once);
//! - the instance's initramfs: the kit's busybox initramfs with an `/init` of its own
//!   appended (a later cpio member replaces an earlier one), which prints
//!   [`INSTANCE_MARKER`], its command line, the device behind `root=UUID=...` and its
//!   label, and the config drive's `meta_data.json`, then powers off;
//! - a whole-disk image that boots by itself: a hybrid ISO (isolinux, isohybrid MBR) built by
//!   `ironboot media iso`, padded to a size;
//! - a partition image: an ext4 filesystem with a known UUID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::guest::{FileLock, GuestKit, cache_root};
use super::{ironboot_bin, require_peer, run};

/// Printed by the instance's `/init`.
pub const INSTANCE_MARKER: &str = "IRONBOOT-INSTANCE-UP";

const INSTANCE_INIT: &str = r#"#!/bin/busybox sh
# ironboot e2e instance: prove which disk and filesystem this boot came from, then power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "IRONBOOT-INSTANCE-UP"
echo "IRONBOOT-INSTANCE-CMDLINE: $(cat /proc/cmdline)"
# Load every module the kit has, whatever the order (a few passes settle dependencies).
for pass in 1 2 3; do for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done; done
sleep 2
# The kit's busybox has findfs (by UUID or LABEL) but no blkid.
for a in $(cat /proc/cmdline); do
  case "$a" in
    root=UUID=*)
      r=$(findfs "${a#root=}")
      # The ext4 volume label: superblock (1024) + 120.
      echo "IRONBOOT-INSTANCE-ROOT: $r $(dd if="$r" bs=1 skip=1144 count=16 2>/dev/null | tr -d '\000')" ;;
  esac
done
cd=$(findfs LABEL=config-2 2>/dev/null)
if [ -n "$cd" ] && mount -t iso9660 -o ro "$cd" /mnt; then
  echo "IRONBOOT-INSTANCE-CONFIGDRIVE: $cd $(cat /mnt/openstack/latest/meta_data.json)"
  umount /mnt
fi
echo "IRONBOOT-INSTANCE-DONE"
poweroff -f
"#;

/// The deploy kernel and ramdisk with `ironboot-agent`.
#[derive(Debug, Clone)]
pub struct AgentRamdisk {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The builder's report (stdout of `ironboot ramdisk build`).
    pub report: String,
}

/// Builds the deploy ramdisk once per agent binary (rebuilt when the agent changes).
pub fn agent_ramdisk(test: &str) -> Option<AgentRamdisk> {
    if !require_peer(test, &["apt-get", "apt-cache", "dpkg-deb"]) {
        return None;
    }
    let dir = cache_root().join("agent-ramdisk");
    std::fs::create_dir_all(&dir).unwrap();
    let _lock = FileLock::exclusive(&dir.join("build.lock"));
    // IRONBOOT_E2E_AGENT: another build of the agent (e.g. the static release one, to
    // measure it); by default this build's.
    let agent = std::env::var_os("IRONBOOT_E2E_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ironboot-agent")));
    let meta = std::fs::metadata(&agent).unwrap();
    let stamp = format!(
        "{} {} {:?} {:?}",
        agent.display(),
        meta.len(),
        meta.modified().ok(),
        std::fs::metadata(ironboot_bin())
            .ok()
            .and_then(|m| m.modified().ok())
    );
    let out = dir.join("out");
    let ramdisk = AgentRamdisk {
        kernel: out.join("agent.kernel"),
        initramfs: out.join("agent.initramfs"),
        report: std::fs::read_to_string(dir.join("report")).unwrap_or_default(),
    };
    if std::fs::read_to_string(dir.join("stamp")).ok().as_deref() == Some(stamp.as_str())
        && ramdisk.initramfs.is_file()
    {
        return Some(ramdisk);
    }
    let started = Instant::now();
    let (ok, stdout, stderr) = run(Command::new(ironboot_bin())
        .args(["ramdisk", "build", "--agent"])
        .arg(&agent)
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("-o")
        .arg(&out));
    assert!(ok, "ironboot ramdisk build failed:\n{stderr}\n{stdout}");
    eprintln!(
        "built the agent ramdisk in {:.1} s:\n{stderr}{stdout}",
        started.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("report"), &stdout).unwrap();
    std::fs::write(dir.join("stamp"), &stamp).unwrap();
    Some(AgentRamdisk {
        report: stdout,
        ..ramdisk
    })
}

/// The kit's initramfs with the instance `/init` appended; written to `dir/instance.img`.
pub fn instance_initrd(kit: &GuestKit, dir: &Path) -> PathBuf {
    let mut archive = ironboot::ramdisk::cpio::Archive::default();
    archive.file("init", 0o755, INSTANCE_INIT.as_bytes().to_vec());
    let mut bytes = std::fs::read(&kit.initrd).unwrap();
    // The kernel unpacks concatenated archives in order (the later /init wins), but it looks
    // for the next one only at 4-byte boundaries, skipping zeros.
    bytes.resize(bytes.len().next_multiple_of(4), 0);
    bytes.extend_from_slice(&archive.finish(0));
    let path = dir.join("instance.img");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A whole-disk image that boots under BIOS from a disk: a hybrid ISO with the kit's kernel
/// and the instance initramfs, `append` on its command line, padded with zeros to `size`.
pub fn whole_disk_image(kit: &GuestKit, dir: &Path, append: &str, size: u64) -> PathBuf {
    let initrd = instance_initrd(kit, dir);
    let path = dir.join("whole-disk.img");
    let (ok, out, err) = run(Command::new(ironboot_bin())
        .args(["media", "iso", "--bios", "--hybrid", "--kernel"])
        .arg(&kit.kernel)
        .arg("--ramdisk")
        .arg(&initrd)
        .args(["--append", append, "-o"])
        .arg(&path)
        .env_remove("IRONBOOT_CONFIG"));
    assert!(ok, "ironboot media iso failed: {err}\n{out}");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    assert!(
        f.metadata().unwrap().len() <= size,
        "the ISO is larger than {size}"
    );
    f.set_len(size).unwrap();
    path
}

/// An ext4 partition image of `size` bytes with `uuid` and `label`, holding `/etc/hostname`.
pub fn ext4_image(dir: &Path, size: u64, uuid: &str, label: &str) -> PathBuf {
    let tree = dir.join("root-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/hostname"), format!("{label}\n")).unwrap();
    let path = dir.join("root.ext4");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let (ok, _, err) = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-U", uuid, "-d"])
        .arg(&tree)
        .arg(&path));
    assert!(ok, "mkfs.ext4: {err}");
    path
}

/// sha256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}
