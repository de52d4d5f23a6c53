//! Deploy interfaces: what "deploy" and "tear down" mean for a node.
//!
//! `fake` finishes at once (Ironic's `fake` deploy). The agent-driven `direct` deploy returns
//! [`StepOutcome::Wait`] and continues on the agent's heartbeats. Deploy interfaces run steps
//! that move the provision state and persist progress, so unlike boot, power and management
//! interfaces (`crate::driver`) they work on the conductor's [`Task`].

use async_trait::async_trait;

use super::task::{Task, TaskError};
use crate::driver::{
    BootError, BootInterface, BootTarget, ManagementError, ManagementInterface, PowerError,
    PowerInterface, RamdiskParams,
};
use crate::model::PowerState;

/// Whether a step finished or the node now waits for a call-back (agent heartbeat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Done,
    Wait,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Power(#[from] PowerError),
    #[error(transparent)]
    Management(#[from] ManagementError),
    #[error("deploy interface {interface}: {reason}")]
    Invalid {
        interface: &'static str,
        reason: String,
    },
    #[error("deploy of node {node} failed: {source}")]
    Failed {
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Transition(#[from] crate::model::InvalidTransition),
}

impl From<TaskError> for DeployError {
    fn from(e: TaskError) -> Self {
        match e {
            TaskError::Transition(t) => DeployError::Transition(t),
            TaskError::Store(s) => DeployError::Store(s),
        }
    }
}

/// The pieces a deploy interface drives (resolved for the node by the conductor).
pub struct DeployContext<'a> {
    pub boot: &'a dyn BootInterface,
    pub power: &'a dyn PowerInterface,
    pub management: &'a dyn ManagementInterface,
}

impl DeployContext<'_> {
    /// Sets the boot device the boot interface prepared, then powers the node on — or
    /// reboots it when it is already on, so the new device takes effect (Ironic's order:
    /// boot device first, power second).
    pub async fn boot_into(&self, task: &mut Task, target: BootTarget) -> Result<(), DeployError> {
        self.management.set_boot_device(task.ctx(), target).await?;
        let action = if task.node.power_state == Some(PowerState::On) {
            PowerState::Rebooting
        } else {
            PowerState::On
        };
        self.power.set_power_state(task.ctx(), action).await?;
        Ok(())
    }
}

#[async_trait]
pub trait DeployInterface: Send + Sync {
    fn name(&self) -> &'static str;
    fn validate(&self, task: &Task) -> Result<(), DeployError>;
    /// Starts (or completes) deploying the node's instance.
    async fn deploy(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<StepOutcome, DeployError>;
    /// Powers the node off and removes everything deploying created.
    async fn tear_down(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError>;
    /// Re-creates this conductor's view of an active node (adoption, take over).
    async fn take_over(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError>;
    /// The parameters this interface's ramdisk gets on its kernel command line
    /// (`ipa-api-url=...`): what it hands `BootInterface::prepare_ramdisk`, and what take over
    /// hands `BootInterface::take_over` so a rebuilt ramdisk boot matches the original.
    fn ramdisk_params(&self) -> RamdiskParams {
        RamdiskParams::new()
    }
    /// Acts on an agent heartbeat (just recorded in `driver_internal_info`) of a node in
    /// `wait call-back`. The interface moves the node itself (resume, then wait or done); an
    /// error fails the deploy. Interfaces that never wait have nothing to do.
    async fn continue_deploy(
        &self,
        _task: &mut Task,
        _ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        Ok(())
    }
    /// Starts cleaning (the node is `cleaning`; automated after provide or undeploy, or a manual
    /// clean whose steps are staged in `driver_internal_info`): `Done` when this interface has
    /// no clean steps, `Wait` when an agent was booted and cleaning continues on its heartbeats.
    async fn prepare_cleaning(
        &self,
        _task: &mut Task,
        _ctx: DeployContext<'_>,
    ) -> Result<StepOutcome, DeployError> {
        Ok(StepOutcome::Done)
    }
    /// Acts on an agent heartbeat of a node in `clean wait`, like [`Self::continue_deploy`].
    async fn continue_cleaning(
        &self,
        _task: &mut Task,
        _ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        Ok(())
    }
    /// Boots the agent as a rescue ramdisk (the node is `rescuing`, `rescue_interface =
    /// agent`); rescue continues on its heartbeats ([`Self::continue_rescue`]). Only
    /// interfaces that talk to the agent can.
    async fn prepare_rescue(
        &self,
        _task: &mut Task,
        _ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        Err(DeployError::Invalid {
            interface: self.name(),
            reason: "the agent rescue interface needs deploy_interface direct".into(),
        })
    }
    /// Acts on an agent heartbeat of a node in `rescue wait`: hands the agent the hashed
    /// rescue password (`rescue.finalize_rescue`) and moves the node to `rescue`.
    async fn continue_rescue(
        &self,
        _task: &mut Task,
        _ctx: DeployContext<'_>,
    ) -> Result<(), DeployError> {
        Ok(())
    }
}

/// Ironic's `fake` deploy: the node is "deployed" as soon as it is asked, through the node's
/// boot, management and power interfaces so their records show the calls a real deploy would
/// make.
#[derive(Debug, Default)]
pub struct FakeDeploy;

#[async_trait]
impl DeployInterface for FakeDeploy {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _task: &Task) -> Result<(), DeployError> {
        Ok(())
    }

    async fn deploy(
        &self,
        task: &mut Task,
        ctx: DeployContext<'_>,
    ) -> Result<StepOutcome, DeployError> {
        task.record_fake_call("deploy.deploy");
        let target = ctx.boot.prepare_instance(task.ctx()).await?;
        ctx.boot_into(task, target).await?;
        Ok(StepOutcome::Done)
    }

    async fn tear_down(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError> {
        task.record_fake_call("deploy.tear_down");
        ctx.power
            .set_power_state(task.ctx(), PowerState::Off)
            .await?;
        ctx.boot.clean_up_instance(task.ctx()).await?;
        Ok(())
    }

    async fn take_over(&self, task: &mut Task, ctx: DeployContext<'_>) -> Result<(), DeployError> {
        task.record_fake_call("deploy.take_over");
        ctx.boot.prepare_instance(task.ctx()).await?;
        Ok(())
    }
}
