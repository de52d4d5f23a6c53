//! Provisioning and power actions requested through the API.
//!
//! Each action reserves the node, checks it can proceed, persists the first state change and
//! answers; the rest runs in the background (`Conductor::spawn_operation`).

use std::sync::Arc;

use super::clean_plan::CleanStep;
use super::deploy::StepOutcome;
use super::verbs::{self, VerbArgs};
use super::{Conductor, ConductorError, Task};
use crate::agent::AgentSession;
use crate::model::{Event, PowerState, ProvisionState};
use crate::store::NodeIdent;

/// Verbs the state machine knows but ironboot cannot carry out yet, with the reason.
fn unsupported(event: Event) -> Option<&'static str> {
    match event {
        Event::Service => Some("servicing is not supported by ironboot"),
        _ => None,
    }
}

impl Conductor {
    /// `PUT /v1/nodes/{id}/states/provision` with `target = verb`.
    /// `configdrive` (target `active`/`rebuild` only) is stored in `instance_info.configdrive`.
    pub async fn provision(
        self: &Arc<Self>,
        ident: &NodeIdent,
        verb: &str,
        configdrive: Option<serde_json::Value>,
    ) -> Result<(), ConductorError> {
        self.provision_with(ident, verb, configdrive, VerbArgs::default())
            .await
    }

    /// [`Conductor::provision`] with what inspection, cleaning and rescue need.
    pub async fn provision_with(
        self: &Arc<Self>,
        ident: &NodeIdent,
        verb: &str,
        configdrive: Option<serde_json::Value>,
        args: VerbArgs,
    ) -> Result<(), ConductorError> {
        let event = Event::from_verb(verb).ok_or_else(|| {
            ConductorError::InvalidParameter(format!(
                "{verb:?} is not a valid provision state target; use one of: {}",
                crate::model::state::API_VERBS.join(", ")
            ))
        })?;
        if let Some(reason) = unsupported(event) {
            return Err(ConductorError::Unsupported(reason.to_string()));
        }
        // Refuse before the first transition is persisted, so no node is left mid-way.
        if self.cancel_token().is_cancelled() {
            return Err(ConductorError::ShuttingDown);
        }
        if configdrive.is_some() && !matches!(event, Event::Deploy | Event::Rebuild) {
            return Err(ConductorError::InvalidParameter(format!(
                "configdrive is only accepted with target active or rebuild, not {verb}"
            )));
        }
        let mut task = self.reserve_for_request(ident).await?;
        match self.begin(&mut task, event, configdrive, args).await {
            Ok(()) => self.spawn_operation(event.as_str(), task, move |c, task| async move {
                c.continue_operation(task, event).await
            }),
            Err(e) => {
                self.release(task).await;
                Err(e)
            }
        }
    }

    /// Validation and the first, persisted transition.
    async fn begin(
        &self,
        task: &mut Task,
        event: Event,
        configdrive: Option<serde_json::Value>,
        args: VerbArgs,
    ) -> Result<(), ConductorError> {
        // Check the move is legal before asking the interfaces anything.
        crate::model::state::transition(task.node.provision_state, event)?;
        verbs::check(&task.node, event, &args)?;
        verbs::stage(task.ctx(), event, args);
        // A new action starts with a clean slate (Ironic clears the previous failure too).
        if !matches!(event, Event::Abort) {
            task.node.last_error = None;
        }
        if task.node.maintenance
            && matches!(
                event,
                Event::Deploy | Event::Rebuild | Event::Provide | Event::Adopt
            )
        {
            return Err(ConductorError::Conflict(format!(
                "node {} is in maintenance ({}); unset maintenance first",
                task.node.ident(),
                task.node
                    .maintenance_reason
                    .as_deref()
                    .unwrap_or("no reason given")
            )));
        }
        let ifaces = self.interfaces().for_node(&task.node)?;
        if matches!(
            event,
            Event::Deploy | Event::Rebuild | Event::Adopt | Event::Manage
        ) {
            ifaces
                .power
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
            ifaces
                .management
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
        }
        if matches!(event, Event::Deploy | Event::Rebuild | Event::Adopt) {
            ifaces
                .boot
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
            ifaces
                .deploy
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
        }
        if matches!(event, Event::Deploy | Event::Rebuild) {
            task.node.last_error = None;
            // A rebuild without a config drive keeps the one the node was deployed with (as
            // Ironic does); tear down wipes it.
            if let Some(cd) = configdrive {
                task.node.instance_info.insert("configdrive".into(), cd);
            }
        }
        task.process_event(event).await?;
        Ok(())
    }

    /// The background part of an action; returns the task for release.
    async fn continue_operation(self: Arc<Self>, mut task: Task, event: Event) -> Task {
        let result = match event {
            Event::Deploy | Event::Rebuild => self.run_deploy(&mut task).await,
            Event::Delete => self.run_tear_down(&mut task).await,
            Event::Manage => self.run_manage(&mut task).await,
            Event::Provide => self.run_clean(&mut task, false).await,
            Event::Adopt => self.run_adopt(&mut task).await,
            Event::Abort => self.run_abort(&mut task).await,
            Event::Clean => self.run_manual_clean(&mut task).await,
            Event::Inspect if task.node.inspect_interface == super::inspection::AGENT => self
                .boot_inspection_ramdisk(&mut task)
                .await
                .map_err(Operation::Inspection.fail()),
            Event::Rescue if task.node.rescue_interface == super::inspection::AGENT => {
                self.run_agent_rescue(&mut task).await
            }
            Event::Unrescue if task.node.rescue_interface == super::inspection::AGENT => {
                self.run_agent_unrescue(&mut task).await
            }
            Event::Inspect | Event::Rescue | Event::Unrescue => {
                self.run_verb(&mut task, event).await
            }
            _ => Ok(()),
        };
        if let Err(failure) = result {
            self.fail_node(&mut task, Event::Fail, failure.to_string())
                .await;
        }
        task
    }

    async fn run_deploy(&self, task: &mut Task) -> Result<(), StepFailure> {
        let op = Operation::Deploy;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        let outcome = ifaces
            .deploy
            .deploy(task, ifaces.deploy_context())
            .await
            .map_err(op.fail())?;
        let event = match outcome {
            StepOutcome::Done => Event::Done,
            StepOutcome::Wait => Event::Wait,
        };
        task.process_event(event).await.map_err(op.fail())
    }

    async fn run_tear_down(&self, task: &mut Task) -> Result<(), StepFailure> {
        let op = Operation::TearDown;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        ifaces
            .deploy
            .tear_down(task, ifaces.deploy_context())
            .await
            .map_err(op.fail())?;
        wipe_deploy_info(task);
        task.node.instance_info.remove("configdrive");
        verbs::forget_rescue_password(&mut task.node);
        // The instance is gone, and with it the node's allocation (as in Ironic).
        self.forget_allocation(&mut task.node)
            .await
            .map_err(op.fail())?;
        task.node.last_error = None;
        task.process_event(Event::Clean).await.map_err(op.fail())?;
        // `[agent] erase_metadata_on_undeploy` (older than automated cleaning) still asks for
        // a cleaning after undeploy when automated cleaning is off.
        let erase = self.agent_settings().erase_metadata_on_undeploy;
        self.run_clean(task, erase).await
    }

    /// Automated cleaning (the node is `cleaning`, after provide or undeploy), when the node's
    /// `automated_clean` (else `[conductor] automated_clean`) or `force` asks for it: the deploy
    /// interface boots the agent and cleaning continues on its heartbeats, or it has no clean
    /// steps and the node is `available` at once.
    async fn run_clean(&self, task: &mut Task, force: bool) -> Result<(), StepFailure> {
        let op = Operation::Cleaning;
        verbs::wipe_cleaning_info(&mut task.node);
        let wanted = task
            .node
            .automated_clean
            .unwrap_or(self.settings().automated_clean);
        if !wanted && !force {
            tracing::info!(node = %task.node.uuid, "automated cleaning disabled for this node");
            return task.process_event(Event::Done).await.map_err(op.fail());
        }
        match self.prepare_cleaning(task).await? {
            StepOutcome::Wait => task.process_event(Event::Wait).await.map_err(op.fail()),
            StepOutcome::Done => task.process_event(Event::Done).await.map_err(op.fail()),
        }
    }

    /// The deploy interface's start of a cleaning: `Wait` when it booted the agent.
    async fn prepare_cleaning(&self, task: &mut Task) -> Result<StepOutcome, StepFailure> {
        let op = Operation::Cleaning;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        ifaces
            .deploy
            .prepare_cleaning(task, ifaces.deploy_context())
            .await
            .map_err(op.fail())
    }

    /// Manual cleaning (from `manageable`, steps staged by [`verbs::stage`]): through the agent
    /// when the deploy interface cleans there, else the fake interfaces' answer ([`verbs::run`]).
    async fn run_manual_clean(&self, task: &mut Task) -> Result<(), StepFailure> {
        match self.prepare_cleaning(task).await? {
            StepOutcome::Wait => task
                .process_event(Event::Wait)
                .await
                .map_err(Operation::Cleaning.fail()),
            StepOutcome::Done => self.run_verb(task, Event::Clean).await,
        }
    }

    async fn run_manage(&self, task: &mut Task) -> Result<(), StepFailure> {
        if task.node.provision_state != ProvisionState::Verifying {
            return Ok(());
        }
        let op = Operation::Verification;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        let state = ifaces
            .power
            .get_power_state(task.ctx())
            .await
            .map_err(op.fail())?;
        task.node.power_state = Some(state);
        task.node.last_error = None;
        task.process_event(Event::Done).await.map_err(op.fail())
    }

    async fn run_adopt(&self, task: &mut Task) -> Result<(), StepFailure> {
        let op = Operation::Adoption;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        ifaces
            .deploy
            .take_over(task, ifaces.deploy_context())
            .await
            .map_err(op.fail())?;
        task.node.conductor_affinity = Some(self.host().to_string());
        task.process_event(Event::Done).await.map_err(op.fail())
    }

    /// Rescue through the agent: the deploy interface boots it → `rescue wait`; the password
    /// is handed over on its heartbeat.
    async fn run_agent_rescue(&self, task: &mut Task) -> Result<(), StepFailure> {
        let op = Operation::Rescue;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        ifaces
            .deploy
            .prepare_rescue(task, ifaces.deploy_context())
            .await
            .map_err(op.fail())?;
        task.process_event(Event::Wait).await.map_err(op.fail())
    }

    /// Unrescue of an agent-rescued node: the rescue ramdisk is powered off and its boot
    /// removed, the instance boot prepared again and the node booted → `active`.
    async fn run_agent_unrescue(&self, task: &mut Task) -> Result<(), StepFailure> {
        let op = Operation::Unrescue;
        let ifaces = self.interfaces().for_node(&task.node).map_err(op.fail())?;
        ifaces
            .power
            .set_power_state(task.ctx(), PowerState::Off)
            .await
            .map_err(op.fail())?;
        ifaces
            .boot
            .clean_up_ramdisk(task.ctx())
            .await
            .map_err(op.fail())?;
        AgentSession::wipe(&mut task.node);
        let target = ifaces
            .boot
            .prepare_instance(task.ctx())
            .await
            .map_err(op.fail())?;
        ifaces
            .deploy_context()
            .boot_into(task, target)
            .await
            .map_err(op.fail())?;
        task.process_event(Event::Done).await.map_err(op.fail())
    }

    /// Inspection, manual cleaning, rescue and unrescue ([`verbs`]).
    async fn run_verb(&self, task: &mut Task, event: Event) -> Result<(), StepFailure> {
        let op = match event {
            Event::Inspect => Operation::Inspection,
            Event::Clean => Operation::Cleaning,
            _ => Operation::Rescue,
        };
        let done = verbs::run(task, event).await.map_err(op.fail())?;
        task.process_event(done).await.map_err(op.fail())
    }

    /// After `abort` moved a waiting node to a failed state: undo what booting the ramdisk did.
    async fn run_abort(&self, task: &mut Task) -> Result<(), StepFailure> {
        let what = task.node.provision_state;
        task.node.last_error = Some(match what {
            ProvisionState::DeployFailed => "deploy aborted by request".to_string(),
            ProvisionState::InspectFailed => "Inspection was aborted by request.".to_string(),
            ProvisionState::RescueFailed => {
                verbs::forget_rescue_password(&mut task.node);
                "Rescue was aborted by request.".to_string()
            }
            ProvisionState::CleanFailed => {
                let step = task
                    .node
                    .driver_internal_info
                    .get(super::verbs::CLEAN_STEP_KEY)
                    .and_then(|s| serde_json::from_value::<CleanStep>(s.clone()).ok())
                    .map(|s| s.name());
                match step {
                    Some(s) => format!(
                        "By request, the clean operation was aborted during or after the \
                         completion of step \"{s}\""
                    ),
                    None => "By request, the clean operation was aborted".to_string(),
                }
            }
            _ => "operation aborted by request".to_string(),
        });
        if let Ok(ifaces) = self.interfaces().for_node(&task.node) {
            if let Err(e) = ifaces.boot.clean_up_ramdisk(task.ctx()).await {
                tracing::warn!(node = %task.node.uuid, error = %e, "clean-up after abort failed");
            }
            if let Err(e) = ifaces
                .power
                .set_power_state(task.ctx(), PowerState::Off)
                .await
            {
                tracing::warn!(node = %task.node.uuid, error = %e, "power off after abort failed");
            }
        }
        wipe_deploy_info(task);
        verbs::wipe_cleaning_info(&mut task.node);
        task.save().await.map_err(Operation::Abort.fail())
    }

    /// `PUT /v1/nodes/{id}/states/power`.
    pub async fn set_power(
        self: &Arc<Self>,
        ident: &NodeIdent,
        target: PowerState,
    ) -> Result<(), ConductorError> {
        if self.cancel_token().is_cancelled() {
            return Err(ConductorError::ShuttingDown);
        }
        let mut task = self.reserve_for_request(ident).await?;
        let prepared = async {
            let ifaces = self.interfaces().for_node(&task.node)?;
            ifaces
                .power
                .validate(&task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
            task.node.target_power_state = Some(target);
            task.save().await?;
            Ok::<_, ConductorError>(ifaces)
        }
        .await;
        let ifaces = match prepared {
            Ok(i) => i,
            Err(e) => {
                self.release(task).await;
                return Err(e);
            }
        };
        self.spawn_operation("power", task, move |_c, mut task| async move {
            match ifaces.power.set_power_state(task.ctx(), target).await {
                Ok(()) => {
                    task.node.last_error = None;
                    // A powered-off agent is gone: the next one must look up for a new token
                    // (unless its token travels in its boot media).
                    if matches!(target, PowerState::Off | PowerState::SoftOff) {
                        AgentSession::end_on_power_off(&mut task.node);
                    }
                }
                Err(e) => {
                    task.node.last_error = Some(format!(
                        "failed to change power state to {}: {e}",
                        target.as_str()
                    ))
                }
            }
            task.node.target_power_state = None;
            if let Err(e) = task.save().await {
                tracing::error!(node = %task.node.uuid, error = %e, "cannot save power state");
            }
            task
        })
    }
}

/// Forgets what one deployment left in `driver_internal_info` (agent session, steps, the
/// root UUID it reported).
pub fn wipe_deploy_info(task: &mut Task) {
    AgentSession::wipe(&mut task.node);
    task.node
        .driver_internal_info
        .remove("root_uuid_or_disk_id");
}

/// The background operations a failure is reported for.
#[derive(Debug, Clone, Copy)]
enum Operation {
    Deploy,
    TearDown,
    Cleaning,
    Verification,
    Adoption,
    Abort,
    Inspection,
    Rescue,
    Unrescue,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Deploy => "deploy",
            Operation::TearDown => "tear down",
            Operation::Cleaning => "cleaning",
            Operation::Verification => "verification",
            Operation::Adoption => "adoption",
            Operation::Abort => "abort",
            Operation::Inspection => "inspection",
            Operation::Rescue => "rescue",
            Operation::Unrescue => "unrescue",
        }
    }

    /// What the operator should do next, appended to the message.
    fn advice(self) -> &'static str {
        match self {
            Operation::TearDown => "; fix the cause and undeploy again",
            _ => "",
        }
    }

    /// Wraps an error as this operation's failure (for `map_err`).
    fn fail<E>(self) -> impl FnOnce(E) -> StepFailure
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| StepFailure {
            operation: self,
            source: Box::new(e),
        }
    }
}

/// Why a background operation failed; its text becomes the node's `last_error`, and the node
/// moves with `fail`.
#[derive(Debug, thiserror::Error)]
#[error("{} failed: {source}{}", .operation.label(), .operation.advice())]
struct StepFailure {
    operation: Operation,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}
