//! Cleaning through the agent on its heartbeats: `erase_devices_metadata` when a node is
//! undeployed with `[agent] erase_metadata_on_undeploy`.

use serde_json::{Value, json};

use super::AgentDeploy;
use super::deploy_steps::AgentStepFailure;
use crate::agent::{AgentClient, AgentError, AgentSession, CommandStatus};
use crate::conductor::deploy::{DeployContext, DeployError};
use crate::conductor::task::Task;
use crate::model::{Event, PowerState};

/// The clean step run through the agent.
const ERASE_METADATA: &str = "erase_devices_metadata";

impl AgentDeploy {
    /// Cleaning on a heartbeat: list the clean steps, run `erase_devices_metadata`, and when
    /// the agent reports it done, power the node off and drop the ramdisk boot.
    pub(super) async fn continue_clean_steps(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let client = self.client(task)?;
        if !AgentSession::read(&task.node).steps_listed()
            && !self.list_clean_steps(task, &client).await?
        {
            return Ok(());
        }
        if AgentSession::read(&task.node).clean_step_index.is_none() {
            return self.start_erase(task, &client).await;
        }
        let commands = client
            .list_commands()
            .await
            .map_err(|e| Self::failed(task, e))?;
        let Some(last) = commands
            .iter()
            .rev()
            .find(|c| c.command_name == "execute_clean_step")
        else {
            return Err(Self::failed(
                task,
                "the agent lists no clean step although one was sent (restarted?)",
            ));
        };
        match &last.command_status {
            CommandStatus::Running => Ok(()),
            CommandStatus::Succeeded => {
                task.process_event(Event::Resume).await?;
                ctx.power
                    .set_power_state(task.ctx(), PowerState::Off)
                    .await?;
                ctx.boot.clean_up_ramdisk(task.ctx()).await?;
                AgentSession::wipe(&mut task.node);
                task.process_event(Event::Done).await?;
                tracing::info!(node = %task.node.uuid, "disk metadata erased; node available");
                Ok(())
            }
            _ => Err(Self::failed(
                task,
                AgentStepFailure::Command {
                    command: ERASE_METADATA,
                    detail: last.error_text(),
                },
            )),
        }
    }

    /// `clean.get_clean_steps`; false when the agent was busy (retried next heartbeat).
    async fn list_clean_steps(
        &self,
        task: &mut Task,
        client: &AgentClient,
    ) -> Result<bool, DeployError> {
        let params =
            json!({"node": Self::node_for_agent(task), "ports": Self::ports_for_agent(task)});
        let r = match client.execute("clean.get_clean_steps", params, true).await {
            Err(AgentError::Busy { .. }) => return Ok(false),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        let mut session = AgentSession::read(&task.node);
        session.hardware_manager_version = Some(
            r.command_result
                .as_ref()
                .and_then(|r| r.get("hardware_manager_version"))
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        session.write(&mut task.node);
        task.save().await?;
        Ok(true)
    }

    async fn start_erase(&self, task: &mut Task, client: &AgentClient) -> Result<(), DeployError> {
        let mut session = AgentSession::read(&task.node);
        let params = json!({
            "step": {"step": ERASE_METADATA, "priority": 99, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
            "node": Self::node_for_agent(task),
            "ports": Self::ports_for_agent(task),
            "clean_version": session.hardware_manager_version.clone().unwrap_or(Value::Null),
        });
        match client
            .execute("clean.execute_clean_step", params, false)
            .await
        {
            Err(AgentError::Busy { .. }) => return Ok(()),
            Err(e) => return Err(Self::failed(task, e)),
            Ok(r) if r.command_status == CommandStatus::Failed => {
                return Err(Self::failed(
                    task,
                    AgentStepFailure::Command {
                        command: ERASE_METADATA,
                        detail: r.error_text(),
                    },
                ));
            }
            Ok(_) => {}
        }
        session.clean_step_index = Some(0);
        session.write(&mut task.node);
        task.save().await?;
        tracing::info!(node = %task.node.uuid, "disk metadata erase started on the agent");
        Ok(())
    }
}
