//! Heartbeats, timed as IPA times them: the first at once; after a success every
//! `heartbeat_timeout × U(0.3, 0.6)`; after a failure every 5–10 s; and when an async
//! command ends, as soon as 5 s have passed since the previous one (how the conductor learns
//! that a step is done). A failed heartbeat never triggers a new lookup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::Agent;
use crate::ironic::{Beat, IronicClient};

const MIN_GAP: Duration = Duration::from_secs(5);

/// A uniform random number in [0, 1).
fn unit() -> f64 {
    let b = *uuid::Uuid::new_v4().as_bytes();
    f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])) / (f64::from(u32::MAX) + 1.0)
}

/// The wait before the next heartbeat.
pub fn next_interval(ok: bool, heartbeat_timeout: Duration) -> Duration {
    if ok {
        heartbeat_timeout.mul_f64(0.3 + 0.3 * unit())
    } else {
        MIN_GAP.mul_f64(1.0 + unit())
    }
}

/// Heartbeats forever.
pub async fn run(
    agent: Arc<Agent>,
    client: IronicClient,
    node_uuid: String,
    callback_url: String,
    verify_ca: Option<String>,
) {
    let timeout = agent.lookup_config().heartbeat_timeout;
    let mut last: Option<Instant> = None;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = agent.force_heartbeat.notified() => {
                if let Some(since) = last.map(|l| l.elapsed()) && since < MIN_GAP {
                    tokio::time::sleep(MIN_GAP - since).await;
                }
                tracing::info!("forced heartbeat: a command ended");
            }
        }
        let token = agent.token();
        let beat = Beat {
            callback_url: &callback_url,
            token: token.as_deref(),
            agent_version: &agent.version,
            verify_ca: verify_ca.as_deref(),
        };
        let outcome = client.heartbeat(&node_uuid, &beat).await;
        last = Some(Instant::now());
        wait = next_interval(outcome.is_ok(), timeout);
        match outcome {
            Ok(()) => tracing::info!(next_in = ?wait, "heartbeat accepted"),
            Err(e) => tracing::warn!(error = %e, next_in = ?wait, "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_in_ipas_ranges() {
        for _ in 0..200 {
            let ok = next_interval(true, Duration::from_secs(100));
            assert!(
                ok >= Duration::from_secs(30) && ok < Duration::from_secs(60),
                "{ok:?}"
            );
            let bad = next_interval(false, Duration::from_secs(100));
            assert!(bad >= MIN_GAP && bad < 2 * MIN_GAP, "{bad:?}");
        }
    }
}
