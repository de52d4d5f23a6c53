//! Prometheus metrics of media publishing (`ironboot_publish_*`), labelled by backend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OpLabels {
    pub backend: &'static str,
    /// `publish`, `unpublish` or `exists`.
    pub operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: &'static str,
}

type HistogramFamily = Family<OpLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct PublishMetrics {
    pub operations: Family<OpLabels, Counter>,
    pub failures: Family<OpLabels, Counter>,
    pub duration: HistogramFamily,
    /// Bytes of media published.
    pub bytes: Family<BackendLabels, Counter>,
    /// Swift logins (the first one, then one per expired or rejected token).
    pub swift_authentications: Counter,
}

impl Default for PublishMetrics {
    fn default() -> Self {
        Self {
            operations: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
            bytes: Family::default(),
            swift_authentications: Counter::default(),
        }
    }
}

impl PublishMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_publish");
        r.register(
            "operations",
            "Publish, unpublish and exists calls",
            m.operations.clone(),
        );
        r.register(
            "failures",
            "Publish, unpublish and exists calls that failed",
            m.failures.clone(),
        );
        r.register(
            "duration_seconds",
            "Time taken by publish, unpublish and exists calls",
            m.duration.clone(),
        );
        r.register("bytes", "Bytes of media published", m.bytes.clone());
        r.register(
            "swift_authentications",
            "Logins to Swift (TempAuth or Keystone)",
            m.swift_authentications.clone(),
        );
        m
    }

    pub(crate) fn record(
        &self,
        backend: &'static str,
        operation: &'static str,
        seconds: f64,
        ok: bool,
    ) {
        let labels = OpLabels { backend, operation };
        self.operations.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
        if !ok {
            self.failures.get_or_create(&labels).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let mut reg = Registry::default();
        let m = PublishMetrics::register(&mut reg);
        m.record("swift", "publish", 0.2, false);
        m.bytes
            .get_or_create(&BackendLabels { backend: "local" })
            .inc_by(42);
        let text = crate::metrics::encode(&reg);
        for want in [
            r#"ironboot_publish_operations_total{backend="swift",operation="publish"} 1"#,
            r#"ironboot_publish_failures_total{backend="swift",operation="publish"} 1"#,
            r#"ironboot_publish_bytes_total{backend="local"} 42"#,
            r#"ironboot_publish_duration_seconds_count{backend="swift",operation="publish"} 1"#,
            "ironboot_publish_swift_authentications_total 0",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
