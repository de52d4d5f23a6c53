//! A node held under this conductor's reservation, and the only way its state moves.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use super::metrics::ConductorMetrics;
use crate::model::{Event, InvalidTransition, Node, Port};
use crate::store::{PortQuery, Store, StoreError};

/// Futures returned by interface methods that act on a [`Task`].
pub type TaskFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// How many recent calls the `fake` interfaces keep in `driver_internal_info.fake_calls`.
const FAKE_CALLS_KEPT: usize = 50;

/// A reserved node. Whoever holds a `Task` is the only writer of the node; the conductor
/// releases the reservation when the work is done (see `Conductor::release`).
pub struct Task {
    pub node: Node,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) host: String,
    pub(crate) metrics: ConductorMetrics,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("node", &self.node.uuid)
            .field("host", &self.host)
            .finish()
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
    /// Persists the node (every field but the reservation).
    pub async fn save(&mut self) -> Result<(), StoreError> {
        self.node = self.store.save_node(&self.node).await?;
        Ok(())
    }

    /// Applies `event` through the state machine and persists the result before returning, so
    /// the new state is recorded before any side effect it announces.
    pub async fn process_event(&mut self, event: Event) -> Result<(), TaskError> {
        let from = self.node.provision_state;
        let t = crate::model::state::transition(from, event)?;
        self.node.provision_state = t.to;
        self.node.target_provision_state = t.target;
        if t.to == crate::model::ProvisionState::Active {
            // The conductor that made a node active serves its boot files (take over).
            self.node.conductor_affinity = Some(self.host.clone());
        }
        self.node.provision_updated_at = Some(crate::model::now());
        self.save().await?;
        self.metrics.transition(from, t.to);
        tracing::info!(node = %self.node.uuid, %from, %event, to = %t.to, "provision state changed");
        Ok(())
    }

    /// Bumps `provision_updated_at` (progress was made; resets callback timeouts).
    pub async fn touch_provisioning(&mut self) -> Result<(), StoreError> {
        self.node.provision_updated_at = Some(crate::model::now());
        self.save().await
    }

    /// The node's ports, oldest first.
    pub async fn ports(&self) -> Result<Vec<Port>, StoreError> {
        self.store
            .list_ports(&PortQuery {
                node: Some(self.node.uuid),
                ..Default::default()
            })
            .await
    }

    /// The conductor holding this task.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Appends `call` to `driver_internal_info.fake_calls` (the `fake` interfaces' record of
    /// what they were asked; saved with the node).
    pub fn record_fake_call(&mut self, call: &str) {
        let entry = self
            .node
            .driver_internal_info
            .entry("fake_calls")
            .or_insert_with(|| Value::Array(vec![]));
        if !entry.is_array() {
            *entry = Value::Array(vec![]);
        }
        if let Value::Array(calls) = entry {
            calls.push(Value::String(call.to_string()));
            let excess = calls.len().saturating_sub(FAKE_CALLS_KEPT);
            calls.drain(..excess);
        }
        tracing::debug!(node = %self.node.uuid, call, "fake interface call");
    }
}
