//! Runs the real `ironboot serve` binary on ephemeral loopback ports for black-box tests.
//!
//! The server binds port 0 and reports what it bound through `--ready-file`, so no port is
//! picked here and released before the server takes it. Labs whose configuration embeds the
//! ports (URLs as a QEMU guest sees them) pass them in with [`Server::start_in_on_ports`] and
//! retry on a port taken meanwhile.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ironboot_bin;

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

    /// Starts a server on an existing data directory (restart tests), on ports it picks.
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_in_on_ports(data_dir, (0, 0, 0), args, env)
    }

    /// Starts a server on the caller's `(api, http, tftp)` ports (0: any free port), for
    /// configurations that embed them (URLs as a QEMU guest sees them, GRUB prefixes).
    pub fn start_in_on_ports(
        data_dir: &Path,
        (api_port, http_port, tftp_port): (u16, u16, u16),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        match Self::try_start(data_dir, (api_port, http_port, tftp_port), args, env) {
            Ok(s) => s,
            Err(log) => panic!("ironboot did not start:\n{log}"),
        }
    }

    /// Like [`Server::start_in_on_ports`], but a start that fails because a port was taken
    /// comes back as `Err(log)` for the caller to retry on other ports.
    pub fn try_start(
        data_dir: &Path,
        ports: (u16, u16, u16),
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Server, String> {
        Self::try_start_limited(data_dir, ports, args, env, None)
    }

    /// Starts a server in a fresh data directory whose process gets the open-file limit
    /// `(soft, hard)`, as a service manager would set it (`LimitNOFILE=`).
    pub fn start_with_nofile(nofile: (u64, u64), args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut s = Self::try_start_limited(&data_dir, (0, 0, 0), args, env, Some(nofile))
            .unwrap_or_else(|log| panic!("ironboot did not start:\n{log}"));
        s._tmp = Some(tmp);
        s
    }

    /// [`Server::try_start`] with an optional open-file limit `(soft, hard)` for the process.
    pub fn try_start_limited(
        data_dir: &Path,
        (api_port, http_port, tftp_port): (u16, u16, u16),
        args: &[&str],
        env: &[(&str, &str)],
        nofile: Option<(u64, u64)>,
    ) -> Result<Server, String> {
        std::fs::create_dir_all(data_dir).unwrap();
        let log_path = data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let ready = data_dir.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(ironboot_bin());
        cmd.arg("serve")
            .arg("--ready-file")
            .arg(&ready)
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
            // Automated cleaning (on by default) boots the agent for `direct` nodes on provide
            // and undeploy; tests that play no agent for it start without it, the cleaning
            // tests turn it back on through `env`. Fake-deploy nodes clean at once either way.
            .env("IRONBOOT_CONDUCTOR__AUTOMATED_CLEAN", "false")
            .env_remove("IRONBOOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; the closure touches no shared state.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                })
            };
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
        s.wait_ready(&ready, Duration::from_secs(30))?;
        Ok(s)
    }

    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn api_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }

    pub fn http_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.http_port))
    }

    pub fn tftp_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.tftp_port))
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server stopped").id()
    }

    /// Kills the server with SIGKILL (no clean-up of any kind) and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The value of one sample line of `/metrics` (`name{labels}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "10"])
            .arg(format!("{}/metrics", self.api_url()))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Waits for the ready file, takes the bound ports from it, then checks `/healthz`.
    /// `Err(log)` when the server exited (a taken port, a bad configuration).
    fn wait_ready(&mut self, ready: &Path, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("exited early ({status}):\n{}", self.log()));
            }
            if let Ok(text) = std::fs::read_to_string(ready) {
                let bound: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("ready file {text:?}: {e}"));
                let port = |k: &str| {
                    bound[k]
                        .as_str()
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                        .map_or(0, |a| a.port())
                };
                (self.api_port, self.http_port, self.tftp_port) =
                    (port("api"), port("http"), port("tftp"));
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "ironboot wrote no ready file in {timeout:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let ok = Command::new("curl")
            .args(["-sf", "-m", "10", "-o", "/dev/null"])
            .arg(format!("{}/healthz", self.api_url()))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ready but /healthz fails:\n{}", self.log());
        Ok(())
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server already stopped");
        Self::terminate(&mut child).unwrap_or_else(|e| panic!("{e}:\n{}", self.log()))
    }

    /// SIGTERM, then up to 30 s for the exit; a server that does not exit is killed and
    /// reported.
    fn terminate(child: &mut Child) -> Result<std::process::ExitStatus, String> {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for ironboot: {e}")),
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("ironboot did not exit within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    /// Never panics (a panic while unwinding aborts the test binary): a server that will not
    /// stop is killed and said so on stderr.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = Self::terminate(&mut child)
        {
            eprintln!("{e}");
        }
    }
}
