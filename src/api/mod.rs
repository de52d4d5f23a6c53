//! The HTTP API (axum): Ironic v1 shapes for the management endpoints so existing Ironic
//! clients work, the ramdisk endpoints the agent calls, plus `/healthz` and `/metrics`.

pub mod absent;
pub mod allocations;
pub mod auth;
pub mod conductors;
pub mod drivers;
pub mod error;
pub mod extract;
pub mod forward;
pub mod inspection;
pub mod links;
pub mod local_link;
pub mod management;
pub mod metrics;
pub mod node_input;
pub mod node_list;
pub mod node_states;
pub mod node_subresources;
pub mod node_view;
pub mod nodes;
pub mod openapi;
pub mod patch;
pub mod ports;
pub mod ramdisk;
mod settings;
pub mod traits;
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
use links::Base;

/// Most items one list request returns (Ironic's `[api] max_limit`).
pub const MAX_LIMIT: u32 = 1000;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub conductor: Arc<Conductor>,
    pub store: Arc<dyn Store>,
    /// The API's public URL, no trailing slash (what agents are told).
    pub base_url: Arc<str>,
    /// How links in answers are built (see [`links`]).
    pub links: Arc<links::LinkPolicy>,
    pub registry: Arc<Registry>,
    pub max_limit: u32,
    /// What `/v1/lookup` hands agents.
    pub ramdisk: Arc<ramdisk::RamdiskConfig>,
    /// Passes a node's work to the conductor that owns it ([`forward`]).
    pub forwarder: reqwest::Client,
}

impl AppState {
    /// The conductor serving `node`: its owner on the hash ring of its group (none when no
    /// live conductor serves the group).
    pub fn conductor_for(&self, node: &crate::model::Node) -> Option<String> {
        self.conductor.owner_of(node)
    }
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
        .route("/", get(root).post(root))
        .route("/v1/events", axum::routing::post(events))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1", get(v1))
        .route(
            "/v1/nodes",
            get(node_list::list)
                .post(nodes::create)
                .delete(delete_without_node),
        )
        .route("/v1/nodes/detail", get(node_list::list_detail))
        .route(
            "/v1/nodes/{ident}",
            get(nodes::show)
                .patch(nodes::update)
                .delete(nodes::delete)
                .post(post_to_node),
        )
        .route("/v1/nodes/{ident}/states", get(node_states::states))
        .route(
            "/v1/nodes/{ident}/states/provision",
            put(node_states::set_provision_state),
        )
        .route(
            "/v1/nodes/{ident}/states/power",
            put(node_states::set_power_state),
        )
        .route(
            "/v1/nodes/{ident}/states/boot_mode",
            put(node_states::set_boot_mode),
        )
        .route(
            "/v1/nodes/{ident}/states/secure_boot",
            put(node_states::set_secure_boot),
        )
        .route(
            "/v1/nodes/{ident}/maintenance",
            put(node_states::maintenance_on).delete(node_states::maintenance_off),
        )
        .route(
            "/v1/nodes/{ident}/traits",
            get(traits::list)
                .put(traits::set_all)
                .delete(traits::remove_all),
        )
        .route(
            "/v1/nodes/{ident}/traits/{name}",
            put(traits::add).delete(traits::remove),
        )
        .route("/v1/nodes/{ident}/{sub}", get(node_subresources::get))
        .route("/v1/nodes/{ident}/volume", get(node_subresources::volume))
        .route(
            "/v1/nodes/{ident}/volume/{kind}",
            get(node_subresources::volume_items),
        )
        .route(
            "/v1/nodes/{ident}/validate",
            get(management::validate).post(post_to_node),
        )
        .route(
            "/v1/nodes/validate",
            get(management::validate_by_query)
                .post(|| async { post_to_node(axum::extract::Path("validate".to_string())).await }),
        )
        .route(
            "/v1/nodes/{ident}/management/inject_nmi",
            put(management::inject_nmi),
        )
        .route(
            "/v1/nodes/{ident}/management/indicators",
            get(management::indicators),
        )
        .route("/v1/nodes/{ident}/states/console", get(management::console))
        .route(
            "/v1/nodes/{ident}/management/boot_device",
            get(management::get_boot_device).put(management::set_boot_device),
        )
        .route(
            "/v1/nodes/{ident}/management/boot_device/supported",
            get(management::supported_boot_devices),
        )
        .route("/v1/nodes/{ident}/ports", get(ports::list_for_node))
        .route(
            "/v1/nodes/{ident}/ports/detail",
            get(ports::list_detail_for_node),
        )
        .route("/v1/ports", get(ports::list).post(ports::create))
        .route("/v1/ports/detail", get(ports::list_detail))
        .route(
            "/v1/ports/{id}",
            get(ports::show).patch(ports::update).delete(ports::delete),
        )
        .route(
            "/v1/allocations",
            get(allocations::list).post(allocations::create),
        )
        .route(
            "/v1/allocations/{id}",
            get(allocations::show)
                .patch(allocations::update)
                .delete(allocations::delete),
        )
        .route(
            "/v1/nodes/{ident}/allocation",
            get(allocations::show_for_node).delete(allocations::delete_for_node),
        )
        .route("/v1/chassis", absent::CHASSIS.collection())
        .route("/v1/chassis/detail", absent::CHASSIS.collection())
        .route("/v1/chassis/{id}", absent::CHASSIS.item())
        .route("/v1/chassis/{id}/nodes", absent::CHASSIS.item())
        .route("/v1/portgroups", absent::PORTGROUPS.collection())
        .route("/v1/portgroups/detail", absent::PORTGROUPS.collection())
        .route("/v1/portgroups/{id}", absent::PORTGROUPS.item())
        .route("/v1/portgroups/{id}/ports", absent::PORTGROUPS.item())
        .route(
            "/v1/deploy_templates",
            absent::DEPLOY_TEMPLATES.collection(),
        )
        .route(
            "/v1/deploy_templates/detail",
            absent::DEPLOY_TEMPLATES.collection(),
        )
        .route("/v1/deploy_templates/{id}", absent::DEPLOY_TEMPLATES.item())
        .route("/v1/volume", get(absent::volume))
        .route(
            "/v1/volume/connectors",
            absent::VOLUME_CONNECTORS.collection(),
        )
        .route(
            "/v1/volume/connectors/{id}",
            absent::VOLUME_CONNECTORS.item(),
        )
        .route("/v1/volume/targets", absent::VOLUME_TARGETS.collection())
        .route("/v1/volume/targets/{id}", absent::VOLUME_TARGETS.item())
        .route("/v1/runbooks", absent::RUNBOOKS.collection())
        .route("/v1/runbooks/{id}", absent::RUNBOOKS.item())
        .route(
            "/v1/inspection_rules",
            absent::INSPECTION_RULES.collection(),
        )
        .route("/v1/inspection_rules/{id}", absent::INSPECTION_RULES.item())
        .route("/v1/shards", get(absent::shards))
        .route("/v1/drivers", get(drivers::list))
        .route("/v1/drivers/{name}", get(drivers::show))
        .route("/v1/drivers/{name}/properties", get(drivers::properties))
        .route("/v1/conductors", get(conductors::list))
        .route("/v1/conductors/{host}", get(conductors::show))
        .route("/v1/lookup", get(ramdisk::lookup))
        .route(
            crate::conductor::inspection::CALLBACK_PATH,
            axum::routing::post(inspection::continue_inspection),
        )
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
        .layer(axum::middleware::from_fn(accepts_json))
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

async fn root(Base(base): Base) -> axum::Json<serde_json::Value> {
    axum::Json(version::root_doc(&base))
}

async fn v1(Base(base): Base, v: version::Version) -> axum::Json<serde_json::Value> {
    axum::Json(version::v1_doc(&base, v))
}

async fn not_found() -> ApiError {
    ApiError::no_route()
}

async fn method_not_allowed() -> ApiError {
    ApiError::http(StatusCode::METHOD_NOT_ALLOWED, "")
}

/// Answers are JSON only: a client that accepts no JSON gets 406, as from Ironic.
async fn accepts_json(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let json_ok = accept.as_deref().is_none_or(|a| {
        a.split(',').any(|range| {
            let media = range.split(';').next().unwrap_or("").trim();
            matches!(media, "" | "*/*" | "application/*" | "application/json")
                || media.ends_with("+json")
        })
    });
    if json_ok {
        return next.run(req).await;
    }
    ApiError::plain(
        StatusCode::NOT_ACCEPTABLE,
        format!(
            "406 Not Acceptable\n\nThe resource could not be generated that was acceptable to \
             your browser (content of type {}. \n\n ",
            accept.unwrap_or_default()
        ),
    )
    .into_response()
}

/// `POST /v1/events` (1.54+): notifications from a network service. ironboot has none to act
/// on; well-formed events are accepted and logged.
async fn events(
    v: version::Version,
    extract::JsonBody(body): extract::JsonBody<serde_json::Value>,
) -> Result<StatusCode, ApiError> {
    if v < version::Version(54) {
        return Err(ApiError::not_found(
            "The API is not supported for this version",
        ));
    }
    let events = body
        .get("events")
        .and_then(serde_json::Value::as_array)
        .filter(|e| !e.is_empty() && body.as_object().is_some_and(|o| o.len() == 1))
        .ok_or_else(|| {
            ApiError::bad_request("Schema error: a non-empty \"events\" list is required")
        })?;
    if events
        .iter()
        .any(|e| e.get("event").and_then(serde_json::Value::as_str).is_none())
    {
        return Err(ApiError::bad_request(
            "Schema error: every event needs an \"event\" name",
        ));
    }
    tracing::info!(count = events.len(), "external events received");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/nodes` names no node.
async fn delete_without_node() -> ApiError {
    ApiError::bad_request("Missing mandatory parameter: node_ident")
}

/// `POST /v1/nodes/{ident}` (and `/v1/nodes/validate`): Ironic reads the path as a create body.
async fn post_to_node(axum::extract::Path(ident): axum::extract::Path<String>) -> ApiError {
    ApiError::bad_request(format!(
        "Schema error for node: '{ident}' is not of type 'object'"
    ))
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
