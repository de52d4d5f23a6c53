//! Redfish sessions (`SessionService`): one per BMC, user and password, shared by every call
//! through the [`SessionCache`] so that a conductor does not log in for each request — BMCs
//! allow few sessions at once. A token the BMC rejects is dropped and a new session created
//! (once per call); a session unused for `session_idle_timeout_secs` is logged out (DELETE)
//! rather than reused, and [`SessionCache::close`] logs out the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use reqwest::{Client, Method, StatusCode, Url};
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{debug, info};

use super::client::{Credentials, Transport};
use super::driver_info::Secret;
use super::error::RedfishError;
use super::tls::ClientKey;

/// Longest wait for a logout: it is best effort.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// A logged-in session: its token and the resource to DELETE to end it.
#[derive(Debug)]
pub(crate) struct Session {
    pub token: Secret,
    pub location: Option<Url>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    base: String,
    user: String,
    /// A session is only reused by callers that know the password it was created with.
    password_sha256: [u8; 32],
    client: ClientKey,
}

/// The session of one BMC and user: created on first use, replaced when rejected.
pub(crate) struct SessionSlot {
    sessions_path: String,
    current: tokio::sync::Mutex<Option<Arc<Session>>>,
    last_used: Mutex<Instant>,
    http: Client,
    bmc: String,
}

impl SessionSlot {
    /// The current session, logging in first when there is none.
    pub async fn session(&self, transport: &Transport) -> Result<Arc<Session>, RedfishError> {
        self.touch();
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref() {
            return Ok(s.clone());
        }
        let session = Arc::new(login(transport, &self.sessions_path).await?);
        *current = Some(session.clone());
        Ok(session)
    }

    /// Forgets `rejected` after the BMC answered 401 to it, unless another caller already
    /// replaced it.
    pub async fn invalidate(&self, rejected: &Arc<Session>) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, rejected)) {
            *current = None;
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.last_used
            .lock()
            .map(|t| t.elapsed())
            .unwrap_or_default()
    }

    async fn logout(&self) {
        let session = self.current.lock().await.take();
        if let Some(session) = session {
            logout(&self.http, &self.bmc, &session).await;
        }
    }
}

/// Sessions shared by every Redfish call of a process (or of whatever holds it).
pub struct SessionCache {
    slots: Mutex<HashMap<SessionKey, Arc<SessionSlot>>>,
    idle_timeout: Duration,
}

impl SessionCache {
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    /// The slot of this BMC, user and password. Slots idle for too long are logged out on the
    /// way (in the background).
    pub(crate) fn slot(
        &self,
        transport: &Transport,
        client: &ClientKey,
        sessions_path: &str,
    ) -> Arc<SessionSlot> {
        let key = SessionKey {
            base: transport.base().as_str().to_string(),
            user: transport.user.clone().unwrap_or_default(),
            password_sha256: Sha256::digest(transport.password.expose().as_bytes()).into(),
            client: client.clone(),
        };
        let mut expired = Vec::new();
        let slot = {
            // A poisoned lock only means another thread panicked mid-insert; the map is intact.
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.retain(|_, s| {
                // Only slots nobody holds right now (the map's reference is the only one); our
                // own stale slot is replaced by a new one below.
                let stale = Arc::strong_count(s) == 1 && s.idle_for() >= self.idle_timeout;
                if stale {
                    expired.push(s.clone());
                }
                !stale
            });
            slots
                .entry(key)
                .or_insert_with(|| {
                    Arc::new(SessionSlot {
                        sessions_path: sessions_path.to_string(),
                        current: tokio::sync::Mutex::new(None),
                        last_used: Mutex::new(Instant::now()),
                        http: transport.http.clone(),
                        bmc: transport.bmc.clone(),
                    })
                })
                .clone()
        };
        slot.touch();
        for s in expired {
            tokio::spawn(async move { s.logout().await });
        }
        slot
    }

    /// Logs out every cached session (at shutdown).
    pub async fn close(&self) {
        let slots: Vec<Arc<SessionSlot>> = {
            let mut map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(_, s)| s).collect()
        };
        for slot in slots {
            slot.logout().await;
        }
    }

    /// Sessions currently held (logged in), for tests and diagnostics.
    pub async fn active(&self) -> usize {
        let slots: Vec<Arc<SessionSlot>> = {
            let map = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            map.values().cloned().collect()
        };
        let mut n = 0;
        for s in slots {
            n += usize::from(s.current.lock().await.is_some());
        }
        n
    }
}

impl Drop for SessionCache {
    fn drop(&mut self) {
        let slots: Vec<Arc<SessionSlot>> = match self.slots.get_mut() {
            Ok(map) => map.drain().map(|(_, s)| s).collect(),
            Err(p) => p.into_inner().drain().map(|(_, s)| s).collect(),
        };
        // Best effort: without a runtime the sessions simply time out on the BMC.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            for slot in slots {
                handle.spawn(async move { slot.logout().await });
            }
        }
    }
}

/// `POST <Sessions> {UserName, Password}`: the token comes back in `X-Auth-Token`, the
/// session's resource in `Location` (or the body's `@odata.id`).
async fn login(transport: &Transport, sessions_path: &str) -> Result<Session, RedfishError> {
    let body = json!({
        "UserName": transport.user.clone().unwrap_or_default(),
        "Password": transport.password.expose(),
    });
    let reply = transport
        .exchange(
            &Method::POST,
            sessions_path,
            Some(&body),
            None,
            Credentials::None,
        )
        .await?;
    let reply = transport.check(&Method::POST, sessions_path, reply)?;
    if let Some(m) = &transport.metrics {
        m.logins.inc();
    }
    let token = reply
        .header("x-auth-token")
        .filter(|t| !t.is_empty() && HeaderValue::from_str(t).is_ok())
        .map(Secret::new)
        .ok_or_else(|| {
            transport.invalid(
                &Method::POST,
                sessions_path,
                "session created without an X-Auth-Token header".into(),
            )
        })?;
    let location = reply
        .header("location")
        .map(str::to_string)
        .or_else(|| {
            reply
                .body
                .get("@odata.id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .and_then(|l| transport.resolve(&Method::DELETE, &l).ok());
    info!(bmc = %transport.bmc, user = transport.user.as_deref().unwrap_or_default(),
        "logged in to the BMC (Redfish session)");
    Ok(Session { token, location })
}

async fn logout(http: &Client, bmc: &str, session: &Session) {
    let Some(url) = &session.location else {
        debug!(%bmc, "session has no resource to delete; it will time out on the BMC");
        return;
    };
    let mut token = match HeaderValue::from_str(session.token.expose()) {
        Ok(v) => v,
        Err(_) => return,
    };
    token.set_sensitive(true);
    let result = http
        .delete(url.clone())
        .header("X-Auth-Token", token)
        .timeout(LOGOUT_TIMEOUT)
        .send()
        .await;
    match result {
        Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {
            debug!(%bmc, path = url.path(), "logged out of the BMC");
        }
        Ok(r) => debug!(%bmc, path = url.path(), status = r.status().as_u16(), "logout refused"),
        Err(e) => debug!(%bmc, path = url.path(), error = %e.without_url(), "logout failed"),
    }
}
