//! Work on a node runs on the conductor the hash ring maps it to.
//!
//! Any conductor answers the API from the shared database, but the requests that make a
//! conductor act on a node (provisioning, power, boot device, agent heartbeats) are passed to
//! the node's owner over HTTP — the owner renders the node's boot files into its own roots and
//! keeps the node's periodic work. The request goes as it came (method, path, query, headers
//! including credentials, body) with `X-Ironboot-Forwarded-By` added; a request that already
//! carries that header is handled where it lands, so two conductors whose views of the ring
//! disagree for a moment never pass a request back and forth.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::store::NodeIdent;

pub const FORWARDED_BY: &str = "x-ironboot-forwarded-by";

/// How long the owner may take to answer a forwarded request (actions answer at once: the
/// work itself runs in the background there).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);

/// The node whose work `method path` asks for, if it is such a request.
fn acting_on(method: &Method, path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (&Method::PUT, ["", "v1", "nodes", ident, "states", "provision" | "power"]) => {
            Some((*ident).to_string())
        }
        (&Method::PUT, ["", "v1", "nodes", ident, "management", "boot_device"]) => {
            Some((*ident).to_string())
        }
        (&Method::POST, ["", "v1", "heartbeat", ident]) => Some((*ident).to_string()),
        _ => None,
    }
}

/// Passes requests for another conductor's node to it; everything else goes on here.
pub async fn to_owner(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let Some(ident) = acting_on(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if req.headers().contains_key(FORWARDED_BY) || st.conductor.only_conductor() {
        return next.run(req).await;
    }
    let node = match st.store.get_node(&NodeIdent::parse(&ident)).await {
        Ok(n) => n,
        // Not found and friends: the handler gives the usual answer.
        Err(_) => return next.run(req).await,
    };
    if st.conductor.owner_of(&node).is_none() {
        return ApiError::bad_request(format!(
            "No valid host was found. Reason: No conductor service registered which supports \
             driver {} for conductor group \"{}\".",
            node.driver, node.conductor_group
        ))
        .into_response();
    }
    let Some(owner) = st.conductor.other_owner(&node) else {
        return next.run(req).await;
    };
    let Some(base) = owner.api_url.clone() else {
        return next.run(req).await;
    };
    tracing::debug!(node = %node.uuid, owner = %owner.hostname, path = %req.uri().path(),
        "forwarding to the node's conductor");
    match forward(&st, &base, req).await {
        Ok(resp) => resp,
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "node {} belongs to conductor {} ({base}), which did not answer: {}; retry later",
                node.ident(),
                owner.hostname,
                crate::error_chain::chain(&e)
            ),
        )
        .into_response(),
    }
}

async fn forward(st: &AppState, base: &str, req: Request) -> Result<Response, reqwest::Error> {
    let (parts, body) = req.into_parts();
    // The body limit layer already bounded it.
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let mut headers = passable(&parts.headers);
    if let Ok(v) = st.conductor.host().parse() {
        headers.insert(HeaderName::from_static(FORWARDED_BY), v);
    }
    let resp = st
        .forwarder
        .request(parts.method, url)
        .headers(headers)
        .body(bytes)
        .timeout(FORWARD_TIMEOUT)
        .send()
        .await?;
    let status = resp.status();
    let headers = passable(resp.headers());
    let body = resp.bytes().await?;
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Headers that describe the message, not the connection it travelled on.
fn passable(headers: &HeaderMap) -> HeaderMap {
    const HOP: &[&str] = &[
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "proxy-connection",
        "content-length",
    ];
    headers
        .iter()
        .filter(|(k, _)| !HOP.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_work_is_forwarded() {
        let id = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
        for (m, p) in [
            (Method::PUT, format!("/v1/nodes/{id}/states/provision")),
            (Method::PUT, format!("/v1/nodes/{id}/states/power/")),
            (
                Method::PUT,
                format!("/v1/nodes/{id}/management/boot_device"),
            ),
            (Method::POST, format!("/v1/heartbeat/{id}")),
        ] {
            assert_eq!(acting_on(&m, &p).as_deref(), Some(id), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, format!("/v1/nodes/{id}/states")),
            (
                Method::GET,
                format!("/v1/nodes/{id}/management/boot_device"),
            ),
            (Method::PATCH, format!("/v1/nodes/{id}")),
            (Method::GET, "/v1/lookup".to_string()),
            (Method::PUT, format!("/v1/nodes/{id}/states/raid")),
        ] {
            assert_eq!(acting_on(&m, &p), None, "{m} {p}");
        }
    }

    #[test]
    fn connection_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert("authorization", "Basic x".parse().unwrap());
        h.insert("x-openstack-ironic-api-version", "1.80".parse().unwrap());
        h.insert("content-length", "3".parse().unwrap());
        let out = passable(&h);
        assert!(out.contains_key("authorization"));
        assert!(out.contains_key("x-openstack-ironic-api-version"));
        assert!(!out.contains_key("host") && !out.contains_key("content-length"));
    }
}
