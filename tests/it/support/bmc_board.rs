//! The "mainboard" behind a simulated BMC: what `ipmi_sim`'s `chassis_control` program
//! drives. ipmi_sim runs that program for every chassis command (`get power`, `set power 1`,
//! `set boot pxe`, `set reset 1`, `set shutdown 1`...) and waits for its answer; here the
//! program is a four-line bash forwarder (`/dev/tcp`) to a listener in the test process, so
//! the board's logic, the QEMU guest it powers and the record of what it was asked all live
//! in Rust, and the guest is a child of the test (killed when the board is dropped).
//!
//! The guest is the test kit's kernel and initramfs (`support::guest`) in QEMU (TCG). The boot
//! device decides how QEMU starts, because neither SeaBIOS nor iPXE asks a BMC for boot flags:
//! - `pxe`: `-boot order=n`, the iPXE ROM on a virtio NIC; DHCP offers
//!   [`BoardBehaviour::pxe_bootfile`] if set (without one iPXE says "Nothing to boot" and
//!   falls through to the next device);
//! - `cdrom`: `-boot order=d` with no media;
//! - `default` (disk), `none`, `bios`: direct kernel boot of the kit, standing in for the
//!   installed OS; its `/init` prints the marker and powers off, and `-no-shutdown` keeps QEMU
//!   (the powered machine) alive, halted, until the BMC powers it off.
//!
//! The ACPI power button (`power soft`) reaches QEMU over its HMP monitor; nothing in these
//! guests acts on it, so a soft power off never completes, as on a real machine whose OS
//! ignores the button — unless [`BoardBehaviour::obey_soft_off`] plays an OS that shuts down.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::guest::GuestKit;

/// The MAC of the guest's one NIC (enroll it as the node's port).
pub const GUEST_MAC: &str = "52:54:00:12:34:56";

/// What the board does besides the obvious; switchable while the BMC runs.
#[derive(Debug, Clone, Default)]
pub struct BoardBehaviour {
    /// Plays an OS that shuts down 0.5 s after the ACPI power button.
    pub obey_soft_off: bool,
    /// `set boot` fails: ipmi_sim answers "Unspecified error" (0xff).
    pub refuse_boot_devices: bool,
    /// `get boot` answers this whatever was set: a BMC that holds another device.
    pub claim_boot: Option<&'static str>,
    /// The boot file QEMU's DHCP hands out on the `pxe` path (e.g. ironboot's
    /// `http://10.0.2.2:<port>/boot.ipxe`): without one, iPXE has nothing to boot.
    pub pxe_bootfile: Option<String>,
}

/// One start of the guest.
#[derive(Debug, Clone)]
pub struct Boot {
    pub pid: u32,
    /// The boot device the board held at power on (`pxe`, `default`, `cdrom`, ...).
    pub bootdev: String,
    pub qemu_args: Vec<String>,
}

#[derive(Default)]
struct State {
    qemu: Option<Child>,
    boot: Option<String>,
    boots: Vec<Boot>,
    /// Every request, as ipmi_sim sent it (`set power 1`), plus `acpi power button sent`.
    events: Vec<String>,
    behaviour: BoardBehaviour,
}

struct Inner {
    dir: PathBuf,
    kit: Option<GuestKit>,
    state: Mutex<State>,
}

pub struct Board {
    inner: Arc<Inner>,
    port: u16,
    stop: Arc<AtomicBool>,
    listener: Option<JoinHandle<()>>,
}

/// The chassis_control program: forwards its arguments, prints the answer, exits with its code.
const FORWARDER: &str = r#"#!/bin/bash
exec 3<>/dev/tcp/127.0.0.1/@PORT@ || exit 1
printf '%s\n' "$*" >&3
rc=1
while IFS= read -r -t 20 line <&3; do
  case $line in "exit "*) rc=${line#exit } ;; *) printf '%s\n' "$line" ;; esac
done
exit "$rc"
"#;

impl Board {
    /// Starts the listener and writes the forwarder into `dir`. Without `kit`, power on fails
    /// (the BMC answers "Unspecified error"), for tests that never power a node.
    pub fn start(dir: &Path, kit: Option<GuestKit>) -> Board {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let program = dir.join("chassis-control");
        std::fs::write(&program, FORWARDER.replace("@PORT@", &port.to_string())).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            kit,
            state: Mutex::default(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve(&inner, conn);
                    }
                }
            })
        };
        Board {
            inner,
            port,
            stop,
            listener: Some(handle),
        }
    }

    /// The `chassis_control` program to put in lan.conf.
    pub fn program(&self) -> PathBuf {
        self.inner.dir.join("chassis-control")
    }

    pub fn behave(&self, change: impl FnOnce(&mut BoardBehaviour)) {
        change(&mut self.inner.state.lock().unwrap().behaviour);
    }

    pub fn events(&self) -> Vec<String> {
        self.inner.state.lock().unwrap().events.clone()
    }

    pub fn boots(&self) -> Vec<Boot> {
        self.inner.state.lock().unwrap().boots.clone()
    }

    /// The boot device the board stores (what ipmi_sim handed it), `default` if never set.
    pub fn stored_boot(&self) -> String {
        let state = self.inner.state.lock().unwrap();
        state.boot.clone().unwrap_or_else(|| "default".into())
    }

    /// PID of the running guest, if one runs.
    pub fn running_pid(&self) -> Option<u32> {
        let mut state = self.inner.state.lock().unwrap();
        running(&mut state)
            .then(|| state.qemu.as_ref().map(Child::id))
            .flatten()
    }

    /// The guest's serial console, every boot appended.
    pub fn console(&self) -> String {
        let bytes = std::fs::read(self.inner.dir.join("console.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// QEMU's own messages and every command line it was started with.
    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(self.inner.dir.join("qemu.log")).unwrap_or_default()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.listener.take() {
            let _ = h.join();
        }
        if let Ok(mut state) = self.inner.state.lock() {
            stop_guest(&mut state);
        }
    }
}

/// Answers one request from the forwarder: output lines, then `exit N`.
fn serve(inner: &Inner, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    if BufReader::new(&conn).read_line(&mut line).is_err() {
        return;
    }
    let (out, code) = handle(inner, line.trim());
    let mut reply = String::new();
    for l in out {
        reply.push_str(&l);
        reply.push('\n');
    }
    reply.push_str(&format!("exit {code}\n"));
    let _ = conn.write_all(reply.as_bytes());
    let _ = conn.shutdown(Shutdown::Both);
}

fn handle(inner: &Inner, request: &str) -> (Vec<String>, i32) {
    let mut state = inner.state.lock().unwrap();
    state.events.push(request.to_string());
    let words: Vec<&str> = request.split_whitespace().collect();
    match words.as_slice() {
        ["get", params @ ..] => {
            let mut out = Vec::new();
            for p in params {
                match *p {
                    "power" => out.push(format!("power:{}", u8::from(running(&mut state)))),
                    "boot" => {
                        let held = state.behaviour.claim_boot.map(str::to_string);
                        let held = held.or_else(|| state.boot.clone());
                        out.push(format!("boot:{}", held.as_deref().unwrap_or("default")));
                    }
                    other => return (vec![format!("cannot get {other}")], 1),
                }
            }
            (out, 0)
        }
        ["set", "power", "1"] => start_guest(inner, &mut state),
        ["set", "power", "0"] => {
            stop_guest(&mut state);
            (vec![], 0)
        }
        ["set", "reset", "1"] => {
            if running(&mut state) {
                stop_guest(&mut state);
                return start_guest(inner, &mut state);
            }
            (vec![], 0)
        }
        ["set", "shutdown", "1"] => acpi_power_button(inner, &mut state),
        ["set", "boot", device] => {
            if state.behaviour.refuse_boot_devices {
                return (vec![format!("this board refuses boot device {device}")], 1);
            }
            state.boot = Some(device.to_string());
            (vec![], 0)
        }
        ["set", "identify", ..] => (vec![], 0),
        _ => (vec![format!("unknown request {request:?}")], 1),
    }
}

fn running(state: &mut State) -> bool {
    state
        .qemu
        .as_mut()
        .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
}

fn start_guest(inner: &Inner, state: &mut State) -> (Vec<String>, i32) {
    if running(state) {
        return (vec![], 0);
    }
    let Some(kit) = &inner.kit else {
        return (vec!["this board has no guest to power".into()], 1);
    };
    let bootdev = state.boot.clone().unwrap_or_else(|| "default".into());
    let bootfile = state.behaviour.pxe_bootfile.clone();
    let args = qemu_args(
        &inner.dir,
        kit,
        (&bootdev, bootfile.as_deref()),
        state.boots.len() + 1,
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(inner.dir.join("qemu.log"))
        .unwrap();
    let _ = writeln!(&log, "qemu-system-x86_64 {}", args.join(" "));
    let _ = std::fs::remove_file(inner.dir.join("monitor.sock"));
    let spawned = Command::new("qemu-system-x86_64")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return (vec![format!("cannot start qemu-system-x86_64: {e}")], 1),
    };
    // A bad option makes QEMU exit at once; the BMC should then report a failure.
    std::thread::sleep(Duration::from_millis(200));
    if let Ok(Some(status)) = child.try_wait() {
        return (vec![format!("qemu exited at once ({status})")], 1);
    }
    state.boots.push(Boot {
        pid: child.id(),
        bootdev,
        qemu_args: args,
    });
    state.qemu = Some(child);
    (vec![], 0)
}

/// `(bootdev, pxe_bootfile)`: what the BMC holds, and what DHCP offers on the `pxe` path.
fn qemu_args(
    dir: &Path,
    kit: &GuestKit,
    (bootdev, bootfile): (&str, Option<&str>),
    boot: usize,
) -> Vec<String> {
    let mut args: Vec<String> = [
        "-name",
        "ipmi-node",
        "-accel",
        "tcg",
        "-nographic",
        "-no-shutdown",
        "-m",
        "256",
        "-smp",
        "1",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "-chardev".into(),
        format!(
            "file,id=ser0,path={},append=on",
            dir.join("console.log").display()
        ),
        "-serial".into(),
        "chardev:ser0".into(),
        "-monitor".into(),
        format!(
            "unix:{},server=on,wait=off",
            dir.join("monitor.sock").display()
        ),
        "-netdev".into(),
        match bootfile {
            Some(file) if bootdev == "pxe" => format!("user,id=n0,bootfile={file}"),
            _ => "user,id=n0".into(),
        },
        "-device".into(),
        format!("virtio-net-pci,netdev=n0,mac={GUEST_MAC}"),
    ]);
    match bootdev {
        "pxe" => args.extend(["-boot".into(), "order=n".into()]),
        "cdrom" => args.extend(["-boot".into(), "order=d".into()]),
        _ => args.extend([
            "-kernel".into(),
            kit.kernel.display().to_string(),
            "-initrd".into(),
            kit.initrd.display().to_string(),
            "-append".into(),
            format!("console=ttyS0 ipmi_boot={boot} ipmi_bootdev={bootdev}"),
        ]),
    }
    args
}

/// SIGTERM (QEMU exits at once), SIGKILL after 3 s; the child is reaped here.
fn stop_guest(state: &mut State) {
    let Some(mut child) = state.qemu.take() else {
        return;
    };
    // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(3);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn acpi_power_button(inner: &Inner, state: &mut State) -> (Vec<String>, i32) {
    if !running(state) {
        return (vec![], 0);
    }
    let sent = UnixStream::connect(inner.dir.join("monitor.sock")).and_then(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"system_powerdown\n")?;
        // The monitor echoes the command once it has run it.
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("system_powerdown") {
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        Ok(())
    });
    if let Err(e) = sent {
        return (vec![format!("monitor: {e}")], 1);
    }
    state.events.push("acpi power button sent".into());
    if state.behaviour.obey_soft_off {
        let monitor = inner.dir.join("monitor.sock");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            // The "OS" shuts the machine down: QEMU exits, which the next `get power` sees.
            // Reading until QEMU closes the monitor keeps the command from being dropped
            // with a connection closed too early.
            let _ = UnixStream::connect(monitor).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"quit\n")?;
                std::io::copy(&mut s, &mut std::io::sink()).map(drop)
            });
        });
    }
    (vec![], 0)
}
