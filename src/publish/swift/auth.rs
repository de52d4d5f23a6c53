//! Logging in to Swift: TempAuth v1 or Keystone v3 (password, project scope, storage URL from
//! the service catalog). The session is cached until shortly before it expires, shared by all
//! callers (one login at a time), and dropped when Swift rejects its token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use reqwest::{Client, StatusCode, Url};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;
use tracing::{debug, info};

use super::body_excerpt;
use crate::publish::error::{PublishError, Result};
use crate::publish::settings::{AuthVersion, Secret, SwiftSettings};

/// How long before its announced expiry a token stops being reused.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// A token and the account URL it is valid for.
#[derive(Debug)]
pub(crate) struct Session {
    pub token: Secret,
    /// `https://swift.example/v1/AUTH_<project>`, without a trailing slash.
    pub storage_url: Url,
    /// Past this instant the session is not reused.
    refresh_at: Option<Instant>,
}

impl Session {
    fn is_fresh(&self) -> bool {
        self.refresh_at.is_none_or(|t| Instant::now() < t)
    }
}

pub(crate) struct Authenticator {
    settings: SwiftSettings,
    cached: Mutex<Option<Arc<Session>>>,
    logins: Counter,
}

impl Authenticator {
    pub fn new(settings: SwiftSettings, logins: Counter) -> Self {
        Self {
            settings,
            cached: Mutex::new(None),
            logins,
        }
    }

    /// The cached session, or a new one.
    pub async fn session(&self, client: &Client) -> Result<Arc<Session>> {
        let mut cached = self.cached.lock().await;
        if let Some(session) = cached.as_ref().filter(|s| s.is_fresh()) {
            return Ok(session.clone());
        }
        let session = Arc::new(self.login(client).await?);
        *cached = Some(session.clone());
        Ok(session)
    }

    /// Forgets `rejected` after Swift answered 401 to it, unless another caller has already
    /// replaced it with a newer session.
    pub async fn invalidate(&self, rejected: &Arc<Session>) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|s| Arc::ptr_eq(s, rejected)) {
            debug!("Swift rejected the cached token; logging in again");
            *cached = None;
        }
    }

    async fn login(&self, client: &Client) -> Result<Session> {
        self.logins.inc();
        let session = match self.settings.auth_version {
            AuthVersion::Tempauth => self.login_tempauth(client).await?,
            AuthVersion::V3 => self.login_keystone(client).await?,
        };
        info!(
            auth_url = %self.settings.auth_url,
            user = %self.settings.user,
            storage_url = %session.storage_url,
            "logged in to Swift"
        );
        Ok(session)
    }

    fn auth_error(&self, reason: impl Into<String>) -> PublishError {
        PublishError::Auth {
            url: self.settings.auth_url.clone(),
            reason: reason.into(),
        }
    }

    async fn login_tempauth(&self, client: &Client) -> Result<Session> {
        let s = &self.settings;
        let resp = client
            .get(&s.auth_url)
            .header("X-Auth-User", &s.user)
            .header("X-Auth-Key", s.key.expose())
            .send()
            .await
            .map_err(|e| self.auth_error(crate::error_chain::chain(&e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            let body = body_excerpt(resp).await;
            return Err(self.auth_error(format!("{status}: {body}")));
        }
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let token = header("x-auth-token")
            .or_else(|| header("x-storage-token"))
            .ok_or_else(|| self.auth_error("no X-Auth-Token in the answer"))?;
        let storage_url = header("x-storage-url")
            .ok_or_else(|| self.auth_error("no X-Storage-Url in the answer"))?;
        let lifetime = header("x-auth-token-expires")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|secs| secs.is_finite() && *secs >= 0.0)
            .map(Duration::from_secs_f64);
        Ok(Session {
            token: Secret::new(token),
            storage_url: self.parse_storage_url(&storage_url)?,
            refresh_at: lifetime.map(refresh_instant),
        })
    }

    async fn login_keystone(&self, client: &Client) -> Result<Session> {
        let s = &self.settings;
        let base = s.auth_url.trim_end_matches('/');
        let url = if base.ends_with("/v3") {
            format!("{base}/auth/tokens")
        } else {
            format!("{base}/v3/auth/tokens")
        };
        let body = json!({
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": s.user,
                            "domain": {"name": s.user_domain_name},
                            "password": s.key.expose(),
                        }
                    }
                },
                "scope": {
                    "project": {
                        "name": s.project_name,
                        "domain": {"name": s.project_domain_name},
                    }
                }
            }
        });
        let resp = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| self.auth_error(crate::error_chain::chain(&e.without_url())))?;
        let status = resp.status();
        if status != StatusCode::CREATED && !status.is_success() {
            let body = body_excerpt(resp).await;
            return Err(self.auth_error(format!("{status}: {body}")));
        }
        let token = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| self.auth_error("no X-Subject-Token in the answer"))?;
        let body: KeystoneTokenBody = resp.json().await.map_err(|e| {
            self.auth_error(format!(
                "unreadable token body: {}",
                crate::error_chain::chain(&e)
            ))
        })?;
        let endpoint = select_endpoint(
            &body.token.catalog,
            self.settings.interface.as_str(),
            self.settings.region.as_deref(),
        )
        .map_err(|r| self.auth_error(r))?;
        let lifetime = body
            .token
            .expires_at
            .and_then(|at| (at - chrono::Utc::now()).to_std().ok());
        Ok(Session {
            token: Secret::new(token),
            storage_url: self.parse_storage_url(endpoint)?,
            refresh_at: lifetime.map(refresh_instant),
        })
    }

    fn parse_storage_url(&self, raw: &str) -> Result<Url> {
        Url::parse(raw.trim_end_matches('/'))
            .map_err(|e| self.auth_error(format!("storage URL {raw:?} is not a URL: {e}")))
    }
}

fn refresh_instant(lifetime: Duration) -> Instant {
    let margin = EXPIRY_MARGIN.min(lifetime / 2);
    Instant::now() + (lifetime - margin)
}

#[derive(Debug, Deserialize)]
struct KeystoneTokenBody {
    token: KeystoneToken,
}

#[derive(Debug, Deserialize)]
struct KeystoneToken {
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    catalog: Vec<CatalogService>,
}

#[derive(Debug, Deserialize)]
struct CatalogService {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<CatalogEndpoint>,
}

#[derive(Debug, Deserialize)]
struct CatalogEndpoint {
    interface: String,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    region_id: Option<String>,
    url: String,
}

/// The URL of the `object-store` endpoint with `interface` (and `region`, when given).
fn select_endpoint<'a>(
    catalog: &'a [CatalogService],
    interface: &str,
    region: Option<&str>,
) -> Result<&'a str, String> {
    let endpoints: Vec<&CatalogEndpoint> = catalog
        .iter()
        .filter(|svc| svc.kind == "object-store")
        .flat_map(|svc| &svc.endpoints)
        .collect();
    let in_region = |ep: &CatalogEndpoint| {
        region.is_none_or(|r| ep.region.as_deref() == Some(r) || ep.region_id.as_deref() == Some(r))
    };
    if let Some(ep) = endpoints
        .iter()
        .find(|ep| ep.interface == interface && in_region(ep))
    {
        return Ok(&ep.url);
    }
    let available: Vec<String> = endpoints
        .iter()
        .map(|ep| {
            format!(
                "{}/{}",
                ep.interface,
                ep.region
                    .as_deref()
                    .or(ep.region_id.as_deref())
                    .unwrap_or("-")
            )
        })
        .collect();
    Err(format!(
        "the catalog has no object-store endpoint with interface {interface}{} (object-store endpoints: {})",
        region
            .map(|r| format!(" in region {r}"))
            .unwrap_or_default(),
        if available.is_empty() {
            "none".to_string()
        } else {
            available.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<CatalogService> {
        serde_json::from_value(json!([
            {"type": "identity", "endpoints": [
                {"interface": "public", "region": "RegionOne", "url": "http://ks/v3"}]},
            {"type": "object-store", "endpoints": [
                {"interface": "internal", "region": "RegionOne", "region_id": "RegionOne", "url": "http://int1/v1/AUTH_p"},
                {"interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": "http://pub1/v1/AUTH_p"},
                {"interface": "public", "region_id": "RegionTwo", "url": "http://pub2/v1/AUTH_p"}]}
        ]))
        .unwrap()
    }

    #[test]
    fn endpoint_selection_by_interface_and_region() {
        let c = catalog();
        assert_eq!(
            select_endpoint(&c, "public", None).unwrap(),
            "http://pub1/v1/AUTH_p"
        );
        assert_eq!(
            select_endpoint(&c, "internal", None).unwrap(),
            "http://int1/v1/AUTH_p"
        );
        assert_eq!(
            select_endpoint(&c, "public", Some("RegionTwo")).unwrap(),
            "http://pub2/v1/AUTH_p"
        );
        let err = select_endpoint(&c, "admin", Some("RegionTwo")).unwrap_err();
        assert!(err.contains("interface admin in region RegionTwo"), "{err}");
        assert!(
            err.contains("internal/RegionOne, public/RegionOne, public/RegionTwo"),
            "{err}"
        );
        let err = select_endpoint(&c[..1], "public", None).unwrap_err();
        assert!(err.contains("endpoints: none"), "{err}");
    }

    #[test]
    fn short_lifetimes_keep_half() {
        let now = Instant::now();
        let at = refresh_instant(Duration::from_secs(10));
        assert!(at >= now + Duration::from_secs(5) && at <= now + Duration::from_secs(6));
        let at = refresh_instant(Duration::from_secs(3600));
        assert!(at >= now + Duration::from_secs(3540));
    }
}
