//! The config drive the agent writes: passed through as given (gzip+base64 ISO or URL), or
//! built from JSON (`meta_data`, `user_data`, `network_data`, `vendor_data`) into a
//! `config-2` ISO, as Ironic does.

use serde_json::{Value, json};

use super::AgentDeploy;
use crate::conductor::deploy::DeployError;
use crate::conductor::task::Task;

/// Checks `instance_info.configdrive` without building anything (validation).
pub(super) fn check(task: &Task) -> Result<(), DeployError> {
    match task.node.instance_info.get("configdrive") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Object(spec)) => crate::media::configdrive::files(spec, &task.node.uuid)
            .map(|_| ())
            .map_err(AgentDeploy::invalid),
        Some(other) => Err(AgentDeploy::invalid(format!(
            "configdrive must be a string (gzip+base64 ISO or URL) or an object, not {other}"
        ))),
    }
}

/// The configdrive for the agent: a gzip+base64 ISO or a URL, passed as given. A JSON
/// drive has already been built into that form by [`AgentDeploy::build_configdrive`].
pub(super) fn for_agent(task: &Task) -> Result<Value, DeployError> {
    check(task)?;
    match task.node.instance_info.get("configdrive") {
        Some(Value::String(s)) if !s.is_empty() => Ok(json!(s)),
        Some(Value::Object(_)) => Err(AgentDeploy::failed(
            task,
            "the JSON config drive was not built before write_image",
        )),
        _ => Ok(Value::Null),
    }
}

/// Why a JSON config drive could not be built.
#[derive(Debug, thiserror::Error)]
enum BuildFailure {
    #[error("config drive build was cancelled: {0}")]
    Cancelled(#[source] tokio::task::JoinError),
    #[error("cannot build the config drive: {0}")]
    Media(#[source] crate::media::MediaError),
}

impl AgentDeploy {
    /// Turns a JSON config drive into a gzip+base64 `config-2` ISO in
    /// `instance_info.configdrive`.
    pub(super) async fn build_configdrive(&self, task: &mut Task) -> Result<(), DeployError> {
        let Some(Value::Object(spec)) = task.node.instance_info.get("configdrive").cloned() else {
            return Ok(());
        };
        let builder = self.config.media.clone();
        let uuid = task.node.uuid;
        let encoded = tokio::task::spawn_blocking(move || {
            crate::media::configdrive::build_encoded(&builder, &spec, &uuid)
        })
        .await
        .map_err(|e| Self::failed(task, BuildFailure::Cancelled(e)))?
        .map_err(|e| Self::failed(task, BuildFailure::Media(e)))?;
        tracing::info!(node = %uuid, bytes = encoded.len(), "config drive built from JSON");
        task.node
            .instance_info
            .insert("configdrive".into(), json!(encoded));
        Ok(())
    }
}
