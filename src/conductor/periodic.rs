//! Periodic tasks: the conductor keepalive (which also reads the ring's membership), callback
//! timeouts, orphan recovery, power state sync (`power_sync`), take over, and any task other
//! subsystems register (cache clean-up). Each runs on its own interval until shutdown, and
//! touches only the nodes the hash ring maps to this conductor.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::Conductor;
use crate::model::{Event, ProvisionState};
use crate::store::{NodeIdent, NodeQuery};

/// Whether nodes in `state` boot from what their conductor prepared (see `take_over_nodes`):
/// `active`, and those that wait for an agent.
fn taken_over(state: ProvisionState) -> bool {
    state == ProvisionState::Active || state.waits_for_agent()
}

/// Nodes taken over at once (Ironic's `[conductor] periodic_max_workers`): each waits mostly on
/// its BMC and its media build, so a dead conductor's nodes move in seconds, not minutes.
const TAKE_OVER_WORKERS: usize = 8;

/// Starts the conductor's own periodic tasks.
pub(super) fn spawn_builtin(conductor: &Arc<Conductor>) {
    let s = conductor.settings().clone();
    conductor.spawn_periodic(
        "conductor_keepalive",
        s.heartbeat_interval,
        |c| async move {
            if let Err(e) = c.store().touch_conductor(c.host()).await {
                tracing::error!(error = %e, "conductor keepalive failed");
            }
            c.follow_membership().await;
        },
    );
    conductor.spawn_periodic(
        "check_provision_state",
        s.check_provision_state_interval,
        |c| async move {
            c.release_orphans().await;
            c.check_callback_timeouts().await;
        },
    );
    if !s.sync_power_state_interval.is_zero() {
        let sync = Arc::new(super::power_sync::PowerSync::default());
        conductor.spawn_periodic("sync_power_states", s.sync_power_state_interval, move |c| {
            let sync = sync.clone();
            async move {
                c.sync_power_states(&sync).await;
            }
        });
    }
    if !s.sync_local_state_interval.is_zero() {
        // Once right away (a restarted or new conductor owns its nodes' files at once), then
        // on the interval.
        let c = conductor.clone();
        conductor
            .tracker()
            .spawn(async move { c.take_over_nodes().await });
        conductor.spawn_periodic(
            "sync_local_state",
            s.sync_local_state_interval,
            |c| async move {
                c.take_over_nodes().await;
            },
        );
    }
}

impl Conductor {
    /// Runs `tick` every `interval` (first run after one interval) until shutdown. A tick never
    /// overlaps the previous one.
    pub fn spawn_periodic<F, Fut>(self: &Arc<Self>, name: &'static str, interval: Duration, tick: F)
    where
        F: Fn(Arc<Conductor>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        let cancel = self.cancel_token().clone();
        self.tracker().spawn(async move {
            let mut timer =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = timer.tick() => {}
                }
                tracing::debug!(task = name, "periodic task running");
                tick(this.clone()).await;
            }
        });
    }

    /// Fails nodes that waited for their agent (`wait call-back`, `clean wait`) longer than
    /// `deploy_callback_timeout` / `clean_callback_timeout` since their last progress
    /// (heartbeats touch `provision_updated_at`).
    pub async fn check_callback_timeouts(self: &Arc<Self>) {
        let s = self.settings();
        for (state, timeout) in [
            (ProvisionState::DeployWait, s.deploy_callback_timeout),
            (ProvisionState::CleanWait, s.clean_callback_timeout),
            (ProvisionState::InspectWait, s.inspect_wait_timeout),
            (ProvisionState::RescueWait, s.rescue_callback_timeout),
        ] {
            if !timeout.is_zero() {
                self.fail_late_nodes(state, timeout).await;
            }
        }
    }

    async fn fail_late_nodes(self: &Arc<Self>, state: ProvisionState, timeout: Duration) {
        let cutoff = crate::model::now()
            - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        let query = NodeQuery {
            provision_state: Some(state),
            maintenance: Some(false),
            reserved: Some(false),
            provision_updated_before: Some(cutoff),
            ..Default::default()
        };
        let nodes = match self.store().list_nodes(&query).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot list nodes for callback timeouts");
                return;
            }
        };
        for node in nodes.into_iter().filter(|n| self.owns(n)) {
            let Ok(task) = self.reserve(&NodeIdent::Uuid(node.uuid)).await else {
                continue;
            };
            // Re-check under the reservation: a heartbeat may have arrived meanwhile.
            let still_late = task.node.provision_state == state
                && task.node.provision_updated_at.is_some_and(|t| t < cutoff);
            if !still_late {
                self.release(task).await;
                continue;
            }
            let message = format!(
                "timeout reached while waiting for callback for node {} in {state} ({} s \
                 since the last progress); check the node boots the agent ramdisk and reaches {}",
                task.node.ident(),
                timeout.as_secs(),
                self.api_public_url()
            );
            let result = self.spawn_operation("callback_timeout", task, move |c, mut task| async move {
                // fail_node also removes the ramdisk boot.
                c.fail_node(&mut task, Event::Fail, message).await;
                if let Ok(ifaces) = c.interfaces().for_node(&task.node) {
                    // fail_node powers off failed deploys; a failed cleaning must not keep
                    // running its ramdisk either.
                    if matches!(task.node.provision_state, ProvisionState::CleanFailed | ProvisionState::InspectFailed | ProvisionState::RescueFailed)
                        && let Err(e) = ifaces.power.set_power_state(&mut task, crate::model::PowerState::Off).await
                    {
                        tracing::warn!(node = %task.node.uuid, error = %e, "power off after cleaning timeout failed");
                    }
                }
                super::actions::wipe_deploy_info(&mut task);
                super::verbs::wipe_cleaning_info(&mut task.node);
                if let Err(e) = task.save().await {
                    tracing::error!(node = %task.node.uuid, error = %e, "cannot save node after callback timeout");
                }
                task
            });
            if let Err(e) = result {
                tracing::warn!(error = %e, "callback timeout not processed");
            }
        }
    }

    /// Ironic's `_sync_local_state`, widened: nodes whose boot another conductor prepared
    /// (or this one under another host name) get it regenerated here through the boot
    /// interface's `take_over`, then `conductor_affinity` names this conductor.
    ///
    /// Ironic only does this for `active` nodes. Nodes waiting for their agent (`wait
    /// call-back`, `clean wait`) are included because a ramdisk booted from virtual media
    /// reads the media the previous conductor published (a floppy, an ISO) for as long as it
    /// runs; the boot interface gets the deploy interface's ramdisk parameters to rebuild it
    /// identically, and a ramdisk booted over the network needs its PXE/iPXE/GRUB config
    /// again whenever the node reboots.
    pub async fn take_over_nodes(self: &Arc<Self>) {
        let mut owned = 0;
        let mut failed = 0;
        for &state in ProvisionState::ALL.iter().filter(|s| taken_over(**s)) {
            let query = NodeQuery {
                provision_state: Some(state),
                maintenance: Some(false),
                reserved: Some(false),
                ..Default::default()
            };
            let nodes = match self.store().list_nodes(&query).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, %state, "cannot list nodes to take over");
                    failed += 1;
                    continue;
                }
            };
            let mine: Vec<_> = nodes.into_iter().filter(|n| self.owns(n)).collect();
            owned += mine.len();
            let theirs = mine
                .into_iter()
                .filter(|n| n.conductor_affinity.as_deref() != Some(self.host()));
            let results: Vec<bool> =
                futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
                    futures_util::StreamExt::map(futures_util::stream::iter(theirs), |node| {
                        self.take_over_node(node.uuid, state)
                    }),
                    TAKE_OVER_WORKERS,
                ))
                .await;
            failed += results.iter().filter(|ok| !**ok).count();
        }
        self.metrics().nodes_owned(owned);
        if failed == 0 {
            self.take_over_finished();
        }
    }

    /// Takes one node over under its reservation. False when it could not be (busy, or the
    /// boot interface failed): the next run retries.
    async fn take_over_node(self: &Arc<Self>, uuid: uuid::Uuid, state: ProvisionState) -> bool {
        let Ok(mut task) = self.reserve(&NodeIdent::Uuid(uuid)).await else {
            return false;
        };
        let still = task.node.provision_state == state
            && task.node.conductor_affinity.as_deref() != Some(self.host());
        let mut ok = true;
        if still {
            let previous = task.node.conductor_affinity.clone();
            let result = match self.interfaces().for_node(&task.node) {
                Ok(ifaces) => {
                    // The agent of an inspection was booted with the inspection's parameters.
                    let params = if state == ProvisionState::InspectWait {
                        self.inspection_ramdisk_params()
                    } else {
                        ifaces.deploy.ramdisk_params()
                    };
                    ifaces
                        .boot
                        .take_over(&mut task, &params)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            self.metrics().take_over(result.is_ok());
            match result {
                Ok(()) => {
                    task.node.conductor_affinity = Some(self.host().to_string());
                    match task.save().await {
                        Ok(()) => {
                            tracing::info!(node = %task.node.uuid, %state, from = ?previous, "took over node")
                        }
                        Err(e) => {
                            tracing::error!(node = %task.node.uuid, error = %e, "cannot record take over")
                        }
                    }
                }
                Err(e) => {
                    ok = false;
                    tracing::error!(node = %task.node.uuid, %state, error = %e, "take over failed; retrying on the next run")
                }
            }
        }
        self.release(task).await;
        ok
    }
}
