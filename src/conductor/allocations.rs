//! Allocations: finding an available node for an allocation in the background, recording a
//! deployed node's allocation (backfill), and giving a node back when its allocation goes.
//!
//! A node and its allocation point at each other (`node.allocation_uuid`, `allocation.node_uuid`,
//! and `node.instance_uuid` = the allocation's uuid, as Ironic does). The node side is written
//! under the node's reservation first, then the allocation: an allocation is never active for
//! a node that does not name it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::{Conductor, ConductorError, Task};
use crate::model::{Allocation, AllocationState, Node, ProvisionState};
use crate::store::{NodeIdent, NodeQuery, StoreError};

/// How often a pick is retried when every suitable node was locked.
const LOCKED_RETRIES: usize = 3;
const LOCKED_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Why a node could not be found or taken (the allocation's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    #[error("{0}")]
    NoNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Conductor {
    /// Looks for a node for the (stored, `allocating`) allocation in the background.
    pub fn start_allocation(self: &Arc<Self>, allocation: Allocation) {
        let this = self.clone();
        let span = tracing::info_span!("allocation", allocation = %allocation.uuid);
        self.tracker().spawn(tracing::Instrument::instrument(
            async move { this.allocate(allocation).await },
            span,
        ));
    }

    async fn allocate(&self, mut allocation: Allocation) {
        match self.pick_node(&allocation).await {
            Ok(node) => {
                allocation.node_uuid = Some(node);
                allocation.state = AllocationState::Active;
                tracing::info!(node = %node, "allocation picked a node");
            }
            Err(e) => {
                allocation.state = AllocationState::Error;
                allocation.last_error = Some(format!(
                    "Failed to process allocation {}: {e}.",
                    allocation.uuid
                ));
                tracing::warn!(error = %e, "allocation failed");
            }
        }
        if let Err(e) = self.store().save_allocation(&allocation).await {
            // Deleted while it was being processed: nothing is left to record.
            tracing::warn!(error = %e, "cannot record the allocation's outcome");
        }
    }

    /// The available nodes that match, shuffled (a node named like the allocation first).
    async fn candidates(&self, a: &Allocation) -> Result<Vec<Node>, AllocationError> {
        let mut nodes = self
            .store()
            .list_nodes(&NodeQuery {
                provision_state: Some(ProvisionState::Available),
                resource_class: a.resource_class.clone(),
                associated: Some(false),
                maintenance: Some(false),
                project: a.owner.clone(),
                ..Default::default()
            })
            .await?;
        if !a.candidate_nodes.is_empty() {
            nodes.retain(|n| a.candidate_nodes.contains(&n.uuid));
        }
        if nodes.is_empty() {
            return Err(AllocationError::NoNode(if a.candidate_nodes.is_empty() {
                format!(
                    "no available nodes match the resource class {}",
                    a.resource_class.as_deref().unwrap_or("None")
                )
            } else {
                "none of the requested nodes are available and match the resource class".to_string()
            }));
        }
        nodes.retain(|n| a.traits_match(n));
        if nodes.is_empty() {
            return Err(AllocationError::NoNode(format!(
                "no suitable nodes have the requested traits {}",
                a.traits.join(", ")
            )));
        }
        // Spread allocations over the matching nodes, as Ironic does.
        nodes.sort_by_cached_key(|_| Uuid::new_v4());
        if let Some(i) = nodes
            .iter()
            .position(|n| n.name == a.name && a.name.is_some())
        {
            let named = nodes.remove(i);
            nodes.insert(0, named);
        }
        Ok(nodes)
    }

    /// Takes the first suitable node (retrying locked ones a few times); returns its uuid.
    async fn pick_node(&self, a: &Allocation) -> Result<Uuid, AllocationError> {
        let mut nodes = self.candidates(a).await?;
        for attempt in 0..LOCKED_RETRIES {
            let mut locked = Vec::new();
            for node in nodes {
                match self.reserve(&NodeIdent::Uuid(node.uuid)).await {
                    Ok(mut task) => {
                        let taken = match a.unsuitable(&task.node) {
                            Some(why) => {
                                tracing::debug!(node = %node.uuid, why, "node skipped");
                                Ok(false)
                            }
                            None => link(&mut task, a).await.map(|_| true),
                        };
                        self.release(task).await;
                        if taken? {
                            return Ok(node.uuid);
                        }
                    }
                    Err(ConductorError::Store(StoreError::NodeLocked { .. })) => locked.push(node),
                    Err(ConductorError::Store(StoreError::NodeNotFound(_))) => {}
                    Err(ConductorError::Store(e)) => return Err(e.into()),
                    Err(e) => return Err(AllocationError::NoNode(e.to_string())),
                }
            }
            if locked.is_empty() {
                break;
            }
            nodes = locked;
            if attempt + 1 < LOCKED_RETRIES {
                tokio::time::sleep(LOCKED_RETRY_WAIT).await;
            } else {
                return Err(AllocationError::NoNode(format!(
                    "could not reserve any of {} suitable nodes",
                    nodes.len()
                )));
            }
        }
        Err(AllocationError::NoNode(
            "all nodes were filtered out during reservation".into(),
        ))
    }

    /// Records `a` (stored, `allocating`) as the allocation of the deployed `node`: 409 when the
    /// node does not match (the allocation is then left in `error`, as Ironic leaves it).
    pub async fn backfill(
        &self,
        a: &mut Allocation,
        node: &NodeIdent,
    ) -> Result<(), ConductorError> {
        let mut task = self.reserve_for_request(node).await?;
        let mut errors = a.backfill_errors(&task.node);
        if let Some(inst) = task.node.instance_uuid.filter(|i| *i != a.uuid) {
            errors.push(format!(
                "Node {} is associated with instance {inst}",
                task.node.uuid
            ));
        }
        let result = if errors.is_empty() {
            link(&mut task, a).await.map_err(ConductorError::from)
        } else {
            Err(ConductorError::Conflict(format!(
                "Failed to process allocation {}: Cannot backfill an allocation for node {}: {}",
                a.uuid,
                task.node.uuid,
                errors.join("; ")
            )))
        };
        let node_uuid = task.node.uuid;
        self.release(task).await;
        match &result {
            Ok(()) => {
                a.node_uuid = Some(node_uuid);
                a.state = AllocationState::Active;
            }
            Err(e) => {
                a.state = AllocationState::Error;
                a.last_error = Some(e.to_string());
            }
        }
        *a = self.store().save_allocation(a).await?;
        result
    }

    /// Deletes an allocation, giving its node back (Ironic refuses while the node is deployed
    /// or busy, unless it is in maintenance).
    pub async fn delete_allocation(&self, a: &Allocation) -> Result<(), ConductorError> {
        let Some(node) = a.node_uuid else {
            return Ok(self.store().delete_allocation(a.uuid).await?);
        };
        let mut task = match self.reserve_for_request(&NodeIdent::Uuid(node)).await {
            Ok(t) => t,
            // The node is gone: so is the link.
            Err(ConductorError::Store(StoreError::NodeNotFound(_))) => {
                return Ok(self.store().delete_allocation(a.uuid).await?);
            }
            Err(e) => return Err(e),
        };
        let result = async {
            let n = &task.node;
            if !n.maintenance {
                let busy = n.target_provision_state.is_some() && !update_allowed(n.provision_state);
                if busy || n.provision_state == ProvisionState::Active {
                    return Err(ConductorError::Conflict(format!(
                        "Cannot remove allocation {} for node {}, which is in state {}",
                        a.uuid, n.uuid, n.provision_state
                    )));
                }
            }
            self.unlink(&mut task).await
        }
        .await;
        self.release(task).await;
        result
    }

    /// Deletes the allocation of a reserved node and clears the node's link to it (tear down,
    /// instance_uuid removed). The caller saves the node.
    pub async fn forget_allocation(&self, node: &mut Node) -> Result<(), StoreError> {
        if let Some(a) = node.allocation_uuid.take() {
            match self.store().delete_allocation(a).await {
                Ok(()) | Err(StoreError::AllocationNotFound(_)) => {}
                Err(e) => return Err(e),
            }
            node.instance_uuid = None;
        }
        Ok(())
    }

    async fn unlink(&self, task: &mut Task) -> Result<(), ConductorError> {
        let mut node = task.node.clone();
        self.forget_allocation(&mut node).await?;
        node.instance_uuid = None;
        task.node = node;
        task.save().await?;
        Ok(())
    }
}

/// Points the reserved node at the allocation (and the instance at its uuid) and saves it.
async fn link(task: &mut Task, a: &Allocation) -> Result<(), StoreError> {
    task.node.allocation_uuid = Some(a.uuid);
    task.node.instance_uuid = Some(a.uuid);
    task.node
        .instance_info
        .insert("traits".into(), Value::from(a.traits.clone()));
    task.save().await
}

/// States in which a node mid-transition may still be updated (Ironic's
/// `UPDATE_ALLOWED_STATES`: failures and the waits of inspection and cleaning).
fn update_allowed(state: ProvisionState) -> bool {
    state.is_failure()
        || matches!(
            state,
            ProvisionState::Inspecting | ProvisionState::InspectWait | ProvisionState::CleanWait
        )
}
