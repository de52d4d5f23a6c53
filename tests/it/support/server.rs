//! Runs the real `ironboot serve` binary on ephemeral loopback ports for black-box tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_tcp_port, free_udp_port, ironboot_bin};

/// A running `ironboot serve`; stopped with SIGTERM when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub data_dir: PathBuf,
    pub api_port: u16,
    pub http_port: u16,
    pub tftp_port: u16,
    pub log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server in a fresh temporary data directory.
    pub fn start() -> Server {
        Self::start_with(&[], &[])
    }

    /// Starts a server with extra `serve` arguments and environment variables.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut s = Self::start_in(&data_dir, args, env);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on an existing data directory (restart tests).
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let ports = (free_tcp_port(), free_tcp_port(), free_udp_port());
        Self::start_in_on_ports(data_dir, ports, args, env)
    }

    /// Starts a server on the caller's `(api, http, tftp)` ports, for configurations that
    /// embed them (URLs as a QEMU guest sees them, GRUB prefixes).
    pub fn start_in_on_ports(
        data_dir: &Path,
        (api_port, http_port, tftp_port): (u16, u16, u16),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut cmd = Command::new(ironboot_bin());
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--api-listen")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--http-listen")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("--tftp-listen")
            .arg(format!("127.0.0.1:{tftp_port}"))
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("IRONBOOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ironboot serve");
        let mut s = Server {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            api_port,
            http_port,
            tftp_port,
            log_path,
            _tmp: None,
        };
        s.wait_healthy(Duration::from_secs(30));
        s
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("ironboot exited early ({status}):\n{}", self.log());
            }
            let ok = Command::new("curl")
                .args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    &format!("{}/healthz", self.api_url()),
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "ironboot did not become healthy in {timeout:?}:\n{}",
            self.log()
        );
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "ironboot did not exit within 30 s of SIGTERM:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}
