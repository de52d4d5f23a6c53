//! Reservations left by dead conductors (Ironic's `_check_orphan_nodes`).
//!
//! A conductor that dies mid-operation leaves its nodes reserved. The conductor the ring now
//! maps such a node to releases the reservation; a node caught in a step that only the dead
//! conductor could have finished (`deploying`, `cleaning`, ...) is failed with a `last_error`
//! saying so; a node waiting for its agent (`wait call-back`, `clean wait`) continues here
//! with the agent's next heartbeat.

use std::sync::Arc;

use super::Conductor;
use crate::model::Event;
use crate::store::{NodeIdent, NodeQuery};

impl Conductor {
    /// Releases this conductor's nodes held by dead conductors, failing interrupted steps.
    pub async fn release_orphans(self: &Arc<Self>) {
        let query = NodeQuery {
            reserved: Some(true),
            ..Default::default()
        };
        let nodes = match self.store().list_nodes(&query).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list reserved nodes for orphan recovery");
                return;
            }
        };
        for node in nodes {
            let Some(holder) = node.reservation.clone() else {
                continue;
            };
            if holder == self.host() || !self.is_dead(&holder) || !self.owns(&node) {
                continue;
            }
            if let Err(e) = self.store().release_node(node.uuid, &holder).await {
                tracing::error!(node = %node.uuid, %holder, error = %e, "cannot release an orphaned reservation");
                continue;
            }
            tracing::warn!(node = %node.uuid, %holder, state = %node.provision_state,
                "released the reservation of a dead conductor");
            if node.provision_state.stuck_on_restart() {
                self.fail_interrupted(node.uuid, &holder).await;
            }
        }
    }

    async fn fail_interrupted(&self, uuid: uuid::Uuid, holder: &str) {
        let Ok(mut task) = self.reserve(&NodeIdent::Uuid(uuid)).await else {
            return;
        };
        if task.node.provision_state.stuck_on_restart() {
            let state = task.node.provision_state;
            let message = format!(
                "conductor {holder} died while the node was {state}; {} took the node over and \
                 cannot resume the operation: retry it (e.g. deploy again or undeploy)",
                self.host()
            );
            self.fail_node(&mut task, Event::Fail, message).await;
        }
        self.release(task).await;
    }
}
