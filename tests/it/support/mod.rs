//! Shared helpers for the black-box tests in `tests/`.
//!
//! Peer policy: a test that needs a real third-party peer (a tool, a server, QEMU...) calls
//! [`require_peer`]. Under CI (`IRONBOOT_REQUIRE_PEERS=1`, set by `.ci/run`) a missing peer is a
//! test failure; locally the test is skipped with a loud message on stderr.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// True when peers must be present (CI); false when missing peers may be skipped.
pub fn peers_required() -> bool {
    std::env::var("IRONBOOT_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Checks that every program in `tools` is on PATH. Returns `false` (after a loud message) when
/// one is missing and peers are optional; panics when peers are required.
#[must_use]
pub fn require_peer(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "{test}: peer tool(s) not found on PATH: {}",
        missing.join(", ")
    );
    if peers_required() {
        panic!("{msg} (IRONBOOT_REQUIRE_PEERS=1: .ci/run must install them)");
    }
    eprintln!(
        "\n######## SKIPPED {msg} ########\n######## install them (see .ci/run) to run this test ########\n"
    );
    false
}

/// Like [`require_peer`] for a condition that is not a program (a file, root, a module).
#[must_use]
pub fn require_condition(test: &str, ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    let msg = format!("{test}: {what}");
    if peers_required() {
        panic!("{msg} (IRONBOOT_REQUIRE_PEERS=1)");
    }
    eprintln!("\n######## SKIPPED {msg} ########\n");
    false
}

/// Finds a program on PATH (also looking in the sbin directories, which a non-login PATH may lack).
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/local/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The ironboot binary built by cargo for these tests.
pub fn ironboot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ironboot"))
}

/// A free TCP port on 127.0.0.1 (released before returning; tests bind it right away).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free UDP port on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long [`run`] lets a command take: a safety net for commands that normally finish in
/// seconds (a hung peer fails the test instead of hanging it). Longer jobs use [`run_timeout`].
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs a command (stdin closed) and returns (status ok, stdout, stderr) as strings; killed
/// after [`RUN_TIMEOUT`].
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    run_timeout(cmd, RUN_TIMEOUT)
}

/// Like [`run`] with its own limit. The command runs in a process group of its own; at the
/// limit the whole group is killed and the result is not ok, with stderr saying so.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> (bool, String, String) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let (tx, rx) = mpsc::channel();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout is piped")),
        Box::new(child.stderr.take().expect("stderr is piped")),
    ];
    for (i, mut pipe) in pipes.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send((i, buf));
        });
    }
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            _ => {
                // SAFETY: a signal to the process group of our own child, not yet reaped.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
        }
    };
    // A daemon the command left behind may hold the pipes open: read until the deadline.
    let mut out = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        match rx.recv_timeout(left) {
            Ok((i, buf)) => out[i] = buf,
            Err(_) => break,
        }
    }
    let [stdout, stderr] = out.map(|b| String::from_utf8_lossy(&b).into_owned());
    match status {
        Some(s) => (s.success(), stdout, stderr),
        None => (
            false,
            stdout,
            format!("{stderr}\n<{cmd:?} killed: still running after {timeout:?}>"),
        ),
    }
}

/// Runs a command with its output discarded, for clean-ups (`Drop`): never panics, killed
/// after `timeout`. True when it ran and succeeded.
pub fn run_quietly(cmd: &mut Command, timeout: Duration) -> bool {
    let Ok(mut child) = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Writes `len` bytes of deterministic pseudo-random data (xorshift) to `path`.
pub fn write_pattern_file(path: &Path, len: usize, seed: u64) {
    let mut x = seed | 1;
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
    std::fs::write(path, buf).unwrap();
}

pub mod agent_kit;
pub mod bmc_board;
pub mod bootserve;
pub mod deploy_lab;
pub mod fake_agent;
pub mod faultlab;
pub mod guest;
pub mod ipa;
pub mod ipmi_sim;
pub mod ironic;
pub mod netboot;
pub mod origin;
pub mod postgres;
pub mod pyenv;
pub mod redfish_proxy;
pub mod server;
pub mod sushy;
pub mod swift;
pub mod tmpfs;
pub mod vmedia_lab;
pub mod vmedia_machine;

/// An HTTP client for tests (plain HTTP; the ring provider is installed for any TLS use).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A listing of a root, sorted: directories (`name/`), links (`name -> target`) and files —
/// with their size and md5 when `digests` (golden trees), names only otherwise (trees whose
/// files embed run-specific ports and sizes).
pub fn tree(root: &Path, digests: bool) -> String {
    fn walk(root: &Path, dir: &Path, digests: bool, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&path).unwrap().display()
                ));
            } else if t.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, digests, out);
            } else if digests {
                let bytes = std::fs::read(&path).unwrap();
                let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&bytes));
                out.push(format!("{rel}  {} bytes  md5 {md5}", bytes.len()));
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, digests, &mut out);
    out.sort();
    out.join("\n") + "\n"
}
