//! The node as an interface sees it.

use serde_json::Value;

use crate::model::{Node, Port};

/// How many recent calls the `fake` interfaces keep in `driver_internal_info.fake_calls`.
const FAKE_CALLS_KEPT: usize = 50;

/// A node under its conductor's reservation, with its ports (loaded when it was reserved).
/// Interfaces may change `node` (power state, `driver_internal_info`); the conductor persists
/// the changes.
#[derive(Debug, Clone)]
pub struct NodeContext {
    pub node: Node,
    /// The node's ports, oldest first.
    pub ports: Vec<Port>,
}

impl NodeContext {
    pub fn new(node: Node, ports: Vec<Port>) -> NodeContext {
        NodeContext { node, ports }
    }

    /// Appends `call` to `driver_internal_info.fake_calls`: the `fake` interfaces' record of
    /// what they were asked, kept with the node so tests and labs can read it through the API.
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

    /// The MACs of the ports firmware may boot from (`pxe_enabled`).
    pub fn pxe_macs(&self) -> Vec<crate::model::MacAddress> {
        self.ports
            .iter()
            .filter(|p| p.pxe_enabled)
            .map(|p| p.address.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;

    #[test]
    fn fake_calls_keep_the_most_recent() {
        let hw = HardwareType::find("fake-hardware").unwrap();
        let node = Node::new(uuid::Uuid::new_v4(), hw, chrono::Utc::now());
        let mut ctx = NodeContext::new(node, vec![]);
        for i in 0..(FAKE_CALLS_KEPT + 3) {
            ctx.record_fake_call(&format!("call {i}"));
        }
        let calls = ctx.node.driver_internal_info["fake_calls"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(calls.len(), FAKE_CALLS_KEPT);
        assert_eq!(calls[0], "call 3");
        assert_eq!(
            calls[FAKE_CALLS_KEPT - 1],
            format!("call {}", FAKE_CALLS_KEPT + 2)
        );
    }
}
