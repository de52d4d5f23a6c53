//! The control loop: reserves nodes, moves them through the state machine and drives their
//! boot, deploy and power interfaces; runs periodic tasks; keeps this conductor registered.
//!
//! One actor per node at a time: every operation first takes the node's reservation in the
//! store (atomically), persists its first state change, and only then does the work in the
//! background. The reservation is released when the operation ends, whatever its outcome.

pub mod actions;
pub mod agent_deploy;
pub mod allocations;
pub mod clean_plan;
pub mod deploy;
pub mod inspection;
pub mod interfaces;
pub mod management;
pub mod membership;
pub mod metrics;
mod orphans;
pub mod periodic;
pub mod power_sync;
pub mod ramdisk;
pub mod ring;
mod settings;
pub mod task;
pub mod verbs;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::AgentSettings;
use crate::driver::NodeContext;
use crate::model::{Event, InvalidTransition, Node, ProvisionState};
use crate::store::{ConductorRegistration, NodeIdent, NodeQuery, PortQuery, Store, StoreError};

pub use interfaces::Interfaces;
pub use metrics::ConductorMetrics;
pub use settings::ConductorSettings;
pub use task::Task;

/// How often a client's request tries a locked node, and how long it waits in between.
const LOCKED_ATTEMPTS: u32 = 3;
const LOCKED_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Errors the conductor reports to its callers (the API maps them to HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum ConductorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Conflict(String),
    #[error("ironboot is shutting down; retry against another conductor or after restart")]
    ShuttingDown,
}

impl From<task::TaskError> for ConductorError {
    fn from(e: task::TaskError) -> Self {
        match e {
            task::TaskError::Transition(t) => ConductorError::InvalidTransition(t),
            task::TaskError::Store(s) => ConductorError::Store(s),
        }
    }
}

/// The conductor of one ironboot process.
pub struct Conductor {
    store: Arc<dyn Store>,
    host: String,
    settings: ConductorSettings,
    interfaces: Interfaces,
    metrics: ConductorMetrics,
    operations: Arc<Semaphore>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// `ipa-api-url` handed to deploy ramdisks.
    api_public_url: String,
    /// `[agent]`: heartbeat checks (TLS required or not).
    agent: AgentSettings,
    /// The live conductors and the hash ring over them.
    membership: membership::Membership,
    /// When the ring last lost a member and the take over of its nodes is not finished.
    death_seen: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::fmt::Debug for Conductor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conductor")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Conductor {
    // Each argument is one independent piece of the service's wiring; a builder would only
    // move the list elsewhere.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        host: String,
        settings: ConductorSettings,
        interfaces: Interfaces,
        metrics: ConductorMetrics,
        api_public_url: String,
        agent: AgentSettings,
        cancel: CancellationToken,
    ) -> Arc<Conductor> {
        let operations = Arc::new(Semaphore::new(settings.max_concurrent_operations));
        Arc::new(Conductor {
            store,
            host,
            settings,
            interfaces,
            metrics,
            operations,
            tracker: TaskTracker::new(),
            cancel,
            api_public_url,
            agent,
            membership: membership::Membership::default(),
            death_seen: std::sync::Mutex::new(None),
        })
    }

    pub(crate) fn membership(&self) -> &membership::Membership {
        &self.membership
    }

    pub(crate) fn metrics(&self) -> &ConductorMetrics {
        &self.metrics
    }

    pub fn agent_settings(&self) -> &AgentSettings {
        &self.agent
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn settings(&self) -> &ConductorSettings {
        &self.settings
    }

    pub fn interfaces(&self) -> &Interfaces {
        &self.interfaces
    }

    pub fn api_public_url(&self) -> &str {
        &self.api_public_url
    }

    /// Registers this conductor, joins the ring, drops reservations a previous run left behind
    /// and fails its nodes stuck in states that cannot be resumed after a restart.
    pub async fn start(self: &Arc<Self>) -> Result<(), ConductorError> {
        self.store
            .register_conductor(&ConductorRegistration {
                hostname: self.host.clone(),
                conductor_group: self.settings.conductor_group.clone(),
                api_url: self.api_public_url.clone(),
            })
            .await?;
        self.refresh_membership().await?;
        let released = self.store.release_reservations(&self.host).await?;
        if released > 0 {
            tracing::warn!(released, host = %self.host, "released reservations left by a previous run");
        }
        for node in self
            .store
            .list_nodes(&NodeQuery {
                reserved: Some(false),
                ..Default::default()
            })
            .await?
        {
            // Another live conductor may be working on its own nodes between two steps.
            if !node.provision_state.stuck_on_restart() || !self.owns(&node) {
                continue;
            }
            let state = node.provision_state;
            let Ok(mut task) = self.reserve(&NodeIdent::Uuid(node.uuid)).await else {
                continue;
            };
            let message = format!(
                "ironboot on {} restarted while the node was {state}; the operation cannot be resumed, \
                 retry it (e.g. deploy again or undeploy)",
                self.host
            );
            // Through fail_node, so a failed deploy's ramdisk boot (files, published media)
            // is removed as after any failure.
            self.fail_node(&mut task, Event::Fail, message).await;
            self.release(task).await;
        }
        periodic::spawn_builtin(self);
        Ok(())
    }

    /// Stops periodic tasks, waits (bounded) for running operations, releases reservations and
    /// marks this conductor offline.
    pub async fn shutdown(&self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "operations still running at shutdown; their nodes are failed at next start"
            );
        }
        if let Err(e) = self.store.release_reservations(&self.host).await {
            tracing::error!(error = %e, "cannot release reservations at shutdown");
        }
        if let Err(e) = self.store.unregister_conductor(&self.host).await {
            tracing::error!(error = %e, "cannot mark conductor offline at shutdown");
        }
    }

    /// Takes the node's reservation and loads its ports.
    pub async fn reserve(&self, ident: &NodeIdent) -> Result<Task, ConductorError> {
        let node = self.store.reserve_node(ident, &self.host).await?;
        let ports = match self.store.list_ports(&PortQuery::of_node(node.uuid)).await {
            Ok(p) => p,
            Err(e) => {
                self.release_uuid(node.uuid).await;
                return Err(e.into());
            }
        };
        Ok(Task::new(
            NodeContext::new(node, ports),
            self.store.clone(),
            self.host.clone(),
            self.metrics.clone(),
        ))
    }

    /// [`Conductor::reserve`] for a client's request: a node locked by a short operation (one
    /// that just finished, a boot device read) is retried, as Ironic's conductor retries its
    /// lock (`node_locked_retry_attempts` = 3, one second apart) before answering 409.
    pub async fn reserve_for_request(&self, ident: &NodeIdent) -> Result<Task, ConductorError> {
        let mut attempt = 1;
        loop {
            match self.reserve(ident).await {
                Err(ConductorError::Store(StoreError::NodeLocked { .. }))
                    if attempt < LOCKED_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(LOCKED_RETRY_INTERVAL).await;
                }
                other => return other,
            }
        }
    }

    /// Gives the reservation back (errors are logged: the node stays reserved until restart).
    pub async fn release(&self, task: Task) {
        self.release_uuid(task.node.uuid).await;
    }

    async fn release_uuid(&self, node: uuid::Uuid) {
        if let Err(e) = self.store.release_node(node, &self.host).await {
            tracing::error!(node = %node, error = %e, "cannot release reservation");
        }
    }

    /// Runs `f` on the reserved node and releases it afterwards, whatever `f` returned.
    pub async fn with_reserved<T, E, F, Fut>(&self, ident: &NodeIdent, f: F) -> Result<T, E>
    where
        E: From<ConductorError>,
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = (Task, Result<T, E>)>,
    {
        let task = self.reserve_for_request(ident).await.map_err(E::from)?;
        let (task, result) = f(task).await;
        self.release(task).await;
        result
    }

    /// Runs `work` in the background on a reserved node, bounded by
    /// `max_concurrent_operations`, releasing the reservation when it ends.
    pub fn spawn_operation<F, Fut>(
        self: &Arc<Self>,
        operation: &'static str,
        task: Task,
        work: F,
    ) -> Result<(), ConductorError>
    where
        F: FnOnce(Arc<Conductor>, Task) -> Fut + Send + 'static,
        Fut: Future<Output = Task> + Send + 'static,
    {
        if self.cancel.is_cancelled() {
            let this = self.clone();
            tokio::spawn(async move { this.release(task).await });
            return Err(ConductorError::ShuttingDown);
        }
        let this = self.clone();
        let node = task.node.uuid;
        let span = tracing::info_span!("operation", %operation, node = %node);
        self.tracker.spawn(tracing::Instrument::instrument(
            async move {
                // Invariant: the semaphore is never closed, so acquire cannot fail.
                let _permit = this.operations.clone().acquire_owned().await;
                this.metrics.running().inc();
                let task = work(this.clone(), task).await;
                this.metrics.running().dec();
                let outcome = if task.node.provision_state.is_failure()
                    || task.node.provision_state == ProvisionState::Error
                {
                    "failed"
                } else {
                    "succeeded"
                };
                this.metrics.operation(operation, outcome);
                this.release(task).await;
            },
            span,
        ));
        Ok(())
    }

    /// Records `message` as the node's `last_error`, moves it with `event` (normally `fail`),
    /// then powers it off when configured. The state change is saved before the power action.
    ///
    /// A failed deploy or cleaning then has its ramdisk boot undone (`clean_up_ramdisk`, as
    /// Ironic's deploy and cleaning error handlers do): nothing it prepared stays behind —
    /// no published virtual media carrying an agent token, no inserted medium. A clean-up
    /// that fails is added to `last_error`; undeploying retries it.
    pub async fn fail_node(&self, task: &mut Task, event: Event, message: String) {
        tracing::error!(node = %task.node.uuid, state = %task.node.provision_state, error = %message, "operation failed");
        task.node.last_error = Some(message);
        if let Err(e) = task.process_event(event).await {
            tracing::error!(node = %task.node.uuid, error = %e, "cannot record failure");
            return;
        }
        let state = task.node.provision_state;
        if !matches!(
            state,
            ProvisionState::DeployFailed
                | ProvisionState::CleanFailed
                | ProvisionState::InspectFailed
                | ProvisionState::RescueFailed
        ) {
            return;
        }
        let Ok(ifaces) = self.interfaces.for_node(&task.node) else {
            return;
        };
        let message = task.node.last_error.clone().unwrap_or_default();
        let mut notes = Vec::new();
        if self.settings.power_off_after_deploy_failure
            && state == ProvisionState::DeployFailed
            && let Err(e) = ifaces
                .power
                .set_power_state(task.ctx(), crate::model::PowerState::Off)
                .await
        {
            notes.push(follow_up("powering the node off", &e, &message));
        }
        if let Err(e) = ifaces.boot.clean_up_ramdisk(task.ctx()).await {
            notes.push(follow_up("removing its ramdisk boot", &e, &message));
        }
        if !notes.is_empty() {
            let note = format!(" (and {})", notes.join("; and "));
            task.node
                .last_error
                .get_or_insert_with(String::new)
                .push_str(&note);
        }
        if let Err(e) = task.save().await {
            tracing::error!(node = %task.node.uuid, error = %e, "cannot save node after failure");
        }
    }

    /// The node behind `ident`, without reserving it.
    pub async fn get_node(&self, ident: &NodeIdent) -> Result<Node, ConductorError> {
        Ok(self.store.get_node(ident).await?)
    }

    pub(crate) fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }
}

/// A note on an action after a failure that failed too: when one of its causes is already in
/// `message` (the BMC that failed the operation fails the clean up as well), it says so
/// instead of repeating it.
fn follow_up(what: &str, err: &(dyn std::error::Error + 'static), message: &str) -> String {
    let mut causes = std::iter::successors(err.source(), |e| e.source());
    if causes.any(|cause| message.contains(&cause.to_string())) {
        format!("{what} failed for the same reason")
    } else {
        format!("{what} failed: {err}")
    }
}

#[cfg(test)]
mod tests;
