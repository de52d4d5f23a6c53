//! Cleaning through the agent, on its heartbeats.
//!
//! `prepare_cleaning` boots the agent (`clean wait`). On the first heartbeat ironboot lists the
//! agent's clean steps (`clean.get_clean_steps`) and makes the plan ([`clean_plan`]): the
//! automated steps by priority, or the operator's steps of a manual clean checked against the
//! agent's. The plan is stored in `driver_internal_info.clean_steps` and its position in
//! `clean_step_index`, so a restarted conductor continues it. Each step runs with
//! `clean.execute_clean_step` (asynchronous on the agent); later heartbeats read the agent's
//! command list: running → wait, failed → `clean failed` naming the step, succeeded → the next
//! step (after a reboot into a new agent when the step asked for one), or, after the last,
//! power off, ramdisk boot removed → `available` (automated) or `manageable` (manual).

use serde_json::{Value, json};

use super::AgentDeploy;
use crate::agent::{AgentClient, AgentError, AgentSession, CommandStatus};
use crate::conductor::clean_plan::{self, CleanStep};
use crate::conductor::deploy::{DeployContext, DeployError};
use crate::conductor::task::Task;
use crate::conductor::verbs::{
    CLEAN_STEP_KEY, CLEAN_STEPS_KEY, CLEANING_REBOOT_KEY, MANUAL_CLEAN_KEY, wipe_cleaning_info,
};
use crate::model::{Event, PowerState};

/// What went wrong with a clean step on the agent.
#[derive(Debug, thiserror::Error)]
pub(super) enum CleanStepFailure {
    #[error("Clean step {step} failed: {detail}")]
    Failed { step: String, detail: String },
    #[error("Clean step {step} ended in unexpected status {status:?} on the agent")]
    UnknownStatus { step: String, status: String },
    #[error(
        "the agent lists no clean step although {step} was sent (did the agent restart?); \
         clean again"
    )]
    Lost { step: String },
    #[error("Node failed to start the first cleaning step: {0}")]
    Plan(#[from] clean_plan::PlanError),
}

impl AgentDeploy {
    /// One heartbeat's worth of cleaning progress.
    pub(super) async fn continue_clean_steps(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let client = self.client(task)?;
        if AgentSession::read(&task.node)
            .agent_cached_clean_steps
            .is_none()
            && !self.list_clean_steps(task, &client).await?
        {
            return Ok(());
        }
        let plan = stored_plan(task);
        let Some(index) = AgentSession::read(&task.node).clean_step_index else {
            return self
                .start_step_or_finish(task, ctx, &client, &plan, 0)
                .await;
        };
        let index = usize::try_from(index).unwrap_or(usize::MAX);
        let Some(step) = plan.get(index) else {
            return self.finish_cleaning(task, ctx).await;
        };
        if task
            .node
            .driver_internal_info
            .remove(CLEANING_REBOOT_KEY)
            .is_some()
        {
            // The agent that ran `step` asked for a reboot; this heartbeat is the new one's.
            tracing::info!(node = %task.node.uuid, step = %step.name(), "agent back after the reboot the step asked for");
            return self
                .start_step_or_finish(task, ctx, &client, &plan, index + 1)
                .await;
        }
        let commands = match client.list_commands().await {
            Err(AgentError::Busy { .. }) => return Ok(()),
            other => other.map_err(|e| Self::failed(task, e))?,
        };
        let Some(last) = commands
            .iter()
            .rev()
            .find(|c| c.command_name == "execute_clean_step")
        else {
            return Err(Self::failed(
                task,
                CleanStepFailure::Lost { step: step.name() },
            ));
        };
        match &last.command_status {
            CommandStatus::Running => Ok(()),
            CommandStatus::Succeeded => {
                tracing::info!(node = %task.node.uuid, step = %step.name(), "clean step done");
                if step.reboot_requested {
                    return self.reboot_after_step(task, ctx).await;
                }
                self.start_step_or_finish(task, ctx, &client, &plan, index + 1)
                    .await
            }
            CommandStatus::Failed => Err(Self::failed(
                task,
                CleanStepFailure::Failed {
                    step: step.name(),
                    detail: last.error_text(),
                },
            )),
            CommandStatus::VersionMismatch(s) | CommandStatus::Other(s) => Err(Self::failed(
                task,
                CleanStepFailure::UnknownStatus {
                    step: step.name(),
                    status: s.clone(),
                },
            )),
        }
    }

    /// `clean.get_clean_steps`, then the plan; false when the agent was busy (retried on the
    /// next heartbeat).
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
        let result = r.command_result.unwrap_or(Value::Null);
        let offered = clean_plan::offered(&result)
            .map_err(|e| Self::failed(task, CleanStepFailure::Plan(e)))?;
        let dii = &task.node.driver_internal_info;
        let plan = if dii.get(MANUAL_CLEAN_KEY).and_then(Value::as_bool) == Some(true) {
            let requested = dii
                .get(CLEAN_STEPS_KEY)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            clean_plan::manual(&requested, &offered)
                .map_err(|e| Self::failed(task, CleanStepFailure::Plan(e)))?
        } else {
            clean_plan::automated(&offered, &self.config.clean_priorities)
        };
        let mut session = AgentSession::read(&task.node);
        session.agent_cached_clean_steps = result.get("clean_steps").cloned();
        session.hardware_manager_version = Some(
            result
                .get("hardware_manager_version")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        session.clean_step_index = None;
        session.write(&mut task.node);
        task.node
            .driver_internal_info
            .insert(CLEAN_STEPS_KEY.into(), json!(plan));
        task.save().await?;
        let names: Vec<String> = plan.iter().map(CleanStep::name).collect();
        tracing::info!(node = %task.node.uuid, steps = ?names, "clean steps planned");
        Ok(true)
    }

    /// Sends `step` (number `index` of the plan) to the agent and records it as the current one.
    /// Starts step `index` of `plan`, or finishes the cleaning when the plan has no more.
    async fn start_step_or_finish(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
        client: &AgentClient,
        plan: &[CleanStep],
        index: usize,
    ) -> Result<(), DeployError> {
        match plan.get(index) {
            Some(step) => self.start_clean_step(task, client, step, index).await,
            None => {
                if index == 0 {
                    tracing::info!(node = %task.node.uuid, "no clean steps to run");
                }
                self.finish_cleaning(task, ctx).await
            }
        }
    }

    async fn start_clean_step(
        &self,
        task: &mut Task,
        client: &AgentClient,
        step: &CleanStep,
        index: usize,
    ) -> Result<(), DeployError> {
        let mut session = AgentSession::read(&task.node);
        let params = json!({
            "step": step.for_agent(),
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
                    CleanStepFailure::Failed {
                        step: step.name(),
                        detail: r.error_text(),
                    },
                ));
            }
            Ok(_) => {}
        }
        session.clean_step_index = Some(index as u64);
        session.write(&mut task.node);
        task.node
            .driver_internal_info
            .insert(CLEAN_STEP_KEY.into(), step.for_agent());
        task.save().await?;
        tracing::info!(node = %task.node.uuid, step = %step.name(), index, "clean step started on the agent");
        Ok(())
    }

    /// A step that asked for a reboot is done: the node reboots into the agent again (its
    /// ramdisk boot is still in place). The next agent looks up for a new token and calls back
    /// from a new URL; its first heartbeat starts the next step.
    async fn reboot_after_step(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        let mut session = AgentSession::read(&task.node);
        session.agent_url = None;
        session.agent_verify_ca = None;
        if session.agent_secret_token_pregenerated != Some(true) {
            session.agent_secret_token = None;
        }
        session.write(&mut task.node);
        task.node
            .driver_internal_info
            .insert(CLEANING_REBOOT_KEY.into(), Value::Bool(true));
        task.save().await?;
        ctx.power
            .set_power_state(task.ctx(), PowerState::Rebooting)
            .await?;
        task.save().await?;
        tracing::info!(node = %task.node.uuid, "rebooting the node after a clean step that asked for it");
        Ok(())
    }

    /// After the last step: power off, remove the ramdisk boot, end the session → `available`
    /// (automated cleaning) or `manageable` (manual).
    async fn finish_cleaning(
        &self,
        task: &mut Task,
        ctx: &DeployContext<'_>,
    ) -> Result<(), DeployError> {
        task.process_event(Event::Resume).await?;
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        ctx.boot.clean_up_ramdisk(task.ctx()).await?;
        let manual = wipe_cleaning_info(&mut task.node);
        task.process_event(if manual { Event::Manage } else { Event::Done })
            .await?;
        tracing::info!(node = %task.node.uuid, state = %task.node.provision_state, "cleaning done");
        Ok(())
    }
}

/// The plan stored by [`AgentDeploy::list_clean_steps`] (empty when there is none).
fn stored_plan(task: &Task) -> Vec<CleanStep> {
    task.node
        .driver_internal_info
        .get(CLEAN_STEPS_KEY)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}
