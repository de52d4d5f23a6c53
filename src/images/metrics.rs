//! Prometheus metrics of the image cache (`ironboot_image_cache_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    /// Requests served from an existing (or shared in-flight) master.
    pub hits: Counter,
    /// Requests that had to download.
    pub misses: Counter,
    pub downloaded_bytes: Counter,
    pub evictions: Counter,
    pub evicted_bytes: Counter,
    pub downloads_in_flight: Gauge,
}

impl CacheMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_image_cache");
        r.register(
            "hits",
            "Image requests served from the cache",
            m.hits.clone(),
        );
        r.register(
            "misses",
            "Image requests that needed a download",
            m.misses.clone(),
        );
        r.register(
            "downloaded_bytes",
            "Bytes downloaded from image sources",
            m.downloaded_bytes.clone(),
        );
        r.register(
            "evictions",
            "Masters evicted from the cache",
            m.evictions.clone(),
        );
        r.register(
            "evicted_bytes",
            "Bytes freed by eviction",
            m.evicted_bytes.clone(),
        );
        r.register(
            "downloads_in_flight",
            "Image downloads currently running",
            m.downloads_in_flight.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let mut reg = Registry::default();
        let m = CacheMetrics::register(&mut reg);
        m.hits.inc();
        m.downloads_in_flight.inc();
        let text = crate::metrics::encode(&reg);
        assert!(text.contains("ironboot_image_cache_hits_total 1"), "{text}");
        assert!(
            text.contains("ironboot_image_cache_downloads_in_flight 1"),
            "{text}"
        );
        assert!(
            text.contains("ironboot_image_cache_evicted_bytes_total 0"),
            "{text}"
        );
    }
}
