//! One agent session, as the conductor keeps it in the node's `driver_internal_info`.
//!
//! The keys are Ironic's, so a conductor that restarts — or another conductor that takes the
//! node over — reads the same session and continues it. The session ends (every key removed)
//! when a deploy or cleaning ends or fails and when the node is powered off: the next agent
//! must look up again and gets a fresh token.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::Node;

/// What the conductor knows of the agent running on a node, and how far its steps went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentSession {
    /// The agent's command API (`callback_url` of its first heartbeat).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    /// The token the agent must present; handed out once (at lookup, or in the media).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_secret_token: Option<String>,
    /// The token was generated before boot and travels in the boot media (virtual media).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_secret_token_pregenerated: Option<bool>,
    /// The certificate the agent's auto-TLS sent; the client pins it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_verify_ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_last_heartbeat: Option<String>,
    /// The agent's step list (`get_deploy_steps`/`get_clean_steps`), as it reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_cached_deploy_steps: Option<Value>,
    /// The agent's clean step list (`get_clean_steps`), as it reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_cached_clean_steps: Option<Value>,
    /// Present once the conductor has listed the agent's steps (sent back with each step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardware_manager_version: Option<Value>,
    /// Index of the deploy step sent to the agent (present once `write_image` was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_step_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy_steps: Option<Value>,
    /// Index of the clean step sent to the agent (present once one was sent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clean_step_index: Option<u64>,
}

/// Every key of a session in `driver_internal_info`.
const KEYS: &[&str] = &[
    "agent_url",
    "agent_secret_token",
    "agent_secret_token_pregenerated",
    "agent_verify_ca",
    "agent_version",
    "agent_last_heartbeat",
    "agent_cached_deploy_steps",
    "agent_cached_clean_steps",
    "hardware_manager_version",
    "deploy_step_index",
    "deploy_steps",
    "clean_step_index",
];

impl AgentSession {
    /// The session recorded in `node` (keys of the wrong type count as absent, so a damaged
    /// record starts a new session rather than failing every heartbeat).
    pub fn read(node: &Node) -> AgentSession {
        let dii = &node.driver_internal_info;
        let mut fields = Map::new();
        for key in KEYS {
            if let Some(v) = dii.get(*key).filter(|v| !v.is_null()) {
                fields.insert((*key).to_string(), v.clone());
            }
        }
        serde_json::from_value(Value::Object(fields.clone())).unwrap_or_else(|_| {
            // Keep what is readable key by key.
            let mut session = AgentSession::default();
            for (k, v) in fields {
                let one = Value::Object(Map::from_iter([(k, v)]));
                if let Ok(part) = serde_json::from_value::<AgentSession>(one) {
                    session.merge(part);
                }
            }
            session
        })
    }

    /// Writes the session into `node`: present fields set, absent ones removed.
    pub fn write(&self, node: &mut Node) {
        let dii = &mut node.driver_internal_info;
        for key in KEYS {
            dii.remove(*key);
        }
        if let Ok(Value::Object(fields)) = serde_json::to_value(self) {
            dii.extend(fields);
        }
    }

    /// Ends the session recorded in `node`.
    pub fn wipe(node: &mut Node) {
        AgentSession::default().write(node);
    }

    /// Ends the session of an agent that was powered off, except a pregenerated token: the
    /// boot media still carry it, and the agent booted from them again must be accepted
    /// (Ironic's `wipe_internal_info_on_power_off`).
    pub fn end_on_power_off(node: &mut Node) {
        let old = AgentSession::read(node);
        let kept = match old.agent_secret_token_pregenerated {
            Some(true) => AgentSession {
                agent_secret_token: old.agent_secret_token,
                agent_secret_token_pregenerated: Some(true),
                ..AgentSession::default()
            },
            _ => AgentSession::default(),
        };
        kept.write(node);
    }

    /// Starts a session whose token is generated now, before the agent boots, to travel in its
    /// boot media (virtual media): the lookup then hands out `******`, and the agent uses the
    /// token from its kernel command line or floppy. Returns the token.
    pub fn pregenerate(node: &mut Node) -> Result<String, super::token::TokenError> {
        let token = super::token::generate()?;
        AgentSession {
            agent_secret_token: Some(token.clone()),
            agent_secret_token_pregenerated: Some(true),
            ..AgentSession::default()
        }
        .write(node);
        Ok(token)
    }

    /// Whether the conductor has listed the agent's steps in this session.
    pub fn steps_listed(&self) -> bool {
        self.hardware_manager_version.is_some()
    }

    fn merge(&mut self, other: AgentSession) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            agent_url,
            agent_secret_token,
            agent_secret_token_pregenerated,
            agent_verify_ca,
            agent_version,
            agent_last_heartbeat,
            agent_cached_deploy_steps,
            agent_cached_clean_steps,
            hardware_manager_version,
            deploy_step_index,
            deploy_steps,
            clean_step_index
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;
    use serde_json::json;

    fn node() -> Node {
        let hw = HardwareType::find("fake-hardware").unwrap();
        Node::new(uuid::Uuid::new_v4(), hw, chrono::Utc::now())
    }

    #[test]
    fn round_trips_and_wipes_only_its_keys() {
        let mut n = node();
        n.driver_internal_info
            .insert("root_uuid_or_disk_id".into(), json!("r"));
        let s = AgentSession {
            agent_url: Some("https://10.0.0.5:9999".into()),
            agent_secret_token: Some("t".into()),
            hardware_manager_version: Some(json!({"generic": "1.2"})),
            deploy_step_index: Some(0),
            ..Default::default()
        };
        s.write(&mut n);
        assert_eq!(n.driver_internal_info["agent_url"], "https://10.0.0.5:9999");
        assert_eq!(AgentSession::read(&n), s);
        assert!(AgentSession::read(&n).steps_listed());
        AgentSession::wipe(&mut n);
        assert_eq!(AgentSession::read(&n), AgentSession::default());
        assert!(!n.driver_internal_info.contains_key("agent_url"));
        assert_eq!(n.driver_internal_info["root_uuid_or_disk_id"], "r");
    }

    #[test]
    fn pregenerated_tokens_survive_power_off() {
        let mut n = node();
        let token = AgentSession::pregenerate(&mut n).unwrap();
        assert_eq!(token.len(), 43);
        let mut s = AgentSession::read(&n);
        assert_eq!(s.agent_secret_token.as_deref(), Some(token.as_str()));
        assert_eq!(s.agent_secret_token_pregenerated, Some(true));
        s.agent_url = Some("https://a:1".into());
        s.write(&mut n);
        AgentSession::end_on_power_off(&mut n);
        let after = AgentSession::read(&n);
        assert_eq!(after.agent_url, None);
        assert_eq!(after.agent_secret_token.as_deref(), Some(token.as_str()));
        // A token issued at lookup goes with the agent.
        AgentSession {
            agent_secret_token: Some("t".into()),
            ..Default::default()
        }
        .write(&mut n);
        AgentSession::end_on_power_off(&mut n);
        assert_eq!(AgentSession::read(&n), AgentSession::default());
    }

    #[test]
    fn a_damaged_key_is_dropped_not_fatal() {
        let mut n = node();
        n.driver_internal_info
            .insert("deploy_step_index".into(), json!("zero"));
        n.driver_internal_info
            .insert("agent_url".into(), json!("https://a:1"));
        let s = AgentSession::read(&n);
        assert_eq!(s.deploy_step_index, None);
        assert_eq!(s.agent_url.as_deref(), Some("https://a:1"));
    }
}
