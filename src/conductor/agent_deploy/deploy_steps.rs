//! The deploy on the agent's heartbeats: list its steps, send `write_image`, follow it, then
//! boot the instance.

use serde_json::{Value, json};

use super::plan::DeployPlan;
use super::{AgentDeploy, configdrive};
use crate::agent::{AgentClient, AgentError, AgentSession, CommandResult, CommandStatus};
use crate::conductor::deploy::{DeployContext, DeployError};
use crate::conductor::task::Task;
use crate::model::{Event, PowerState};

/// The one in-band deploy step ironboot runs on the agent.
pub(super) const WRITE_IMAGE: &str = "write_image";

/// What the agent reported wrong with a deploy it was driving.
#[derive(Debug, thiserror::Error)]
pub(super) enum AgentStepFailure {
    #[error("{command} failed on the agent: {detail}")]
    Command {
        command: &'static str,
        detail: String,
    },
    #[error(
        "the agent wrote the partition image but reported no root partition UUID \
         (get_partition_uuids returned {0}); the ramdisk needs a working udev database \
         (udevd running) for lsblk to read filesystem UUIDs, so the boot config cannot name \
         root=UUID=...; fix the ramdisk or use a whole-disk image"
    )]
    NoRootUuid(Value),
    #[error("the agent's last command is {0:?}, not the write_image step ironboot sent")]
    UnexpectedCommand(String),
    #[error("the agent finished step {0:?}, expected {WRITE_IMAGE}")]
    UnexpectedStep(Option<String>),
    #[error(
        "the agent's hardware managers changed since the steps were listed ({0}); deploy again"
    )]
    VersionMismatch(String),
    #[error("write_image ended in unknown status {0:?}")]
    UnknownStatus(String),
}

fn command_failed(command: &'static str, r: &CommandResult) -> AgentStepFailure {
    AgentStepFailure::Command {
        command,
        detail: r.error_text(),
    }
}

impl AgentDeploy {
    /// One heartbeat's worth of deploy progress.
    pub(super) async fn continue_deploy_steps(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let client = self.client(task)?;
        if !AgentSession::read(&task.node).steps_listed()
            && !self.list_deploy_steps(task, &client).await?
        {
            return Ok(());
        }
        if AgentSession::read(&task.node).deploy_step_index.is_none() {
            return self.start_write_image(task, &client).await;
        }
        let commands = match client.list_commands().await {
            Err(AgentError::Busy { .. }) => return Ok(()),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        let Some(last) = commands.last() else {
            tracing::warn!(node = %task.node.uuid, "agent lists no commands (restarted?); sending write_image again");
            return self.start_write_image(task, &client).await;
        };
        if last.command_name == "get_deploy_steps" {
            tracing::warn!(node = %task.node.uuid, "agent came back without write_image (rebooted?); sending it again");
            return self.start_write_image(task, &client).await;
        }
        if last.command_name != "execute_deploy_step" {
            let name = last.command_name.clone();
            return Err(Self::failed(
                task,
                AgentStepFailure::UnexpectedCommand(name),
            ));
        }
        match &last.command_status {
            CommandStatus::Running => {
                tracing::debug!(node = %task.node.uuid, "write_image still running");
                Ok(())
            }
            CommandStatus::Failed => Err(Self::failed(task, command_failed("write_image", last))),
            CommandStatus::VersionMismatch(s) => Err(Self::failed(
                task,
                AgentStepFailure::VersionMismatch(s.clone()),
            )),
            CommandStatus::Other(s) => Err(Self::failed(
                task,
                AgentStepFailure::UnknownStatus(s.clone()),
            )),
            CommandStatus::Succeeded => {
                let step = last
                    .command_result
                    .as_ref()
                    .and_then(|r| r.get("deploy_step"))
                    .and_then(|s| s.get("step"))
                    .and_then(Value::as_str);
                if step != Some(WRITE_IMAGE) {
                    let step = step.map(String::from);
                    return Err(Self::failed(task, AgentStepFailure::UnexpectedStep(step)));
                }
                tracing::info!(node = %task.node.uuid, "write_image succeeded on the agent");
                self.finish(task, ctx, &client).await
            }
        }
    }

    /// `deploy.get_deploy_steps`; false when the agent was busy (retried next heartbeat).
    async fn list_deploy_steps(
        &self,
        task: &mut Task,
        client: &AgentClient,
    ) -> Result<bool, DeployError> {
        let params =
            json!({"node": Self::node_for_agent(task), "ports": Self::ports_for_agent(task)});
        let r = match client
            .execute("deploy.get_deploy_steps", params, true)
            .await
        {
            Err(AgentError::Busy { .. }) => return Ok(false),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        if r.command_status != CommandStatus::Succeeded {
            return Err(Self::failed(task, command_failed("get_deploy_steps", &r)));
        }
        let result = r.command_result.unwrap_or(Value::Null);
        let mut session = AgentSession::read(&task.node);
        session.hardware_manager_version = Some(
            result
                .get("hardware_manager_version")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        session.agent_cached_deploy_steps = result.get("deploy_steps").cloned();
        session.write(&mut task.node);
        task.save().await?;
        Ok(true)
    }

    /// Sends `write_image` (first heartbeat, or an agent that came back without it).
    async fn start_write_image(
        &self,
        task: &mut Task,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        let image_info = task
            .node
            .driver_internal_info
            .get("agent_image_info")
            .cloned()
            .ok_or_else(|| Self::failed(task, "no image prepared (agent_image_info missing)"))?;
        let configdrive = configdrive::for_agent(task)?;
        let mut session = AgentSession::read(&task.node);
        let params = json!({
            "step": {"interface": "deploy", "step": WRITE_IMAGE, "priority": 80,
                     "reboot_requested": false, "abortable": false,
                     "args": {"image_info": image_info, "configdrive": configdrive}},
            "node": Self::node_for_agent(task),
            "ports": Self::ports_for_agent(task),
            "deploy_version": session.hardware_manager_version.clone().unwrap_or(Value::Null),
        });
        task.process_event(Event::Resume).await?;
        match client
            .execute("deploy.execute_deploy_step", params, false)
            .await
        {
            Ok(r) if r.command_status == CommandStatus::Failed => {
                return Err(Self::failed(task, command_failed("write_image", &r)));
            }
            Ok(_) => {}
            Err(AgentError::Busy { .. }) => {
                tracing::info!(node = %task.node.uuid, "agent busy; write_image retried on the next heartbeat");
                task.process_event(Event::Wait).await?;
                return Ok(());
            }
            Err(e) => return Err(Self::failed(task, e)),
        }
        session.deploy_step_index = Some(0);
        session.deploy_steps = Some(json!([WRITE_IMAGE]));
        session.write(&mut task.node);
        tracing::info!(node = %task.node.uuid, agent = client.url(), "write_image started on the agent");
        task.process_event(Event::Wait).await?;
        Ok(())
    }

    /// The deploy after the agent finished `write_image`.
    async fn finish(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        let plan = self.plan(task)?;
        task.process_event(Event::Resume).await?;
        self.record_partitions(task, client, &plan).await?;
        let target = ctx.boot.prepare_instance(task.ctx()).await?;
        self.remove_agent_image(task).await;
        self.tear_down_agent(task, ctx, client).await?;
        ctx.boot_into(task, target).await?;
        AgentSession::wipe(&mut task.node);
        task.node.driver_internal_info.remove("agent_image_info");
        task.process_event(Event::Done).await?;
        tracing::info!(node = %task.node.uuid, "deploy finished; instance booting");
        Ok(())
    }

    /// `standby.get_partition_uuids`: the root UUID recorded for the boot config, and the boot
    /// loader installed when asked.
    async fn record_partitions(
        &self,
        task: &mut Task,
        client: &AgentClient,
        plan: &DeployPlan,
    ) -> Result<(), DeployError> {
        let r = client
            .execute("standby.get_partition_uuids", json!({}), true)
            .await
            .map_err(|e| Self::failed(task, e))?;
        if r.command_status != CommandStatus::Succeeded {
            return Err(Self::failed(
                task,
                command_failed("get_partition_uuids", &r),
            ));
        }
        let result = r.command_result.unwrap_or(Value::Null);
        let field = |k: &str| {
            result
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        let root = field("root uuid");
        let efi = field("efi system partition uuid");
        let prep = field("PReP Boot partition uuid");
        if !plan.is_whole_disk() && root.is_none() {
            return Err(Self::failed(task, AgentStepFailure::NoRootUuid(result)));
        }
        let dii = &mut task.node.driver_internal_info;
        dii.insert("is_whole_disk_image".into(), json!(plan.is_whole_disk()));
        match &root {
            Some(r) => dii.insert("root_uuid_or_disk_id".into(), json!(r)),
            None => dii.remove("root_uuid_or_disk_id"),
        };
        task.save().await?;
        tracing::info!(node = %task.node.uuid, root_uuid = ?root, efi = ?efi, "partition UUIDs read from the agent");
        if plan.install_bootloader {
            let params = json!({
                "root_uuid": root, "efi_system_part_uuid": efi, "prep_boot_part_uuid": prep,
                "target_boot_mode": plan.boot_mode.as_str(),
            });
            self.install_bootloader(task, client, params).await?;
        }
        Ok(())
    }

    async fn install_bootloader(
        &self,
        task: &mut Task,
        client: &AgentClient,
        params: Value,
    ) -> Result<(), DeployError> {
        let s = &self.config.settings;
        let started = client
            .execute("image.install_bootloader", params, false)
            .await
            .map_err(|e| Self::failed(task, e))?;
        let done = if started.command_status == CommandStatus::Running {
            client
                .wait_for(
                    "install_bootloader",
                    s.command_wait_interval,
                    s.command_wait_attempts,
                )
                .await
                .map_err(|e| Self::failed(task, e))?
        } else {
            started
        };
        if done.command_status != CommandStatus::Succeeded {
            return Err(Self::failed(
                task,
                command_failed("install_bootloader", &done),
            ));
        }
        tracing::info!(node = %task.node.uuid, "boot loader installed by the agent");
        Ok(())
    }

    /// `standby.power_off`, then the power interface until the node is off (hard off last).
    async fn tear_down_agent(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
    ) -> Result<(), DeployError> {
        if let Err(e) = client.execute("standby.power_off", json!({}), false).await {
            tracing::warn!(node = %task.node.uuid, error = %e, "soft power off through the agent failed; powering off out of band");
        }
        let s = &self.config.settings;
        for _ in 0..s.post_deploy_get_power_state_retries {
            tokio::time::sleep(s.post_deploy_get_power_state_retry_interval).await;
            match ctx.power.get_power_state(task.ctx()).await {
                Ok(PowerState::Off) => {
                    task.node.power_state = Some(PowerState::Off);
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %task.node.uuid, error = %e, "cannot read the power state")
                }
            }
        }
        tracing::info!(node = %task.node.uuid, "node still on after standby.power_off; hard power off");
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        Ok(())
    }
}
