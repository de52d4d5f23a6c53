//! QEMU test guests, shared by every test binary that boots something.
//!
//! [`guest_kit`] builds, once per target directory, a Debian kernel (downloaded with
//! `apt-get download` and unpacked with `dpkg -x`, never installed) and a busybox-static
//! initramfs (a newc cpio written here in Rust, then gzipped) with this module's own `/init`. The kit is cached under
//! `$CARGO_TARGET_DIR/ironboot-test-cache/guest/` and rebuilt when the `/init` text or the
//! module list changes. `/init`:
//! - prints [`MARKER`] and `IRONBOOT-CMDLINE: <the kernel command line>` on the console;
//! - with `inspect=1`, mounts every `/dev/vd*`, `/dev/sr0` and `/dev/fd0` read-only (iso9660,
//!   then vfat) and prints `INSPECT-DEVICE <dev> <fs>`, one `INSPECT-FILE <dev> /<path>` per
//!   file, and each `parameters.txt` line as `INSPECT-PARAM <line>`, then `INSPECT-DONE`;
//! - with `cb=URL`, brings eth0 (virtio-net or e1000) up as 10.0.2.15/24 via 10.0.2.2 (QEMU
//!   user networking, where 10.0.2.2 is the host's loopback) and fetches URL with wget,
//!   printing `IRONBOOT-CALLBACK-OK` or `IRONBOOT-CALLBACK-FAILED`;
//! - powers off (`poweroff -f`; QEMU exits because of `-no-reboot`).
//!
//! [`run_qemu`] runs `qemu-system-x86_64 -accel tcg -nographic -no-reboot -m 512 ...` with
//! stdin closed, captures the serial console (firmware, boot loader and kernel text), enforces
//! a timeout and reports timings. At most two guests run at once on the machine (TCG needs a
//! core each): a file lock slot is taken per guest, across test binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{require_condition, require_peer, run, run_timeout};

/// Printed by `/init` as soon as it runs.
pub const MARKER: &str = "=== IRONBOOT-TEST-MARKER: initramfs /init reached ===";
/// Prefix of the line carrying `/proc/cmdline`.
pub const CMDLINE_PREFIX: &str = "IRONBOOT-CMDLINE: ";
/// Combined OVMF image for `-bios` (Debian's `ovmf` package).
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// How many guests may run at once on this machine.
const GUEST_SLOTS: usize = 2;
/// How long a guest may wait for a slot: every guest ahead of it is killed at its own timeout,
/// so this only trips when a slot is stuck.
const SLOT_WAIT: Duration = Duration::from_secs(30 * 60);
/// `apt-get download` of the kernel package or `apt-get update` taking longer has hung.
const APT_TIMEOUT: Duration = Duration::from_secs(900);

/// Modules `/init` loads for `inspect=1` (dependencies are added and ordered automatically).
const STORAGE_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "ata_piix",
    "sr_mod",
    "floppy",
    "isofs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "nls_utf8",
];
/// Modules `/init` loads for `cb=URL`.
const NET_MODULES: &[&str] = &["virtio_pci", "virtio_net", "e1000"];

const INIT: &str = r#"#!/bin/busybox sh
# ironboot test guest init: say we are here, optionally inspect media or call back, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "@MARKER@"
echo "IRONBOOT-CMDLINE: $(cat /proc/cmdline)"

load() { for m in "$@"; do insmod "/lib/modules/$m.ko" 2>/dev/null; done; }

# Devices show up asynchronously after insmod: wait until the list stops changing.
settle() {
  prev=""; stable=0; tries=0
  while [ $stable -lt 3 ] && [ $tries -lt 40 ]; do
    now=$(ls /sys/block 2>/dev/null | tr '\n' ' ')
    if [ "$now" = "$prev" ]; then stable=$((stable + 1)); else stable=0; prev=$now; fi
    tries=$((tries + 1)); sleep 0.25
  done
}

cb=""; inspect=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    cb=*) cb="${arg#cb=}" ;;
    inspect=1) inspect=1 ;;
  esac
done

if [ -n "$inspect" ]; then
  load @STORAGE_MODULES@
  settle
  for dev in /dev/vd? /dev/sr0 /dev/fd0; do
    [ -b "$dev" ] || continue
    for fs in iso9660 vfat; do
      if mount -t "$fs" -o ro "$dev" /mnt 2>/dev/null; then
        echo "INSPECT-DEVICE $dev $fs"
        find /mnt -type f | sed "s|^/mnt|INSPECT-FILE $dev |"
        if [ -f /mnt/parameters.txt ]; then
          while IFS= read -r line || [ -n "$line" ]; do echo "INSPECT-PARAM $line"; done < /mnt/parameters.txt
        fi
        umount /mnt
        break
      fi
    done
  done
  echo "INSPECT-DONE"
fi

if [ -n "$cb" ]; then
  load @NET_MODULES@
  tries=0
  while [ ! -e /sys/class/net/eth0 ] && [ $tries -lt 40 ]; do tries=$((tries + 1)); sleep 0.25; done
  ip link set lo up
  ip link set eth0 up
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  if wget -q -O - "$cb"; then echo "IRONBOOT-CALLBACK-OK"; else echo "IRONBOOT-CALLBACK-FAILED"; fi
fi

echo "IRONBOOT-POWEROFF"
poweroff -f
"#;

/// A kernel and initramfs ready for `-kernel`/`-initrd` or to put on media.
#[derive(Debug, Clone)]
pub struct GuestKit {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// e.g. `6.1.0-56-amd64`.
    pub kernel_release: String,
}

/// `$CARGO_TARGET_DIR/ironboot-test-cache` (or the target dir cargo built this test in).
pub fn cache_root() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("target")),
    };
    target.join("ironboot-test-cache")
}

/// The guest kit, built on first use. `None` (after a loud message) when QEMU or apt are
/// missing and peers are optional; a panic when they are missing under CI.
pub fn guest_kit(test: &str) -> Option<GuestKit> {
    if !require_peer(
        test,
        &["qemu-system-x86_64", "apt-get", "apt-cache", "dpkg"],
    ) {
        return None;
    }
    let dir = cache_root().join("guest");
    fs::create_dir_all(&dir).unwrap();
    let _lock = FileLock::exclusive(&dir.join("build.lock"));
    let stamp = kit_stamp();
    let kit = GuestKit {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        kernel_release: fs::read_to_string(dir.join("release")).unwrap_or_default(),
    };
    if fs::read_to_string(dir.join("stamp")).ok().as_deref() == Some(stamp.as_str())
        && kit.kernel.is_file()
        && kit.initrd.is_file()
    {
        return Some(kit);
    }
    let started = Instant::now();
    let release = match build_kit(&dir) {
        Ok(release) => release,
        Err(e) => {
            // Panics under CI; otherwise prints the skip notice.
            let _ = require_condition(test, false, &format!("cannot build the test guest: {e}"));
            return None;
        }
    };
    fs::write(dir.join("release"), &release).unwrap();
    fs::write(dir.join("stamp"), &stamp).unwrap();
    eprintln!(
        "built test guest kernel {release} + initramfs in {:.1} s under {}",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Some(GuestKit {
        kernel_release: release,
        ..kit
    })
}

/// Changes whenever what the kit contains would change.
fn kit_stamp() -> String {
    format!("v2\n{INIT}\n{STORAGE_MODULES:?}\n{NET_MODULES:?}\n")
}

fn build_kit(dir: &Path) -> Result<String, String> {
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(dir)
        .map_err(|e| e.to_string())?;
    let package = kernel_package()?;
    let debs = work.path().join("debs");
    fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
    let mut download = Command::new("apt-get");
    if is_root() {
        // As root, apt warns that its sandbox user cannot write into our directory.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    let (ok, _, err) = run_timeout(
        download
            .args(["download", &package, "busybox-static"])
            .current_dir(&debs),
        APT_TIMEOUT,
    );
    if !ok {
        return Err(format!(
            "apt-get download {package} busybox-static failed: {err}"
        ));
    }
    let unpacked = work.path().join("x");
    for deb in fs::read_dir(&debs).map_err(|e| e.to_string())? {
        let deb = deb.map_err(|e| e.to_string())?.path();
        let (ok, _, err) = run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked));
        if !ok {
            return Err(format!("dpkg -x {} failed: {err}", deb.display()));
        }
    }
    let modules_root = unpacked.join("lib/modules");
    let release = fs::read_dir(&modules_root)
        .map_err(|e| format!("{}: {e}", modules_root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or("the kernel package has no lib/modules/<release>")?;
    let modules = ModuleIndex::scan(&modules_root.join(&release).join("kernel"))?;
    let storage = modules.load_order(STORAGE_MODULES)?;
    let net = modules.load_order(NET_MODULES)?;

    let init = INIT
        .replace("@MARKER@", MARKER)
        .replace("@STORAGE_MODULES@", &storage.join(" "))
        .replace("@NET_MODULES@", &net.join(" "));
    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "mnt",
        "tmp",
        "lib",
        "lib/modules",
    ] {
        cpio.dir(d);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("init", 0o755, init.as_bytes());
    let busybox = fs::read(unpacked.join("bin/busybox")).map_err(|e| format!("busybox: {e}"))?;
    cpio.file("bin/busybox", 0o755, &busybox);
    let all: BTreeSet<&String> = storage.iter().chain(&net).collect();
    for name in all {
        let bytes = fs::read(&modules.paths[name]).map_err(|e| e.to_string())?;
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &bytes);
    }
    // Compressed, the initramfs loads through the firmware's disk calls ~3.5x faster (isolinux
    // and GRUB read it from the emulated CD). gzip is an essential Debian package.
    let cpio_path = work.path().join("initrd.cpio");
    fs::write(&cpio_path, cpio.finish()).map_err(|e| e.to_string())?;
    let (ok, _, err) = run(Command::new("gzip").args(["-n", "-9"]).arg(&cpio_path));
    if !ok {
        return Err(format!("gzip of the initramfs failed: {err}"));
    }
    let initrd = fs::read(cpio_path.with_extension("cpio.gz")).map_err(|e| e.to_string())?;

    let kernel = fs::read(unpacked.join(format!("boot/vmlinuz-{release}")))
        .map_err(|e| format!("vmlinuz: {e}"))?;
    write_replace(&dir.join("vmlinuz"), &kernel)?;
    write_replace(&dir.join("initrd.img"), &initrd)?;
    Ok(release)
}

/// The Debian 6.1 kernel image package that `linux-image-amd64` points at.
fn kernel_package() -> Result<String, String> {
    let resolve = || {
        let (ok, out, _) = run(Command::new("apt-cache").args(["depends", "linux-image-amd64"]));
        ok.then(|| {
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-6.1") && p.ends_with("-amd64"))
                .map(str::to_owned)
        })
        .flatten()
    };
    if let Some(p) = resolve() {
        return Ok(p);
    }
    if is_root() {
        // A fresh CI machine may have no package lists yet.
        let _ = run_timeout(Command::new("apt-get").arg("update"), APT_TIMEOUT);
        if let Some(p) = resolve() {
            return Ok(p);
        }
    }
    Err(
        "apt-cache knows no linux-image-6.1*-amd64 behind linux-image-amd64 (run apt-get update)"
            .into(),
    )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn write_replace(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    fs::rename(&tmp, path).map_err(|e| e.to_string())
}

/// Kernel modules by name, with the `depends=` list from their `.modinfo` section.
struct ModuleIndex {
    paths: BTreeMap<String, PathBuf>,
    depends: BTreeMap<String, Vec<String>>,
}

impl ModuleIndex {
    fn scan(root: &Path) -> Result<Self, String> {
        let mut index = Self {
            paths: BTreeMap::new(),
            depends: BTreeMap::new(),
        };
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Some(name) = path
                    .file_name()
                    .and_then(OsStr::to_str)
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    // Module names treat '-' and '_' alike; store the '_' spelling.
                    index.paths.insert(name.replace('-', "_"), path);
                }
            }
        }
        Ok(index)
    }

    fn depends_of(&mut self, name: &str) -> Result<Vec<String>, String> {
        if let Some(d) = self.depends.get(name) {
            return Ok(d.clone());
        }
        let path = self
            .paths
            .get(name)
            .ok_or_else(|| format!("module {name} is not in the kernel package (built in?)"))?;
        let bytes = fs::read(path).map_err(|e| e.to_string())?;
        let needle = b"depends=";
        let deps = bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|at| {
                let rest = &bytes[at + needle.len()..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                String::from_utf8_lossy(&rest[..end])
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.replace('-', "_"))
                    .collect()
            })
            .unwrap_or_default();
        self.depends.insert(name.to_owned(), deps);
        Ok(self.depends[name].clone())
    }

    /// `wanted` plus their dependencies, each after everything it depends on.
    fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>, String> {
        let mut index = Self {
            paths: self.paths.clone(),
            depends: BTreeMap::new(),
        };
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        fn visit(
            index: &mut ModuleIndex,
            name: &str,
            done: &mut BTreeSet<String>,
            order: &mut Vec<String>,
            depth: usize,
        ) -> Result<(), String> {
            if done.contains(name) {
                return Ok(());
            }
            if depth > 32 {
                return Err(format!("module dependency loop at {name}"));
            }
            for dep in index.depends_of(name)? {
                visit(index, &dep, done, order, depth + 1)?;
            }
            done.insert(name.to_owned());
            order.push(name.to_owned());
            Ok(())
        }
        for name in wanted {
            visit(&mut index, name, &mut done, &mut order, 0)?;
        }
        Ok(order)
    }
}

/// A `newc` cpio archive (what the kernel unpacks as initramfs), uncompressed.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            if mode & 0o170000 == 0o040000 { 2 } else { 1 },
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.out.resize(self.out.len().next_multiple_of(4), 0);
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

/// An exclusive `flock` held until dropped.
pub struct FileLock(File);

impl FileLock {
    pub fn exclusive(path: &Path) -> Self {
        let file = lock_file(path);
        // SAFETY: flock on a valid open descriptor; blocking until the lock is granted.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        Self(file)
    }

    fn try_exclusive(path: &Path) -> Option<Self> {
        let file = lock_file(path);
        // SAFETY: flock on a valid open descriptor; LOCK_NB makes it return at once.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(Self(file))
    }
}

fn lock_file(path: &Path) -> File {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

/// Waits for one of the machine-wide guest slots; a slot not free after [`SLOT_WAIT`] fails
/// the test (every guest run is killed at its own timeout, so a slot that long taken is stuck).
pub fn guest_slot() -> FileLock {
    let dir = cache_root().join("guest");
    fs::create_dir_all(&dir).unwrap();
    let deadline = Instant::now() + SLOT_WAIT;
    loop {
        for slot in 0..GUEST_SLOTS {
            if let Some(lock) = FileLock::try_exclusive(&dir.join(format!("slot-{slot}.lock"))) {
                return lock;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no guest slot free after {SLOT_WAIT:?} under {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What a guest run produced.
#[derive(Debug)]
pub struct GuestRun {
    /// Serial console and QEMU's own messages, as text.
    pub output: String,
    /// From QEMU start to exit (or to the kill at the timeout).
    pub elapsed: Duration,
    /// From QEMU start to the first appearance of the expected marker.
    pub marker_after: Option<Duration>,
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// Time spent waiting for a guest slot before QEMU started.
    pub queued: Duration,
}

impl GuestRun {
    /// The line after `CMDLINE_PREFIX`, if `/init` printed it.
    pub fn cmdline(&self) -> Option<&str> {
        self.output.lines().find_map(|l| {
            l.find(CMDLINE_PREFIX)
                .map(|at| l[at + CMDLINE_PREFIX.len()..].trim_end())
        })
    }

    /// Lines starting with `prefix` (after any console noise before it), without the prefix.
    pub fn lines_with(&self, prefix: &str) -> Vec<&str> {
        self.output
            .lines()
            .filter_map(|l| {
                l.find(prefix)
                    .map(|at| l[at + prefix.len()..].trim_end_matches('\r'))
            })
            .collect()
    }

    /// Panics with the tail of the console unless the marker appeared.
    pub fn assert_marker(&self, what: &str) -> Duration {
        match self.marker_after {
            Some(t) => t,
            None => panic!(
                "{what}: no marker after {:.1} s (timed out: {}, status {:?}); console tail:\n{}",
                self.elapsed.as_secs_f64(),
                self.timed_out,
                self.status,
                tail(&self.output, 60)
            ),
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `qemu-system-x86_64 -accel tcg -nographic -no-reboot -m 512 <args>` with stdin closed,
/// waiting for a guest slot first. The guest is killed at `timeout`. `expect_marker` (usually
/// [`MARKER`]) is looked for in the console output as it arrives.
pub fn run_qemu<I, S>(args: I, timeout: Duration, expect_marker: Option<&str>) -> GuestRun
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let queued_at = Instant::now();
    let _slot = guest_slot();
    let queued = queued_at.elapsed();
    let started = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-nographic", "-no-reboot", "-m", "512"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start qemu-system-x86_64");
    let output = Arc::new(Mutex::new(Vec::<u8>::new()));
    let marker_at = Arc::new(Mutex::new(None::<Duration>));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ]
    .into_iter()
    .map(|mut pipe| {
        let output = Arc::clone(&output);
        let marker_at = Arc::clone(&marker_at);
        let marker = expect_marker.map(str::to_owned);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut out = output.lock().unwrap();
                out.extend_from_slice(&buf[..n]);
                if let Some(m) = &marker {
                    let mut at = marker_at.lock().unwrap();
                    // Search only the tail that could hold a newly completed marker.
                    let from = out.len().saturating_sub(n + m.len());
                    if at.is_none() && out[from..].windows(m.len()).any(|w| w == m.as_bytes()) {
                        *at = Some(started.elapsed());
                    }
                }
            }
        })
    })
    .collect();

    let deadline = started + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let elapsed = started.elapsed();
    for r in readers {
        let _ = r.join();
    }
    let bytes = output.lock().unwrap().clone();
    let marker_after = *marker_at.lock().unwrap();
    GuestRun {
        output: String::from_utf8_lossy(&bytes).into_owned(),
        elapsed,
        marker_after,
        status,
        timed_out,
        queued,
    }
}
