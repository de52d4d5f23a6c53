//! Deploy interfaces: what "deploy" and "tear down" mean for a node.
//!
//! `fake` finishes at once (Ironic's `fake` deploy). The agent-driven `direct` deploy returns
//! [`StepOutcome::Wait`] and continues on the agent's heartbeats.

use crate::bmc::PowerError;
use crate::boot::BootError;
use crate::conductor::task::{Task, TaskFuture};

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
    #[error("deploy interface {interface}: {reason}")]
    Invalid {
        interface: &'static str,
        reason: String,
    },
    #[error("deploy of node {node} failed: {reason}")]
    Failed { node: String, reason: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// The pieces a deploy interface drives (resolved for the node by the conductor).
pub struct DeployContext<'a> {
    pub boot: &'a dyn crate::boot::BootInterface,
    pub power: &'a dyn crate::bmc::PowerInterface,
}

pub trait DeployInterface: Send + Sync {
    fn name(&self) -> &'static str;
    fn validate(&self, task: &Task) -> Result<(), DeployError>;
    /// Starts (or completes) deploying the node's instance.
    fn deploy<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, StepOutcome, DeployError>;
    /// Powers the node off and removes everything deploying created.
    fn tear_down<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError>;
    /// Re-creates this conductor's view of an active node (adoption, take over).
    fn take_over<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError>;
}

/// Ironic's `fake` deploy: the node is "deployed" as soon as it is asked, through the node's boot
/// and power interfaces so their records show the calls a real deploy would make.
#[derive(Debug, Default)]
pub struct FakeDeploy;

impl DeployInterface for FakeDeploy {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn validate(&self, _task: &Task) -> Result<(), DeployError> {
        Ok(())
    }

    fn deploy<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, StepOutcome, DeployError> {
        Box::pin(async move {
            task.record_fake_call("deploy.deploy");
            ctx.boot.prepare_instance(task).await?;
            ctx.power
                .set_power_state(task, crate::model::PowerState::On)
                .await?;
            Ok(StepOutcome::Done)
        })
    }

    fn tear_down<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move {
            task.record_fake_call("deploy.tear_down");
            ctx.power
                .set_power_state(task, crate::model::PowerState::Off)
                .await?;
            ctx.boot.clean_up_instance(task).await?;
            Ok(())
        })
    }

    fn take_over<'a>(
        &'a self,
        task: &'a mut Task,
        ctx: DeployContext<'a>,
    ) -> TaskFuture<'a, (), DeployError> {
        Box::pin(async move {
            task.record_fake_call("deploy.take_over");
            ctx.boot.prepare_instance(task).await?;
            Ok(())
        })
    }
}
