//! The transport to one BMC: requests with the node's credentials (a session token or basic
//! authentication), bounded retries with back-off, and errors that name the BMC, the call, the
//! status and the BMC's own messages.
//!
//! Retries: a connection that cannot be made and a 5xx answer are retried for every method; a
//! timeout or a connection lost mid-request only for GET, PATCH and DELETE, because a POST
//! (a reset, an insert) may have been carried out already. A session token the BMC rejects
//! (401) is renewed once per call without using up an attempt.

use std::sync::Arc;
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::Value;
use tracing::{debug, warn};

use super::driver_info::Secret;
use super::error::{RedfishError, redfish_messages, text_excerpt};
use super::metrics::{Outcome, RedfishMetrics};
use super::session::{Session, SessionSlot};
use super::settings::RedfishSettings;
use super::tls::certificate_problem;

/// How requests authenticate once the BMC's abilities are known.
#[derive(Clone)]
pub(crate) enum Auth {
    /// No credentials in driver_info.
    None,
    Basic,
    Session(Arc<SessionSlot>),
}

/// The credentials one exchange carries.
#[derive(Clone, Copy)]
pub(crate) enum Credentials<'a> {
    None,
    Basic,
    Token(&'a Session),
}

/// An answer: status, the headers callers use, and the JSON body (`Null` when empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    /// The body when it is not JSON (error pages), one line.
    pub text: Option<String>,
    pub attempts: u32,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(crate) struct Transport {
    /// `https://10.0.0.5`, as every error names the BMC.
    pub bmc: String,
    base: Url,
    pub(crate) http: Client,
    pub(crate) user: Option<String>,
    pub(crate) password: Secret,
    pub(crate) auth: Auth,
    pub(crate) settings: Arc<RedfishSettings>,
    pub(crate) metrics: Option<RedfishMetrics>,
}

impl Transport {
    pub fn new(
        base: Url,
        http: Client,
        user: Option<String>,
        password: Secret,
        settings: Arc<RedfishSettings>,
        metrics: Option<RedfishMetrics>,
    ) -> Self {
        Self {
            bmc: base.as_str().trim_end_matches('/').to_string(),
            base,
            http,
            user,
            password,
            auth: Auth::None,
            settings,
            metrics,
        }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub async fn get(&self, path: &str) -> Result<Value, RedfishError> {
        let reply = self.call(Method::GET, path, None, None).await?;
        if !reply.body.is_object() {
            return Err(self.invalid(&Method::GET, path, "the answer is not a JSON object".into()));
        }
        Ok(reply.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Reply, RedfishError> {
        self.call(Method::POST, path, Some(body), None).await
    }

    pub async fn patch(
        &self,
        path: &str,
        body: &Value,
        etag: Option<&str>,
    ) -> Result<Reply, RedfishError> {
        self.call(Method::PATCH, path, Some(body), etag).await
    }

    /// One call with the configured authentication; non-2xx answers become errors.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Reply, RedfishError> {
        let mut renewed = false;
        loop {
            let session = match &self.auth {
                Auth::Session(slot) => Some(slot.session(self).await?),
                _ => None,
            };
            let credentials = match (&self.auth, &session) {
                (_, Some(s)) => Credentials::Token(s),
                (Auth::Basic, _) => Credentials::Basic,
                _ => Credentials::None,
            };
            let reply = self
                .exchange(&method, path, body, if_match, credentials)
                .await?;
            if reply.status == StatusCode::UNAUTHORIZED
                && let (Auth::Session(slot), Some(rejected), false) =
                    (&self.auth, &session, renewed)
            {
                debug!(bmc = %self.bmc, "BMC rejected the session token; logging in again");
                slot.invalidate(rejected).await;
                renewed = true;
                continue;
            }
            return self.check(&method, path, reply);
        }
    }

    /// Turns a non-2xx answer into the error that says what to do about it.
    pub fn check(&self, method: &Method, path: &str, reply: Reply) -> Result<Reply, RedfishError> {
        if reply.status.is_success() {
            return Ok(reply);
        }
        let mut messages = redfish_messages(&reply.body);
        if messages.is_empty()
            && let Some(text) = &reply.text
        {
            messages.push(text.clone());
        }
        if reply.status == StatusCode::UNAUTHORIZED {
            return Err(RedfishError::Unauthorized {
                bmc: self.bmc.clone(),
                method: method.to_string(),
                path: path.to_string(),
                status: reply.status.as_u16(),
                user: self.user.clone().unwrap_or_default(),
                messages,
            });
        }
        Err(RedfishError::Status {
            bmc: self.bmc.clone(),
            method: method.to_string(),
            path: path.to_string(),
            status: reply.status.as_u16(),
            attempts: reply.attempts,
            messages,
        })
    }

    /// Sends one request, retrying connection failures and 5xx answers. Returns the last
    /// answer whatever its status; errors only when no answer came.
    pub async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
        credentials: Credentials<'_>,
    ) -> Result<Reply, RedfishError> {
        let url = self.resolve(method, path)?;
        let attempts = self.settings.connection_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self
                .send_once(method, url.clone(), body, if_match, credentials)
                .await;
            self.record(method, &result, started);
            let retry = match &result {
                Ok(reply) => reply.status.is_server_error(),
                Err(e) => retryable(method, e),
            };
            if !retry || attempt >= attempts {
                return match result {
                    Ok(mut reply) => {
                        reply.attempts = attempt;
                        Ok(reply)
                    }
                    Err(e) => Err(self.transport_error(method, path, attempt, e)),
                };
            }
            let pause = self.settings.retry_pause(attempt);
            let what = match &result {
                Ok(reply) => reply.status.to_string(),
                Err(e) => crate::error_chain::chain(e),
            };
            warn!(bmc = %self.bmc, %method, path, attempt, attempts, error = %what, ?pause,
                "BMC call failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: Url,
        body: Option<&Value>,
        if_match: Option<&str>,
        credentials: Credentials<'_>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("Accept", "application/json")
            .header("OData-Version", "4.0");
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(etag) = if_match {
            req = req.header("If-Match", etag);
        }
        req = match credentials {
            Credentials::None => req,
            Credentials::Basic => req.basic_auth(
                self.user.as_deref().unwrap_or_default(),
                Some(self.password.expose()),
            ),
            Credentials::Token(session) => match HeaderValue::from_str(session.token.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req.header("X-Auth-Token", v)
                }
                // Checked at login; a token that is not a header value is never stored.
                Err(_) => req,
            },
        };
        let resp = req.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        let (body, text) = if bytes.iter().all(u8::is_ascii_whitespace) {
            (Value::Null, None)
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => (v, None),
                Err(_) => (Value::Null, text_excerpt(&bytes)),
            }
        };
        debug!(bmc = %self.bmc, %method, status = status.as_u16(), "BMC call");
        Ok(Reply {
            status,
            headers,
            body,
            text,
            attempts: 1,
        })
    }

    /// The URL of a path (or of an absolute link) on this BMC; a link elsewhere is refused,
    /// since the credentials would follow it.
    pub fn resolve(&self, method: &Method, path: &str) -> Result<Url, RedfishError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| self.invalid(method, path, format!("not a usable link: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(self.invalid(
                method,
                path,
                "the link points to another host; credentials are only sent to redfish_address"
                    .into(),
            ));
        }
        Ok(url)
    }

    pub fn invalid(&self, method: &Method, path: &str, reason: String) -> RedfishError {
        RedfishError::InvalidResponse {
            bmc: self.bmc.clone(),
            method: method.to_string(),
            path: path.to_string(),
            reason,
        }
    }

    fn transport_error(
        &self,
        method: &Method,
        path: &str,
        attempts: u32,
        source: reqwest::Error,
    ) -> RedfishError {
        if let Some(problem) = certificate_problem(&source) {
            return RedfishError::Certificate {
                bmc: self.bmc.clone(),
                method: method.to_string(),
                path: path.to_string(),
                problem,
                source,
            };
        }
        RedfishError::Unreachable {
            bmc: self.bmc.clone(),
            method: method.to_string(),
            path: path.to_string(),
            attempts,
            timeout: self.settings.request_timeout(),
            source,
        }
    }

    fn record(&self, method: &Method, result: &Result<Reply, reqwest::Error>, started: Instant) {
        let Some(metrics) = &self.metrics else { return };
        let outcome = match result {
            Ok(r) if r.status.is_success() => Outcome::success,
            Ok(r) if matches!(r.status.as_u16(), 401 | 403) => Outcome::unauthorized,
            Ok(r) if r.status.is_server_error() => Outcome::server_error,
            Ok(_) => Outcome::client_error,
            Err(e) if e.is_timeout() => Outcome::timeout,
            Err(_) => Outcome::connection_error,
        };
        metrics.record(
            method_label(method),
            outcome,
            started.elapsed().as_secs_f64(),
        );
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "OTHER",
    }
}

/// Whether a failed exchange may be sent again (see the module docs).
fn retryable(method: &Method, err: &reqwest::Error) -> bool {
    if certificate_problem(err).is_some() {
        return false;
    }
    if err.is_connect() {
        return true;
    }
    *method != Method::POST
}
