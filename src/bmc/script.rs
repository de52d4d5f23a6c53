//! The `script` power interface: driver_info names commands that power the node on and off
//! and report its state — for labs and tests, where "the machine" is a VM or a sandboxed
//! process a script starts and kills, as a BMC would power a server.
//!
//! driver_info:
//! - `script_power_on`, `script_power_off`, `script_power_status`: the command, either a JSON
//!   array of arguments (`["/usr/local/bin/vm", "start", "n1"]`) or a string split on
//!   whitespace. No shell is involved, so nothing in a value is interpreted.
//! - `script_timeout`: seconds one command may run (default 30); it is killed after that.
//!
//! The status command prints `on`/`off` (or `power on`/`power off`) on stdout. Every command
//! gets `IRONBOOT_NODE_UUID` and `IRONBOOT_NODE_NAME` in its environment; its output goes to
//! the log.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::{PowerError, PowerInterface};
use crate::conductor::task::{Task, TaskFuture};
use crate::model::PowerState;

const NAME: &str = "script";
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Output kept in the log and in errors, per stream.
const OUTPUT_KEPT: usize = 2000;

#[derive(Debug, Default)]
pub struct ScriptPower;

#[derive(Debug, Clone, Copy)]
enum Action {
    On,
    Off,
    Status,
}

impl Action {
    fn key(self) -> &'static str {
        match self {
            Action::On => "script_power_on",
            Action::Off => "script_power_off",
            Action::Status => "script_power_status",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::On => "power on",
            Action::Off => "power off",
            Action::Status => "read the power state of",
        }
    }
}

fn invalid(reason: String) -> PowerError {
    PowerError::InvalidDriverInfo {
        interface: NAME,
        reason,
    }
}

fn argv(task: &Task, action: Action) -> Result<Vec<String>, PowerError> {
    let key = action.key();
    let args: Vec<String> = match task.node.driver_info.get(key) {
        None | Some(Value::Null) => {
            return Err(invalid(format!("{key} is required (a command to run)")));
        }
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(String::from).ok_or_else(|| {
                    invalid(format!("{key}: every argument must be a string, got {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(invalid(format!(
                "{key} must be a string or an array of strings, got {other}"
            )));
        }
    };
    if args.is_empty() {
        return Err(invalid(format!("{key} is empty")));
    }
    Ok(args)
}

fn timeout(task: &Task) -> Result<Duration, PowerError> {
    let secs = match task.node.driver_info.get("script_timeout") {
        None | Some(Value::Null) => DEFAULT_TIMEOUT_SECS,
        Some(Value::Number(n)) => n.as_u64().filter(|s| *s > 0).ok_or_else(|| {
            invalid(format!(
                "script_timeout {n} must be a positive number of seconds"
            ))
        })?,
        Some(Value::String(s)) => {
            s.trim()
                .parse::<u64>()
                .ok()
                .filter(|s| *s > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "script_timeout {s:?} must be a positive number of seconds"
                    ))
                })?
        }
        Some(other) => {
            return Err(invalid(format!(
                "script_timeout must be a number of seconds, got {other}"
            )));
        }
    };
    Ok(Duration::from_secs(secs))
}

fn clip(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() > OUTPUT_KEPT {
        let mut cut = OUTPUT_KEPT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &s[..cut])
    } else {
        s.to_string()
    }
}

/// Runs the command for `action`; returns its stdout when it exits 0.
async fn run(task: &Task, action: Action) -> Result<String, PowerError> {
    let args = argv(task, action)?;
    let limit = timeout(task)?;
    let failed = |reason: String| PowerError::Failed {
        interface: NAME,
        action: action.verb(),
        node: task.node.ident(),
        reason,
    };
    let mut cmd = tokio::process::Command::new(&args[0]);
    cmd.args(&args[1..])
        .env("IRONBOOT_NODE_UUID", task.node.uuid.to_string())
        .env(
            "IRONBOOT_NODE_NAME",
            task.node.name.clone().unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot run {:?}: {e}", args[0])))?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(failed(format!("{:?}: {e}", args[0]))),
        Err(_) => {
            return Err(failed(format!(
                "{:?} did not finish within {} s (script_timeout) and was killed",
                args[0],
                limit.as_secs()
            )));
        }
    };
    let (stdout, stderr) = (clip(&out.stdout), clip(&out.stderr));
    tracing::info!(node = %task.node.uuid, command = ?args, status = %out.status, %stdout, %stderr, "power script ran");
    if !out.status.success() {
        return Err(failed(format!(
            "{:?} exited with {}; stderr: {stderr}",
            args[0], out.status
        )));
    }
    Ok(stdout)
}

fn parse_state(stdout: &str) -> Option<PowerState> {
    let last = stdout.lines().last()?.trim().to_ascii_lowercase();
    match last.as_str() {
        "on" | "power on" => Some(PowerState::On),
        "off" | "power off" => Some(PowerState::Off),
        _ => None,
    }
}

impl PowerInterface for ScriptPower {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, task: &Task) -> Result<(), PowerError> {
        for a in [Action::On, Action::Off, Action::Status] {
            argv(task, a)?;
        }
        timeout(task)?;
        Ok(())
    }

    fn get_power_state<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, PowerState, PowerError> {
        Box::pin(async move {
            let out = run(task, Action::Status).await?;
            let state = parse_state(&out).ok_or_else(|| PowerError::Failed {
                interface: NAME,
                action: Action::Status.verb(),
                node: task.node.ident(),
                reason: format!("the status command printed {out:?}; expected on or off"),
            })?;
            task.node.power_state = Some(state);
            Ok(state)
        })
    }

    fn set_power_state<'a>(
        &'a self,
        task: &'a mut Task,
        target: PowerState,
    ) -> TaskFuture<'a, (), PowerError> {
        Box::pin(async move {
            match target {
                PowerState::On => run(task, Action::On).await?,
                PowerState::Off | PowerState::SoftOff => run(task, Action::Off).await?,
                PowerState::Rebooting | PowerState::SoftRebooting => {
                    run(task, Action::Off).await?;
                    run(task, Action::On).await?
                }
            };
            task.node.power_state = Some(match target {
                PowerState::Off | PowerState::SoftOff => PowerState::Off,
                _ => PowerState::On,
            });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_read_from_the_last_line() {
        assert_eq!(parse_state("starting\non\n"), Some(PowerState::On));
        assert_eq!(parse_state("power off"), Some(PowerState::Off));
        assert_eq!(parse_state("maybe"), None);
        assert_eq!(parse_state(""), None);
    }
}
