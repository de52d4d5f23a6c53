//! The agent's commands, as IPA's extensions name them (`<extension>.<command>`), and the
//! record of every command since the agent started (what `GET /v1/commands/` lists).
//!
//! One command at a time: a new one while the last is running is refused (409). Sync
//! commands answer when done; async ones answer `RUNNING`, run in the background and end with
//! a forced heartbeat, which is how the conductor learns they finished. Errors found before a
//! command starts (unknown command, bad parameters) are HTTP errors and leave no record;
//! errors while it runs mark it `FAILED` with IPA's `command_error`.

pub mod error;
mod image;
mod logs;
mod standby;
mod steps;
pub mod write;

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

pub use error::RestError;

use crate::agent::Agent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    /// IPA's status for every step-version mismatch (clean, deploy, service).
    CleanVersionMismatch,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::CleanVersionMismatch => "CLEAN_VERSION_MISMATCH",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sync,
    Async,
}

struct State {
    status: Status,
    error: Option<Value>,
    result: Option<Value>,
}

/// One command the agent accepted.
pub struct Command {
    pub id: String,
    /// Without the extension (`execute_deploy_step`), as IPA lists it.
    pub name: String,
    state: Mutex<State>,
    done: tokio::sync::watch::Sender<bool>,
}

impl Command {
    fn new(name: &str) -> Arc<Command> {
        Arc::new(Command {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            state: Mutex::new(State {
                status: Status::Running,
                error: None,
                result: None,
            }),
            done: tokio::sync::watch::channel(false).0,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.state().status == Status::Running
    }

    /// IPA's serialisation (without `command_params`, as IPA 13 lists them).
    pub fn to_json(&self) -> Value {
        let s = self.state();
        json!({"id": self.id, "command_name": self.name, "command_status": s.status.as_str(),
               "command_error": s.error, "command_result": s.result})
    }

    fn finish(&self, outcome: Result<Value, RestError>, kind: Kind) {
        {
            let mut s = self.state();
            match outcome {
                // IPA wraps text results: async ones prefixed with the command name.
                Ok(Value::String(text)) => {
                    s.result = Some(match kind {
                        Kind::Async => json!({"result": format!("{}: {text}", self.name)}),
                        Kind::Sync => json!({ "result": text }),
                    });
                    s.status = Status::Succeeded;
                }
                Ok(v) => {
                    s.result = Some(v);
                    s.status = Status::Succeeded;
                }
                Err(e) => {
                    s.status = if e.kind == "VersionMismatch" {
                        Status::CleanVersionMismatch
                    } else {
                        Status::Failed
                    };
                    s.error = Some(e.to_json());
                    s.result = None;
                }
            }
        }
        self.done.send_replace(true);
    }

    /// Waits until the command is no longer running.
    pub async fn wait(&self) {
        let mut rx = self.done.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }
}

/// Every command since the agent started, oldest first.
#[derive(Default)]
pub struct CommandLog(Mutex<Vec<Arc<Command>>>);

impl CommandLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Command>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn to_json(&self) -> Vec<Value> {
        self.lock().iter().map(|c| c.to_json()).collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Command>> {
        self.lock().iter().find(|c| c.id == id).cloned()
    }

    /// Records a command that never ends (tests of the busy agent).
    #[cfg(test)]
    pub fn push_running(&self, name: &str) -> Arc<Command> {
        let c = Command::new(name);
        self.lock().push(c.clone());
        c
    }
}

type Run = fn(Arc<Agent>, Map<String, Value>) -> BoxFuture<'static, Result<Value, RestError>>;

/// How one command is checked and run.
pub struct Spec {
    pub extension: &'static str,
    pub name: &'static str,
    pub kind: Kind,
    pub required: &'static [&'static str],
    /// Parameters accepted besides the required ones; `None`: any (IPA's `**kwargs`).
    pub optional: Option<&'static [&'static str]>,
    /// Checks run before the command is recorded (IPA's validators).
    pub validate: fn(&Agent, &Map<String, Value>) -> Result<(), RestError>,
    pub run: Run,
}

pub fn no_validation(_: &Agent, _: &Map<String, Value>) -> Result<(), RestError> {
    Ok(())
}

fn specs() -> impl Iterator<Item = &'static Spec> {
    steps::SPECS
        .iter()
        .chain(standby::SPECS)
        .chain(image::SPECS)
        .chain(logs::SPECS)
}

fn find(full: &str) -> Result<&'static Spec, RestError> {
    let (ext, cmd) = full.split_once('.').ok_or_else(|| {
        RestError::invalid_command("Command name must be of the form <extension>.<name>")
    })?;
    if !specs().any(|s| s.extension == ext) {
        return Err(RestError::extension_not_found(ext));
    }
    specs()
        .find(|s| s.extension == ext && s.name == cmd)
        .ok_or_else(|| RestError::invalid_command(format!("Unknown command: {cmd}")))
}

fn check_params(spec: &Spec, params: &Map<String, Value>) -> Result<(), RestError> {
    for r in spec.required {
        if !params.contains_key(*r) {
            return Err(RestError::invalid_params(format!(
                "{}.{} is missing the parameter {r:?}",
                spec.extension, spec.name
            )));
        }
    }
    if let Some(optional) = spec.optional {
        // IPA raises TypeError here (and, for sync commands, poisons its command list); an
        // unexpected parameter is the caller's mistake, so say which.
        if let Some(extra) = params
            .keys()
            .find(|k| !spec.required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
        {
            return Err(RestError::invalid_params(format!(
                "{}.{} does not take the parameter {extra:?}",
                spec.extension, spec.name
            )));
        }
    }
    Ok(())
}

/// Accepts and starts (sync: runs) a command. Errors are HTTP answers; nothing is recorded.
pub async fn execute(
    agent: &Arc<Agent>,
    full_name: &str,
    params: Map<String, Value>,
) -> Result<Arc<Command>, RestError> {
    let spec = {
        let mut log = agent.commands.lock();
        if let Some(last) = log.last()
            && last.is_running()
        {
            return Err(RestError::busy(&last.name));
        }
        let spec = find(full_name)?;
        check_params(spec, &params)?;
        (spec.validate)(agent, &params)?;
        let command = Command::new(spec.name);
        log.push(command.clone());
        (spec, command)
    };
    let (spec, command) = spec;
    tracing::info!(command = full_name, id = %command.id, "command accepted");
    match spec.kind {
        Kind::Sync => {
            let outcome = (spec.run)(agent.clone(), params).await;
            log_outcome(full_name, &outcome);
            command.finish(outcome, Kind::Sync);
        }
        Kind::Async => {
            let agent = agent.clone();
            let c = command.clone();
            let name = full_name.to_string();
            tokio::spawn(async move {
                let outcome = (spec.run)(agent.clone(), params).await;
                log_outcome(&name, &outcome);
                c.finish(outcome, Kind::Async);
                agent.force_heartbeat.notify_one();
            });
        }
    }
    Ok(command)
}

fn log_outcome(name: &str, outcome: &Result<Value, RestError>) {
    match outcome {
        Ok(_) => tracing::info!(command = name, "command succeeded"),
        Err(e) => tracing::error!(command = name, error = %e, kind = e.kind, "command failed"),
    }
}

/// A string parameter, or an InvalidCommandParamsError naming it.
pub fn str_param<'a>(
    params: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, RestError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(RestError::invalid_params(format!(
            "{key} must be a string, got {other}"
        ))),
    }
}

/// Runs blocking disk work off the async threads; a panic becomes a command error.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, RestError> + Send + 'static,
) -> Result<T, RestError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestError::execution(format!("{what} did not complete: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_ironboot_sends_exists() {
        for name in [
            "clean.get_clean_steps",
            "clean.execute_clean_step",
            "deploy.get_deploy_steps",
            "deploy.execute_deploy_step",
            "standby.prepare_image",
            "standby.get_partition_uuids",
            "standby.sync",
            "standby.power_off",
            "standby.run_image",
            "image.install_bootloader",
            "log.collect_system_logs",
        ] {
            assert!(find(name).is_ok(), "{name}");
        }
        let err = |n: &str| find(n).err().unwrap();
        assert_eq!(err("nope.x").code, 404);
        assert_eq!(err("standby.x").kind, "InvalidCommandError");
        assert_eq!(err("standby").code, 400);
    }

    #[test]
    fn unexpected_and_missing_parameters_are_refused() {
        let spec = find("standby.sync").unwrap();
        let bogus = json!({"bogus": 1}).as_object().unwrap().clone();
        let e = check_params(spec, &bogus).unwrap_err();
        assert_eq!((e.kind, e.code), ("InvalidCommandParamsError", 400));
        let spec = find("clean.get_clean_steps").unwrap();
        assert!(check_params(spec, &Map::new()).is_err());
    }

    #[test]
    fn results_are_wrapped_as_ipa_does() {
        let c = Command::new("prepare_image");
        c.finish(Ok(json!("done")), Kind::Async);
        assert_eq!(
            c.to_json()["command_result"],
            json!({"result": "prepare_image: done"})
        );
        let c = Command::new("execute_clean_step");
        c.finish(
            Err(RestError::version_mismatch(
                &json!({"a": "1"}),
                &json!({"a": "0"}),
            )),
            Kind::Async,
        );
        let j = c.to_json();
        assert_eq!(j["command_status"], "CLEAN_VERSION_MISMATCH");
        assert_eq!(j["command_error"]["code"], 409);
    }
}
