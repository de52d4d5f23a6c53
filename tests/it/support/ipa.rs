//! A sandboxed lab for the REAL ironic-python-agent 13.0.0 (PyPI) driven by `ironboot serve`.
//!
//! Safety first: the agent writes disks. Everything runs inside `unshare --net --mount --pid`
//! (loopback only, fresh /proc, tmpfs over /run and TMPDIR, PATH shims for reboot, poweroff,
//! hwclock, docker and podman), and the agent loads a test hardware manager (written below,
//! installed into the venv as a plain distribution with an entry point) that reports exactly
//! one disk — a loop device over a sparse file in the lab's work dir — and one NIC with a fixed
//! MAC. The stock manager would pick this machine's root disk, so the lab refuses to start
//! without the loop device.
//!
//! ironboot runs inside the same sandbox (its own loopback), with the `script` power
//! interface pointing at `power.sh`: "power on" starts an agent process (as a BMC would boot
//! the machine into the deploy ramdisk), "power off" kills it, "status" reports whether it
//! lives. Tests reach the API with `nsenter --net` + curl.
//!
//! A Python `http.server` in the sandbox is the image origin (as Glance or a web server would
//! be): it serves `<lab>/images`. By default ironboot fetches from it into its image cache and
//! the agent downloads from ironboot's own HTTP server; `direct` lets the agent use the origin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{free_tcp_port, free_udp_port, ironboot_bin, run};

pub const IPA_REQUIREMENT: &str = "ironic-python-agent==13.0.0";
/// The MAC of the agent's one NIC (the node's port).
pub const AGENT_MAC: &str = "52:54:00:1b:00:07";

/// One lab at a time: two cores, and each agent does real disk work.
static LAB_LOCK: Mutex<()> = Mutex::new(());

const TOOLS: &[&str] = &[
    "unshare",
    "nsenter",
    "losetup",
    "partx",
    "parted",
    "partprobe",
    "sgdisk",
    "qemu-img",
    "udevadm",
    "hexdump",
    "fuser",
    "wipefs",
    "blockdev",
    "lsblk",
    "blkid",
    "sfdisk",
    "mkfs.ext4",
    "curl",
    "python3",
    "ps",
    "setsid",
];

/// The test hardware manager (test-only; never loaded without IPA_TEST_DISK).
const HWM_PY: &str = r#""""ironboot test hardware manager: one loop-device disk, one NIC.

Loaded by ironic-python-agent through the ironic_python_agent.hardware_managers entry point.
It outranks the generic manager, so every disk decision lands here, and it only ever names
the device in IPA_TEST_DISK. Without that variable it stays out of the way (and the lab
never starts an agent without it).
"""
import os

import psutil

from ironic_python_agent import errors
from ironic_python_agent import hardware
from ironic_python_agent import utils

TEST_DISK = os.environ.get('IPA_TEST_DISK')
TEST_MAC = os.environ.get('IPA_TEST_MAC', '52:54:00:1b:00:07')


class LoopDiskManager(hardware.GenericHardwareManager):
    HARDWARE_MANAGER_NAME = 'ironboot_loop_disk'
    HARDWARE_MANAGER_VERSION = '1'

    def evaluate_hardware_support(self):
        if not TEST_DISK:
            return hardware.HardwareSupport.NONE
        return hardware.HardwareSupport.SERVICE_PROVIDER

    def initialize(self):
        pass

    def _nic(self):
        return hardware.NetworkInterface('lab0', TEST_MAC, ipv4_address='127.0.0.1',
                                         has_carrier=True, driver='lab')

    def list_network_interfaces(self):
        return [self._nic()]

    def get_interface_info(self, interface_name):
        if interface_name != 'lab0':
            raise errors.IncompatibleHardwareMethodError()
        return self._nic()

    def get_ipv4_addr(self, interface_id):
        return '127.0.0.1'

    def collect_lldp_data(self, interface_names=None):
        return {}

    def _disk(self):
        out, _ = utils.execute('blockdev', '--getsize64', TEST_DISK)
        return hardware.BlockDevice(name=TEST_DISK, model='ironboot lab disk',
                                    size=int(out.strip()), rotational=False,
                                    serial='IRONBOOTLAB', logical_sectors=512,
                                    physical_sectors=512)

    def list_block_devices(self, include_partitions=False, all_serial_and_wwn=False):
        return [self._disk()]

    def get_os_install_device(self, permit_refresh=False):
        node = hardware.get_cached_node()
        # As the generic manager: with no root device hints, refresh the node by looking it
        # up again (the conductor then answers with a masked token).
        if permit_refresh and node and not node.get('instance_info', {}).get('root_device'):
            hardware.update_cached_node()
        return TEST_DISK

    def erase_block_device(self, node, block_device):
        if block_device.name != TEST_DISK:
            raise errors.BlockDeviceEraseError('only %s may be erased' % TEST_DISK)
        from ironic_python_agent import disk_utils
        disk_utils.destroy_disk_metadata(TEST_DISK, node.get('uuid', ''))
        return 'metadata erased'

    def _get_system_lshw_dict(self):
        return {}

    def get_memory(self):
        total = int(psutil.virtual_memory().total)
        return hardware.Memory(total=total, physical_mb=total // 2**20)

    def get_system_vendor_info(self):
        fw = hardware.SystemFirmware(vendor='ironboot', version='0', build_date='')
        return hardware.SystemVendorInfo(product_name='ironboot lab', serial_number='LAB',
                                         manufacturer='ironboot', firmware=fw)

    def get_boot_info(self):
        return hardware.BootInfo(current_boot_mode='bios', pxe_interface=TEST_MAC)

    def get_usb_devices(self):
        return []

    def get_bmc_address(self):
        return '0.0.0.0'

    def get_bmc_v6address(self):
        return '::/0'

    def get_bmc_mac(self):
        raise errors.IncompatibleHardwareMethodError()

    def get_version(self):
        return {'name': self.HARDWARE_MANAGER_NAME,
                'version': self.HARDWARE_MANAGER_VERSION}
"#;

/// The agent venv with the test hardware manager installed; `None` when skipped.
fn agent_venv(test: &str) -> Option<PathBuf> {
    let bin = super::pyenv::venv_tool(test, "ipa", &[IPA_REQUIREMENT], "ironic-python-agent")?;
    let venv = bin.parent()?.parent()?.to_path_buf();
    let site = std::fs::read_dir(venv.join("lib"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())?;
    // A plain installed distribution: the module plus dist-info with the entry point.
    std::fs::write(site.join("ironboot_test_hwm.py"), HWM_PY).unwrap();
    let dist = site.join("ironboot_test_hwm-1.0.dist-info");
    std::fs::create_dir_all(&dist).unwrap();
    std::fs::write(
        dist.join("METADATA"),
        "Metadata-Version: 2.1\nName: ironboot-test-hwm\nVersion: 1.0\n",
    )
    .unwrap();
    std::fs::write(
        dist.join("entry_points.txt"),
        "[ironic_python_agent.hardware_managers]\nironboot_loop = ironboot_test_hwm:LoopDiskManager\n",
    )
    .unwrap();
    std::fs::write(dist.join("top_level.txt"), "ironboot_test_hwm\n").unwrap();
    Some(venv)
}

/// Settings of one lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// `[api] ramdisk_heartbeat_timeout` (the agent heartbeats every 30-60 % of it).
    pub heartbeat_timeout: u64,
    /// `[conductor] deploy_callback_timeout`.
    pub callback_timeout: u64,
    /// Size of the sparse disk file.
    pub disk_size: &'static str,
    /// `[agent] erase_metadata_on_undeploy`.
    pub erase_on_undeploy: bool,
    /// `[agent] image_download_source`: `http` (ironboot caches the image and serves it from
    /// its own HTTP server) or `direct` (the agent downloads from the lab's image origin).
    pub image_download_source: &'static str,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            heartbeat_timeout: 10,
            callback_timeout: 600,
            disk_size: "2G",
            erase_on_undeploy: false,
            image_download_source: "http",
        }
    }
}

pub struct Lab {
    pub work: tempfile::TempDir,
    /// The loop device the agent may write (`/dev/loopN`).
    pub disk: String,
    pub api_port: u16,
    pub image_port: u16,
    sandbox: Option<Child>,
    _guard: MutexGuard<'static, ()>,
}

impl Lab {
    /// Starts the lab, or returns `None` (after a loud message) when a peer or root is missing
    /// and peers are optional.
    pub fn start(test: &str, opts: LabOptions) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !super::require_condition(test, root, "needs root (loop device, namespaces)")
            || !super::require_peer(test, TOOLS)
        {
            return None;
        }
        let venv = agent_venv(test)?;
        let guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let work = tempfile::Builder::new()
            .prefix("ironboot-ipa-lab")
            .tempdir()
            .unwrap();
        let w = work.path();
        for d in ["scratch", "shims", "home", "images", "data"] {
            std::fs::create_dir_all(w.join(d)).unwrap();
        }
        let img = w.join("disk.img");
        let (ok, _, err) = run(Command::new("truncate")
            .args(["-s", opts.disk_size])
            .arg(&img));
        assert!(ok, "truncate: {err}");
        let (ok, out, err) = run(Command::new("losetup")
            .args(["-f", "--show", "-P"])
            .arg(&img));
        assert!(ok, "losetup: {err}");
        let disk = out.trim().to_string();
        assert!(
            disk.starts_with("/dev/loop"),
            "unexpected loop device {disk:?}"
        );
        for (name, body) in [
            (
                "reboot",
                "echo \"shim: $0 $*\" >> \"$LAB/shims.log\"; exit 0",
            ),
            (
                "poweroff",
                "echo \"shim: $0 $*\" >> \"$LAB/shims.log\"; exit 0",
            ),
            ("hwclock", "exit 0"),
            ("docker", "exit 127"),
            ("podman", "exit 127"),
        ] {
            write_exec(&w.join("shims").join(name), &format!("#!/bin/sh\n{body}\n"));
        }
        let api_port = free_tcp_port();
        let image_port = free_tcp_port();
        let api_url = format!("http://127.0.0.1:{api_port}");
        write_exec(
            &w.join("power.sh"),
            &format!(
                r#"#!/bin/bash
# Lab power control: the "machine" is an ironic-python-agent process in this sandbox.
# power.sh on [api_url] | off | status
set -u
LAB={lab}
PIDF="$LAB/agent.pid"
alive() {{
  [ -s "$PIDF" ] || return 1
  local s
  s=$(ps -o stat= -p "$(cat "$PIDF")" 2>/dev/null) || return 1
  [ -n "$s" ] && [[ "$s" != Z* ]]
}}
case "$1" in
  on)
    if alive; then exit 0; fi
    n=$(( $(cat "$LAB/boots" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$LAB/boots"
    IPA_TEST_DISK={disk} IPA_TEST_MAC={mac} setsid {venv}/bin/ironic-python-agent \
      --api_url "${{2:-{api_url}}}" --listen_host 127.0.0.1 --listen_port 9999 \
      --advertise_host 127.0.0.1 --advertise_port 9999 --disk_wait_attempts 0 \
      --lookup_timeout 300 --lookup_interval 1 \
      --image_download_connection_retries 1 --image_download_connection_retry_interval 1 \
      --debug </dev/null >"$LAB/ipa-$n.log" 2>&1 &
    echo $! > "$PIDF"
    ;;
  off)
    if [ -s "$PIDF" ]; then
      p=$(cat "$PIDF"); kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null
      for _ in $(seq 50); do alive || break; sleep 0.1; done
    fi
    rm -f "$PIDF"
    ;;
  status)
    if alive; then echo on; else echo off; fi
    ;;
  *) echo "usage: $0 on|off|status" >&2; exit 2 ;;
esac
"#,
                lab = w.display(),
                disk = disk,
                mac = AGENT_MAC,
                venv = venv.display(),
                api_url = api_url,
            ),
        );
        let setup = r#"
set -e
ip link set lo up
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs "$LAB/scratch"
if [ -e /proc/sysrq-trigger ]; then mount --bind /dev/null /proc/sysrq-trigger; fi
export TMPDIR="$LAB/scratch" HOME="$LAB/home" PATH="$LAB/shims:$VENV/bin:$PATH"
python3 -m http.server --bind 127.0.0.1 "$IMAGE_PORT" --directory "$LAB/images" >"$LAB/images.log" 2>&1 &
"$IRONBOOT" serve --data-dir "$LAB/data" --api-listen "127.0.0.1:$API_PORT" \
  --http-listen "127.0.0.1:$HTTP_PORT" --tftp-listen "127.0.0.1:$TFTP_PORT" >"$LAB/ironboot.log" 2>&1 &
wait
"#;
        let sandbox = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--pid",
                "--mount-proc",
                "--propagation",
                "private",
                "--fork",
                "--kill-child",
                "bash",
                "-c",
                setup,
            ])
            .env("LAB", w)
            .env("VENV", &venv)
            .env("IRONBOOT", ironboot_bin())
            .env("API_PORT", api_port.to_string())
            .env("HTTP_PORT", free_tcp_port().to_string())
            .env("TFTP_PORT", free_udp_port().to_string())
            .env("IMAGE_PORT", image_port.to_string())
            .env("RUST_LOG", "info,ironboot=debug")
            .env(
                "IRONBOOT_API__RAMDISK_HEARTBEAT_TIMEOUT",
                opts.heartbeat_timeout.to_string(),
            )
            .env(
                "IRONBOOT_CONDUCTOR__DEPLOY_CALLBACK_TIMEOUT",
                opts.callback_timeout.to_string(),
            )
            .env("IRONBOOT_CONDUCTOR__CHECK_PROVISION_STATE_INTERVAL", "2")
            .env("IRONBOOT_CONDUCTOR__ENABLE_SCRIPT_POWER", "true")
            .env(
                "IRONBOOT_AGENT__IMAGE_DOWNLOAD_SOURCE",
                opts.image_download_source,
            )
            .env("IRONBOOT_AGENT__DEFAULT_BOOT_MODE", "bios")
            .env("IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRIES", "2")
            .env(
                "IRONBOOT_AGENT__POST_DEPLOY_GET_POWER_STATE_RETRY_INTERVAL",
                "1",
            )
            .env("IRONBOOT_AGENT__COMMAND_WAIT_INTERVAL", "1")
            .env(
                "IRONBOOT_AGENT__ERASE_METADATA_ON_UNDEPLOY",
                opts.erase_on_undeploy.to_string(),
            )
            .env_remove("IRONBOOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(w.join("sandbox.err")).unwrap())
            .spawn()
            .expect("start the sandbox");
        let lab = Lab {
            work,
            disk,
            api_port,
            image_port,
            sandbox: Some(sandbox),
            _guard: guard,
        };
        lab.wait_healthy();
        Some(lab)
    }

    pub fn dir(&self) -> &Path {
        self.work.path()
    }

    /// A command run inside the lab's network namespace.
    pub fn in_netns(&self, program: &str) -> Command {
        let pid = self.sandbox.as_ref().map(Child::id).unwrap_or(0);
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{pid}/ns/net")).arg(program);
        c
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// URL (inside the lab) of a file put in `<lab>/images`.
    pub fn image_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.image_port)
    }

    /// Puts `src` where the agent can download it; returns its URL.
    pub fn serve_image(&self, src: &Path, name: &str) -> String {
        std::fs::copy(src, self.dir().join("images").join(name)).unwrap();
        self.image_url(name)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let (ok, _, _) = run(self.in_netns("curl").args([
                "-sf",
                "-o",
                "/dev/null",
                &format!("{}/healthz", self.api_url()),
            ]));
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ironboot in the lab did not become healthy:\n{}",
            self.ironboot_log()
        );
    }

    /// An API call with the latest microversion: (status, JSON body or Null).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.api_with_version(method, path, body, Some("1.80"))
    }

    pub fn api_with_version(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        version: Option<&str>,
    ) -> (u16, Value) {
        let mut c = self.in_netns("curl");
        c.args([
            "-s",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
        ]);
        if let Some(v) = version {
            c.args(["-H", &format!("X-OpenStack-Ironic-API-Version: {v}")]);
        }
        if body.is_some() {
            c.args(["--data-binary", "@-"]);
        }
        c.arg(format!("{}{path}", self.api_url()));
        // The body goes through stdin: a config drive is too long for an argument.
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run curl in the lab");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            if let Some(b) = body {
                stdin.write_all(b.to_string().as_bytes()).unwrap();
            }
        }
        let done = child.wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&done.stdout).into_owned();
        assert!(
            done.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
        let status: u16 = code.trim().parse().unwrap_or(0);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    pub fn node(&self, ident: &str) -> Value {
        let (s, n) = self.api("GET", &format!("/v1/nodes/{ident}"), None);
        assert_eq!(s, 200, "{n}");
        n
    }

    /// `driver_info` for the `script` power interface driving this lab's agent; `api_url`
    /// overrides where the agent looks for its conductor.
    pub fn power_driver_info(&self, api_url: Option<&str>) -> Value {
        let script = self.dir().join("power.sh").display().to_string();
        let mut on = vec![script.clone(), "on".to_string()];
        if let Some(u) = api_url {
            on.push(u.to_string());
        }
        json!({
            "script_power_on": on,
            "script_power_off": [script, "off"],
            "script_power_status": [self.dir().join("power.sh").display().to_string(), "status"],
            "script_timeout": 20,
        })
    }

    /// Creates an `available` node with the direct deploy and script power, and its port.
    pub fn create_node(&self, name: &str, instance_info: Value, api_url: Option<&str>) -> String {
        let (s, n) = self.api(
            "POST",
            "/v1/nodes",
            Some(&json!({
                "name": name, "driver": "fake-hardware", "deploy_interface": "direct",
                "power_interface": "script", "boot_interface": "fake",
                "driver_info": self.power_driver_info(api_url),
                "instance_info": instance_info,
                "properties": {"capabilities": "boot_mode:bios"},
            })),
        );
        assert_eq!(s, 201, "{n}");
        let uuid = n["uuid"].as_str().unwrap().to_string();
        let (s, p) = self.api(
            "POST",
            "/v1/ports",
            Some(&json!({"address": AGENT_MAC, "node_uuid": uuid})),
        );
        assert_eq!(s, 201, "{p}");
        for (verb, state) in [("manage", "manageable"), ("provide", "available")] {
            self.provision(&uuid, verb);
            self.wait_state(&uuid, &[state], Duration::from_secs(30));
        }
        uuid
    }

    pub fn provision(&self, uuid: &str, target: &str) {
        self.provision_with(uuid, json!({ "target": target }));
    }

    /// `PUT .../states/provision` with a full body (e.g. a `configdrive`).
    pub fn provision_with(&self, uuid: &str, body: Value) {
        let (s, b) = self.api(
            "PUT",
            &format!("/v1/nodes/{uuid}/states/provision"),
            Some(&body),
        );
        assert_eq!(s, 202, "{}: {b}", body["target"]);
    }

    /// Waits until the node is in one of `states` and unreserved; panics with the logs if not.
    pub fn wait_state(&self, uuid: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.node(uuid);
            let state = n["provision_state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if states.contains(&state.as_str()) && n["reservation"].is_null() {
                return n;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {uuid} is {state:?} (last_error {}), not one of {states:?} after {timeout:?}\n\
                     --- ironboot log (tail) ---\n{}\n--- agent logs (tail) ---\n{}",
                    n["last_error"],
                    tail(&self.ironboot_log(), 60),
                    tail(&self.agent_logs(), 80)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn ironboot_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("ironboot.log")).unwrap_or_default()
    }

    /// Every agent process's log, in boot order.
    pub fn agent_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..20 {
            if let Ok(s) = std::fs::read_to_string(self.dir().join(format!("ipa-{n}.log"))) {
                out.push_str(&format!("=== agent boot {n} ===\n{s}"));
            }
        }
        out
    }

    /// How many times "power on" started an agent.
    pub fn boots(&self) -> u32 {
        std::fs::read_to_string(self.dir().join("boots"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.sandbox.take() {
            // --kill-child takes the whole PID namespace (ironboot, agents) down with it.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("partx").args(["-d", &self.disk]).output();
        let _ = Command::new("losetup").args(["-d", &self.disk]).output();
        if std::env::var_os("IRONBOOT_KEEP_LAB").is_some() {
            let _ = std::fs::remove_file(self.dir().join("disk.img"));
            let kept = std::mem::replace(&mut self.work, tempfile::tempdir().unwrap()).keep();
            eprintln!("lab kept in {}", kept.display());
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> String {
    let (ok, out, err) = run(Command::new("sha256sum").arg(path));
    assert!(ok, "sha256sum: {err}");
    out.split_whitespace().next().unwrap().to_string()
}

/// Test images made with standard tools (no root): a whole-disk raw image with an MBR and an
/// ext4 partition holding `payload`, the same as qcow2, and a bare ext4 partition image.
pub struct TestImages {
    pub dir: tempfile::TempDir,
}

impl TestImages {
    pub fn make() -> TestImages {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tree = d.join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), "ironboot-test\n").unwrap();
        super::write_pattern_file(&tree.join("payload.bin"), 1 << 20, 7);
        let wd = d.join("wd.raw");
        let sh = |args: &[&str]| {
            let (ok, _, err) = run(Command::new(args[0]).args(&args[1..]));
            assert!(ok, "{args:?}: {err}");
        };
        sh(&["truncate", "-s", "48M", wd.to_str().unwrap()]);
        sh(&[
            "parted",
            "-s",
            wd.to_str().unwrap(),
            "mklabel",
            "msdos",
            "mkpart",
            "primary",
            "ext4",
            "1MiB",
            "100%",
        ]);
        let p1 = d.join("p1.img");
        sh(&["truncate", "-s", "47M", p1.to_str().unwrap()]);
        sh(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "wdroot",
            "-d",
            tree.to_str().unwrap(),
            p1.to_str().unwrap(),
        ]);
        sh(&[
            "dd",
            &format!("if={}", p1.display()),
            &format!("of={}", wd.display()),
            "bs=1M",
            "seek=1",
            "conv=notrunc",
            "status=none",
        ]);
        sh(&[
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            wd.to_str().unwrap(),
            d.join("wd.qcow2").to_str().unwrap(),
        ]);
        let part = d.join("part.raw");
        sh(&["truncate", "-s", "32M", part.to_str().unwrap()]);
        sh(&[
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "partroot",
            "-d",
            tree.to_str().unwrap(),
            part.to_str().unwrap(),
        ]);
        TestImages { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}
