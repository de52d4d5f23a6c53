//! Provisioning and power actions requested through the API.
//!
//! Each action reserves the node, checks it can proceed, persists the first state change and
//! answers; the rest runs in the background (`Conductor::spawn_operation`).

use std::sync::Arc;

use super::deploy::StepOutcome;
use super::{Conductor, ConductorError, Task};
use crate::model::{Event, PowerState, ProvisionState};
use crate::store::NodeIdent;

/// Verbs the state machine knows but ironboot cannot carry out yet, with the reason.
fn unsupported(event: Event) -> Option<&'static str> {
    match event {
        Event::Inspect => Some("inspection is not supported by ironboot"),
        Event::Rescue | Event::Unrescue => Some("rescue is not supported by ironboot"),
        Event::Service => Some("servicing is not supported by ironboot"),
        Event::Clean => Some(
            "manual cleaning is not supported by ironboot (automated cleaning runs on provide and undeploy)",
        ),
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
        let mut task = self.reserve(ident).await?;
        match self.begin(&mut task, event, configdrive).await {
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
    ) -> Result<(), ConductorError> {
        // Check the move is legal before asking the interfaces anything.
        crate::model::state::transition(task.node.provision_state, event)?;
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
        }
        if matches!(event, Event::Deploy | Event::Rebuild | Event::Adopt) {
            ifaces
                .boot
                .validate(task)
                .await
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
            ifaces
                .deploy
                .validate(task)
                .map_err(|e| ConductorError::InvalidParameter(e.to_string()))?;
        }
        if matches!(event, Event::Deploy | Event::Rebuild) {
            task.node.last_error = None;
            match configdrive {
                Some(cd) => {
                    task.node.instance_info.insert("configdrive".into(), cd);
                }
                None => {
                    task.node.instance_info.remove("configdrive");
                }
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
            Event::Provide => self.run_clean(&mut task).await,
            Event::Adopt => self.run_adopt(&mut task).await,
            Event::Abort => self.run_abort(&mut task).await,
            _ => Ok(()),
        };
        if let Err((fail_event, message)) = result {
            self.fail_node(&mut task, fail_event, message).await;
        }
        task
    }

    async fn run_deploy(&self, task: &mut Task) -> Result<(), (Event, String)> {
        let ifaces = self
            .interfaces()
            .for_node(&task.node)
            .map_err(|e| (Event::Fail, e.to_string()))?;
        let fail = |e: &dyn std::fmt::Display| (Event::Fail, format!("deploy failed: {e}"));
        match ifaces
            .deploy
            .deploy(task, ifaces.deploy_context())
            .await
            .map_err(|e| fail(&e))?
        {
            StepOutcome::Done => task.process_event(Event::Done).await.map_err(|e| fail(&e)),
            StepOutcome::Wait => task.process_event(Event::Wait).await.map_err(|e| fail(&e)),
        }
    }

    async fn run_tear_down(&self, task: &mut Task) -> Result<(), (Event, String)> {
        let ifaces = self
            .interfaces()
            .for_node(&task.node)
            .map_err(|e| (Event::Fail, e.to_string()))?;
        let fail = |e: &dyn std::fmt::Display| {
            (
                Event::Fail,
                format!("tear down failed: {e}; fix the cause and undeploy again"),
            )
        };
        ifaces
            .deploy
            .tear_down(task, ifaces.deploy_context())
            .await
            .map_err(|e| fail(&e))?;
        super::actions::wipe_deploy_info(task);
        task.node.last_error = None;
        task.process_event(Event::Clean)
            .await
            .map_err(|e| fail(&e))?;
        // The deploy interface may clean through the agent (it then waits for its heartbeats).
        match ifaces
            .deploy
            .prepare_cleaning(task, ifaces.deploy_context())
            .await
        {
            Ok(StepOutcome::Wait) => {
                return task
                    .process_event(Event::Wait)
                    .await
                    .map_err(|e| (Event::Fail, format!("cleaning failed: {e}")));
            }
            Ok(StepOutcome::Done) => {}
            Err(e) => return Err((Event::Fail, format!("cleaning failed: {e}"))),
        }
        self.run_clean(task).await
    }

    /// Automated cleaning. No clean steps exist yet, so cleaning passes straight through.
    async fn run_clean(&self, task: &mut Task) -> Result<(), (Event, String)> {
        if self.settings().automated_clean {
            tracing::info!(node = %task.node.uuid, "automated cleaning: no clean steps are enabled");
        }
        task.process_event(Event::Done)
            .await
            .map_err(|e| (Event::Fail, format!("cleaning failed: {e}")))
    }

    async fn run_manage(&self, task: &mut Task) -> Result<(), (Event, String)> {
        if task.node.provision_state != ProvisionState::Verifying {
            return Ok(());
        }
        let ifaces = self
            .interfaces()
            .for_node(&task.node)
            .map_err(|e| (Event::Fail, e.to_string()))?;
        let fail = |e: &dyn std::fmt::Display| (Event::Fail, format!("verification failed: {e}"));
        let state = ifaces
            .power
            .get_power_state(task)
            .await
            .map_err(|e| fail(&e))?;
        task.node.power_state = Some(state);
        task.node.last_error = None;
        task.process_event(Event::Done).await.map_err(|e| fail(&e))
    }

    async fn run_adopt(&self, task: &mut Task) -> Result<(), (Event, String)> {
        let ifaces = self
            .interfaces()
            .for_node(&task.node)
            .map_err(|e| (Event::Fail, e.to_string()))?;
        let fail = |e: &dyn std::fmt::Display| (Event::Fail, format!("adoption failed: {e}"));
        ifaces
            .deploy
            .take_over(task, ifaces.deploy_context())
            .await
            .map_err(|e| fail(&e))?;
        task.node.conductor_affinity = Some(self.host().to_string());
        task.process_event(Event::Done).await.map_err(|e| fail(&e))
    }

    /// After `abort` moved a waiting node to a failed state: undo what booting the ramdisk did.
    async fn run_abort(&self, task: &mut Task) -> Result<(), (Event, String)> {
        let what = task.node.provision_state;
        task.node.last_error = Some(format!(
            "{} aborted by request",
            if what == ProvisionState::DeployFailed {
                "deploy"
            } else {
                "operation"
            }
        ));
        if let Ok(ifaces) = self.interfaces().for_node(&task.node) {
            if let Err(e) = ifaces.boot.clean_up_ramdisk(task).await {
                tracing::warn!(node = %task.node.uuid, error = %e, "clean-up after abort failed");
            }
            if let Err(e) = ifaces.power.set_power_state(task, PowerState::Off).await {
                tracing::warn!(node = %task.node.uuid, error = %e, "power off after abort failed");
            }
        }
        wipe_deploy_info(task);
        task.save().await.map_err(|e| (Event::Fail, e.to_string()))
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
        let mut task = self.reserve(ident).await?;
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
            match ifaces.power.set_power_state(&mut task, target).await {
                Ok(()) => {
                    task.node.last_error = None;
                    // A powered-off agent is gone: the next one must look up for a new token.
                    if matches!(target, PowerState::Off | PowerState::SoftOff) {
                        super::ramdisk::wipe_agent_session(&mut task.node);
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
    super::ramdisk::wipe_agent_session(&mut task.node);
    task.node
        .driver_internal_info
        .remove("root_uuid_or_disk_id");
}
