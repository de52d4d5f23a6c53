//! The ramdisk endpoints the ironic-python-agent calls: `GET /v1/lookup` and
//! `POST /v1/heartbeat/{node}`. Open like Ironic's (no API credentials in a ramdisk); the
//! agent token, issued at the first lookup, protects everything after it.
//!
//! Being open, they are also what anyone can call at will: a refused request is counted in
//! `ironboot_api_ramdisk_refused_total` and logged at most once per period per endpoint
//! (with how many were held back), never once per bad address or per retry.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, QueryParams};
use super::version::Version;
use std::time::Duration;

use super::metrics::{RamdiskRefusals, RefusedLabels};
use crate::conductor::ramdisk::{Heartbeat, refusal_reason};
use crate::model::node::mask_secrets;
use crate::model::{MacAddress, Node};
use crate::store::NodeIdent;
use crate::telemetry::LogThrottle;

/// Oldest microversion with the ramdisk endpoints (Ironic's rule).
const RAMDISK_MIN: Version = Version(22);

/// One line per period for refused lookups and heartbeats each.
static LOOKUP_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));
static HEARTBEAT_LOG: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// What lookup hands the agent besides the node (Ironic's `config` keys).
#[derive(Debug, Clone)]
pub struct RamdiskConfig {
    pub heartbeat_timeout: std::time::Duration,
    pub md5_checksum_enable: bool,
    pub permitted_image_formats: Vec<String>,
    pub enable_bios_bootloader_install: bool,
    /// Where refusals are counted.
    pub refused: RamdiskRefusals,
    /// `[auto_discovery]`: the hardware type unknown machines are enrolled with, when on.
    pub discovery_driver: Option<String>,
}

impl RamdiskConfig {
    fn count(&self, endpoint: &'static str, reason: &'static str, n: u64) {
        self.refused
            .get_or_create(&RefusedLabels { endpoint, reason })
            .inc_by(n);
    }
}

fn too_old(version: Version) -> Result<(), ApiError> {
    if version < RAMDISK_MIN {
        return Err(ApiError::not_found(format!(
            "the ramdisk endpoints need API version {RAMDISK_MIN} or later (requested {version})"
        )));
    }
    Ok(())
}

/// The node as the agent sees it: only what it needs, secrets masked.
pub(super) fn node_view(node: &Node, base: &str) -> Value {
    let mut instance_info = mask_secrets(&node.instance_info);
    for k in ["configdrive", "image_url"] {
        if let Some(v) = instance_info.get_mut(k)
            && !v.is_null()
        {
            *v = json!("******");
        }
    }
    let id = node.uuid;
    json!({
        "uuid": id,
        "properties": node.properties,
        "instance_info": instance_info,
        "driver_internal_info": mask_secrets(&node.driver_internal_info),
        "links": [
            {"href": format!("{base}/v1/nodes/{id}"), "rel": "self"},
            {"href": format!("{base}/nodes/{id}"), "rel": "bookmark"},
        ],
    })
}

pub(super) fn config_view(c: &RamdiskConfig, token: &str) -> Value {
    json!({
        "metrics": {"backend": "noop", "prepend_host": false, "prepend_uuid": false,
                    "prepend_host_reverse": true, "global_prefix": null},
        "metrics_statsd": {"statsd_host": "localhost", "statsd_port": 8125},
        "heartbeat_timeout": c.heartbeat_timeout.as_secs(),
        "agent_containers": {"allow_arbitrary_containers": false, "allowed_containers": []},
        "agent_token": token,
        "agent_token_required": true,
        "agent_md5_checksum_enable": c.md5_checksum_enable,
        "disable_deep_image_inspection": false,
        "permitted_image_formats": c.permitted_image_formats,
        "agent_skip_bmc_detect": false,
        "enable_bios_bootloader_install": c.enable_bios_bootloader_install,
        "tls_min_version": "1.2",
        "tls_cipher_suites": null,
    })
}

/// `GET /v1/lookup?addresses=<mac>,<mac>&node_uuid=<uuid>`
pub async fn lookup(
    State(st): State<AppState>,
    version: Version,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    let (macs, node_uuid) = match lookup_request(&st, version, &q) {
        Ok(r) => r,
        Err(e) => {
            refused(&st, "lookup", "invalid_request", &e);
            return Err(e);
        }
    };
    let (node, token) = match st.conductor.lookup(&macs, node_uuid).await {
        Ok(found) => found,
        Err(e) => {
            let reason = refusal_reason(&e);
            let e = ApiError::from(e);
            refused(&st, "lookup", reason, &e);
            return Err(e);
        }
    };
    tracing::info!(node = %node.uuid, first = token != crate::agent::token::MASK, "agent lookup");
    Ok(axum::Json(json!({
        "node": node_view(&node, &st.base_url),
        "config": config_view(&st.ramdisk, &token),
    })))
}

/// The lookup's addresses and node uuid. Invalid addresses are ignored (as Ironic does),
/// counted, and logged as one line for the whole request.
fn lookup_request(
    st: &AppState,
    version: Version,
    q: &QueryParams,
) -> Result<(Vec<MacAddress>, Option<uuid::Uuid>), ApiError> {
    too_old(version)?;
    q.only(&["addresses", "node_uuid"])?;
    let mut macs = Vec::new();
    let mut invalid = 0u64;
    let mut first_invalid = None;
    for raw in q.get("addresses").unwrap_or("").split(',') {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        match MacAddress::parse(raw) {
            Ok(m) => macs.push(m),
            Err(e) => {
                invalid += 1;
                first_invalid.get_or_insert(e);
            }
        }
    }
    if let Some(first) = first_invalid {
        st.ramdisk.count("lookup", "invalid_address", invalid);
        if let Some(held) = LOOKUP_LOG.admit() {
            tracing::warn!(invalid, first = %first, suppressed = held,
                "lookup: ignoring invalid MAC addresses");
        }
    }
    let node_uuid = q.uuid("node_uuid")?;
    if macs.is_empty() && node_uuid.is_none() {
        return Err(ApiError::bad_request(
            "Incomplete lookup request: at least one valid MAC address (addresses) or \
             node_uuid is required",
        ));
    }
    Ok((macs, node_uuid))
}

/// Counts a refused ramdisk request and logs it, at most once per period per endpoint.
pub(super) fn refused(st: &AppState, endpoint: &'static str, reason: &'static str, e: &ApiError) {
    st.ramdisk.count(endpoint, reason, 1);
    let log = if endpoint == "lookup" {
        &LOOKUP_LOG
    } else {
        &HEARTBEAT_LOG
    };
    if let Some(held) = log.admit() {
        tracing::warn!(endpoint, reason, status = e.status.as_u16(), error = %e.message,
            suppressed = held, "ramdisk request refused");
    }
}

#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    callback_url: Option<String>,
    agent_token: Option<String>,
    agent_version: Option<String>,
    agent_verify_ca: Option<String>,
    agent_status: Option<String>,
    agent_status_message: Option<String>,
}

/// `POST /v1/heartbeat/{node uuid or name}`: 202, or 400/404/409 as Ironic answers.
pub async fn heartbeat(
    State(st): State<AppState>,
    Path(ident): Path<String>,
    version: Version,
    JsonBody(body): JsonBody<HeartbeatBody>,
) -> Result<StatusCode, ApiError> {
    // An unknown node is a 404 whatever the body says (as in Ironic).
    st.store.get_node(&NodeIdent::parse(&ident)).await?;
    let hb = match heartbeat_request(version, body) {
        Ok(hb) => hb,
        Err(e) => {
            refused(&st, "heartbeat", "invalid_request", &e);
            return Err(e);
        }
    };
    match st.conductor.heartbeat(&NodeIdent::parse(&ident), hb).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(e) => {
            let reason = refusal_reason(&e);
            let e = ApiError::from(e);
            refused(&st, "heartbeat", reason, &e);
            Err(e)
        }
    }
}

/// Checks a heartbeat's fields against the API version and each other.
fn heartbeat_request(version: Version, body: HeartbeatBody) -> Result<Heartbeat, ApiError> {
    too_old(version)?;
    for (field, given, min) in [
        ("agent_version", body.agent_version.is_some(), 36),
        ("agent_token", body.agent_token.is_some(), 62),
        ("agent_verify_ca", body.agent_verify_ca.is_some(), 68),
        ("agent_status", body.agent_status.is_some(), 72),
        (
            "agent_status_message",
            body.agent_status_message.is_some(),
            72,
        ),
    ] {
        if given && version < Version(min) {
            return Err(ApiError::bad_request(format!(
                "Field \"{field}\" not recognised in API version {version} (needs 1.{min})"
            )));
        }
    }
    let callback_url = body
        .callback_url
        .ok_or_else(|| ApiError::bad_request("callback_url is required"))?;
    let scheme_ok = reqwest::Url::parse(&callback_url)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    if !scheme_ok {
        return Err(ApiError::bad_request(format!(
            "callback_url {callback_url:?} must be an http:// or https:// URL"
        )));
    }
    if let Some(s) = &body.agent_status
        && !["start", "end", "error"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "agent_status {s:?} must be one of start, end, error"
        )));
    }
    if body.agent_version.is_none() && body.agent_status.is_none() {
        return Err(ApiError::bad_request(
            "the heartbeat carries neither agent_version nor agent_status: the agent is too \
             old for this conductor",
        ));
    }
    Ok(Heartbeat {
        callback_url,
        agent_token: body.agent_token,
        agent_version: body.agent_version,
        agent_verify_ca: body.agent_verify_ca,
        agent_status: body.agent_status,
        agent_status_message: body.agent_status_message,
    })
}
