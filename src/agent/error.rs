//! What can go wrong talking to an agent, kept apart by what the caller should do about it.

/// An error from the agent client, naming the agent URL and the command.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// 409, or a fault saying the agent is busy: another command still runs; retry later.
    #[error("agent at {url} is busy ({command}): {message}")]
    Busy {
        url: String,
        command: String,
        message: String,
    },
    /// 401: the agent refused our token (it got another one, or none).
    #[error(
        "agent at {url} refused the agent token for {command} (401: {message}); \
         the agent was probably restarted or another conductor handed it a token"
    )]
    Unauthorized {
        url: String,
        command: String,
        message: String,
    },
    /// Any other HTTP error status with the agent's fault string.
    #[error("agent at {url} answered {status} to {command}: {message}")]
    Api {
        url: String,
        command: String,
        status: u16,
        message: String,
    },
    /// The agent could not be reached after every attempt.
    #[error(
        "cannot reach agent at {url} for {command} after {attempts} attempt(s): {}",
        crate::error_chain::chain(source)
    )]
    Connection {
        url: String,
        command: String,
        attempts: u32,
        /// The last attempt's error (its URL stripped: the message names the agent).
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered something that is not the documented JSON.
    #[error("agent at {url} sent an invalid answer to {command}: {reason}")]
    InvalidResponse {
        url: String,
        command: String,
        reason: String,
    },
    /// The callback URL or the pinned certificate cannot be used.
    #[error("cannot talk to agent at {url}: {reason}")]
    Setup { url: String, reason: String },
    /// A command the conductor waited for did not finish in time.
    #[error("agent command {command} at {url} still running after {waited_secs} s")]
    Timeout {
        url: String,
        command: String,
        waited_secs: u64,
    },
}
