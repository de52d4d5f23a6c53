//! A node held under this conductor's reservation, and the only way its state moves.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use super::metrics::ConductorMetrics;
use crate::driver::NodeContext;
use crate::model::{Event, InvalidTransition, ProvisionState};
use crate::store::{Store, StoreError};

/// A reserved node. Whoever holds a `Task` is the only writer of the node; the conductor
/// releases the reservation when the work is done (see `Conductor::release`).
///
/// A `Task` dereferences to the [`NodeContext`] the interfaces act on (the node and its
/// ports), the way a lock guard dereferences to what it guards.
pub struct Task {
    ctx: NodeContext,
    store: Arc<dyn Store>,
    host: String,
    metrics: ConductorMetrics,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("node", &self.ctx.node.uuid)
            .field("host", &self.host)
            .finish()
    }
}

impl Deref for Task {
    type Target = NodeContext;
    fn deref(&self) -> &NodeContext {
        &self.ctx
    }
}

impl DerefMut for Task {
    fn deref_mut(&mut self) -> &mut NodeContext {
        &mut self.ctx
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Task {
    pub(super) fn new(
        ctx: NodeContext,
        store: Arc<dyn Store>,
        host: String,
        metrics: ConductorMetrics,
    ) -> Task {
        Task {
            ctx,
            store,
            host,
            metrics,
        }
    }

    /// Persists the node (every field but the reservation).
    pub async fn save(&mut self) -> Result<(), StoreError> {
        self.ctx.node = self.store.save_node(&self.ctx.node).await?;
        Ok(())
    }

    /// Applies `event` through the state machine and persists the result before returning, so
    /// the new state is recorded before any side effect it announces.
    pub async fn process_event(&mut self, event: Event) -> Result<(), TaskError> {
        let node = &mut self.ctx.node;
        let from = node.provision_state;
        let t = crate::model::state::transition(from, event)?;
        node.provision_state = t.to;
        node.target_provision_state = t.target;
        if matches!(
            t.to,
            ProvisionState::Active | ProvisionState::Deploying | ProvisionState::Cleaning
        ) {
            // The conductor that prepares a node's boot (the deploy or cleaning ramdisk, then
            // the instance) serves its boot files and media; take over moves them elsewhere.
            node.conductor_affinity = Some(self.host.clone());
        }
        node.provision_updated_at = Some(crate::model::now());
        self.save().await?;
        self.metrics.transition(from, t.to);
        tracing::info!(node = %self.ctx.node.uuid, %from, %event, to = %t.to, "provision state changed");
        Ok(())
    }

    /// Bumps `provision_updated_at` (progress was made; resets callback timeouts).
    pub async fn touch_provisioning(&mut self) -> Result<(), StoreError> {
        self.ctx.node.provision_updated_at = Some(crate::model::now());
        self.save().await
    }

    /// The conductor holding this task.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The node context, for interfaces that take it explicitly.
    pub fn ctx(&mut self) -> &mut NodeContext {
        &mut self.ctx
    }
}
