//! Conductor metrics: provision state transitions, operations by outcome, power state sync.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::Registry;
use crate::model::ProvisionState;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Default)]
pub struct ConductorMetrics {
    transitions: Family<TransitionLabels, Counter>,
    operations: Family<OperationLabels, Counter>,
    running: Gauge,
    /// The power state sync's own metrics (`ironboot_power_sync_*`).
    pub power_sync: super::power_sync::PowerSyncMetrics,
}

impl ConductorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ConductorMetrics::default();
        registry.register(
            "ironboot_provision_state_transitions",
            "Provision state transitions",
            m.transitions.clone(),
        );
        registry.register(
            "ironboot_conductor_operations",
            "Conductor operations finished, by outcome",
            m.operations.clone(),
        );
        registry.register(
            "ironboot_conductor_operations_running",
            "Conductor operations in progress",
            m.running.clone(),
        );
        ConductorMetrics {
            power_sync: super::power_sync::PowerSyncMetrics::register(registry),
            ..m
        }
    }

    pub fn transition(&self, from: ProvisionState, to: ProvisionState) {
        self.transitions
            .get_or_create(&TransitionLabels {
                from: from.to_string(),
                to: to.to_string(),
            })
            .inc();
    }

    pub fn operation(&self, operation: &str, outcome: &str) {
        self.operations
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn running(&self) -> &Gauge {
        &self.running
    }
}
