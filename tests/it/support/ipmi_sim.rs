//! OpenIPMI's BMC simulator (`ipmi_sim`, 2.0.33 in Debian 12), one per test, speaking IPMI
//! 1.5 and 2.0 (RMCP+) on 127.0.0.1, with its chassis (power, reset, soft off, boot device)
//! wired to a [`Board`] that powers a QEMU guest.
//!
//! It binds port 0 and the fixture reads the port it got from /proc (its one UDP socket), so
//! no port is picked and released. Users: [`ADMIN`] (administrator) and [`VIEWER`] (user
//! privilege, for refusals). Everything lives in a temporary directory (lan.conf, the
//! emulator commands, ipmi_sim's persistent state, its log, the guest's console), removed on
//! drop after ipmi_sim and the guest are stopped.
//!
//! ipmi_sim quirks this fixture works around (see also peers/ipmi/README.md):
//! - it aborts when stdin reports EOF: its stdin is a pipe the fixture holds open;
//! - its persistent state would let a password changed over IPMI outlive a restart: a fresh
//!   directory per fixture;
//! - with a `chassis_control` program it asks that program for everything chassis (power
//!   included) and answers nothing else while the program runs: the board answers at once.

use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::bmc_board::Board;
use super::guest::{self, FileLock};
use super::{require_peer, run};

/// (user name, password) of the administrator account.
pub const ADMIN: (&str, &str) = ("admin", "Adm1n-pw-7q");
/// (user name, password) of an account limited to user privilege.
pub const VIEWER: (&str, &str) = ("viewer", "V1ew-pw-3k");

/// Emulator commands: one BMC at IPMB 0x20 answering Get Device ID as an IPMI 2.0 device.
const NODE_EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
";

pub struct IpmiSim {
    /// UDP port of the LAN channel on 127.0.0.1.
    pub port: u16,
    pub board: Board,
    sim: Child,
    // ipmi_sim aborts when its stdin reaches EOF: held open for its lifetime.
    _stdin: ChildStdin,
    _guest_slot: Option<FileLock>,
    dir: tempfile::TempDir,
}

impl IpmiSim {
    /// Starts a simulator; with `guest`, its board can power the test kit's QEMU guest (a
    /// guest slot is held for the fixture's lifetime). `None` when peers are missing and
    /// optional (after the skip notice).
    pub fn start(test: &str, guest: bool) -> Option<IpmiSim> {
        if !require_peer(test, &["ipmi_sim", "ipmitool"]) {
            return None;
        }
        let kit = if guest {
            Some(guest::guest_kit(test)?)
        } else {
            None
        };
        let slot = guest.then(guest::guest_slot);
        let dir = tempfile::Builder::new()
            .prefix("ipmi-sim-")
            .tempdir()
            .unwrap();
        let board = Board::start(dir.path(), kit);
        std::fs::write(dir.path().join("lan.conf"), lan_conf(&board)).unwrap();
        std::fs::write(dir.path().join("node.emu"), NODE_EMU).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let log = std::fs::File::create(dir.path().join("sim.log")).unwrap();
        let mut sim = Command::new("ipmi_sim")
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(dir.path().join("node.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start ipmi_sim");
        let stdin = sim.stdin.take().unwrap();
        let mut this = IpmiSim {
            port: 0,
            board,
            sim,
            _stdin: stdin,
            _guest_slot: slot,
            dir,
        };
        this.port = this.bound_port();
        this.wait_ready();
        Some(this)
    }

    /// driver_info for the administrator account (Ironic's keys).
    pub fn driver_info(&self) -> Map<String, Value> {
        self.driver_info_as(ADMIN.0, ADMIN.1)
    }

    pub fn driver_info_as(&self, user: &str, password: &str) -> Map<String, Value> {
        json!({
            "ipmi_address": "127.0.0.1",
            "ipmi_port": self.port,
            "ipmi_username": user,
            "ipmi_password": password,
        })
        .as_object()
        .unwrap()
        .clone()
    }

    /// ipmitool run by hand as the administrator (password in its environment): an
    /// observer independent of the client under test. Returns (ok, stdout, stderr).
    pub fn ipmitool(&self, words: &[&str]) -> (bool, String, String) {
        let port = self.port.to_string();
        // coreutils' timeout bounds it beyond ipmitool's own -N/-R.
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "2", "20", "ipmitool"])
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", &port, "-C", "3"])
            .args(["-U", ADMIN.0, "-E", "-N", "1", "-R", "2"])
            .args(words)
            .env("IPMI_PASSWORD", ADMIN.1)
            .stdin(Stdio::null());
        run(&mut cmd)
    }

    /// `power status` as ipmitool prints it: `on` or `off`.
    pub fn power_by_hand(&self) -> String {
        let (ok, out, err) = self.ipmitool(&["power", "status"]);
        assert!(ok, "ipmitool power status failed: {err}");
        out.trim()
            .trim_start_matches("Chassis Power is ")
            .to_string()
    }

    /// ipmi_sim's console log.
    pub fn log(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join("sim.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Reads the UDP port ipmi_sim bound (it was given port 0) from /proc.
    fn bound_port(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(port) = udp_port_of(self.sim.id()) {
                return port;
            }
            if let Ok(Some(status)) = self.sim.try_wait() {
                panic!("ipmi_sim exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "ipmi_sim bound no UDP port within 10 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, _, err) = self.ipmitool(&["power", "status"]);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ipmi_sim on 127.0.0.1:{} does not answer: {err}\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        // ipmi_sim first, so that it cannot power the guest on again; the board (dropped
        // after this) stops the guest.
        // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
        unsafe { libc::kill(self.sim.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(self.sim.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.sim.kill();
        let _ = self.sim.wait();
    }
}

fn lan_conf(board: &Board) -> String {
    let (admin, admin_pw) = ADMIN;
    let (viewer, viewer_pw) = VIEWER;
    format!(
        r#"name "node0"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 0
    priv_limit admin
    allowed_auths_callback none md5 straight
    allowed_auths_user none md5 straight
    allowed_auths_operator none md5 straight
    allowed_auths_admin none md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{program}"
  user 2 true "{admin}" "{admin_pw}" admin 10 none md5 straight
  user 3 true "{viewer}" "{viewer_pw}" user 10 none md5 straight
"#,
        program = board.program().display(),
    )
}

/// The local port of the one UDP socket of process `pid`, from /proc/<pid>/fd and /proc/net/udp.
fn udp_port_of(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (local, inode) = (cols.get(1)?, cols.get(9)?);
        if !inodes.iter().any(|i| i == inode) {
            return None;
        }
        u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()
    })
}

/// Polls /proc until an ipmitool talking to `port` runs; returns its cmdline and environ.
pub fn watch_ipmitool(port: u16) -> Option<(String, String)> {
    let needle = format!("-p\0{port}\0");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let path = entry.path();
            let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            if cmdline.starts_with("ipmitool\0") && cmdline.contains(&needle) {
                let environ = std::fs::read(path.join("environ")).unwrap_or_default();
                return Some((cmdline, String::from_utf8_lossy(&environ).into_owned()));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
