//! The conductor's ramdisk API as IPA calls it: version discovery (`GET /`), lookup by MAC
//! (`GET /v1/lookup`, retried with backoff until `ipa-lookup-timeout`), heartbeats
//! (`POST /v1/heartbeat/{uuid}`). The microversion decides what a heartbeat carries: the
//! agent version from 1.36, the token from 1.62, the certificate (auto-TLS) from 1.68.

use std::time::{Duration, Instant};

use ironboot::model::MacAddress;
use serde_json::{Value, json};

use crate::settings::Settings;

/// When discovery fails IPA assumes this version (no token, no TLS).
const FALLBACK_VERSION: u32 = 31;
pub const VERSION_TOKEN: u32 = 62;
pub const VERSION_TLS: u32 = 68;

#[derive(Debug, thiserror::Error)]
pub enum IronicError {
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{url} answered {status}: {text}")]
    Status {
        url: String,
        status: u16,
        text: String,
    },
    #[error("lookup found no node for {macs:?} within {waited:?} (last error: {last})")]
    LookupTimeout {
        macs: Vec<String>,
        waited: Duration,
        last: String,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// What lookup returned.
#[derive(Debug, Clone)]
pub struct Lookup {
    pub node: Value,
    pub node_uuid: String,
    pub config: Value,
}

/// A heartbeat's body fields.
pub struct Beat<'a> {
    pub callback_url: &'a str,
    pub token: Option<&'a str>,
    pub agent_version: &'a str,
    pub verify_ca: Option<&'a str>,
}

pub struct IronicClient {
    http: reqwest::Client,
    urls: Vec<String>,
    request_id: Option<String>,
    /// The discovered (or configured) minor version.
    pub version: u32,
}

/// A request error with its causes ("error sending request: ...: Connection refused"),
/// without the URL (callers name it; a URL may carry a token).
pub fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The text of an Ironic error body (`error_message`, itself maybe JSON with `faultstring`).
fn error_text(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let msg = v
        .get("error_message")
        .and_then(Value::as_str)
        .unwrap_or(body);
    serde_json::from_str::<Value>(msg)
        .ok()
        .and_then(|m| {
            m.get("faultstring")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| msg.chars().take(500).collect())
}

impl IronicClient {
    pub fn new(settings: &Settings) -> Result<IronicClient, IronicError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::tls::client_config(settings.download.insecure))
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .map_err(|e| IronicError::Client(e.to_string()))?;
        Ok(IronicClient {
            http,
            urls: settings.api_urls.clone(),
            request_id: settings.global_request_id.clone(),
            version: settings.api_version.unwrap_or(0),
        })
    }

    fn get(&self, url: &str, version: Option<u32>) -> reqwest::RequestBuilder {
        self.with_headers(self.http.get(url), version)
    }

    fn with_headers(
        &self,
        mut r: reqwest::RequestBuilder,
        version: Option<u32>,
    ) -> reqwest::RequestBuilder {
        r = r.header("Accept", "application/json");
        if let Some(v) = version {
            r = r.header("X-OpenStack-Ironic-API-Version", format!("1.{v}"));
        }
        if let Some(id) = &self.request_id {
            r = r.header("X-OpenStack-Request-ID", id);
        }
        r
    }

    /// The first API URL that answers (all are tried, in order).
    pub fn base(&self) -> &str {
        &self.urls[0]
    }

    /// `GET /`: the API's default version (1.31 assumed when it cannot be read).
    pub async fn discover_version(&mut self) {
        if self.version != 0 {
            return;
        }
        for url in self.urls.clone() {
            let found = async {
                let v: Value = self
                    .get(&format!("{url}/"), None)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let s = v
                    .get("default_version")?
                    .get("version")?
                    .as_str()?
                    .to_string();
                s.strip_prefix("1.")?.parse::<u32>().ok()
            }
            .await;
            if let Some(v) = found {
                tracing::info!(api = %url, version = format!("1.{v}"), "API version discovered");
                self.version = v;
                if url != self.urls[0] {
                    self.urls.retain(|u| *u == url);
                }
                return;
            }
        }
        tracing::error!(urls = ?self.urls, "cannot read the API version; assuming 1.{FALLBACK_VERSION}");
        self.version = FALLBACK_VERSION;
    }

    async fn lookup_once(
        &self,
        macs: &[MacAddress],
        node_uuid: Option<&str>,
    ) -> Result<Lookup, IronicError> {
        let addresses: Vec<&str> = macs.iter().map(MacAddress::as_str).collect();
        let mut url = format!(
            "{}/v1/lookup?addresses={}",
            self.base(),
            addresses.join("%2C")
        );
        if let Some(u) = node_uuid {
            url.push_str(&format!("&node_uuid={u}"));
        }
        let http = |reason: String| IronicError::Http {
            url: url.clone(),
            reason,
        };
        let resp = self
            .get(&url, Some(self.version.min(VERSION_TOKEN)))
            .send()
            .await
            .map_err(|e| http(describe(e)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| http(describe(e)))?;
        if status != 200 {
            return Err(IronicError::Status {
                url: url.clone(),
                status,
                text: error_text(&text),
            });
        }
        let body: Value =
            serde_json::from_str(&text).map_err(|e| http(format!("invalid JSON: {e}")))?;
        let node_uuid = body["node"]["uuid"]
            .as_str()
            .ok_or_else(|| http("invalid node data: no node.uuid".into()))?
            .to_string();
        // Old conductors put heartbeat_timeout at the top level, without `config`.
        let config = match body.get("config") {
            Some(c) if c.is_object() => c.clone(),
            _ => {
                json!({"heartbeat_timeout": body.get("heartbeat_timeout").cloned().unwrap_or(json!(300))})
            }
        };
        if config
            .get("heartbeat_timeout")
            .and_then(Value::as_u64)
            .is_none()
        {
            return Err(http("invalid config: no heartbeat_timeout".into()));
        }
        Ok(Lookup {
            node: body["node"].clone(),
            node_uuid,
            config,
        })
    }

    /// Looks the node up until it is found or `ipa-lookup-timeout` passes: waits grow from
    /// `ipa-lookup-interval` (doubling, capped at 60 s); a 409 (node locked) waits longer.
    pub async fn lookup(
        &self,
        macs: &[MacAddress],
        node_uuid: Option<&str>,
        settings: &Settings,
    ) -> Result<Lookup, IronicError> {
        let started = Instant::now();
        let mut wait = settings.lookup_interval.max(Duration::from_millis(100));
        let mut conflicts = 0u32;
        loop {
            let err = match self.lookup_once(macs, node_uuid).await {
                Ok(l) => return Ok(l),
                Err(e) => e,
            };
            tracing::warn!(error = %err, "lookup failed");
            if started.elapsed() + wait > settings.lookup_timeout {
                return Err(IronicError::LookupTimeout {
                    macs: macs.iter().map(|m| m.as_str().to_string()).collect(),
                    waited: started.elapsed(),
                    last: err.to_string(),
                });
            }
            let mut pause = wait;
            if matches!(err, IronicError::Status { status: 409, .. }) {
                pause += [5, 10, 30][conflicts.min(2) as usize] * Duration::from_secs(1);
                conflicts += 1;
            }
            tokio::time::sleep(pause).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    }

    /// One heartbeat; `Ok` on 202.
    pub async fn heartbeat(&self, node_uuid: &str, beat: &Beat<'_>) -> Result<(), IronicError> {
        let url = format!("{}/v1/heartbeat/{node_uuid}", self.base());
        let version = self.version.min(VERSION_TLS);
        let mut body = json!({"callback_url": beat.callback_url});
        if version >= 36 {
            body["agent_version"] = json!(beat.agent_version);
        }
        if version >= VERSION_TOKEN {
            body["agent_token"] = json!(beat.token);
        }
        if version >= VERSION_TLS
            && let Some(ca) = beat.verify_ca
        {
            body["agent_verify_ca"] = json!(ca);
        }
        let req = self
            .with_headers(self.http.post(&url), Some(version))
            .json(&body);
        let resp = req.send().await.map_err(|e| IronicError::Http {
            url: url.clone(),
            reason: describe(e),
        })?;
        let status = resp.status().as_u16();
        if status == 202 {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(IronicError::Status {
            url,
            status,
            text: error_text(&text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ironic_error_bodies_are_read_like_ipa() {
        assert_eq!(
            error_text(
                r#"{"error_message": "{\"faultstring\": \"Node not found\", \"debuginfo\": null}"}"#
            ),
            "Node not found"
        );
        assert_eq!(error_text(r#"{"error_message": "plain"}"#), "plain");
        assert_eq!(error_text("not json"), "not json");
    }

    /// A conductor that records what it was sent.
    async fn conductor(version: &str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
        use axum::extract::{Path, RawQuery, State};
        use axum::http::HeaderMap;
        use axum::routing::{get, post};
        type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
        let seen: Seen = Default::default();
        let hdr = |h: &HeaderMap, k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(String::from);
        let v = version.to_string();
        let app = axum::Router::new()
            .route("/", get(move || async move { axum::Json(json!({"default_version": {"id": "v1", "version": v}})) }))
            .route("/v1/lookup", get(move |State(seen): State<Seen>, h: HeaderMap, RawQuery(q): RawQuery| async move {
                seen.lock().unwrap().push(json!({"call": "lookup", "query": q,
                    "version": hdr(&h, "x-openstack-ironic-api-version"),
                    "request_id": hdr(&h, "x-openstack-request-id")}));
                axum::Json(json!({"node": {"uuid": "n1"}, "config": {"heartbeat_timeout": 30,
                                  "agent_token": "t".repeat(43)}}))
            }))
            .route("/v1/heartbeat/{uuid}", post(move |State(seen): State<Seen>, Path(uuid): Path<String>, h: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                seen.lock().unwrap().push(json!({"call": "heartbeat", "uuid": uuid, "body": body,
                    "version": hdr(&h, "x-openstack-ironic-api-version")}));
                axum::http::StatusCode::ACCEPTED
            }))
            .with_state(seen.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        (url, seen)
    }

    fn settings(url: &str) -> Settings {
        let p = [
            ("ipa-api-url".to_string(), url.to_string()),
            ("ipa-global-request-id".to_string(), "req-e2e".to_string()),
        ]
        .into();
        Settings::from_params(
            &p,
            crate::settings::DiskScope::Only(vec![]),
            crate::settings::PowerRole::Process,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn lookup_and_heartbeat_carry_what_ipa_sends_for_the_api_version() {
        let (url, seen) = conductor("1.80").await;
        let s = settings(&url);
        let mut c = IronicClient::new(&s).unwrap();
        c.discover_version().await;
        assert_eq!(c.version, 80);
        let macs = [
            MacAddress::parse("52:54:00:00:00:02").unwrap(),
            MacAddress::parse("52:54:00:00:00:01").unwrap(),
        ];
        let found = c.lookup(&macs, None, &s).await.unwrap();
        assert_eq!(found.node_uuid, "n1");
        let beat = Beat {
            callback_url: "https://10.0.2.15:9999",
            token: Some("tok"),
            agent_version: "13.0.0",
            verify_ca: Some("PEM"),
        };
        c.heartbeat("n1", &beat).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            seen[0]["query"],
            "addresses=52:54:00:00:00:02%2C52:54:00:00:00:01"
        );
        assert_eq!(seen[0]["version"], "1.62");
        assert_eq!(seen[0]["request_id"], "req-e2e");
        assert_eq!(seen[1]["version"], "1.68");
        assert_eq!(
            seen[1]["body"],
            json!({"callback_url": "https://10.0.2.15:9999", "agent_token": "tok",
                                           "agent_version": "13.0.0", "agent_verify_ca": "PEM"})
        );
    }

    #[tokio::test]
    async fn an_old_api_gets_no_token_and_no_certificate() {
        let (url, seen) = conductor("1.60").await;
        let s = settings(&url);
        let mut c = IronicClient::new(&s).unwrap();
        c.discover_version().await;
        let beat = Beat {
            callback_url: "http://x:9999",
            token: Some("tok"),
            agent_version: "13.0.0",
            verify_ca: Some("PEM"),
        };
        c.heartbeat("n1", &beat).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen[0]["version"], "1.60");
        assert_eq!(
            seen[0]["body"],
            json!({"callback_url": "http://x:9999", "agent_version": "13.0.0"})
        );
    }
}
