//! The client of the agent's command API: `POST {agent_url}/v1/commands/?wait=&agent_token=`
//! and `GET {agent_url}/v1/commands/?agent_token=`.
//!
//! The token travels only in the query string (the agent reads it nowhere else), so URLs are
//! never logged or put in errors. Connection failures are retried a bounded number of times;
//! a POST whose answer was lost counts as sent when the agent lists it as running.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::AgentError;
use super::metrics::AgentMetrics;
use super::tls;

/// How the client behaves (from `[agent]`).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub command_timeout: Duration,
    pub max_attempts: u32,
    /// Pause between attempts after a connection failure.
    pub retry_delay: Duration,
    /// Refuse plain `http://` agent URLs.
    pub require_tls: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            command_timeout: Duration::from_secs(60),
            max_attempts: 3,
            retry_delay: Duration::from_secs(2),
            require_tls: true,
        }
    }
}

/// `command_status` of a command result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandStatus {
    Running,
    Succeeded,
    Failed,
    /// `VERSION_MISMATCH` / `CLEAN_VERSION_MISMATCH`: the steps were listed by another
    /// hardware manager version than the one now running.
    VersionMismatch(String),
    Other(String),
}

impl<'de> Deserialize<'de> for CommandStatus {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "RUNNING" => CommandStatus::Running,
            "SUCCEEDED" => CommandStatus::Succeeded,
            "FAILED" => CommandStatus::Failed,
            _ if s.ends_with("VERSION_MISMATCH") => CommandStatus::VersionMismatch(s),
            _ => CommandStatus::Other(s),
        })
    }
}

/// `command_error`: an object from IPA (type, code, message, details), a bare string from
/// older agents.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum CommandError {
    Detailed {
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        code: Option<u16>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        details: Option<String>,
    },
    Text(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Text(t) => f.write_str(t),
            CommandError::Detailed {
                kind,
                message,
                details,
                ..
            } => {
                let kind = kind.as_deref().unwrap_or("Error");
                // `details` is the most specific text IPA has; `message` the class's summary.
                match (details.as_deref(), message.as_deref()) {
                    (Some(d), _) if !d.is_empty() => write!(f, "{kind}: {d}"),
                    (_, Some(m)) => write!(f, "{kind}: {m}"),
                    _ => f.write_str(kind),
                }
            }
        }
    }
}

/// One entry of the agent's command list (also the answer to a POST).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CommandResult {
    #[serde(default)]
    pub id: Option<String>,
    /// Without the extension prefix (`execute_deploy_step`).
    pub command_name: String,
    pub command_status: CommandStatus,
    #[serde(default)]
    pub command_error: Option<CommandError>,
    #[serde(default)]
    pub command_result: Option<Value>,
}

impl CommandResult {
    /// The error text for a failed command.
    pub fn error_text(&self) -> String {
        self.command_error
            .as_ref()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "no error reported".into())
    }
}

#[derive(Debug, Deserialize)]
struct CommandList {
    commands: Vec<CommandResult>,
}

/// A client for one agent process (its callback URL and token).
#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    base: String,
    commands_url: String,
    token: String,
    opts: ClientOptions,
    metrics: Option<AgentMetrics>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("agent", &self.base)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// A client for the agent at `callback_url` (from its heartbeat), sending `token`, trusting
    /// only `verify_ca` (the PEM from its heartbeat) when the URL is https.
    pub fn new(
        callback_url: &str,
        token: &str,
        verify_ca: Option<&str>,
        opts: ClientOptions,
        metrics: Option<AgentMetrics>,
    ) -> Result<AgentClient, AgentError> {
        let setup = |reason: String| AgentError::Setup {
            url: callback_url.to_string(),
            reason,
        };
        let url = reqwest::Url::parse(callback_url)
            .map_err(|e| setup(format!("callback_url is not a URL: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .timeout(opts.command_timeout)
            .connect_timeout(opts.command_timeout.min(Duration::from_secs(15)))
            .redirect(reqwest::redirect::Policy::none());
        match url.scheme() {
            "https" => {
                let pem = verify_ca.ok_or_else(|| {
                    setup(
                        "the agent uses https but sent no certificate (agent_verify_ca) to pin"
                            .into(),
                    )
                })?;
                let config = tls::pinned_client_config(pem).map_err(|e| setup(e.to_string()))?;
                builder = builder.tls_backend_preconfigured(config);
            }
            "http" if !opts.require_tls => {
                // No TLS is ever used (redirects are off), but reqwest still wants a backend;
                // hand it one that trusts nothing rather than rely on a process-wide default.
                builder = builder.tls_backend_preconfigured(tls::no_trust_client_config());
            }
            "http" => {
                return Err(setup(
                    "plain http to the agent is refused ([agent] require_tls = true); \
                     the agent must use auto-TLS (API version >= 1.68)"
                        .into(),
                ));
            }
            other => return Err(setup(format!("unsupported scheme {other:?}"))),
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot build the HTTP client: {e}")))?;
        let base = callback_url.trim_end_matches('/').to_string();
        Ok(AgentClient {
            http,
            commands_url: format!("{base}/v1/commands/"),
            base,
            token: token.to_string(),
            opts,
            metrics,
        })
    }

    /// The agent's base URL (no token; safe to log).
    pub fn url(&self) -> &str {
        &self.base
    }

    fn query(&self, wait: Option<bool>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(w) = wait {
            q.append_pair("wait", if w { "true" } else { "false" });
        }
        q.append_pair("agent_token", &self.token);
        q.finish()
    }

    fn record(&self, command: &str, outcome: &str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.record(command, outcome, started.elapsed().as_secs_f64());
        }
    }

    /// Sends `name` (`<extension>.<command>`) with `params`. With `wait` the agent answers
    /// when the command is done; otherwise an async command comes back `RUNNING`.
    pub async fn execute(
        &self,
        name: &str,
        params: Value,
        wait: bool,
    ) -> Result<CommandResult, AgentError> {
        let started = Instant::now();
        let url = format!("{}?{}", self.commands_url, self.query(Some(wait)));
        let body = json!({ "name": name, "params": params });
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.http.post(&url).json(&body).send().await {
                Ok(resp) => break self.read::<CommandResult>(resp, name).await,
                Err(e) => {
                    let maybe_sent = e.is_timeout() || e.is_request();
                    let e = e.without_url();
                    // The request may have reached the agent before the answer was lost: if the
                    // agent lists this command as running, it was sent.
                    if maybe_sent
                        && let Ok(list) = self.list_commands().await
                        && let Some(last) = list.last()
                        && Some(last.command_name.as_str()) == name.split('.').nth(1)
                        && last.command_status == CommandStatus::Running
                    {
                        tracing::warn!(agent = %self.base, command = name,
                            error = %crate::error_chain::chain(&e),
                            "answer lost, but the agent runs the command");
                        break Ok(last.clone());
                    }
                    if attempt >= self.opts.max_attempts {
                        break Err(AgentError::Connection {
                            url: self.base.clone(),
                            command: name.to_string(),
                            attempts: attempt,
                            source: e,
                        });
                    }
                    tracing::warn!(agent = %self.base, command = name, attempt,
                        error = %crate::error_chain::chain(&e), "agent not reachable, retrying");
                    tokio::time::sleep(self.opts.retry_delay).await;
                }
            }
        };
        let outcome = match &result {
            Ok(r) => status_label(&r.command_status),
            Err(AgentError::Busy { .. }) => "busy",
            Err(_) => "error",
        };
        self.record(name, outcome, started);
        if let Ok(r) = &result {
            tracing::info!(agent = %self.base, command = name, status = ?r.command_status, "agent command sent");
        }
        result
    }

    /// Every command the agent ran since it started, oldest first.
    pub async fn list_commands(&self) -> Result<Vec<CommandResult>, AgentError> {
        const WHAT: &str = "list commands";
        let started = Instant::now();
        let url = format!("{}?{}", self.commands_url, self.query(None));
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            match self.http.get(&url).send().await {
                Ok(resp) => {
                    break self
                        .read::<CommandList>(resp, WHAT)
                        .await
                        .map(|l| l.commands);
                }
                Err(e) if attempt >= self.opts.max_attempts => {
                    break Err(AgentError::Connection {
                        url: self.base.clone(),
                        command: WHAT.into(),
                        attempts: attempt,
                        source: e.without_url(),
                    });
                }
                Err(_) => tokio::time::sleep(self.opts.retry_delay).await,
            }
        };
        self.record(
            "list_commands",
            if result.is_ok() { "ok" } else { "error" },
            started,
        );
        result
    }

    /// Polls the command list until the last `command_name` entry is no longer running.
    pub async fn wait_for(
        &self,
        command_name: &str,
        interval: Duration,
        attempts: u32,
    ) -> Result<CommandResult, AgentError> {
        for _ in 0..attempts {
            let list = self.list_commands().await?;
            if let Some(c) = list.iter().rev().find(|c| c.command_name == command_name)
                && c.command_status != CommandStatus::Running
            {
                return Ok(c.clone());
            }
            tokio::time::sleep(interval).await;
        }
        Err(AgentError::Timeout {
            url: self.base.clone(),
            command: command_name.to_string(),
            waited_secs: interval.as_secs() * u64::from(attempts),
        })
    }

    /// Reads an answer: 2xx JSON, or the agent's `{faultcode, faultstring}` mapped by status.
    async fn read<T: serde::de::DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        command: &str,
    ) -> Result<T, AgentError> {
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| AgentError::Connection {
            url: self.base.clone(),
            command: command.to_string(),
            attempts: 1,
            source: e.without_url(),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| AgentError::InvalidResponse {
                url: self.base.clone(),
                command: command.to_string(),
                reason: format!(
                    "{e}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                ),
            });
        }
        let message = fault_text(&bytes);
        let (url, command) = (self.base.clone(), command.to_string());
        Err(match status.as_u16() {
            409 => AgentError::Busy {
                url,
                command,
                message,
            },
            401 => AgentError::Unauthorized {
                url,
                command,
                message,
            },
            _ if message.to_ascii_lowercase().contains("agent is busy") => AgentError::Busy {
                url,
                command,
                message,
            },
            code => AgentError::Api {
                url,
                command,
                status: code,
                message,
            },
        })
    }
}

fn status_label(s: &CommandStatus) -> &'static str {
    match s {
        CommandStatus::Running => "running",
        CommandStatus::Succeeded => "succeeded",
        CommandStatus::Failed => "failed",
        CommandStatus::VersionMismatch(_) => "version_mismatch",
        CommandStatus::Other(_) => "other",
    }
}

/// The agent's `faultstring`, or the raw body.
fn fault_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("faultstring")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_results_parse_every_documented_shape() {
        let running: CommandResult = serde_json::from_value(json!({
            "id": "1", "command_name": "execute_deploy_step", "command_status": "RUNNING",
            "command_error": null, "command_result": null}))
        .unwrap();
        assert_eq!(running.command_status, CommandStatus::Running);
        let failed: CommandResult = serde_json::from_value(json!({
            "id": "2", "command_name": "execute_deploy_step", "command_status": "FAILED",
            "command_error": {"type": "ImageChecksumError", "code": 500,
                              "message": "Error verifying image checksum",
                              "details": "Image failed to verify against checksum"},
            "command_result": null}))
        .unwrap();
        assert_eq!(
            failed.error_text(),
            "ImageChecksumError: Image failed to verify against checksum"
        );
        let old: CommandResult = serde_json::from_value(json!({
            "command_name": "prepare_image", "command_status": "FAILED",
            "command_error": "disk on fire"}))
        .unwrap();
        assert_eq!(old.error_text(), "disk on fire");
        let mismatch: CommandResult = serde_json::from_value(json!({
            "command_name": "execute_clean_step", "command_status": "CLEAN_VERSION_MISMATCH"}))
        .unwrap();
        assert!(matches!(
            mismatch.command_status,
            CommandStatus::VersionMismatch(_)
        ));
    }

    #[test]
    fn plain_http_needs_require_tls_off_and_https_needs_a_pin() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let err = AgentClient::new(
            "http://127.0.0.1:9999",
            "t",
            None,
            ClientOptions::default(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("require_tls"), "{err}");
        let err = AgentClient::new(
            "https://127.0.0.1:9999",
            "t",
            None,
            ClientOptions::default(),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("agent_verify_ca"), "{err}");
        let opts = ClientOptions {
            require_tls: false,
            ..Default::default()
        };
        let c = AgentClient::new("http://127.0.0.1:9999/", "t", None, opts, None).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:9999");
        assert!(c.query(Some(false)).contains("wait=false&agent_token=t"));
    }
}

/// Every parser of agent answers in this module, on one body (the `fuzz/` targets call this;
/// built only with `--cfg fuzzing`).
#[cfg(fuzzing)]
pub fn fuzz_parse_answer(bytes: &[u8]) {
    let _ = fault_text(bytes);
    if let Ok(list) = serde_json::from_slice::<CommandList>(bytes) {
        for c in &list.commands {
            let _ = (c.error_text(), status_label(&c.command_status));
        }
    }
    if let Ok(c) = serde_json::from_slice::<CommandResult>(bytes) {
        let _ = (c.error_text(), status_label(&c.command_status));
    }
}
