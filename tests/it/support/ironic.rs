//! The real OpenStack Ironic 39.0.0 (from PyPI) as the oracle for API behaviour: one all-in-one
//! process (API + conductor, `rpc_transport = none`), no Keystone, SQLite in a fresh temporary
//! directory, `fake-hardware` with every fake interface enabled, automated cleaning off.
//!
//! The venv is cached under the target directory ([`super::pyenv`]); the first run installs it
//! (about a minute), later runs start Ironic in 4–6 s.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_tcp_port, pyenv};

/// The Ironic release the parity tests compare against.
pub const REQUIREMENT: &str = "ironic==39.0.0";

/// The conductor name both Ironic and ironboot are given, so `conductor`, `hosts` and
/// `reservation` values compare equal.
pub const CONDUCTOR_HOST: &str = "parity-conductor";

/// A running Ironic; its whole process group is stopped when dropped.
pub struct Ironic {
    child: Option<Child>,
    pub port: u16,
    work: tempfile::TempDir,
}

/// The configuration: every fake interface is enabled (and the `no-*`/`noop` ones, plus
/// `pxe`/`ipxe`/`direct`, which ironboot's fake-hardware also accepts) so that the same
/// requests make sense on both servers; defaults are fake-hardware's own.
fn config(work: &Path, port: u16) -> String {
    let w = work.display();
    format!(
        "[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = {CONDUCTOR_HOST}
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake,pxe,ipxe
enabled_deploy_interfaces = fake,direct
enabled_power_interfaces = fake
enabled_management_interfaces = fake,noop
enabled_inspect_interfaces = fake,agent,no-inspect
enabled_network_interfaces = noop
enabled_console_interfaces = fake,no-console
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,agent,no-rescue
enabled_vendor_interfaces = fake,no-vendor
enabled_bios_interfaces = fake,no-bios
enabled_firmware_interfaces = fake,no-firmware
enabled_storage_interfaces = noop,fake
default_network_interface = noop
log_file = {w}/ironic.log
use_stderr = false
state_path = {w}/state
[database]
connection = sqlite:///{w}/ironic.sqlite
[api]
host_ip = 127.0.0.1
port = {port}
[oslo_middleware]
enable_proxy_headers_parsing = true
[deploy]
http_root = {w}/httpboot
http_url = http://127.0.0.1:9/
[pxe]
tftp_root = {w}/tftpboot
[dhcp]
dhcp_provider = none
[conductor]
automated_clean = false
[oslo_concurrency]
lock_path = {w}/locks
"
    )
}

impl Ironic {
    /// Installs (once) and starts Ironic on an ephemeral loopback port with a fresh database.
    /// `None` when the venv cannot be built and peers are optional (already reported).
    pub fn start(test: &str) -> Option<Ironic> {
        let bin = pyenv::venv_tool(test, "ironic39", &[REQUIREMENT], "ironic")?;
        let bindir = bin.parent().unwrap().to_path_buf();
        let work = tempfile::tempdir().unwrap();
        for d in ["state", "locks", "httpboot", "tftpboot"] {
            std::fs::create_dir_all(work.path().join(d)).unwrap();
        }
        let port = free_tcp_port();
        let conf = work.path().join("ironic.conf");
        std::fs::write(&conf, config(work.path(), port)).unwrap();

        let dbsync = run_with_timeout(
            Command::new(bindir.join("ironic-dbsync"))
                .arg("--config-file")
                .arg(&conf)
                .arg("create_schema"),
            &work.path().join("dbsync.log"),
            Duration::from_secs(120),
        );
        assert!(
            dbsync,
            "ironic-dbsync create_schema failed:\n{}",
            tail(&work.path().join("dbsync.log"))
        );

        let out = std::fs::File::create(work.path().join("ironic.stdout")).unwrap();
        let child = Command::new(&bin)
            .arg("--config-file")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group: Ironic forks workers, and Drop stops them all.
            .process_group(0)
            .spawn()
            .expect("spawn ironic");
        let mut ironic = Ironic {
            child: Some(child),
            port,
            work,
        };
        ironic.wait_ready(Duration::from_secs(90));
        Some(ironic)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The end of Ironic's log and stdout, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "{}\n{}",
            tail(&self.work.path().join("ironic.log")),
            tail(&self.work.path().join("ironic.stdout"))
        )
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("ironic exited early ({status}):\n{}", self.log_tail());
            }
            let ok = Command::new("curl")
                .args([
                    "-sf",
                    "-m",
                    "5",
                    "-o",
                    "/dev/null",
                    &format!("{}/v1", self.url()),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ironic did not answer GET /v1 within {timeout:?}:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Ironic {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        // SAFETY: signalling the process group of our own child.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Workers may outlive the master; nothing of the group may survive the test.
        // SAFETY: as above.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = child.wait();
    }
}

/// Runs `cmd` with its output in `log`, killing it after `timeout`. True when it succeeded.
pub fn run_with_timeout(cmd: &mut Command, log: &Path, timeout: Duration) -> bool {
    let out = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last 40 lines of a file (empty when it does not exist).
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
