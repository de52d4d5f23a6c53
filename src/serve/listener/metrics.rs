//! Prometheus metrics of the HTTP listeners (`ironboot_listener_*`), labelled by listener
//! (`api`, `http`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::phase::Timeout;
use crate::metrics::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ShedLabels {
    listener: &'static str,
    /// `cap` (the listener's connection cap) or `descriptors` (the process ran out).
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TimeoutLabels {
    listener: &'static str,
    /// `header`, `keepalive` or `stall`.
    phase: &'static str,
}

/// The families, registered once and shared by every listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    open: Family<ListenerLabel, Gauge>,
    cap: Family<ListenerLabel, Gauge>,
    accepted: Family<ListenerLabel, Counter>,
    shed: Family<ShedLabels, Counter>,
    timed_out: Family<TimeoutLabels, Counter>,
    malformed: Family<ListenerLabel, Counter>,
}

impl ListenerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_listener");
        r.register(
            "open_connections",
            "Connections being served",
            m.open.clone(),
        );
        r.register(
            "connection_cap",
            "Connections a listener serves at once (after fitting the open-file limit)",
            m.cap.clone(),
        );
        r.register(
            "accepted",
            "Connections accepted and served",
            m.accepted.clone(),
        );
        r.register(
            "shed",
            "Connections refused at once (503 past the cap, or closed when out of descriptors)",
            m.shed.clone(),
        );
        r.register(
            "timed_out",
            "Connections closed because the client was too slow, by phase",
            m.timed_out.clone(),
        );
        r.register(
            "malformed_requests",
            "Request heads that could not be parsed (answered 400, 414 or 431)",
            m.malformed.clone(),
        );
        m
    }

    /// The view one listener records into.
    pub fn for_listener(&self, listener: &'static str) -> ConnMetrics {
        ConnMetrics {
            listener,
            families: self.clone(),
        }
    }
}

/// One listener's metrics.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    listener: &'static str,
    families: ListenerMetrics,
}

impl Default for ConnMetrics {
    fn default() -> Self {
        ListenerMetrics::default().for_listener("unregistered")
    }
}

impl ConnMetrics {
    fn label(&self) -> ListenerLabel {
        ListenerLabel {
            listener: self.listener,
        }
    }

    pub fn set_cap(&self, cap: usize) {
        self.families
            .cap
            .get_or_create(&self.label())
            .set(cap as i64);
    }

    pub fn opened(&self) {
        self.families.accepted.get_or_create(&self.label()).inc();
        self.families.open.get_or_create(&self.label()).inc();
    }

    pub fn closed(&self) {
        self.families.open.get_or_create(&self.label()).dec();
    }

    pub fn shed(&self, reason: &'static str) {
        self.families
            .shed
            .get_or_create(&ShedLabels {
                listener: self.listener,
                reason,
            })
            .inc();
    }

    pub fn timed_out(&self, which: Timeout) {
        self.families
            .timed_out
            .get_or_create(&TimeoutLabels {
                listener: self.listener,
                phase: which.label(),
            })
            .inc();
    }

    pub fn malformed(&self) {
        self.families.malformed.get_or_create(&self.label()).inc();
    }
}
