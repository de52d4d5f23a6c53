//! Prometheus metrics: one registry per process, one metrics struct per subsystem.
//!
//! Each subsystem (API, TFTP, HTTP, cache, media, ...) defines its own struct of counters and
//! histograms with a `register(&mut Registry)` constructor, so the families it owns are named
//! in one place. `/metrics` on the API listener encodes the whole registry.

pub use prometheus_client::registry::Registry;

/// Encodes every registered family in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; encode only errors on a fmt::Write failure.
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap_or_default();
    out
}

/// Buckets (seconds) for operations from milliseconds (TFTP opens) to minutes (image downloads).
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0,
    ]
    .into_iter()
}
