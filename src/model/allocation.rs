//! Allocations: a request for one available node matching a resource class and traits, which
//! the conductor answers by reserving a node for it (Ironic's standalone scheduling).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::node::{Fields, Node};
use super::state::ProvisionState;

/// Where an allocation is in its short life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    /// Created; the conductor is looking for a node.
    Allocating,
    /// A node is reserved for it (`node_uuid`).
    Active,
    /// No node could be found (`last_error` says why).
    Error,
}

impl AllocationState {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationState::Allocating => "allocating",
            AllocationState::Active => "active",
            AllocationState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<AllocationState> {
        [Self::Allocating, Self::Active, Self::Error]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub uuid: Uuid,
    pub name: Option<String>,
    pub node_uuid: Option<Uuid>,
    pub state: AllocationState,
    pub last_error: Option<String>,
    pub resource_class: Option<String>,
    pub traits: Vec<String>,
    /// Only these nodes may be picked (empty: any).
    pub candidate_nodes: Vec<Uuid>,
    pub extra: Fields,
    pub owner: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Allocation {
    pub fn new(uuid: Uuid, now: DateTime<Utc>) -> Allocation {
        Allocation {
            uuid,
            name: None,
            node_uuid: None,
            state: AllocationState::Allocating,
            last_error: None,
            resource_class: None,
            traits: Vec::new(),
            candidate_nodes: Vec::new(),
            extra: Fields::new(),
            owner: None,
            created_at: now,
            updated_at: None,
        }
    }

    /// Whether `node` carries every trait the allocation asks for.
    pub fn traits_match(&self, node: &Node) -> bool {
        self.traits.iter().all(|t| node.traits.contains(t))
    }

    /// Why `node` cannot be picked now, if it cannot (Ironic's checks under the node's lock).
    pub fn unsuitable(&self, node: &Node) -> Option<&'static str> {
        if node.maintenance {
            Some("in maintenance")
        } else if node.instance_uuid.is_some() {
            Some("already associated with an instance")
        } else if node.provision_state != ProvisionState::Available {
            Some("not available")
        } else if node.resource_class != self.resource_class {
            Some("of another resource class")
        } else if !self.traits_match(node) {
            Some("missing a requested trait")
        } else {
            None
        }
    }

    /// Why `node` cannot be recorded as this allocation's (backfilling a deployed node).
    pub fn backfill_errors(&self, node: &Node) -> Vec<String> {
        let mut errors = Vec::new();
        if node.provision_state != ProvisionState::Active {
            errors.push(format!(
                "Node must be in the \"active\" state, but the current state is \"{}\"",
                node.provision_state
            ));
        }
        if self.resource_class.is_some() && node.resource_class != self.resource_class {
            errors.push(format!(
                "Resource class {:?} does not match the expected resource class {:?}",
                node.resource_class, self.resource_class
            ));
        }
        if !self.traits.is_empty() && !self.traits_match(node) {
            errors.push(format!(
                "List of traits {:?} does not match the expected list {:?}",
                node.traits, self.traits
            ));
        }
        if !self.candidate_nodes.is_empty() && !self.candidate_nodes.contains(&node.uuid) {
            errors.push("Candidate nodes must be empty or contain the target node".into());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;

    #[test]
    fn suitability_and_backfill_checks() {
        let hw = HardwareType::find("fake-hardware").unwrap();
        let mut n = Node::new(Uuid::new_v4(), hw, crate::model::now());
        n.provision_state = ProvisionState::Available;
        n.resource_class = Some("gold".into());
        n.traits = vec!["CUSTOM_A".into()];
        let mut a = Allocation::new(Uuid::new_v4(), crate::model::now());
        a.resource_class = Some("gold".into());
        a.traits = vec!["CUSTOM_A".into()];
        assert_eq!(a.unsuitable(&n), None);
        a.traits.push("CUSTOM_B".into());
        assert_eq!(a.unsuitable(&n), Some("missing a requested trait"));
        a.traits.pop();
        n.maintenance = true;
        assert_eq!(a.unsuitable(&n), Some("in maintenance"));
        assert_eq!(a.backfill_errors(&n).len(), 1, "not active");
        n.provision_state = ProvisionState::Active;
        assert!(a.backfill_errors(&n).is_empty());
        assert_eq!(
            AllocationState::parse("error"),
            Some(AllocationState::Error)
        );
    }
}
