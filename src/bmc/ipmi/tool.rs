//! Running ipmitool: one run per call with a hard timeout, retries of transient failures
//! within `command_retry_timeout_secs`, one command at a time per BMC with the minimum
//! interval between them, and the password in the child's environment only.
//!
//! Why the environment (`-E`, `IPMI_PASSWORD`) and not `-P`: any local user can read another
//! process's command line in /proc, while `/proc/<pid>/environ` is readable by its owner
//! alone — the same audience as a 0600 password file, without a file to clean up when the
//! run is killed. The child gets a cleared environment (PATH, LC_ALL=C for stable messages,
//! the password), stdin closed, and is killed if the calling future is dropped.

use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::Ipmitool;
use super::classify::{FailureKind, clean_stderr, failure_kind, refusal_lines};
use super::driver_info::DriverInfo;
use super::error::IpmiError;

/// One ipmitool command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cmd<'a> {
    /// Metrics label: the command without variable arguments (`chassis bootdev`).
    pub label: &'static str,
    pub words: &'a [&'a str],
    /// Start of a stderr line by which ipmitool reports a refusal while exiting 0.
    pub refused_if: Option<&'static str>,
}

#[derive(Debug)]
pub(crate) struct RunOutput {
    pub stdout: String,
}

/// Why one run failed.
#[derive(Debug)]
enum Attempt {
    Spawn(std::io::Error),
    Killed,
    Failed {
        kind: FailureKind,
        status: String,
        stderr: String,
    },
}

impl Attempt {
    fn retryable(&self) -> bool {
        match self {
            Attempt::Spawn(_) => false,
            Attempt::Killed => true,
            Attempt::Failed { kind, .. } => kind.retryable(),
        }
    }

    fn outcome(&self) -> &'static str {
        match self {
            Attempt::Spawn(_) => "spawn_failed",
            Attempt::Killed => "timeout",
            Attempt::Failed { kind, .. } => match kind {
                FailureKind::Authentication => "auth_failed",
                FailureKind::Unreachable => "unreachable",
                FailureKind::Busy => "busy",
                FailureKind::Refused => "refused",
                FailureKind::Other => "failed",
            },
        }
    }
}

impl Ipmitool {
    /// Runs `cmd` against the BMC of `info`, retrying transient failures.
    pub(crate) async fn run(
        &self,
        info: &DriverInfo,
        cmd: Cmd<'_>,
    ) -> Result<RunOutput, IpmiError> {
        let settings = self.settings();
        let bmc = info.bmc();
        let started = Instant::now();
        let mut turn = self
            .registry()
            .acquire(&bmc.to_ascii_lowercase(), settings.min_command_interval())
            .await;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let t0 = Instant::now();
            let result = self.run_once(info, &bmc, cmd).await;
            turn.command_ended();
            let outcome = result.as_ref().map_or_else(Attempt::outcome, |_| "ok");
            if let Some(m) = self.metrics() {
                m.record(cmd.label, outcome, t0.elapsed().as_secs_f64());
            }
            let failure = match result {
                Ok(out) => return Ok(out),
                Err(failure) => failure,
            };
            let next_try_at = started.elapsed() + settings.min_command_interval();
            if !failure.retryable() || next_try_at >= settings.command_retry_timeout() {
                return Err(self.error(info, cmd, failure, attempts, started.elapsed()));
            }
            warn!(
                bmc = %bmc,
                command = %cmd.words.join(" "),
                attempt = attempts,
                outcome,
                "ipmitool failed, trying again"
            );
            turn.pause().await;
        }
    }

    async fn run_once(
        &self,
        info: &DriverInfo,
        bmc: &str,
        cmd: Cmd<'_>,
    ) -> Result<RunOutput, Attempt> {
        let settings = self.settings();
        let mut child = tokio::process::Command::new(&settings.ipmitool);
        child
            .args(info.session_args())
            .args(["-N", &settings.lan_timeout_secs.to_string()])
            .args(["-R", &settings.lan_retries.to_string()])
            // -v makes ipmitool say why a session failed (credentials or silence).
            .arg("-v")
            .args(cmd.words)
            .env_clear()
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            child.env("PATH", path);
        }
        if let Some(password) = &info.password {
            child.env("IPMI_PASSWORD", password.expose());
        }
        let started = Instant::now();
        let running = child.spawn().map_err(Attempt::Spawn)?;
        // On timeout the future, and with it the child, is dropped: kill_on_drop kills it.
        let out = match tokio::time::timeout(settings.command_timeout(), running.wait_with_output())
            .await
        {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(Attempt::Spawn(e)),
            Err(_) => return Err(Attempt::Killed),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        debug!(bmc, command = %cmd.words.join(" "), status = %out.status,
               elapsed_ms = started.elapsed().as_millis() as u64,
               stdout = %stdout.trim(), stderr = %clean_stderr(&stderr), "ipmitool ran");
        if !out.status.success() {
            return Err(Attempt::Failed {
                kind: failure_kind(&stderr),
                status: out.status.to_string(),
                stderr,
            });
        }
        if let Some(lines) = cmd.refused_if.and_then(|p| refusal_lines(&stderr, p)) {
            return Err(Attempt::Failed {
                kind: FailureKind::Refused,
                status: format!("{} (ipmitool ignored the refusal)", out.status),
                stderr: lines,
            });
        }
        Ok(RunOutput { stdout })
    }

    fn error(
        &self,
        info: &DriverInfo,
        cmd: Cmd<'_>,
        failure: Attempt,
        attempts: u32,
        elapsed: Duration,
    ) -> IpmiError {
        let bmc = info.bmc();
        let command = cmd.words.join(" ");
        match failure {
            Attempt::Spawn(source) => IpmiError::Spawn {
                program: self.settings().ipmitool.clone(),
                bmc,
                command,
                source,
            },
            Attempt::Killed => IpmiError::Timeout {
                bmc,
                command,
                timeout: self.settings().command_timeout(),
                attempts,
            },
            Attempt::Failed {
                kind,
                status,
                stderr,
            } => {
                let stderr = clean_stderr(&stderr);
                match kind {
                    FailureKind::Authentication => IpmiError::Authentication {
                        bmc,
                        command,
                        stderr,
                    },
                    FailureKind::Unreachable => IpmiError::Unreachable {
                        bmc,
                        command,
                        attempts,
                        elapsed,
                        stderr,
                    },
                    FailureKind::Refused => IpmiError::Refused {
                        bmc,
                        command,
                        stderr,
                    },
                    FailureKind::Busy | FailureKind::Other => IpmiError::Failed {
                        bmc,
                        command,
                        status,
                        attempts,
                        stderr,
                    },
                }
            }
        }
    }
}
