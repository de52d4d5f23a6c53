//! A fault-injecting HTTP proxy in front of a Redfish service (sushy-tools) for the Redfish
//! client tests (axum on 127.0.0.1:0). It records every request, and on demand:
//! - answers given statuses and bodies to matching requests (5xx, 401, a 400 with
//!   `@Message.ExtendedInfo` to an InsertMedia...), after a delay if asked (a call that hangs);
//! - hides the `VirtualMedia` link of the System (a BMC that keeps virtual media under its
//!   Manager, like iLO 5) or of the Manager too (a system without virtual media);
//! - hides the slots' actions and turns PATCHes of `Image`/`Inserted` into the emulator's
//!   actions (a BMC that only takes PATCH);
//! - swallows `ComputerSystem.Reset` (a BMC that accepts a reset and never carries it out);
//! - emulates a SessionService (which sushy-tools 2.2.0 lacks): logins are checked against the
//!   emulator with basic authentication, tokens are then swapped for basic authentication
//!   upstream, and the tests can expire every token. This is a test double, not a real
//!   session implementation.
//!
//! [`Hang`] is a listener that accepts connections and never answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

const SESSIONS: &str = "/redfish/v1/SessionService/Sessions";

/// An answer given instead of forwarding, `times` times, to requests that match.
#[derive(Clone, Debug)]
pub struct Fault {
    pub method: Option<&'static str>,
    /// Matches when the path ends with this.
    pub path_suffix: String,
    pub status: u16,
    pub body: Value,
    pub times: usize,
    /// Wait this long before answering (a BMC that hangs on this call).
    pub delay: Duration,
}

impl Fault {
    pub fn new(method: Option<&'static str>, path_suffix: &str, status: u16, times: usize) -> Self {
        Self {
            method,
            path_suffix: path_suffix.to_string(),
            status,
            body: Value::Null,
            times,
            delay: Duration::ZERO,
        }
    }

    pub fn with_body(mut self, body: Value) -> Self {
        self.body = body;
        self
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// How a request authenticated, as the proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthSeen {
    None,
    Basic,
    Token,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub auth: AuthSeen,
    /// 0 while the proxy has not answered.
    pub status: u16,
    pub body: Value,
}

#[derive(Default)]
pub struct Behaviour {
    pub faults: Vec<Fault>,
    pub sessions: bool,
    pub hide_system_vmedia: bool,
    pub hide_manager_vmedia: bool,
    pub patch_only_vmedia: bool,
    pub swallow_reset: bool,
}

#[derive(Default)]
struct State {
    behaviour: Behaviour,
    seen: Vec<Seen>,
    /// token -> (session path, basic credentials for upstream)
    tokens: HashMap<String, (String, String)>,
    next_session: u32,
    logins: u32,
    logouts: Vec<String>,
}

#[derive(Clone)]
pub struct RedfishProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

struct Ctx {
    state: Arc<Mutex<State>>,
    upstream: String,
    http: reqwest::Client,
}

impl RedfishProxy {
    /// Starts the proxy on the current tokio runtime, forwarding to `upstream` (plain http).
    pub async fn start(upstream: &str, behaviour: Behaviour) -> Self {
        let state = Arc::new(Mutex::new(State {
            behaviour,
            ..State::default()
        }));
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        });
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let ctx = ctx.clone();
                async move { handle(&ctx, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Requests whose method is `method` and whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .count()
    }

    pub fn update(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.state.lock().unwrap().behaviour);
    }

    /// Forgets every session token: the next request with one gets 401.
    pub fn expire_sessions(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    pub fn logins(&self) -> u32 {
        self.state.lock().unwrap().logins
    }

    /// Paths of the sessions deleted (logged out) so far.
    pub fn logouts(&self) -> Vec<String> {
        self.state.lock().unwrap().logouts.clone()
    }
}

fn auth_seen(headers: &HeaderMap) -> AuthSeen {
    if headers.contains_key("x-auth-token") {
        AuthSeen::Token
    } else if headers.contains_key(header::AUTHORIZATION) {
        AuthSeen::Basic
    } else {
        AuthSeen::None
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let builder = Response::builder().status(StatusCode::from_u16(status).unwrap());
    if body.is_null() {
        builder.body(Body::empty()).unwrap()
    } else {
        builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }
}

fn redfish_error(message: &str) -> Value {
    json!({"error": {"code": "Base.1.0.GeneralError", "message": message}})
}

async fn handle(ctx: &Ctx, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // Recorded on arrival (status 0 until answered): a request that hangs still counts.
    let index = {
        let mut st = ctx.state.lock().unwrap();
        st.seen.push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            auth: auth_seen(&headers),
            status: 0,
            body: request.clone(),
        });
        st.seen.len() - 1
    };
    let resp = respond(ctx, &method, &uri, &headers, &body, &request).await;
    ctx.state.lock().unwrap().seen[index].status = resp.status().as_u16();
    resp
}

async fn respond(
    ctx: &Ctx,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    request: &Value,
) -> Response {
    let path = uri.path();
    if let Some(fault) = take_fault(ctx, method, path) {
        tokio::time::sleep(fault.delay).await;
        return json_response(fault.status, &fault.body);
    }
    let sessions = ctx.state.lock().unwrap().behaviour.sessions;
    if sessions && path.trim_end_matches('/') == SESSIONS && method == Method::POST {
        return login(ctx, request).await;
    }
    // Swap a session token for the basic credentials it was created with.
    let mut upstream_auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(token) = headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
        let found = ctx.state.lock().unwrap().tokens.get(token).cloned();
        let Some((session_path, basic)) = found else {
            return json_response(401, &redfish_error("The session token is not valid."));
        };
        if method == Method::DELETE && path == session_path {
            let mut st = ctx.state.lock().unwrap();
            st.tokens.remove(token);
            st.logouts.push(session_path);
            return json_response(204, &Value::Null);
        }
        upstream_auth = Some(basic);
    }
    let (b, swallow) = {
        let st = ctx.state.lock().unwrap();
        (st.behaviour.patch_only_vmedia, st.behaviour.swallow_reset)
    };
    if swallow && method == Method::POST && path.ends_with("/Actions/ComputerSystem.Reset") {
        return json_response(204, &Value::Null);
    }
    let (method, path, body) = if b && method == Method::PATCH && path.contains("/VirtualMedia/") {
        // Emulate a PATCH-only BMC with the emulator's actions.
        let action = if request.get("Inserted") == Some(&json!(false)) {
            "EjectMedia"
        } else {
            "InsertMedia"
        };
        let forwarded = if action == "EjectMedia" {
            json!({})
        } else {
            json!({"Image": request["Image"], "Inserted": true,
                "WriteProtected": request.get("WriteProtected").cloned().unwrap_or(json!(true))})
        };
        (
            Method::POST,
            format!("{path}/Actions/VirtualMedia.{action}"),
            Bytes::from(forwarded.to_string()),
        )
    } else {
        (method.clone(), uri.to_string(), body.clone())
    };
    forward(ctx, method, &path, upstream_auth, headers, body).await
}

fn take_fault(ctx: &Ctx, method: &Method, path: &str) -> Option<Fault> {
    let mut st = ctx.state.lock().unwrap();
    let fault = st.behaviour.faults.iter_mut().find(|f| {
        f.times > 0
            && f.method.is_none_or(|m| m == method.as_str())
            && path
                .trim_end_matches('/')
                .ends_with(f.path_suffix.trim_end_matches('/'))
    })?;
    fault.times -= 1;
    Some(fault.clone())
}

async fn login(ctx: &Ctx, request: &Value) -> Response {
    let user = request["UserName"].as_str().unwrap_or_default();
    let password = request["Password"].as_str().unwrap_or_default();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    // The emulator decides whether the credentials are good.
    let check = ctx
        .http
        .get(format!("{}/redfish/v1/Systems", ctx.upstream))
        .header(header::AUTHORIZATION, &basic)
        .send()
        .await
        .unwrap();
    if !check.status().is_success() {
        return json_response(401, &redfish_error("Invalid user name or password."));
    }
    let mut st = ctx.state.lock().unwrap();
    st.next_session += 1;
    st.logins += 1;
    let id = st.next_session;
    let token = format!("token-{id}-{}", uuid::Uuid::new_v4().simple());
    let session_path = format!("{SESSIONS}/{id}");
    st.tokens
        .insert(token.clone(), (session_path.clone(), basic));
    Response::builder()
        .status(StatusCode::CREATED)
        .header("x-auth-token", token)
        .header(header::LOCATION, &session_path)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"@odata.id": session_path, "Id": id.to_string(), "UserName": user}).to_string(),
        ))
        .unwrap()
}

async fn forward(
    ctx: &Ctx,
    method: Method,
    path_and_query: &str,
    auth: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut req = ctx
        .http
        .request(method.clone(), format!("{}{path_and_query}", ctx.upstream))
        .body(body);
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    for name in [header::CONTENT_TYPE, header::IF_MATCH] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name, v);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return json_response(502, &redfish_error(&format!("proxy: {e}"))),
    };
    let status = resp.status().as_u16();
    let location = resp.headers().get(header::LOCATION).cloned();
    let bytes = resp.bytes().await.unwrap_or_default();
    let mut out = match serde_json::from_slice::<Value>(&bytes) {
        Ok(doc) if method == Method::GET => json_response(status, &rewrite(ctx, doc)),
        _ => Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap(),
    };
    if let Some(l) = location {
        out.headers_mut().insert(header::LOCATION, l);
    }
    out
}

/// Applies the behaviour's changes to a document the emulator served.
fn rewrite(ctx: &Ctx, mut doc: Value) -> Value {
    let st = ctx.state.lock().unwrap();
    let b = &st.behaviour;
    let kind = doc["@odata.type"].as_str().unwrap_or_default().to_string();
    let Some(obj) = doc.as_object_mut() else {
        return doc;
    };
    if kind.contains("ServiceRoot") && b.sessions {
        obj.insert(
            "SessionService".into(),
            json!({"@odata.id": "/redfish/v1/SessionService"}),
        );
        obj.entry("Links")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap()
            .insert("Sessions".into(), json!({"@odata.id": SESSIONS}));
    }
    if kind.contains("ComputerSystem.") && (b.hide_system_vmedia || b.hide_manager_vmedia) {
        obj.remove("VirtualMedia");
    }
    if kind.contains("Manager.") && b.hide_manager_vmedia {
        obj.remove("VirtualMedia");
    }
    if kind.contains("VirtualMedia.") && b.patch_only_vmedia {
        obj.remove("Actions");
    }
    doc
}

/// Accepts connections and never answers (a BMC that hangs).
pub struct Hang {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Hang {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        Self { addr, task }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        self.task.abort();
    }
}
