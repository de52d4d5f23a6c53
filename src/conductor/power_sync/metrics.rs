//! `ironboot_power_sync_*`: per-node outcomes, run durations, nodes failing right now.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The power state sync's metrics.
#[derive(Debug, Clone)]
pub struct PowerSyncMetrics {
    nodes: Family<OutcomeLabels, Counter>,
    run_duration: Histogram,
    failing: Gauge,
}

impl Default for PowerSyncMetrics {
    fn default() -> Self {
        PowerSyncMetrics {
            nodes: Family::default(),
            run_duration: Histogram::new(crate::metrics::duration_buckets()),
            failing: Gauge::default(),
        }
    }
}

impl PowerSyncMetrics {
    pub fn register(registry: &mut crate::metrics::Registry) -> Self {
        let m = PowerSyncMetrics::default();
        let r = registry.sub_registry_with_prefix("ironboot_power_sync");
        r.register(
            "nodes",
            "Nodes synced, by outcome (in_sync, recorded, forced, force_failed, read_failed, maintenance, skipped)",
            m.nodes.clone(),
        );
        r.register(
            "run_duration_seconds",
            "Time taken by one power state sync run",
            m.run_duration.clone(),
        );
        r.register(
            "failing_nodes",
            "Nodes whose last power state sync failed",
            m.failing.clone(),
        );
        m
    }

    pub(super) fn node(&self, outcome: &'static str) {
        self.nodes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A run ended after `took`, with `failing` nodes whose last sync failed.
    pub(super) fn run(&self, took: Duration, failing: usize) {
        self.run_duration.observe(took.as_secs_f64());
        self.failing.set(i64::try_from(failing).unwrap_or(i64::MAX));
    }
}
