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

use async_trait::async_trait;

use super::{PowerError, PowerInterface};
use crate::driver::NodeContext;
use crate::model::{Node, PowerState};

const NAME: &str = "script";
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Output kept in the log and in errors, per stream.
const OUTPUT_KEPT: usize = 2000;

#[derive(Debug, Default)]
pub struct ScriptPower;

/// Why a power command did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot run {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program:?} did not finish within {secs} s (script_timeout) and was killed")]
    Timeout { program: String, secs: u64 },
    #[error("{program:?} exited with {status}; stderr: {stderr}")]
    Exit {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("the status command printed {0:?}; expected on or off")]
    UnknownState(String),
}

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

fn argv(node: &Node, action: Action) -> Result<Vec<String>, PowerError> {
    let key = action.key();
    let args: Vec<String> = match node.driver_info.get(key) {
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

fn timeout(node: &Node) -> Result<Duration, PowerError> {
    let secs = match node.driver_info.get("script_timeout") {
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
async fn run(node: &Node, action: Action) -> Result<String, PowerError> {
    let args = argv(node, action)?;
    let limit = timeout(node)?;
    run_command(node, &args, limit)
        .await
        .map_err(|e| PowerError::failed(NAME, action.verb(), node, e))
}

async fn run_command(node: &Node, args: &[String], limit: Duration) -> Result<String, ScriptError> {
    let program = args[0].clone();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args[1..])
        .env("IRONBOOT_NODE_UUID", node.uuid.to_string())
        .env("IRONBOOT_NODE_NAME", node.name.clone().unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|source| ScriptError::Spawn {
        program: program.clone(),
        source,
    })?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(source)) => return Err(ScriptError::Spawn { program, source }),
        Err(_) => {
            return Err(ScriptError::Timeout {
                program,
                secs: limit.as_secs(),
            });
        }
    };
    let (stdout, stderr) = (clip(&out.stdout), clip(&out.stderr));
    tracing::info!(node = %node.uuid, command = ?args, status = %out.status, %stdout, %stderr, "power script ran");
    if !out.status.success() {
        return Err(ScriptError::Exit {
            program,
            status: out.status,
            stderr,
        });
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

#[async_trait]
impl PowerInterface for ScriptPower {
    fn name(&self) -> &'static str {
        NAME
    }

    fn validate(&self, ctx: &NodeContext) -> Result<(), PowerError> {
        for a in [Action::On, Action::Off, Action::Status] {
            argv(&ctx.node, a)?;
        }
        timeout(&ctx.node)?;
        Ok(())
    }

    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError> {
        let out = run(&ctx.node, Action::Status).await?;
        let state = parse_state(&out).ok_or_else(|| {
            PowerError::failed(
                NAME,
                Action::Status.verb(),
                &ctx.node,
                ScriptError::UnknownState(out),
            )
        })?;
        ctx.node.power_state = Some(state);
        Ok(state)
    }

    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError> {
        match target {
            PowerState::On => run(&ctx.node, Action::On).await?,
            PowerState::Off | PowerState::SoftOff => run(&ctx.node, Action::Off).await?,
            PowerState::Rebooting | PowerState::SoftRebooting => {
                run(&ctx.node, Action::Off).await?;
                run(&ctx.node, Action::On).await?
            }
        };
        ctx.node.power_state = Some(match target {
            PowerState::Off | PowerState::SoftOff => PowerState::Off,
            _ => PowerState::On,
        });
        Ok(())
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
