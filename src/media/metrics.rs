//! Prometheus metrics of the media builders.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Registry, duration_buckets};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    /// `floppy` or `iso`.
    kind: &'static str,
    /// `ok` or `error`.
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Build counts, durations and bytes written, per media kind.
#[derive(Debug)]
pub struct MediaMetrics {
    builds: Family<BuildLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    bytes: Family<KindLabels, Counter>,
}

impl MediaMetrics {
    /// Creates the families and registers them under `ironboot_media_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            builds: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(duration_buckets())),
            bytes: Family::default(),
        };
        registry.register(
            "ironboot_media_builds",
            "Virtual media builds by kind and outcome",
            metrics.builds.clone(),
        );
        registry.register(
            "ironboot_media_build_duration_seconds",
            "Time to build one virtual media image, successful or not",
            metrics.duration.clone(),
        );
        registry.register(
            "ironboot_media_written_bytes",
            "Bytes of virtual media images written successfully",
            metrics.bytes.clone(),
        );
        metrics
    }

    /// Records one build; `size` is `None` when it failed.
    pub(crate) fn observe(&self, kind: &'static str, size: Option<u64>, elapsed: Duration) {
        let outcome = if size.is_some() { "ok" } else { "error" };
        self.builds
            .get_or_create(&BuildLabels { kind, outcome })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
        if let Some(size) = size {
            self.bytes.get_or_create(&KindLabels { kind }).inc_by(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_outcomes() {
        let mut registry = Registry::default();
        let m = MediaMetrics::register(&mut registry);
        m.observe("iso", Some(2048), Duration::from_millis(30));
        m.observe("floppy", None, Duration::from_millis(1));
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains(r#"ironboot_media_builds_total{kind="iso",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"ironboot_media_builds_total{kind="floppy",outcome="error"} 1"#));
        assert!(text.contains(r#"ironboot_media_written_bytes_total{kind="iso"} 2048"#));
        assert!(text.contains(r#"ironboot_media_build_duration_seconds_count{kind="iso"} 1"#));
    }
}
