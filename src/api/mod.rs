//! The HTTP API (axum): Ironic v1 shapes for the management endpoints so existing Ironic
//! clients work, the ramdisk endpoints the agent calls, plus `/healthz` and `/metrics`.

pub mod auth;
pub mod error;
pub mod extract;
pub mod forward;
pub mod metrics;
pub mod nodes;
pub mod patch;
pub mod ports;
pub mod ramdisk;
mod settings;
pub mod version;
pub mod views;

pub use settings::{ApiSettings, Auth, AuthStrategy};

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde_json::json;

use crate::conductor::Conductor;
use crate::metrics::Registry;
use crate::store::{NodeQuery, Store};
use error::ApiError;

/// Most items one list request returns (Ironic's `[api] max_limit`).
pub const MAX_LIMIT: u32 = 1000;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub conductor: Arc<Conductor>,
    pub store: Arc<dyn Store>,
    /// Base URL for links (the API's public URL, no trailing slash).
    pub base_url: Arc<str>,
    pub registry: Arc<Registry>,
    pub max_limit: u32,
    /// What `/v1/lookup` hands agents.
    pub ramdisk: Arc<ramdisk::RamdiskConfig>,
    /// Passes a node's work to the conductor that owns it ([`forward`]).
    pub forwarder: reqwest::Client,
}

/// Everything the API needs besides the shared state.
pub struct ApiOptions {
    pub auth: Option<Arc<auth::BasicAuth>>,
    pub max_body_bytes: usize,
    pub metrics: metrics::ApiMetrics,
}

/// The API as a service: the router behind trailing-slash normalisation (clients ask for
/// `/v1/nodes/?...`), which has to run before routing.
pub fn service(
    state: AppState,
    opts: ApiOptions,
) -> tower_http::normalize_path::NormalizePath<Router> {
    tower_http::normalize_path::NormalizePath::trim_trailing_slash(router(state, opts))
}

pub fn router(state: AppState, opts: ApiOptions) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1", get(v1))
        .route("/v1/nodes", get(nodes::list).post(nodes::create))
        .route("/v1/nodes/detail", get(nodes::list_detail))
        .route(
            "/v1/nodes/{ident}",
            get(nodes::show).patch(nodes::update).delete(nodes::delete),
        )
        .route("/v1/nodes/{ident}/states", get(nodes::states))
        .route(
            "/v1/nodes/{ident}/states/provision",
            put(nodes::set_provision_state),
        )
        .route(
            "/v1/nodes/{ident}/states/power",
            put(nodes::set_power_state),
        )
        .route(
            "/v1/nodes/{ident}/maintenance",
            put(nodes::maintenance_on).delete(nodes::maintenance_off),
        )
        .route("/v1/nodes/{ident}/ports", get(ports::list_for_node))
        .route("/v1/ports", get(ports::list).post(ports::create))
        .route("/v1/ports/detail", get(ports::list_detail))
        .route("/v1/ports/{id}", get(ports::show).delete(ports::delete))
        .route("/v1/drivers", get(nodes::drivers))
        .route("/v1/lookup", get(ramdisk::lookup))
        .route(
            "/v1/heartbeat/{ident}",
            axum::routing::post(ramdisk::heartbeat),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            opts.auth,
            auth::require_basic,
        ))
        .layer(axum::middleware::from_fn(version::negotiate))
        .layer(axum::middleware::from_fn_with_state(
            opts.metrics,
            metrics::record,
        ))
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

async fn root(State(st): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(version::root_doc(&st.base_url))
}

async fn v1(State(st): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(version::v1_doc(&st.base_url))
}

async fn not_found() -> ApiError {
    ApiError::not_found("the resource could not be found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this resource",
    )
}

async fn healthz(State(st): State<AppState>) -> Response {
    match st
        .store
        .list_nodes(&NodeQuery {
            limit: Some(1),
            ..Default::default()
        })
        .await
    {
        Ok(_) => {
            axum::Json(json!({"status": "ok", "conductor": st.conductor.host()})).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "error", "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(st): State<AppState>) -> Response {
    let body = crate::metrics::encode(&st.registry);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error; see the ironboot log",
    )
    .into_response()
}
