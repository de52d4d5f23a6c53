//! Prometheus metrics of the TFTP server (`ironboot_tftp_*`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Registry, duration_buckets};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    /// `read`, `write`, or `other` (a datagram that is no request).
    op: &'static str,
    /// `ok`; `duplicate` (a repeated request of a transfer in progress, ignored); or why
    /// it was refused (`not_found`, `outside_root`, `bad_name`, `busy`, `malformed`, ...).
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    /// TFTP error code sent (0 busy, 1 file not found, 2 access violation, 4 illegal
    /// operation).
    code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    /// `complete` (the client acknowledged the last block) or `incomplete` (client gone,
    /// timed out, ended by the client or the server).
    outcome: &'static str,
}

/// Prometheus metrics of the TFTP server (`ironboot_tftp_*`).
#[derive(Debug, Clone)]
pub struct TftpMetrics {
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    transfers: Family<OutcomeLabels, Counter>,
    sent_bytes: Counter,
    active: Gauge,
    blksize: Histogram,
    duration: Histogram,
}

impl TftpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        let r = registry.sub_registry_with_prefix("ironboot_tftp");
        r.register(
            "requests",
            "TFTP requests by operation and result",
            m.requests.clone(),
        );
        r.register(
            "errors",
            "TFTP ERROR packets sent for refused requests, by code",
            m.errors.clone(),
        );
        r.register(
            "transfers",
            "Finished TFTP transfers by outcome",
            m.transfers.clone(),
        );
        r.register(
            "sent_bytes",
            "File bytes sent by TFTP transfers (each once, however often it was resent)",
            m.sent_bytes.clone(),
        );
        r.register(
            "active_transfers",
            "TFTP transfers in progress",
            m.active.clone(),
        );
        r.register(
            "negotiated_blksize",
            "Block size each transfer negotiated (512 when the client asked for none)",
            m.blksize.clone(),
        );
        r.register(
            "transfer_duration_seconds",
            "Time from open to the end of a transfer",
            m.duration.clone(),
        );
        m
    }

    /// Metrics that are counted but exported nowhere (tests, tools).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            errors: Family::default(),
            transfers: Family::default(),
            sent_bytes: Counter::default(),
            active: Gauge::default(),
            blksize: Histogram::new([
                512.0, 1024.0, 1408.0, 1432.0, 1468.0, 4096.0, 8192.0, 65464.0,
            ]),
            duration: Histogram::new(duration_buckets()),
        }
    }

    pub(super) fn request(&self, op: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { op, result })
            .inc();
    }

    /// A request answered with ERROR `code`.
    pub(super) fn refused(&self, op: &'static str, result: &'static str, code: u16) {
        self.request(op, result);
        self.errors.get_or_create(&ErrorLabels { code }).inc();
    }

    pub(super) fn started(&self) {
        self.active.inc();
    }

    pub(super) fn finished(&self, outcome: &'static str, blksize: u16, seconds: f64) {
        self.active.dec();
        self.transfers
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.blksize.observe(f64::from(blksize));
        self.duration.observe(seconds);
    }

    pub(super) fn sent_bytes(&self) -> &Counter {
        &self.sent_bytes
    }
}
