//! The command API the conductor calls, as IPA serves it: `GET /` and `/v1/` (version
//! documents), `/v1/status`, `GET|POST /v1/commands/`, `GET /v1/commands/{id}` (`wait=true`
//! blocks until done); the same without `/v1`; `/v1/commands` without the slash redirects
//! (308). Commands need `?agent_token=` (401 otherwise); errors are
//! `{"faultcode", "faultstring"}`. With auto-TLS every connection is TLS: the handshake runs
//! off the accept loop (with a timeout), so a stuck client cannot hold the others up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::agent::{Agent, AgentError};
use crate::commands::{self, error::fault};

const MEDIA_TYPE: &str = "application/vnd.openstack.ironic-python-agent.v1+json";
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Params = Query<HashMap<String, String>>;

fn json_response(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn unauthorized() -> Response {
    json_response(
        StatusCode::UNAUTHORIZED,
        fault(401, "401 Unauthorized: Token invalid."),
    )
}

fn base_url(host: Option<&str>, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", host.unwrap_or("localhost"))
}

fn version_doc(url: &str) -> Value {
    json!({"id": "v1", "links": [
        {"href": format!("{url}/v1/"), "rel": "self"},
        {"href": "https://docs.openstack.org/ironic-python-agent", "rel": "describedby", "type": "text/html"},
    ]})
}

#[derive(Clone)]
struct Api {
    agent: Arc<Agent>,
    tls: bool,
}

fn host(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|h| h.to_str().ok())
}

async fn root(State(api): State<Api>, headers: axum::http::HeaderMap) -> Response {
    let url = base_url(host(&headers), api.tls);
    json_response(
        StatusCode::OK,
        json!({"name": "OpenStack Ironic Python Agent API",
               "description": "Ironic Python Agent is a provisioning agent for OpenStack Ironic \
                               (this one is ironboot-agent)",
               "versions": [version_doc(&url)], "default_version": version_doc(&url)}),
    )
}

async fn v1(State(api): State<Api>, headers: axum::http::HeaderMap) -> Response {
    let url = base_url(host(&headers), api.tls);
    let mut doc = version_doc(&url);
    doc["commands"] = json!([{"href": format!("{url}/v1/commands"), "rel": "self"},
                             {"href": format!("{url}/commands"), "rel": "bookmark"}]);
    doc["status"] = json!([{"href": format!("{url}/v1/status"), "rel": "self"},
                           {"href": format!("{url}/status"), "rel": "bookmark"}]);
    doc["media_types"] = json!([{"base": "application/json", "type": MEDIA_TYPE}]);
    json_response(StatusCode::OK, doc)
}

async fn status(State(api): State<Api>) -> Response {
    json_response(
        StatusCode::OK,
        json!({"started_at": api.agent.started_at, "version": api.agent.version}),
    )
}

fn wants_wait(q: &HashMap<String, String>) -> bool {
    q.get("wait")
        .is_some_and(|w| w.eq_ignore_ascii_case("true"))
}

async fn list(State(api): State<Api>, Query(q): Params) -> Response {
    if !api
        .agent
        .token_matches(q.get("agent_token").map(String::as_str))
    {
        return unauthorized();
    }
    json_response(
        StatusCode::OK,
        json!({"commands": api.agent.commands.to_json()}),
    )
}

async fn one(State(api): State<Api>, Path(id): Path<String>, Query(q): Params) -> Response {
    if !api
        .agent
        .token_matches(q.get("agent_token").map(String::as_str))
    {
        return unauthorized();
    }
    let Some(c) = api.agent.commands.get(&id) else {
        return json_response(
            StatusCode::NOT_FOUND,
            fault(404, &format!("Not found: Command with id {id} not found.")),
        );
    };
    if wants_wait(&q) {
        c.wait().await;
    }
    json_response(StatusCode::OK, c.to_json())
}

async fn run(State(api): State<Api>, Query(q): Params, body: Bytes) -> Response {
    let parsed: Option<(String, serde_json::Map<String, Value>)> =
        serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            Some((
                v.get("name")?.as_str()?.to_string(),
                v.get("params")?.as_object()?.clone(),
            ))
        });
    let Some((name, params)) = parsed else {
        return json_response(
            StatusCode::BAD_REQUEST,
            fault(400, "400 Bad Request: Missing or invalid name or params"),
        );
    };
    if !api
        .agent
        .token_matches(q.get("agent_token").map(String::as_str))
    {
        tracing::warn!(command = %name, "command refused: missing or wrong agent token");
        return unauthorized();
    }
    match commands::execute(&api.agent, &name, params).await {
        Ok(c) => {
            if wants_wait(&q) {
                c.wait().await;
            }
            json_response(StatusCode::OK, c.to_json())
        }
        Err(e) => {
            tracing::warn!(command = %name, error = %e, "command refused");
            let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(status, e.fault())
        }
    }
}

async fn redirect(uri: Uri) -> Response {
    let to = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        fault(
            404,
            "404 Not Found: The requested URL was not found on the server.",
        ),
    )
}

fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/v1/", get(v1))
        .route("/v1/status", get(status))
        .route("/status", get(status))
        .route("/v1/commands/", get(list).post(run))
        .route("/commands/", get(list).post(run))
        .route("/v1/commands/{id}", get(one))
        .route("/commands/{id}", get(one))
        .route("/v1/commands", get(redirect).post(redirect))
        .route("/commands", get(redirect).post(redirect))
        .fallback(not_found)
        .with_state(api)
}

/// TLS connections, handshaken off the accept loop.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (it only ends with the process): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

fn accept_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    TlsListener { rx, local }
}

/// Binds `listen` and serves the API in the background; returns the bound address.
pub async fn serve(
    agent: Arc<Agent>,
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<SocketAddr, AgentError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| AgentError::Listen {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| AgentError::Listen {
        addr: listen,
        source,
    })?;
    let app = router(Api {
        agent,
        tls: tls.is_some(),
    });
    match tls {
        Some(config) => {
            let l = accept_tls(listener, config);
            tokio::spawn(async move { axum::serve(l, app).await });
        }
        None => {
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::LookupConfig;
    use crate::settings::{DiskScope, PowerRole, Settings};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789a";

    fn agent() -> Arc<Agent> {
        let p = [("ipa-api-url".to_string(), "http://x".to_string())].into();
        let settings =
            Settings::from_params(&p, DiskScope::Only(vec![]), PowerRole::Process).unwrap();
        let config = LookupConfig {
            heartbeat_timeout: Duration::from_secs(30),
            md5_enable: false,
            enable_bios_bootloader_install: false,
        };
        Arc::new(Agent::new(
            settings,
            Default::default(),
            Some(TOKEN.into()),
            json!({}),
            config,
        ))
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        body: Option<Value>,
    ) -> (u16, Value, Option<String>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "10.0.2.15:9999")
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            location,
        )
    }

    #[tokio::test]
    async fn the_api_answers_like_ipa() {
        let a = agent();
        let app = router(Api {
            agent: a.clone(),
            tls: true,
        });
        let q = format!("?agent_token={TOKEN}");
        let (s, root, _) = call(&app, "GET", "/", None).await;
        assert_eq!(
            (s, root["default_version"]["id"].as_str()),
            (200, Some("v1"))
        );
        let (s, st, _) = call(&app, "GET", "/v1/status", None).await;
        assert_eq!(s, 200);
        assert!(
            st["version"]
                .as_str()
                .unwrap()
                .starts_with("13.0.0+ironboot")
        );
        // Tokens.
        for uri in ["/v1/commands/", "/v1/commands/?agent_token=nope"] {
            let (s, b, _) = call(&app, "GET", uri, None).await;
            assert_eq!(
                (s, b["faultstring"].as_str()),
                (401, Some("401 Unauthorized: Token invalid."))
            );
        }
        let sync = json!({"name": "standby.get_partition_uuids", "params": {}});
        let (s, _, _) = call(
            &app,
            "POST",
            "/v1/commands/?agent_token=nope",
            Some(sync.clone()),
        )
        .await;
        assert_eq!(s, 401);
        // Bad requests, each with its status and IPA's text.
        for (body, status, text) in [
            (
                json!({"params": {}}),
                400,
                "400 Bad Request: Missing or invalid name or params",
            ),
            (
                json!({"name": "x.y", "params": []}),
                400,
                "400 Bad Request: Missing or invalid name or params",
            ),
            (
                json!({"name": "nope.x", "params": {}}),
                404,
                "Not found: Extension with id nope not found.",
            ),
            (
                json!({"name": "standby.nope", "params": {}}),
                400,
                "Invalid command: Unknown command: nope",
            ),
            (
                json!({"name": "standby.sync", "params": {"bogus": 1}}),
                400,
                "Invalid command parameters: standby.sync does not take the parameter \"bogus\"",
            ),
            (
                json!({"name": "standby.prepare_image", "params": {"image_info": {"id": "i"}}}),
                400,
                "Invalid command parameters: Image is missing 'urls' field.",
            ),
        ] {
            let (s, b, _) = call(
                &app,
                "POST",
                &format!("/v1/commands/{q}"),
                Some(body.clone()),
            )
            .await;
            assert_eq!(
                (s, b["faultstring"].as_str()),
                (status, Some(text)),
                "{body}"
            );
        }
        // A sync command: 200 with its result; listed afterwards; fetched by id.
        let (s, c, _) = call(
            &app,
            "POST",
            &format!("/v1/commands/{q}&wait=true"),
            Some(sync),
        )
        .await;
        assert_eq!(
            (s, c["command_status"].as_str(), c["command_name"].as_str()),
            (200, Some("SUCCEEDED"), Some("get_partition_uuids"))
        );
        assert_eq!(c["command_result"], json!({}));
        let (_, list, _) = call(&app, "GET", &format!("/v1/commands/{q}"), None).await;
        assert_eq!(list["commands"].as_array().unwrap().len(), 1);
        let id = c["id"].as_str().unwrap();
        let (s, one, _) = call(
            &app,
            "GET",
            &format!("/v1/commands/{id}{q}&wait=true"),
            None,
        )
        .await;
        assert_eq!((s, one["id"].as_str()), (200, Some(id)));
        let (s, _, _) = call(&app, "GET", &format!("/v1/commands/nope{q}"), None).await;
        assert_eq!(s, 404);
        // Boot loaders: nothing to do for a whole-disk image; a partition image is refused
        // (no GRUB in the ramdisk), IPA's way for BIOS without the conductor's consent.
        for (params, status, kind) in [
            (
                json!({"root_uuid": "0x1234abcd", "target_boot_mode": "uefi"}),
                "SUCCEEDED",
                None,
            ),
            (json!({"root_uuid": null}), "SUCCEEDED", None),
            (
                json!({"root_uuid": "4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c", "target_boot_mode": "bios"}),
                "FAILED",
                Some("InvalidImage"),
            ),
            (
                json!({"root_uuid": "4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c", "target_boot_mode": "uefi"}),
                "FAILED",
                Some("IncompatibleHardwareMethodError"),
            ),
        ] {
            let body = json!({"name": "image.install_bootloader", "params": params});
            let (s, c, _) = call(
                &app,
                "POST",
                &format!("/v1/commands/{q}&wait=true"),
                Some(body),
            )
            .await;
            assert_eq!(
                (s, c["command_status"].as_str()),
                (200, Some(status)),
                "{c}"
            );
            assert_eq!(c["command_error"]["type"].as_str(), kind, "{c}");
        }
        let sync = json!({"name": "standby.sync", "params": {}});
        let (_, c, _) = call(&app, "POST", &format!("/v1/commands/{q}"), Some(sync)).await;
        assert_eq!(c["command_status"], "SUCCEEDED");
        // Busy while the last command runs.
        a.commands.push_running("execute_deploy_step");
        let (s, b, _) = call(
            &app,
            "POST",
            &format!("/v1/commands/{q}"),
            Some(json!({"name": "standby.sync", "params": {}})),
        )
        .await;
        assert_eq!(
            (s, b["faultstring"].as_str()),
            (
                409,
                Some("Agent is busy: executing command execute_deploy_step")
            )
        );
        // Without the slash: a redirect that keeps the query.
        let (s, _, to) = call(&app, "POST", &format!("/v1/commands{q}"), Some(json!({}))).await;
        assert_eq!((s, to), (308, Some(format!("/v1/commands/{q}"))));
    }
}
