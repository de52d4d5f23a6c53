//! [`Redfish`]: what every Redfish interface of a conductor shares (settings, HTTP clients,
//! sessions, metrics), and the discovery that turns a node's driver_info into a
//! [`RedfishSystem`]: the service root, how to authenticate, and the one system to act on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tracing::{debug, warn};

use super::client::{Auth, Credentials, Transport};
use super::driver_info::{AuthType, DriverInfo};
use super::error::RedfishError;
use super::metrics::RedfishMetrics;
use super::odata;
use super::session::SessionCache;
use super::settings::RedfishSettings;
use super::system::RedfishSystem;
use super::tls::{ClientKey, Trust};

const SERVICE_ROOT: &str = "/redfish/v1/";

/// Shared by the power, management and boot interfaces (clone it, or hold it in an `Arc`).
#[derive(Clone)]
pub struct Redfish {
    inner: Arc<Shared>,
}

struct Shared {
    settings: Arc<RedfishSettings>,
    clients: Mutex<HashMap<ClientKey, Client>>,
    sessions: SessionCache,
    metrics: Option<RedfishMetrics>,
}

impl std::fmt::Debug for Redfish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redfish")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Redfish {
    /// Validates `settings`; nothing is sent until [`Redfish::connect`].
    pub fn new(
        settings: RedfishSettings,
        metrics: Option<RedfishMetrics>,
    ) -> Result<Self, RedfishError> {
        settings.validate()?;
        Ok(Self {
            inner: Arc::new(Shared {
                sessions: SessionCache::new(settings.session_idle_timeout()),
                settings: Arc::new(settings),
                clients: Mutex::new(HashMap::new()),
                metrics,
            }),
        })
    }

    pub fn settings(&self) -> &RedfishSettings {
        &self.inner.settings
    }

    pub fn sessions(&self) -> &SessionCache {
        &self.inner.sessions
    }

    /// Finds the node's system: reads the service root, settles how to authenticate (a
    /// cached or new session, or basic), and picks the system named by `redfish_system_id`
    /// or the only one. Costs two or three GETs (plus a login the first time).
    pub async fn connect(&self, info: &DriverInfo) -> Result<RedfishSystem, RedfishError> {
        let trust = Trust::load(&info.verify_ca)?;
        let key = trust.key.clone();
        let http = self.client(trust, &info.bmc())?;
        let mut t = Transport::new(
            info.address.clone(),
            http,
            info.username.clone(),
            info.password.clone(),
            self.inner.settings.clone(),
            self.inner.metrics.clone(),
        );
        let root = service_root(&t).await?;
        t.auth = self.choose_auth(&t, &key, info.auth_type, &root).await?;
        let t = Arc::new(t);
        let path = find_system(&t, &root, info.system_id.as_deref()).await?;
        debug!(bmc = %t.bmc, system = %path, "Redfish system found");
        Ok(RedfishSystem::new(t, path, root))
    }

    /// Logs out of every cached session (at shutdown).
    pub async fn close(&self) {
        self.inner.sessions.close().await;
    }

    fn client(&self, trust: Trust, bmc: &str) -> Result<Client, RedfishError> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map is still usable.
        let mut clients = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&trust.key) {
            return Ok(c.clone());
        }
        let key = trust.key.clone();
        let client = trust.build(&self.inner.settings, bmc)?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    async fn choose_auth(
        &self,
        t: &Transport,
        key: &ClientKey,
        wanted: AuthType,
        root: &Value,
    ) -> Result<Auth, RedfishError> {
        if t.user.is_none() {
            if wanted == AuthType::Session {
                return Err(RedfishError::DriverInfo {
                    key: super::driver_info::AUTH_TYPE,
                    value: "session".into(),
                    reason: "needs redfish_username and redfish_password".into(),
                });
            }
            return Ok(Auth::None);
        }
        if wanted == AuthType::Basic {
            return Ok(Auth::Basic);
        }
        let Some(sessions) = sessions_path(t, root).await else {
            if wanted == AuthType::Session {
                return Err(RedfishError::NotSupported {
                    bmc: t.bmc.clone(),
                    what: "Redfish sessions".into(),
                    detail: "the service root links no SessionService Sessions collection; \
                             set redfish_auth_type to basic or auto"
                        .into(),
                });
            }
            debug!(bmc = %t.bmc, "no SessionService: basic authentication");
            return Ok(Auth::Basic);
        };
        let slot = self.inner.sessions.slot(t, key, &sessions);
        match slot.session(t).await {
            Ok(_) => Ok(Auth::Session(slot)),
            // A BMC whose session service misbehaves may still take basic authentication;
            // refused credentials, an unreachable BMC or a bad certificate would fail the same.
            Err(e @ (RedfishError::Status { .. } | RedfishError::InvalidResponse { .. }))
                if wanted == AuthType::Auto =>
            {
                warn!(bmc = %t.bmc, error = %e, "session login failed; using basic authentication");
                Ok(Auth::Basic)
            }
            Err(e) => Err(e),
        }
    }
}

/// `GET /redfish/v1/`, without credentials as the standard allows, then with basic
/// authentication for BMCs that protect it.
async fn service_root(t: &Transport) -> Result<Value, RedfishError> {
    let mut reply = t
        .exchange(&Method::GET, SERVICE_ROOT, None, None, Credentials::None)
        .await?;
    if reply.status == StatusCode::UNAUTHORIZED && t.user.is_some() {
        reply = t
            .exchange(&Method::GET, SERVICE_ROOT, None, None, Credentials::Basic)
            .await?;
    }
    let reply = t.check(&Method::GET, SERVICE_ROOT, reply)?;
    if !reply.body.is_object() {
        return Err(t.invalid(
            &Method::GET,
            SERVICE_ROOT,
            "the service root is not a JSON object (is this a Redfish BMC?)".into(),
        ));
    }
    Ok(reply.body)
}

/// The Sessions collection: `Links.Sessions` of the root, or `Sessions` of SessionService.
async fn sessions_path(t: &Transport, root: &Value) -> Option<String> {
    if let Some(p) = root.get("Links").and_then(|l| odata::link(l, "Sessions")) {
        return Some(p);
    }
    let service = odata::link(root, "SessionService")?;
    let reply = t
        .exchange(&Method::GET, &service, None, None, Credentials::Basic)
        .await
        .ok()?;
    if !reply.status.is_success() {
        return None;
    }
    odata::link(&reply.body, "Sessions")
}

async fn find_system(
    t: &Transport,
    root: &Value,
    system_id: Option<&str>,
) -> Result<String, RedfishError> {
    let Some(collection) = odata::link(root, "Systems") else {
        return Err(RedfishError::NotSupported {
            bmc: t.bmc.clone(),
            what: "computer systems".into(),
            detail: "the service root has no Systems collection".into(),
        });
    };
    let members = odata::links(t.get(&collection).await?.get("Members"));
    let found = match system_id {
        Some(id) => members
            .iter()
            .find(|m| odata::same_path(m, id) || odata::last_segment(m) == id),
        None if members.len() == 1 => members.first(),
        None => None,
    };
    match found {
        Some(path) => Ok(path.clone()),
        None => Err(RedfishError::SystemNotFound {
            bmc: t.bmc.clone(),
            system_id: system_id.map(str::to_string),
            members,
        }),
    }
}
