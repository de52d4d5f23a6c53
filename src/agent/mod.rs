//! The conductor side of the ironic-python-agent (IPA) protocol: agent tokens ([`token`]),
//! the session a node keeps in `driver_internal_info` ([`session`]), the pinned TLS the
//! agent's auto-TLS calls for ([`tls`]) and the client of the agent's `/v1/commands/` API
//! ([`client`]).
//!
//! The deploy steps that use these live in `conductor::agent_deploy`; the lookup and heartbeat
//! endpoints the agent calls live in `api::ramdisk`.

pub mod client;
pub mod error;
pub mod metrics;
pub mod session;
mod settings;
pub mod tls;
pub mod token;

pub use client::{AgentClient, ClientOptions, CommandError, CommandResult, CommandStatus};
pub use error::AgentError;
pub use metrics::AgentMetrics;
pub use session::AgentSession;
pub use settings::{AgentSettings, ImageDownloadSource};
