//! The conductor's half of the ramdisk endpoints: lookup (which issues the agent token) and
//! heartbeat (which records the agent and continues its deploy).

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use super::{Conductor, ConductorError};
use crate::agent::{AgentSession, token};
use crate::model::{MacAddress, Node, ProvisionState};
use crate::store::{NodeIdent, PortQuery, StoreError};

/// The one answer for "no such node" and "not in a lookup state", so lookup reveals nothing
/// about nodes that are not deploying.
pub(super) fn not_found() -> ConductorError {
    ConductorError::Store(StoreError::NodeNotFound(
        "matching the lookup request (or it is not in a state that allows lookup)".into(),
    ))
}

/// A token that is not the node's, in the heartbeat's words.
pub(super) fn invalid_token() -> ConductorError {
    ConductorError::InvalidParameter(TOKEN_INVALID.to_string())
}

/// Why a heartbeat was refused, in Ironic's words (agents and operators grep for them).
const TOKEN_REQUIRED: &str = "Agent token is required for heartbeat processing.";
const TOKEN_INVALID: &str = "Invalid or missing agent token received.";
const CALLBACK_CHANGED: &str = "Detected change in ramdisk provided \"callback_url\"";

/// A short label for why a lookup or heartbeat was refused (metrics, the API's log line):
/// these endpoints are open, so their refusals are counted rather than logged one by one.
pub fn refusal_reason(e: &ConductorError) -> &'static str {
    match e {
        ConductorError::InvalidParameter(m) if m == TOKEN_REQUIRED || m == TOKEN_INVALID => {
            "invalid_token"
        }
        ConductorError::InvalidParameter(m) if m == CALLBACK_CHANGED => "callback_changed",
        ConductorError::InvalidParameter(_) => "invalid_request",
        ConductorError::Store(StoreError::NodeNotFound(_)) => "not_found",
        ConductorError::Store(StoreError::NodeLocked { .. }) => "locked",
        _ => "error",
    }
}

/// What a heartbeat carries (already checked against the API version).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub callback_url: String,
    pub agent_token: Option<String>,
    pub agent_version: Option<String>,
    pub agent_verify_ca: Option<String>,
    pub agent_status: Option<String>,
    pub agent_status_message: Option<String>,
}

impl Conductor {
    /// `GET /v1/lookup`: the node whose ports match `addresses` (or `node_uuid`), if it is in a
    /// lookup state, with the agent token: the real one the first time, `******` afterwards.
    pub async fn lookup(
        &self,
        addresses: &[MacAddress],
        node_uuid: Option<Uuid>,
    ) -> Result<(Node, String), ConductorError> {
        let node = self.node_of_agent(addresses, node_uuid).await?;
        if !node.provision_state.lookup_allowed() {
            tracing::debug!(node = %node.uuid, state = %node.provision_state, "lookup refused: wrong state");
            return Err(not_found());
        }
        if AgentSession::read(&node).agent_secret_token.is_some() {
            return Ok((node, token::MASK.to_string()));
        }
        self.issue_token(node).await
    }

    /// The node an agent means: `node_uuid`, else the one node owning a port with one of
    /// `addresses`; every miss is the same "not found".
    pub(super) async fn node_of_agent(
        &self,
        addresses: &[MacAddress],
        node_uuid: Option<Uuid>,
    ) -> Result<Node, ConductorError> {
        Ok(match node_uuid {
            Some(u) => match self.store().get_node(&NodeIdent::Uuid(u)).await {
                Ok(n) => n,
                Err(StoreError::NodeNotFound(_)) => return Err(not_found()),
                Err(e) => return Err(e.into()),
            },
            None => {
                let ports = self
                    .store()
                    .list_ports(&PortQuery {
                        addresses: addresses.to_vec(),
                        ..Default::default()
                    })
                    .await?;
                let mut owners: Vec<Uuid> = ports.iter().map(|p| p.node_uuid).collect();
                owners.sort();
                owners.dedup();
                match owners.as_slice() {
                    [one] => self.store().get_node(&NodeIdent::Uuid(*one)).await?,
                    [] => return Err(not_found()),
                    many => {
                        tracing::debug!(nodes = ?many, ?addresses, "lookup matches several nodes");
                        return Err(not_found());
                    }
                }
            }
        })
    }

    async fn issue_token(&self, node: Node) -> Result<(Node, String), ConductorError> {
        // Issue the token under the reservation, so two racing lookups cannot both get one.
        let mut task = self.reserve(&NodeIdent::Uuid(node.uuid)).await?;
        let issued = async {
            let mut session = AgentSession::read(&task.node);
            if session.agent_secret_token.is_some() {
                return Ok(token::MASK.to_string());
            }
            let t = token::generate().map_err(|e| ConductorError::Conflict(e.to_string()))?;
            session.agent_secret_token = Some(t.clone());
            session.write(&mut task.node);
            task.save().await?;
            tracing::info!(node = %task.node.uuid, "agent token issued at lookup");
            Ok::<_, ConductorError>(t)
        }
        .await;
        let node = task.node.clone();
        self.release(task).await;
        Ok((node, issued?))
    }

    /// `POST /v1/heartbeat/{ident}`: checks the token and the callback, records the agent, and
    /// continues a deploy waiting for it in the background.
    pub async fn heartbeat(
        self: &Arc<Self>,
        ident: &NodeIdent,
        hb: Heartbeat,
    ) -> Result<(), ConductorError> {
        let node = self.store().get_node(ident).await?;
        let session = AgentSession::read(&node);
        let invalid = |m: &str| ConductorError::InvalidParameter(m.to_string());
        // Refusals are logged (bounded) and counted by the API; a client can repeat them
        // at will, so nothing here logs per request above debug.
        if let Some(url) = session.agent_url.as_deref()
            && url != hb.callback_url
        {
            tracing::debug!(node = %node.uuid, stored = url, got = %hb.callback_url, "agent callback_url changed");
            return Err(invalid(CALLBACK_CHANGED));
        }
        if hb.agent_token.is_none() {
            return Err(invalid(TOKEN_REQUIRED));
        }
        if !token::matches(
            session.agent_secret_token.as_deref(),
            hb.agent_token.as_deref(),
        ) {
            tracing::debug!(node = %node.uuid, "invalid or missing agent token in heartbeat");
            return Err(invalid_token());
        }
        if self.agent_settings().require_tls && !hb.callback_url.starts_with("https://") {
            return Err(invalid(
                "TLS is required by the conductor ([agent] require_tls), but the agent \
                 callback_url is not https",
            ));
        }
        if let (Some(stored), Some(given)) = (
            session.agent_verify_ca.as_deref(),
            hb.agent_verify_ca.as_deref(),
        ) && stored != given
        {
            return Err(invalid(
                "Agent certificate (agent_verify_ca) changed since the first heartbeat",
            ));
        }
        if !node.provision_state.heartbeat_allowed() {
            tracing::debug!(node = %node.uuid, state = %node.provision_state, "heartbeat ignored in this state");
            return Ok(());
        }
        let mut task = match self.reserve(ident).await {
            Ok(t) => t,
            Err(ConductorError::Store(StoreError::NodeLocked { node: n, holder }))
                if session.agent_url.is_none() =>
            {
                // The agent retries a 409 within seconds; the first heartbeat must get through.
                return Err(ConductorError::Store(StoreError::NodeLocked {
                    node: n,
                    holder,
                }));
            }
            Err(ConductorError::Store(StoreError::NodeLocked { .. })) => {
                tracing::debug!(node = %node.uuid, "node busy; heartbeat only acknowledged");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let mut recorded = AgentSession::read(&task.node);
        recorded.agent_url = Some(hb.callback_url.clone());
        if hb.agent_version.is_some() {
            recorded.agent_version = hb.agent_version.clone();
        }
        if hb.agent_verify_ca.is_some() {
            recorded.agent_verify_ca = hb.agent_verify_ca.clone();
        }
        recorded.agent_last_heartbeat = Some(crate::model::now().to_rfc3339());
        recorded.write(&mut task.node);
        let dii = &mut task.node.driver_internal_info;
        if let Some(s) = &hb.agent_status {
            dii.insert("agent_status".into(), json!(s));
        }
        if let Some(m) = &hb.agent_status_message {
            dii.insert("agent_status_message".into(), json!(m));
        }
        let waiting = matches!(
            task.node.provision_state,
            ProvisionState::DeployWait | ProvisionState::CleanWait | ProvisionState::RescueWait
        );
        if waiting {
            // Progress: resets the callback timeout.
            task.node.provision_updated_at = Some(crate::model::now());
        }
        if let Err(e) = task.save().await {
            self.release(task).await;
            return Err(e.into());
        }
        if !waiting || task.node.maintenance {
            if task.node.maintenance && waiting {
                tracing::warn!(node = %task.node.uuid, "heartbeat of a node in maintenance: deploy not continued");
            }
            self.release(task).await;
            return Ok(());
        }
        self.spawn_operation("heartbeat", task, |c, mut task| async move {
            c.continue_after_heartbeat(&mut task).await;
            task
        })
    }

    /// Lets the node's deploy interface act on the heartbeat just recorded; a failure fails
    /// the deploy (or cleaning) and ends the agent session.
    async fn continue_after_heartbeat(&self, task: &mut super::Task) {
        let state = task.node.provision_state;
        let cleaning = state == ProvisionState::CleanWait;
        let what = match state {
            ProvisionState::CleanWait => "cleaning",
            ProvisionState::RescueWait => "rescue",
            _ => "deploy",
        };
        let ifaces = match self.interfaces().for_node(&task.node) {
            Ok(i) => i,
            Err(e) => {
                self.fail_node(task, crate::model::Event::Fail, e.to_string())
                    .await;
                return;
            }
        };
        let result = if cleaning {
            ifaces
                .deploy
                .continue_cleaning(task, ifaces.deploy_context())
                .await
        } else if state == ProvisionState::RescueWait {
            ifaces
                .deploy
                .continue_rescue(task, ifaces.deploy_context())
                .await
        } else {
            ifaces
                .deploy
                .continue_deploy(task, ifaces.deploy_context())
                .await
        };
        if let Err(e) = result {
            self.fail_node(
                task,
                crate::model::Event::Fail,
                format!("{what} failed: {e}"),
            )
            .await;
            if cleaning {
                super::verbs::wipe_cleaning_info(&mut task.node);
            } else {
                AgentSession::wipe(&mut task.node);
            }
            if let Err(e) = task.save().await {
                tracing::error!(node = %task.node.uuid, error = %e, "cannot save node after a failed deploy");
            }
        }
    }
}
