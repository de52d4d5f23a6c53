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
