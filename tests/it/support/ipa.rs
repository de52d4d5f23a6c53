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
//! Inside the sandbox run, each on a fixed port of the sandbox's own network namespace (a
//! private port space: nothing else can hold them, so nothing is picked and released):
//! - `ironboot serve` ([`API_PORT`], [`HTTP_PORT`], [`TFTP_PORT`]), with the `script` power
//!   interface pointing at `power.sh`;
//! - the image origin ([`ORIGIN_PORT`]), a web server over `<lab>/images` (as Glance or any
//!   web server would be): ironboot fetches from it into its image cache and the agent
//!   downloads from ironboot's HTTP server, or with `image_download_source: "direct"` the
//!   agent downloads from the origin;
//! - the heartbeat gate ([`GATE_PORT`]), see "holding the agent" below;
//! - a `systemd-udevd` of the lab's own: the agent reads a partition image's root UUID with
//!   `lsblk`, which takes filesystem UUIDs from the udev database. The lab's udevd sees only
//!   the lab's rules (the host's rule directories are hidden in the sandbox's mount
//!   namespace): probe the lab's loop disk and its partitions with blkid, and probe a
//!   partition again when it was written and closed. The whole disk is not watched, so udevd
//!   never re-reads its partition table while the agent partitions it. The device links
//!   udevd makes for every device (`/dev/block`, `/dev/char`) land on tmpfs in the sandbox.
//!
//! What a test can ask of the lab:
//! - [`LabOptions`]: ironboot's timeouts, the image download source, erase on undeploy, the
//!   disk size, extra agent arguments, and whether heartbeats are held.
//! - Agent start: the "machine" is an agent process. ironboot's power on (`power.sh on`, as a
//!   BMC booting the deploy ramdisk) starts one, power off kills it; [`Lab::boots`] counts the
//!   starts, [`Lab::agent_running`] asks whether one lives. `driver_info` from
//!   [`Lab::power_driver_info`] can point the agent at another API URL.
//! - Holding the agent: with [`LabOptions::hold_heartbeats`] the agent talks to ironboot through
//!   the gate, which passes every request but holds heartbeats until
//!   [`Lab::release_heartbeats`]. [`Lab::wait_heartbeat_held`] returns once the agent has
//!   looked its node up (its token handed out) and its first heartbeat waits at the gate: the
//!   node is then in `wait call-back` and ironboot has not yet heard from the agent, for as
//!   long as the test needs (the gate answers 503 after [`GATE_MAX_HOLD`]).
//! - `/etc` in the sandbox is an overlay whose writes land in `<lab>/etc-upper` (a rescue
//!   agent's password file, [`Lab::etc_written`]).
//! - Logs: [`Lab::ironboot_log`], [`Lab::agent_logs`] (every boot), [`Lab::log_tails`] (all of
//!   them, tails, for failure messages); `IRONBOOT_KEEP_LAB=1` keeps the work dir.
//! - The API through curl in the sandbox's network namespace ([`Lab::api`]), and commands in
//!   it ([`Lab::in_netns`], [`Lab::in_sandbox`]).
//!
//! Skips: [`Lab::start`] returns `None` only through `require_peer`/`require_condition` (no
//! root, a tool missing, no venv): under `IRONBOOT_REQUIRE_PEERS=1` those fail the test. A lab
//! that cannot start once its peers are there always fails the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ironboot_bin, require_condition, require_peer, run, run_quietly};

pub const IPA_REQUIREMENT: &str = "ironic-python-agent==13.0.0";
/// The MAC of the agent's one NIC (the node's port).
pub const AGENT_MAC: &str = "52:54:00:1b:00:07";

/// ironboot's API in the sandbox (Ironic's port).
pub const API_PORT: u16 = 6385;
/// ironboot's HTTP server (boot files, images served to the agent).
pub const HTTP_PORT: u16 = 8080;
/// ironboot's TFTP server.
pub const TFTP_PORT: u16 = 6969;
/// The image origin.
pub const ORIGIN_PORT: u16 = 8000;
/// The heartbeat gate in front of ironboot's API.
pub const GATE_PORT: u16 = 6386;
/// The agent's API (auto-TLS: https).
pub const AGENT_PORT: u16 = 9999;
/// How long the gate holds a heartbeat before answering 503 (the agent then retries).
pub const GATE_MAX_HOLD: Duration = Duration::from_secs(120);

/// How long the sandbox may take to bring up udevd, the lab services and ironboot.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One API call (curl) in the sandbox.
const API_CALL_TIMEOUT_SECS: u32 = 60;

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

/// Where Debian's `udev` package puts the daemon (not on PATH).
const UDEVD: &[&str] = &[
    "/usr/lib/systemd/systemd-udevd",
    "/lib/systemd/systemd-udevd",
];

fn udevd() -> Option<&'static str> {
    UDEVD.iter().copied().find(|p| Path::new(p).is_file())
}

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
        # The generic manager's erase (secure erase or shred, as the conductor's parameters
        # say), on the lab's disk only.
        if block_device.name != TEST_DISK:
            raise errors.BlockDeviceEraseError('only %s may be erased' % TEST_DISK)
        return super().erase_block_device(node, block_device)

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

/// The lab's services in one Python process (stdlib only): the image origin and the heartbeat
/// gate. Writes `<lab>/services.ready` once both listen.
const SERVICES_PY: &str = r#""""ironboot IPA lab services, run inside the sandbox.

origin: a plain web server over $LAB/images (the image origin, as Glance or a web server).
gate:   a pass-through proxy to ironboot's API that holds POST /v1/heartbeat/* while the file
        $LAB/gate/hold exists, recording each held heartbeat in $LAB/gate/held; a heartbeat
        held longer than MAX_HOLD seconds is answered 503 (the agent retries it).
"""
import http.client
import http.server
import os
import threading
import time

LAB = os.environ['LAB']
API = ('127.0.0.1', int(os.environ['API_PORT']))
HOLD = os.path.join(LAB, 'gate', 'hold')
HELD = os.path.join(LAB, 'gate', 'held')
MAX_HOLD = float(os.environ['GATE_MAX_HOLD'])
HOP = {'connection', 'keep-alive', 'transfer-encoding', 'content-length', 'host', 'date',
       'server'}


class Origin(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=os.path.join(LAB, 'images'), **kwargs)


class Gate(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):
        self.forward()

    def do_POST(self):
        self.forward()

    def do_PUT(self):
        self.forward()

    def hold(self):
        if not os.path.exists(HOLD):
            return True
        with open(HELD, 'a') as f:
            f.write(self.path + '\n')
        deadline = time.monotonic() + MAX_HOLD
        while os.path.exists(HOLD):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def forward(self):
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        if self.command == 'POST' and self.path.startswith('/v1/heartbeat/'):
            if not self.hold():
                self.send_error(503, 'heartbeat held longer than %s s' % MAX_HOLD)
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn = http.client.HTTPConnection(*API, timeout=60)
        conn.request(self.command, self.path, body=body if body else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Connection', 'close')
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True


def serve(port, handler):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


serve(int(os.environ['ORIGIN_PORT']), Origin)
serve(int(os.environ['GATE_PORT']), Gate)
ready = os.path.join(LAB, 'services.ready')
with open(ready + '.tmp', 'w') as f:
    f.write('ok\n')
os.rename(ready + '.tmp', ready)
threading.Event().wait()
"#;

/// PID 1 of the sandbox: mounts, udevd, the lab services, ironboot. Env: LAB, VENV, IRONBOOT,
/// UDEVD and the ports.
const SANDBOX_INIT: &str = r#"
set -e
ip link set lo up
# /etc is an overlay here: what the agent writes there (a rescue agent writes the password
# hash under /etc/ipa-rescue-config, as a rescue ramdisk has it) lands in the lab, not the host.
mkdir -p "$LAB/etc-upper" "$LAB/etc-work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$LAB/etc-upper,workdir=$LAB/etc-work" /etc
mkdir -p /etc/ipa-rescue-config
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs "$LAB/scratch"
if [ -e /proc/sysrq-trigger ]; then mount --bind /dev/null /proc/sysrq-trigger; fi
# udev: only the lab's rules (the host's are hidden in this mount namespace); the links udevd
# makes for every device go to tmpfs here, not into the host's /dev.
mkdir -p /run/udev/rules.d /run/ironboot-lab/no-rules /dev/block /dev/char
cp "$LAB/udev.rules" /run/udev/rules.d/90-ironboot-lab.rules
for d in /usr/lib/udev/rules.d /lib/udev/rules.d /etc/udev/rules.d; do
  if [ -d "$d" ]; then mount --bind /run/ironboot-lab/no-rules "$d"; fi
done
mount -t tmpfs tmpfs /dev/block
mount -t tmpfs tmpfs /dev/char
"$UDEVD" --resolve-names=never >"$LAB/udevd.log" 2>&1 &
for _ in $(seq 200); do [ -S /run/udev/control ] && break; sleep 0.05; done
udevadm control --ping --timeout=20
export TMPDIR="$LAB/scratch" HOME="$LAB/home" PATH="$LAB/shims:$VENV/bin:$PATH"
python3 "$LAB/services.py" >"$LAB/services.log" 2>&1 &
"$IRONBOOT" serve --ready-file "$LAB/ironboot.ready" --data-dir "$LAB/data" \
  --api-listen "127.0.0.1:$API_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  --tftp-listen "127.0.0.1:$TFTP_PORT" >"$LAB/ironboot.log" 2>&1 &
# The lab is down when any of them exits (a refused configuration, a crash): end the sandbox,
# which the test sees at once.
wait -n || true
echo "a lab service exited (udevd, lab services or ironboot): see their logs" >&2
exit 1
"#;

/// The lab's udev rules for the loop disk `name` (`loopN`).
fn udev_rules(name: &str) -> String {
    format!(
        r#"# ironboot IPA lab: fill the udev database (ID_FS_UUID, ...) for the lab's disk only.
ACTION=="remove", GOTO="ironboot_lab_end"
SUBSYSTEM!="block", GOTO="ironboot_lab_end"
KERNEL!="{name}|{name}p*", GOTO="ironboot_lab_end"
IMPORT{{builtin}}="blkid"
# A partition written and closed (the image on the root partition) is probed again. The whole
# disk is not watched: its change event would re-read the partition table under the agent.
ENV{{DEVTYPE}}=="partition", OPTIONS+="watch"
LABEL="ironboot_lab_end"
"#
    )
}

/// `power.sh on [api_url [agent_token [inspection_callback_url]]] | off | status`, run by
/// ironboot's `script` power interface inside the sandbox: the machine is an agent process.
fn power_script(lab: &Path, disk: &str, venv: &Path, api_url: &str, agent_args: &str) -> String {
    format!(
        r#"#!/bin/bash
# Lab power control: the "machine" is an ironic-python-agent process in this sandbox.
# power.sh on [api_url [agent_token [inspection_callback_url]]] | off | status
set -u
LAB={lab}
# Whoever runs this (ironboot in the sandbox, or a test through nsenter), the agent gets the
# shims (reboot, poweroff) first on PATH and the sandbox's scratch space.
export PATH="$LAB/shims:$PATH" TMPDIR="$LAB/scratch" HOME="$LAB/home"
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
    # A token given here is the one virtual media carry (ipa-agent-token): pre-shared.
    token=()
    # (One argument with `=`: a token may start with '-', which argparse would take for an option.)
    if [ -n "${{3:-}}" ]; then token=("--agent_token=$3"); fi
    # An inspection callback given here is the one virtual media carry for an inspection.
    inspect=()
    if [ -n "${{4:-}}" ]; then inspect=("--inspection_callback_url=$4"); fi
    IPA_TEST_DISK={disk} IPA_TEST_MAC={mac} setsid {venv}/bin/ironic-python-agent \
      "${{token[@]}}" "${{inspect[@]}}" \
      --api_url "${{2:-{api_url}}}" --listen_host 127.0.0.1 --listen_port {port} \
      --advertise_host 127.0.0.1 --advertise_port {port} --disk_wait_attempts 0 \
      --lookup_timeout 300 --lookup_interval 1 \
      --image_download_connection_retries 1 --image_download_connection_retry_interval 1 \
      --debug {agent_args} </dev/null >"$LAB/ipa-$n.log" 2>&1 &
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
        lab = lab.display(),
        disk = disk,
        mac = AGENT_MAC,
        venv = venv.display(),
        port = AGENT_PORT,
    )
}

/// The agent venv with the test hardware manager installed; `None` (through
/// `require_condition`, in `venv_tool`) when it cannot be built.
fn agent_venv(test: &str) -> Option<PathBuf> {
    let bin = super::pyenv::venv_tool(test, "ipa", &[IPA_REQUIREMENT], "ironic-python-agent")?;
    // <venv>/bin/ironic-python-agent
    let venv = bin
        .ancestors()
        .nth(2)
        .unwrap_or_else(|| panic!("{} is not in a venv", bin.display()))
        .to_path_buf();
    install_hwm(&venv);
    Some(venv)
}

/// Installs the test hardware manager into `venv` as a plain distribution (module, dist-info
/// and the entry point). A venv without site-packages is broken: that fails the test.
fn install_hwm(venv: &Path) {
    let site = std::fs::read_dir(venv.join("lib"))
        .unwrap_or_else(|e| panic!("{}/lib: {e}", venv.display()))
        .filter_map(Result::ok)
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}/lib", venv.display()));
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
    /// `[conductor] automated_clean` (ironboot's default is on; the lab's is off, so nodes
    /// reach `available` without an agent boot unless a test is about cleaning).
    pub automated_clean: bool,
    /// `[agent] image_download_source`: `http` (ironboot caches the image and serves it from
    /// its own HTTP server) or `direct` (the agent downloads from the lab's image origin).
    pub image_download_source: &'static str,
    /// The agent reaches ironboot through the heartbeat gate, closed from the start: see
    /// [`Lab::wait_heartbeat_held`] and [`Lab::release_heartbeats`].
    pub hold_heartbeats: bool,
    /// Extra `ironic-python-agent` arguments for every agent start (shell words, no quoting).
    pub agent_args: Vec<&'static str>,
    /// Extra environment for ironboot (`IRONBOOT_<SECTION>__<KEY>` settings).
    pub env: Vec<(&'static str, &'static str)>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            heartbeat_timeout: 4,
            callback_timeout: 600,
            disk_size: "2G",
            erase_on_undeploy: false,
            automated_clean: false,
            image_download_source: "http",
            hold_heartbeats: false,
            agent_args: Vec::new(),
            env: Vec::new(),
        }
    }
}

pub struct Lab {
    /// The work dir: disk file, scripts, logs, ironboot's data dir.
    dir: PathBuf,
    /// `None` once kept (`IRONBOOT_KEEP_LAB`).
    work: Option<tempfile::TempDir>,
    /// The loop device the agent may write (`/dev/loopN`).
    pub disk: String,
    /// `unshare`: its network and mount namespaces are the sandbox's.
    sandbox: Option<Child>,
    _guard: MutexGuard<'static, ()>,
}

impl Lab {
    /// Starts the lab, or returns `None` (after a loud message, through `require_peer` /
    /// `require_condition`) when root, a tool or the agent's venv is missing and peers are
    /// optional. Panics when the lab cannot start.
    pub fn start(test: &str, opts: LabOptions) -> Option<Lab> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !require_condition(test, root, "needs root (loop device, namespaces)")
            || !require_peer(test, TOOLS)
            || !require_condition(
                test,
                udevd().is_some(),
                &format!("systemd-udevd (Debian package udev) not found at {UDEVD:?}"),
            )
        {
            return None;
        }
        let venv = agent_venv(test)?;
        let guard = LAB_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let work = tempfile::Builder::new()
            .prefix("ironboot-ipa-lab")
            .tempdir()
            .unwrap();
        let w = work.path().to_path_buf();
        for d in ["scratch", "shims", "home", "images", "data", "gate"] {
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
        // From here on, Drop detaches the loop device whatever happens.
        let mut lab = Lab {
            dir: w.clone(),
            work: Some(work),
            disk,
            sandbox: None,
            _guard: guard,
        };
        let name = lab
            .disk
            .strip_prefix("/dev/")
            .unwrap_or_default()
            .to_string();
        assert!(
            name.starts_with("loop") && name[4..].chars().all(|c| c.is_ascii_digit()),
            "unexpected loop device {:?}",
            lab.disk
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
        std::fs::write(w.join("udev.rules"), udev_rules(&name)).unwrap();
        std::fs::write(w.join("services.py"), SERVICES_PY).unwrap();
        let agent_api = if opts.hold_heartbeats {
            std::fs::write(w.join("gate/hold"), "").unwrap();
            format!("http://127.0.0.1:{GATE_PORT}")
        } else {
            lab.api_url()
        };
        write_exec(
            &w.join("power.sh"),
            &power_script(&w, &lab.disk, &venv, &agent_api, &opts.agent_args.join(" ")),
        );
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
                SANDBOX_INIT,
            ])
            .env("LAB", &w)
            .env("VENV", &venv)
            .env("IRONBOOT", ironboot_bin())
            .env("UDEVD", udevd().unwrap_or_default())
            .env("API_PORT", API_PORT.to_string())
            .env("HTTP_PORT", HTTP_PORT.to_string())
            .env("TFTP_PORT", TFTP_PORT.to_string())
            .env("ORIGIN_PORT", ORIGIN_PORT.to_string())
            .env("GATE_PORT", GATE_PORT.to_string())
            .env("GATE_MAX_HOLD", GATE_MAX_HOLD.as_secs().to_string())
            .env("RUST_LOG", "info,ironboot=debug")
            .env(
                "IRONBOOT_API__RAMDISK_HEARTBEAT_TIMEOUT",
                opts.heartbeat_timeout.to_string(),
            )
            .env(
                "IRONBOOT_CONDUCTOR__DEPLOY_CALLBACK_TIMEOUT",
                opts.callback_timeout.to_string(),
            )
            .env(
                "IRONBOOT_CONDUCTOR__CLEAN_CALLBACK_TIMEOUT",
                opts.callback_timeout.to_string(),
            )
            .env(
                "IRONBOOT_CONDUCTOR__AUTOMATED_CLEAN",
                opts.automated_clean.to_string(),
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
            .envs(opts.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(w.join("sandbox.err")).unwrap())
            .spawn()
            .expect("start the sandbox");
        lab.sandbox = Some(sandbox);
        lab.wait_ready();
        Some(lab)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until ironboot wrote its ready file (every listener bound) and the lab services
    /// listen; panics with the logs when the sandbox exits or this takes too long.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let ready = ["ironboot.ready", "services.ready"].map(|f| self.dir.join(f));
        loop {
            if ready.iter().all(|f| f.is_file()) {
                return;
            }
            let exited = self
                .sandbox
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                panic!(
                    "the lab did not start ({}):\n--- sandbox ---\n{}\n{}",
                    exited.map_or(format!("not ready after {START_TIMEOUT:?}"), |s| {
                        format!("sandbox exited: {s}")
                    }),
                    std::fs::read_to_string(self.dir.join("sandbox.err")).unwrap_or_default(),
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sandbox_pid(&self) -> u32 {
        self.sandbox.as_ref().map_or(0, Child::id)
    }

    /// A command run inside the lab's network namespace (host mounts and PIDs).
    pub fn in_netns(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.sandbox_pid()))
            .arg(program);
        c
    }

    /// A command run inside the sandbox as its own processes see it: its network, mount and
    /// PID namespaces (its /proc, /run, udev database).
    pub fn in_sandbox(&self, program: &str) -> Command {
        let init = sandbox_init_pid(self.sandbox_pid())
            .unwrap_or_else(|| panic!("the sandbox has no init process\n{}", self.log_tails()));
        let mut c = Command::new("nsenter");
        c.args(["--target", &init.to_string(), "--net", "--mount", "--pid"])
            .arg(program);
        c
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{API_PORT}")
    }

    /// URL (inside the lab) of a file put in `<lab>/images`.
    pub fn image_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{ORIGIN_PORT}/{name}")
    }

    /// Puts `src` where the agent can download it; returns its URL.
    pub fn serve_image(&self, src: &Path, name: &str) -> String {
        std::fs::copy(src, self.dir().join("images").join(name)).unwrap();
        self.image_url(name)
    }

    /// Waits until the agent's first heartbeat is held at the gate (lookup done, token handed
    /// out, ironboot not yet called back). Needs [`LabOptions::hold_heartbeats`].
    pub fn wait_heartbeat_held(&self, timeout: Duration) {
        assert!(
            self.dir.join("gate/hold").exists(),
            "the gate is open: start the lab with hold_heartbeats"
        );
        let deadline = Instant::now() + timeout;
        while self.heartbeats_held() == 0 {
            assert!(
                Instant::now() < deadline,
                "no heartbeat reached the gate in {timeout:?}\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How many heartbeats the gate has held so far.
    pub fn heartbeats_held(&self) -> usize {
        std::fs::read_to_string(self.dir.join("gate/held"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Opens the gate: held heartbeats go on to ironboot, later ones pass.
    pub fn release_heartbeats(&self) {
        let _ = std::fs::remove_file(self.dir.join("gate/hold"));
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
            "-m",
            &API_CALL_TIMEOUT_SECS.to_string(),
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
        // The body goes through a file: a config drive is too long for an argument.
        let body_file = body.map(|b| {
            let mut f = tempfile::NamedTempFile::new_in(self.dir()).unwrap();
            std::io::Write::write_all(&mut f, b.to_string().as_bytes()).unwrap();
            f
        });
        if let Some(f) = &body_file {
            c.arg("--data-binary")
                .arg(format!("@{}", f.path().display()));
        }
        c.arg(format!("{}{path}", self.api_url()));
        let (ok, out, err) = run(&mut c);
        assert!(ok, "curl {method} {path}: {err}");
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
        let uuid = self.create_manageable_node(name, instance_info, api_url);
        self.provision(&uuid, "provide");
        self.wait_state(&uuid, &["available"], Duration::from_secs(30));
        uuid
    }

    /// [`Lab::create_node`] up to `manageable` (before provide, which may clean).
    pub fn create_manageable_node(
        &self,
        name: &str,
        instance_info: Value,
        api_url: Option<&str>,
    ) -> String {
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
        self.provision(&uuid, "manage");
        self.wait_state(&uuid, &["manageable"], Duration::from_secs(30));
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
                    "node {uuid} is {state:?} (last_error {}), not one of {states:?} after {timeout:?}\n{}",
                    n["last_error"],
                    self.log_tails()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the node rests in `want` or one of `failed`, and panics with its
    /// `last_error` and the logs unless it is `want`.
    pub fn wait_reached(
        &self,
        uuid: &str,
        want: &str,
        failed: &[&str],
        timeout: Duration,
    ) -> Value {
        let mut states = vec![want];
        states.extend_from_slice(failed);
        let n = self.wait_state(uuid, &states, timeout);
        assert_eq!(
            n["provision_state"],
            want,
            "last_error: {}\n{}",
            n["last_error"],
            self.log_tails()
        );
        n
    }

    /// python-ironicclient's `baremetal` (`cli`) against the lab's ironboot, run in the
    /// sandbox's network namespace; panics with its output and the logs when it fails.
    pub fn baremetal(&self, cli: &Path, args: &[&str]) -> String {
        let home = self.dir.join("home");
        let (ok, out, err) = run(self
            .in_netns(&cli.display().to_string())
            .args(args)
            .env("OS_AUTH_TYPE", "none")
            .env("OS_ENDPOINT", self.api_url())
            .env("HOME", home)
            .env_remove("OS_CLOUD"));
        assert!(
            ok,
            "baremetal {args:?}:\n{out}\n{err}\n{}",
            self.log_tails()
        );
        out
    }

    /// A file the sandbox wrote under `/etc` (`rel` below it), if any.
    pub fn etc_written(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("etc-upper").join(rel)).ok()
    }

    pub fn ironboot_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("ironboot.log")).unwrap_or_default()
    }

    /// Every agent process's log, in boot order.
    pub fn agent_logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.boots() {
            if let Ok(s) = std::fs::read_to_string(self.dir().join(format!("ipa-{n}.log"))) {
                out.push_str(&format!("=== agent boot {n} ===\n{s}"));
            }
        }
        out
    }

    /// The tails of every log of the lab (ironboot, agents, udevd, lab services), for
    /// failure messages.
    pub fn log_tails(&self) -> String {
        let file = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- ironboot log (tail) ---\n{}\n--- agent logs (tail) ---\n{}\n\
             --- udevd log (tail) ---\n{}\n--- lab services log (tail) ---\n{}",
            tail(&self.ironboot_log(), 60),
            tail(&self.agent_logs(), 80),
            tail(&file("udevd.log"), 20),
            tail(&file("services.log"), 20),
        )
    }

    /// How many times "power on" started an agent.
    pub fn boots(&self) -> u32 {
        std::fs::read_to_string(self.dir().join("boots"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `/proc/<pid>/ns/net` of the sandbox: for peers that run in its network namespace
    /// (a BMC emulator that must reach ironboot's HTTP server there).
    pub fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.sandbox_pid())
    }

    /// Starts an agent as a BMC booting virtual media would: `power.sh on API_URL TOKEN
    /// [CALLBACK]`, with the API URL, the token and, for an inspection, the callback read from
    /// the media (`ipa-api-url`, `ipa-agent-token`, `ipa-inspection-callback-url`).
    pub fn boot_agent_from_media(&self, api_url: &str, token: &str, inspection: Option<&str>) {
        let (ok, _, err) = run(self
            .in_sandbox("bash")
            .arg(self.dir.join("power.sh"))
            .args(["on", api_url, token])
            .args(inspection));
        assert!(ok, "power.sh on: {err}");
    }

    /// Starts an agent as a machine powered on by hand would (`power.sh on`), pointed at
    /// ironboot with no token: a machine ironboot did not boot.
    pub fn power_on_by_hand(&self) {
        let (ok, _, err) = run(self
            .in_sandbox("bash")
            .arg(self.dir.join("power.sh"))
            .arg("on"));
        assert!(ok, "power.sh on: {err}");
    }

    /// Stops the agent as a powered-off machine would (`power.sh off`).
    pub fn stop_agent(&self) {
        let (ok, _, err) = run(self
            .in_sandbox("bash")
            .arg(self.dir.join("power.sh"))
            .arg("off"));
        assert!(ok, "power.sh off: {err}");
    }

    /// Whether an agent process lives (`power.sh status`, asked inside the sandbox).
    pub fn agent_running(&self) -> bool {
        let (ok, out, err) = run(self
            .in_sandbox("bash")
            .arg(self.dir.join("power.sh"))
            .arg("status"));
        assert!(ok, "power.sh status: {err}");
        out.trim() == "on"
    }
}

/// The sandbox's PID 1 (the child of `unshare`), as the host sees it.
fn sandbox_init_pid(unshare: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let ppid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        (ppid == unshare).then_some(pid)
    })
}

impl Drop for Lab {
    /// Never panics: everything here is best effort, bounded in time.
    fn drop(&mut self) {
        if let Some(mut child) = self.sandbox.take() {
            // SIGKILL to unshare: --kill-child takes the whole PID namespace (ironboot, udevd,
            // agents) down with it.
            let _ = child.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let limit = Duration::from_secs(10);
        run_quietly(Command::new("partx").args(["-d", &self.disk]), limit);
        run_quietly(Command::new("losetup").args(["-d", &self.disk]), limit);
        if std::env::var_os("IRONBOOT_KEEP_LAB").is_some()
            && let Some(work) = self.work.take()
        {
            let _ = std::fs::remove_file(self.dir.join("disk.img"));
            eprintln!("lab kept in {}", work.keep().display());
        }
    }
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `len` bytes of the device (or file) `dev` from `offset`.
pub fn read_dev(dev: &str, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(dev).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
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
