//! Prometheus metrics of the network boot interfaces (`ironboot_boot_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `pxe` or `ipxe`.
    pub interface: String,
    /// `prepare_ramdisk`, `prepare_instance`, `clean_up`, `take_over`.
    pub operation: String,
    /// `ok` or `error`.
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub interface: String,
    pub operation: String,
}

#[derive(Debug, Clone)]
pub struct BootMetrics {
    operations: Family<OperationLabels, Counter>,
    durations: Family<DurationLabels, Histogram>,
}

impl Default for BootMetrics {
    fn default() -> Self {
        Self {
            operations: Family::default(),
            durations: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
        }
    }
}

impl BootMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_boot");
        r.register(
            "operations",
            "Boot interface operations finished, by interface, operation and outcome",
            m.operations.clone(),
        );
        r.register(
            "operation_duration_seconds",
            "Time a boot interface operation took (image fetches included)",
            m.durations.clone(),
        );
        m
    }

    /// Counts one finished operation and its duration.
    pub fn observe(&self, interface: &str, operation: &str, ok: bool, seconds: f64) {
        self.operations
            .get_or_create(&OperationLabels {
                interface: interface.to_string(),
                operation: operation.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&DurationLabels {
                interface: interface.to_string(),
                operation: operation.to_string(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_counted_by_outcome() {
        let mut reg = Registry::default();
        let m = BootMetrics::register(&mut reg);
        m.observe("pxe", "prepare_ramdisk", true, 0.2);
        m.observe("pxe", "prepare_ramdisk", false, 0.1);
        let text = crate::metrics::encode(&reg);
        assert!(
            text.contains(
                "ironboot_boot_operations_total{interface=\"pxe\",operation=\"prepare_ramdisk\",outcome=\"ok\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ironboot_boot_operation_duration_seconds_count{interface=\"pxe\",operation=\"prepare_ramdisk\"} 2"),
            "{text}"
        );
    }
}
