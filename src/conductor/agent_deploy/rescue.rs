//! Rescue through the agent (`rescue_interface = agent`): the node's instance boot is removed,
//! the agent boots as the rescue ramdisk (`rescue wait`), and on its first heartbeat ironboot
//! hands it the rescue password's hash (`rescue.finalize_rescue` with `hashed: true`). The agent
//! writes it where the ramdisk's login reads it and stops its API; the ramdisk keeps running
//! for the operator → `rescue`.

use serde_json::{Value, json};

use super::AgentDeploy;
use crate::agent::{AgentError, AgentSession, CommandStatus};
use crate::conductor::deploy::{DeployContext, DeployError};
use crate::conductor::task::Task;
use crate::conductor::verbs;
use crate::model::{Event, PowerState};

/// What went wrong handing the password over.
#[derive(Debug, thiserror::Error)]
pub(super) enum RescueFailure {
    #[error("no hashed rescue password is recorded for the node; rescue again")]
    NoPassword,
    #[error("Agent returned bad result for command finalize_rescue: {0}")]
    BadResult(String),
}

impl AgentDeploy {
    /// Removes the instance boot and boots the agent → the caller moves the node to
    /// `rescue wait`.
    pub(super) async fn boot_rescue_agent(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        ctx.boot.clean_up_instance(task.ctx()).await?;
        // A new session: the rescue agent looks up and gets a new token.
        AgentSession::wipe(&mut task.node);
        self.boot_agent(task, ctx).await?;
        tracing::info!(node = %task.node.uuid, "agent booting as the rescue ramdisk");
        Ok(())
    }

    /// On the rescue agent's heartbeat: `rescue.finalize_rescue`, then the ramdisk boot files
    /// and the passwords are removed (the ramdisk keeps running) → `rescue`.
    pub(super) async fn finalize_rescue(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let hashed = task
            .node
            .instance_info
            .get(verbs::HASHED_RESCUE_PASSWORD_KEY)
            .and_then(Value::as_str)
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Self::failed(task, RescueFailure::NoPassword))?
            .to_string();
        let client = self.client(task)?;
        let params = json!({"rescue_password": hashed, "hashed": true});
        let r = match client.execute("rescue.finalize_rescue", params, true).await {
            Err(AgentError::Busy { .. }) => return Ok(()),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        if r.command_status != CommandStatus::Succeeded {
            let detail = r.error_text();
            return Err(Self::failed(task, RescueFailure::BadResult(detail)));
        }
        task.process_event(Event::Resume).await?;
        ctx.boot.clean_up_ramdisk(task.ctx()).await?;
        verbs::forget_rescue_password(&mut task.node);
        // The agent stopped its API: nothing is left to talk to.
        AgentSession::wipe(&mut task.node);
        task.process_event(Event::Done).await?;
        tracing::info!(node = %task.node.uuid, "rescue password handed to the agent; node in rescue");
        Ok(())
    }
}
