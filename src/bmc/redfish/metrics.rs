//! Prometheus metrics of BMC calls (`ironboot_redfish_*`). Optional: a client built without
//! them records nothing.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallLabels {
    /// `GET`, `POST`, `PATCH` or `DELETE`.
    pub method: &'static str,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: &'static str,
}

/// How one HTTP exchange with a BMC ended.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue,
)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// 2xx.
    success,
    /// 401 or 403.
    unauthorized,
    /// Any other 4xx.
    client_error,
    /// 5xx.
    server_error,
    /// No answer within the request timeout.
    timeout,
    /// Connection refused or reset, TLS failure.
    connection_error,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct RedfishMetrics {
    pub calls: Family<CallLabels, Counter>,
    pub duration: HistogramFamily,
    /// Sessions created (the first per BMC and user, then one per expired or rejected token).
    pub logins: Counter,
}

impl Default for RedfishMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
            logins: Counter::default(),
        }
    }
}

impl RedfishMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ironboot_redfish");
        r.register(
            "calls",
            "HTTP requests to Redfish BMCs, by method and outcome",
            m.calls.clone(),
        );
        r.register(
            "call_duration_seconds",
            "Time taken by HTTP requests to Redfish BMCs",
            m.duration.clone(),
        );
        r.register(
            "session_logins",
            "Redfish sessions created",
            m.logins.clone(),
        );
        m
    }

    pub(crate) fn record(&self, method: &'static str, outcome: Outcome, seconds: f64) {
        self.calls
            .get_or_create(&CallLabels { method, outcome })
            .inc();
        self.duration
            .get_or_create(&MethodLabels { method })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed() {
        let mut reg = Registry::default();
        let m = RedfishMetrics::register(&mut reg);
        m.record("POST", Outcome::server_error, 0.2);
        m.record("GET", Outcome::success, 0.01);
        m.logins.inc();
        let text = crate::metrics::encode(&reg);
        for want in [
            r#"ironboot_redfish_calls_total{method="POST",outcome="server_error"} 1"#,
            r#"ironboot_redfish_calls_total{method="GET",outcome="success"} 1"#,
            r#"ironboot_redfish_call_duration_seconds_count{method="POST"} 1"#,
            "ironboot_redfish_session_logins_total 1",
        ] {
            assert!(text.contains(want), "{want} missing in\n{text}");
        }
    }
}
