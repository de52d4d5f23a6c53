//! API request metrics, labelled by route template (not raw path) and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// `lookup` or `heartbeat`.
    pub endpoint: &'static str,
    /// `invalid_address` (counts addresses), `invalid_token`, `callback_changed`,
    /// `not_found`, `invalid_request`, ...
    pub reason: &'static str,
}

/// Refused ramdisk requests: the log keeps one line per period, this keeps every count.
pub type RamdiskRefusals = Family<RefusedLabels, Counter>;

#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    auth_failures: Family<super::auth::FailureLabels, Counter>,
    ramdisk_refused: RamdiskRefusals,
}

impl ApiMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| {
                Histogram::new(crate::metrics::duration_buckets())
            }),
            auth_failures: Family::default(),
            ramdisk_refused: Family::default(),
        };
        registry.register(
            "ironboot_api_auth_failures",
            "Requests refused for missing or invalid HTTP basic credentials",
            m.auth_failures.clone(),
        );
        registry.register(
            "ironboot_api_ramdisk_refused",
            "Refused ramdisk requests (and ignored lookup addresses), by endpoint and reason",
            m.ramdisk_refused.clone(),
        );
        registry.register(
            "ironboot_api_requests",
            "API requests by method, route and status",
            m.requests.clone(),
        );
        registry.register(
            "ironboot_api_request_duration_seconds",
            "API request latency by route",
            m.latency.clone(),
        );
        m
    }

    pub fn auth_failures(&self) -> Family<super::auth::FailureLabels, Counter> {
        self.auth_failures.clone()
    }

    pub fn ramdisk_refused(&self) -> RamdiskRefusals {
        self.ramdisk_refused.clone()
    }
}

pub async fn record(State(m): State<ApiMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}
