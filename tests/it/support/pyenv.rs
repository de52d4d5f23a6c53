//! Python tools for tests (python-ironicclient, ...), installed on demand into venvs cached in
//! the target directory, so `cargo test` needs nothing installed by hand beyond python3-venv.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::run_timeout;

/// A `pip install` from PyPI (dozens of wheels on a first run) that takes longer has hung.
const PIP_TIMEOUT: Duration = Duration::from_secs(900);

/// `<target>/ironboot-test-cache`, derived from the test executable's location.
pub fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // <target>/debug/deps/<test binary>
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    let dir = target.join("ironboot-test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The python-ironicclient the tests drive ironboot (and the real Ironic) with.
pub const IRONICCLIENT: &str = "python-ironicclient==6.3.0";

/// Its `baremetal` CLI (see [`venv_tool`]).
pub fn baremetal_cli(test: &str) -> Option<PathBuf> {
    venv_tool(test, "ironicclient", &[IRONICCLIENT], "baremetal")
}

/// Returns `<venv>/bin/<tool>`, creating the venv `name` with `requirements` if needed.
/// `None` (after a loud message) when it cannot be built and peers are optional.
pub fn venv_tool(test: &str, name: &str, requirements: &[&str], tool: &str) -> Option<PathBuf> {
    let venv = cache_dir().join(format!("venv-{name}"));
    let bin = venv.join("bin").join(tool);
    let stamp = venv.join(".ironboot-ready");
    let want = requirements.join("\n");
    if stamp.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
        && bin.is_file()
    {
        return Some(bin);
    }
    let lock_path = cache_dir().join(format!("venv-{name}.lock"));
    let lock = std::fs::File::create(&lock_path).unwrap();
    // SAFETY: flock on our own open file; serialises venv creation across test processes.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    if stamp.is_file()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
        && bin.is_file()
    {
        return Some(bin);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let (mut ok, _, mut err) = run_timeout(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        Duration::from_secs(120),
    );
    if ok {
        (ok, _, err) = run_timeout(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .args(requirements),
            PIP_TIMEOUT,
        );
    }
    if !ok || !bin.is_file() {
        let _ = super::require_condition(
            test,
            false,
            &format!(
                "cannot build venv {name} with {requirements:?} (python3-venv and PyPI needed): {}",
                err.trim()
            ),
        );
        return None;
    }
    std::fs::write(&stamp, want).unwrap();
    Some(bin)
}
