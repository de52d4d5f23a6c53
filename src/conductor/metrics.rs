//! Conductor metrics: provision state transitions, operations by outcome, the ring and take
//! over, power state sync.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Debug, Clone)]
pub struct ConductorMetrics {
    transitions: Family<TransitionLabels, Counter>,
    operations: Family<OperationLabels, Counter>,
    running: Gauge,
    ring_members: Gauge,
    nodes_owned: Gauge,
    take_overs: Family<OutcomeLabels, Counter>,
    take_over_seconds: Histogram,
    /// The power state sync's own metrics (`ironboot_power_sync_*`).
    pub power_sync: super::power_sync::PowerSyncMetrics,
}

impl Default for ConductorMetrics {
    fn default() -> Self {
        ConductorMetrics {
            transitions: Family::default(),
            operations: Family::default(),
            running: Gauge::default(),
            ring_members: Gauge::default(),
            nodes_owned: Gauge::default(),
            take_overs: Family::default(),
            take_over_seconds: Histogram::new([
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            power_sync: super::power_sync::PowerSyncMetrics::default(),
        }
    }
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
        registry.register(
            "ironboot_conductor_ring_members",
            "Live conductors on this conductor's hash ring (itself included)",
            m.ring_members.clone(),
        );
        registry.register(
            "ironboot_conductor_nodes_owned",
            "Nodes the hash ring maps to this conductor (at the last take-over run)",
            m.nodes_owned.clone(),
        );
        registry.register(
            "ironboot_conductor_take_overs",
            "Nodes taken over from another conductor, by outcome",
            m.take_overs.clone(),
        );
        registry.register(
            "ironboot_conductor_take_over_seconds",
            "From a conductor's death being seen to all its nodes regenerated here",
            m.take_over_seconds.clone(),
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

    pub fn ring_members(&self, n: usize) {
        self.ring_members.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn nodes_owned(&self, n: usize) {
        self.nodes_owned.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn take_over(&self, ok: bool) {
        let outcome = if ok { "succeeded" } else { "failed" };
        self.take_overs
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    pub fn take_over_completed(&self, seconds: f64) {
        self.take_over_seconds.observe(seconds);
    }
}
