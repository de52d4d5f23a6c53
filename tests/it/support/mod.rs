//! Shared helpers for the black-box tests in `tests/`.
//!
//! Peer policy: a test that needs a real third-party peer (a tool, a server, QEMU...) calls
//! [`require_peer`]. Under CI (`IRONBOOT_REQUIRE_PEERS=1`, set by `.ci/run`) a missing peer is a
//! test failure; locally the test is skipped with a loud message on stderr.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

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

/// Runs a command and returns (status ok, stdout, stderr) as strings.
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

pub mod bmc_board;
pub mod bootserve;
pub mod faultlab;
pub mod guest;
pub mod ipa;
pub mod ipmi_sim;
pub mod netboot;
pub mod origin;
pub mod pyenv;
pub mod redfish_proxy;
pub mod server;
pub mod sushy;
pub mod swift;
pub mod tmpfs;

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
