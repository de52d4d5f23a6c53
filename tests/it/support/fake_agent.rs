//! A stand-in for ironic-python-agent at the protocol level (axum on 127.0.0.1:0): it answers
//! the commands a `direct` deploy sends — `get_deploy_steps`, `execute_deploy_step`
//! (`write_image`, asynchronous: RUNNING, then SUCCEEDED in the command list),
//! `get_partition_uuids` (the root UUID it was given), `power_off` — and refuses any request
//! without the agent token it was started with. The test plays the agent's other half
//! (lookup, heartbeats) against ironboot's API. Used where the real agent's disk work adds
//! nothing (virtual media, take over); `agent_ipa` runs the real one.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Default)]
struct Inner {
    token: String,
    root_uuid: String,
    commands: Vec<Value>,
    /// Every command name received, in order (`deploy.get_deploy_steps`, ...).
    received: Vec<String>,
    refused: usize,
}

#[derive(Clone)]
pub struct FakeAgent {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

fn token_of(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "agent_token")
        .map(|(_, v)| v.into_owned())
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            json!({"faultcode": "Client", "faultstring": "401 Unauthorized: Token invalid."}),
        ),
    )
        .into_response()
}

async fn post_command(
    State(a): State<Arc<Mutex<Inner>>>,
    RawQuery(q): RawQuery,
    body: String,
) -> Response {
    let mut a = a.lock().unwrap();
    if token_of(q.as_deref()).as_deref() != Some(a.token.as_str()) {
        a.refused += 1;
        return unauthorized();
    }
    let cmd: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let name = cmd["name"].as_str().unwrap_or_default().to_string();
    a.received.push(name.clone());
    let short = name.split('.').nth(1).unwrap_or_default().to_string();
    let (status, result) = match name.as_str() {
        "deploy.get_deploy_steps" => (
            "SUCCEEDED",
            json!({"deploy_steps": {"GenericHardwareManager": []},
                   "hardware_manager_version": {"generic_hardware_manager": "1"}}),
        ),
        // Asynchronous: RUNNING now, SUCCEEDED when listed.
        "deploy.execute_deploy_step" => ("RUNNING", Value::Null),
        "standby.get_partition_uuids" => (
            "SUCCEEDED",
            json!({"root uuid": a.root_uuid, "efi system partition uuid": null,
                   "PReP Boot partition uuid": null, "partitions": {}}),
        ),
        _ => ("SUCCEEDED", json!({})),
    };
    let entry = json!({"id": format!("{}", a.commands.len() + 1), "command_name": short,
        "command_status": status, "command_error": null, "command_result": result});
    a.commands.push(entry.clone());
    axum::Json(entry).into_response()
}

async fn list_commands(State(a): State<Arc<Mutex<Inner>>>, RawQuery(q): RawQuery) -> Response {
    let mut a = a.lock().unwrap();
    if token_of(q.as_deref()).as_deref() != Some(a.token.as_str()) {
        a.refused += 1;
        return unauthorized();
    }
    for c in a.commands.iter_mut() {
        if c["command_name"] == "execute_deploy_step" && c["command_status"] == "RUNNING" {
            c["command_status"] = json!("SUCCEEDED");
            c["command_result"] = json!({"deploy_step": {"interface": "deploy",
                "step": "write_image", "priority": 80}});
        }
    }
    axum::Json(json!({"commands": a.commands})).into_response()
}

impl FakeAgent {
    /// Starts on the current runtime; accepts only `token`, reports `root_uuid`.
    pub async fn start(token: &str, root_uuid: &str) -> FakeAgent {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.to_string(),
            root_uuid: root_uuid.to_string(),
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/v1/commands/", post(post_command).get(list_commands))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeAgent {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// The command names received so far.
    pub fn received(&self) -> Vec<String> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Requests refused for a missing or wrong token.
    pub fn refused(&self) -> usize {
        self.inner.lock().unwrap().refused
    }
}
