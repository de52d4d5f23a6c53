//! Power state sync (Ironic's `sync_power_states`): every `[conductor]
//! sync_power_state_interval` the conductor reads the power state of its nodes through their
//! power interfaces (any of them: ipmitool, redfish, script, fake) and records what the
//! hardware says, so a node switched on or off behind ironboot's back — by hand, by its OS, by
//! a BMC's power-restore policy — shows its real state.
//!
//! Rules:
//! - Nodes synced: not in maintenance, not reserved, no power action pending, not in a
//!   transient provision state (deploying, waiting for the agent, cleaning, ...) nor in
//!   `enroll` or `adopt failed` (as Ironic), and this conductor's ([`Conductor::nodes_to_sync`],
//!   the one place that decides it). Nodes that failed last time go first; at most
//!   `sync_power_state_workers` are read at once.
//! - Reads run without the node's reservation (Ironic reads under a shared lock), so a slow or
//!   silent BMC never makes API calls on its node fail with "locked". A change is written under
//!   the reservation, and only if the node did not change since the read began (same
//!   `updated_at`); otherwise the next run decides.
//! - A different state is recorded (`power_state`), or with `force_power_state_during_sync`
//!   the hardware is put back into the recorded state. A node with no recorded state gets the
//!   one read.
//! - A failed read counts against the node, and so does a forced change that did not hold; a
//!   read that matches, or a change recorded, resets the count (Ironic also counts recorded
//!   changes, so a node that flaps between on and off would end in maintenance). After `power_state_sync_max_retries` such failures in
//!   a row, the next one puts the node in maintenance with the reason (and `last_error`), its
//!   power state recorded as read (unknown after a failed read). Counts live in this process,
//!   as in Ironic, and are forgotten for nodes that leave the sync.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::interfaces::NodeInterfaces;
use super::{Conductor, Task};
use crate::driver::{NodeContext, PowerError};
use crate::model::{Node, PowerState, ProvisionState};
use crate::store::{NodeIdent, NodeQuery, PortQuery, StoreError};

/// Longest wait for one power state read, beyond the interface's own timeouts: a read that
/// hangs must not stall the sync of every other node.
const READ_LIMIT: Duration = Duration::from_secs(300);

/// What one node's sync came to (the `outcome` label of the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// The hardware agrees with the record.
    InSync,
    /// The record now says what the hardware does.
    Recorded,
    /// The hardware was put back into the recorded state.
    Forced,
    /// Putting it back failed (counts against the node).
    ForceFailed,
    /// The power state could not be read (counts against the node).
    ReadFailed,
    /// Too many failures in a row: the node is now in maintenance.
    Maintenance,
    /// Not synced this time: the node changed, got reserved, or has no usable interface.
    Skipped,
}

impl SyncOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::InSync => "in_sync",
            SyncOutcome::Recorded => "recorded",
            SyncOutcome::Forced => "forced",
            SyncOutcome::ForceFailed => "force_failed",
            SyncOutcome::ReadFailed => "read_failed",
            SyncOutcome::Maintenance => "maintenance",
            SyncOutcome::Skipped => "skipped",
        }
    }
}

/// Why a power state could not be read.
#[derive(Debug, thiserror::Error)]
enum ReadFailure {
    #[error(transparent)]
    Power(#[from] PowerError),
    #[error("the power interface did not answer within {} s", .0.as_secs())]
    TimedOut(Duration),
}

/// The sync's memory between runs: failures in a row, per node.
#[derive(Debug, Default)]
pub struct PowerSync {
    failures: Mutex<HashMap<Uuid, u32>>,
}

impl PowerSync {
    fn count(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, u32>> {
        // A poisoned map only means a worker panicked mid-update; the counts stay usable.
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more failure; returns how many in a row.
    fn fail(&self, node: Uuid) -> u32 {
        let mut map = self.count();
        let n = map.entry(node).or_default();
        *n += 1;
        *n
    }

    fn reset(&self, node: Uuid) {
        self.count().remove(&node);
    }

    fn failures(&self, node: Uuid) -> u32 {
        self.count().get(&node).copied().unwrap_or(0)
    }

    /// Forgets nodes that are no longer synced.
    fn retain(&self, nodes: &[Node]) {
        self.count()
            .retain(|uuid, _| nodes.iter().any(|n| n.uuid == *uuid));
    }

    fn failing(&self) -> usize {
        self.count().len()
    }
}

/// What one run did, per node.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub outcomes: BTreeMap<Uuid, SyncOutcome>,
}

/// States whose power is not synced: every transient one (a step is moving the node and
/// powers it as it goes), and those Ironic leaves alone — `enroll` (credentials not checked
/// yet) and `adopt failed`.
fn state_synced(state: ProvisionState) -> bool {
    crate::model::state::target_of(state).is_none()
        && !matches!(state, ProvisionState::Enroll | ProvisionState::AdoptFailed)
}

/// Whether `node` is in the sync's scope, its reservation aside.
fn in_scope(node: &Node) -> bool {
    !node.maintenance && node.target_power_state.is_none() && state_synced(node.provision_state)
}

impl Conductor {
    /// One sync run over every node in scope (see the module docs).
    pub async fn sync_power_states(self: &Arc<Self>, sync: &PowerSync) -> SyncReport {
        let started = Instant::now();
        let mut nodes = match self.nodes_to_sync().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list nodes for the power state sync");
                return SyncReport::default();
            }
        };
        sync.retain(&nodes);
        // Failing nodes first (Ironic's order): their next failure may decide maintenance.
        nodes.sort_by_key(|n| std::cmp::Reverse(sync.failures(n.uuid)));
        let report = Mutex::new(SyncReport::default());
        futures_util::stream::iter(nodes)
            .for_each_concurrent(self.settings().sync_power_state_workers, |node| async {
                let uuid = node.uuid;
                let outcome = if self.cancel_token().is_cancelled() {
                    SyncOutcome::Skipped
                } else {
                    self.sync_node(sync, node).await
                };
                self.metrics.power_sync.node(outcome.as_str());
                let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
                r.outcomes.insert(uuid, outcome);
            })
            .await;
        self.metrics
            .power_sync
            .run(started.elapsed(), sync.failing());
        let interval = self.settings().sync_power_state_interval;
        if started.elapsed() > interval * 3 {
            tracing::warn!(
                took_secs = started.elapsed().as_secs(),
                interval_secs = interval.as_secs(),
                "the power state sync took over three intervals; raise [conductor] sync_power_state_workers"
            );
        }
        report.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// The nodes whose power state this conductor syncs now. The one place that decides it:
    /// with several conductors, the hash ring's mapping replaces "every node".
    async fn nodes_to_sync(&self) -> Result<Vec<Node>, StoreError> {
        let query = NodeQuery {
            maintenance: Some(false),
            reserved: Some(false),
            ..Default::default()
        };
        let nodes = self.store().list_nodes(&query).await?;
        let echo_of_nothing = |n: &Node| {
            n.power_state.is_none()
                && self
                    .interfaces()
                    .for_node(n)
                    .is_ok_and(|i| i.power.reads_the_record())
        };
        Ok(nodes
            .into_iter()
            .filter(|n| in_scope(n) && self.owns(n) && !echo_of_nothing(n))
            .collect())
    }

    /// Reads one node's power state and acts on it.
    async fn sync_node(self: &Arc<Self>, sync: &PowerSync, node: Node) -> SyncOutcome {
        let ifaces = match self.interfaces().for_node(&node) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!(node = %node.uuid, error = %e, "power state not synced");
                return SyncOutcome::Skipped;
            }
        };
        let ports = match self
            .store()
            .list_ports(&PortQuery::of_node(node.uuid))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(node = %node.uuid, error = %e, "power state not synced: cannot load ports");
                return SyncOutcome::Skipped;
            }
        };
        // A copy: whatever the interface notes while reading is not saved.
        let mut ctx = NodeContext::new(node.clone(), ports);
        if node.power_state.is_none() && ifaces.power.validate(&ctx).is_err() {
            // Never powered through ironboot and not configured for it: nothing to sync yet.
            return SyncOutcome::Skipped;
        }
        let read = tokio::select! {
            _ = self.cancel_token().cancelled() => return SyncOutcome::Skipped,
            read = tokio::time::timeout(READ_LIMIT, ifaces.power.get_power_state(&mut ctx)) => read,
        };
        match read {
            Ok(Ok(actual)) if node.power_state == Some(actual) => {
                sync.reset(node.uuid);
                SyncOutcome::InSync
            }
            Ok(Ok(actual)) => self.record_change(sync, &node, actual, &ifaces).await,
            Ok(Err(e)) => self.read_failed(sync, &node, e.into()).await,
            Err(_) => {
                self.read_failed(sync, &node, ReadFailure::TimedOut(READ_LIMIT))
                    .await
            }
        }
    }

    async fn read_failed(
        self: &Arc<Self>,
        sync: &PowerSync,
        node: &Node,
        failure: ReadFailure,
    ) -> SyncOutcome {
        let count = sync.fail(node.uuid);
        let max = self.settings().power_state_sync_max_retries;
        if count <= max {
            tracing::warn!(node = %node.uuid, failures = count, max_retries = max, error = %failure,
                "power state sync cannot read the power state");
            return SyncOutcome::ReadFailed;
        }
        let reason = format!(
            "power state sync: reading the power state of node {} failed {count} times in a row \
             ([conductor] power_state_sync_max_retries = {max}), so the node was put in \
             maintenance; fix the cause, then unset maintenance. Last error: {failure}",
            node.ident()
        );
        let Ok(mut task) = self.reserve(&NodeIdent::Uuid(node.uuid)).await else {
            return SyncOutcome::ReadFailed;
        };
        let outcome = if task.node.updated_at != node.updated_at || !in_scope(&task.node) {
            // Changed meanwhile (driver_info fixed, an action started): start counting again.
            sync.reset(node.uuid);
            SyncOutcome::Skipped
        } else {
            self.to_maintenance(sync, &mut task, None, reason).await
        };
        self.release(task).await;
        outcome
    }

    /// Under the reservation: records `actual`, or forces the hardware back.
    async fn record_change(
        self: &Arc<Self>,
        sync: &PowerSync,
        seen: &Node,
        actual: PowerState,
        ifaces: &NodeInterfaces,
    ) -> SyncOutcome {
        let Ok(mut task) = self.reserve(&NodeIdent::Uuid(seen.uuid)).await else {
            // An operation took the node since the read: it decides the power now.
            return SyncOutcome::Skipped;
        };
        let outcome = if task.node.updated_at != seen.updated_at || !in_scope(&task.node) {
            SyncOutcome::Skipped
        } else {
            self.apply_change(sync, &mut task, actual, ifaces).await
        };
        self.release(task).await;
        outcome
    }

    async fn apply_change(
        &self,
        sync: &PowerSync,
        task: &mut Task,
        actual: PowerState,
        ifaces: &NodeInterfaces,
    ) -> SyncOutcome {
        let uuid = task.node.uuid;
        let recorded = match task.node.power_state {
            Some(r @ (PowerState::On | PowerState::Off))
                if self.settings().force_power_state_during_sync =>
            {
                r
            }
            previous => {
                task.node.power_state = Some(actual);
                sync.reset(uuid);
                tracing::warn!(node = %uuid, previous = ?previous.map(PowerState::as_str),
                    now = actual.as_str(), "power state changed outside ironboot; recorded");
                return save(task, SyncOutcome::Recorded).await;
            }
        };
        let count = sync.fail(uuid);
        let max = self.settings().power_state_sync_max_retries;
        if count > max {
            let reason = format!(
                "power state sync: node {} is {} but ironboot recorded {}, and putting it back \
                 did not hold {count} times in a row ([conductor] power_state_sync_max_retries = \
                 {max}); recorded {} and put the node in maintenance",
                task.node.ident(),
                actual.as_str(),
                recorded.as_str(),
                actual.as_str()
            );
            return self.to_maintenance(sync, task, Some(actual), reason).await;
        }
        match ifaces.power.set_power_state(task.ctx(), recorded).await {
            Ok(()) => {
                tracing::warn!(node = %uuid, found = actual.as_str(), restored = recorded.as_str(),
                    "power state changed outside ironboot; put back (force_power_state_during_sync)");
                save(task, SyncOutcome::Forced).await
            }
            Err(e) => {
                tracing::error!(node = %uuid, found = actual.as_str(), wanted = recorded.as_str(),
                    failures = count, error = %e, "power state sync cannot put the node back");
                SyncOutcome::ForceFailed
            }
        }
    }

    /// Puts the reserved node in maintenance with `reason`, recording `actual`.
    async fn to_maintenance(
        &self,
        sync: &PowerSync,
        task: &mut Task,
        actual: Option<PowerState>,
        reason: String,
    ) -> SyncOutcome {
        tracing::error!(node = %task.node.uuid, reason = %reason, "power state sync gives up on the node");
        task.node.power_state = actual;
        task.node.maintenance = true;
        task.node.maintenance_reason = Some(reason.clone());
        task.node.last_error = Some(reason);
        sync.reset(task.node.uuid);
        save(task, SyncOutcome::Maintenance).await
    }
}

/// Saves the node; `outcome` if that worked.
async fn save(task: &mut Task, outcome: SyncOutcome) -> SyncOutcome {
    match task.save().await {
        Ok(()) => outcome,
        Err(e) => {
            tracing::error!(node = %task.node.uuid, error = %e, "power state sync cannot save the node");
            SyncOutcome::Skipped
        }
    }
}

mod metrics;
#[cfg(test)]
mod tests;

pub use metrics::PowerSyncMetrics;
