//! Which conductors are alive, and which nodes are this conductor's.
//!
//! Every conductor registers in the shared database and touches its row every
//! `heartbeat_interval`; one not seen for `heartbeat_timeout` (or marked offline by a graceful
//! stop) is dead. The live conductors of each `conductor_group` form a [`HashRing`]; a node is
//! this conductor's when the ring of the node's group maps it here (a node of a group no live
//! conductor serves is nobody's until one joins). Periodic work (callback timeouts, take
//! over, orphan recovery) only touches this conductor's nodes, and the API forwards a node's
//! work to its owner.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use super::Conductor;
use super::ring::HashRing;
use crate::model::Node;
use crate::store::{ConductorRecord, StoreError};

/// The live conductors and their rings, as last read from the database.
#[derive(Debug, Default)]
pub struct Membership {
    state: RwLock<Arc<View>>,
}

/// One reading of the conductors table.
#[derive(Debug, Default)]
struct View {
    /// This conductor's group's ring (this conductor always on it).
    ring: HashRing,
    /// The rings of the other groups with live conductors.
    others: BTreeMap<String, HashRing>,
    /// Live conductors of every group.
    live: Vec<ConductorRecord>,
    /// Every conductor the table knows that is dead (any group).
    dead: BTreeSet<String>,
}

/// What changed between two readings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

impl MembershipChange {
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

impl Membership {
    fn view(&self) -> Arc<View> {
        // A poisoned lock only means a reader panicked; the view itself is always whole.
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, view: View) -> Arc<View> {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, Arc::new(view))
    }
}

impl Conductor {
    /// Reads the conductors table and rebuilds the ring; says who joined and who left.
    pub async fn refresh_membership(&self) -> Result<MembershipChange, StoreError> {
        let now = crate::model::now();
        let timeout = self.settings().heartbeat_timeout;
        let group = &self.settings().conductor_group;
        let mut live = Vec::new();
        let mut dead = BTreeSet::new();
        for c in self.store().list_conductors().await? {
            if c.alive(now, timeout) {
                live.push(c);
            } else {
                dead.insert(c.hostname);
            }
        }
        // This conductor is a member while it runs, even if its first touch is late.
        dead.remove(self.host());
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in &live {
            if c.hostname != self.host() {
                groups
                    .entry(c.conductor_group.clone())
                    .or_default()
                    .push(c.hostname.clone());
            }
        }
        let mut hosts = groups.remove(group).unwrap_or_default();
        hosts.push(self.host().to_string());
        let ring = HashRing::new(hosts);
        let others = groups
            .into_iter()
            .map(|(g, hosts)| (g, HashRing::new(hosts)))
            .collect();
        let old = self.membership().replace(View {
            ring,
            others,
            live,
            dead,
        });
        let new = self.membership().view();
        let change = MembershipChange {
            joined: new
                .ring
                .hosts()
                .iter()
                .filter(|h| !old.ring.hosts().contains(h))
                .cloned()
                .collect(),
            left: old
                .ring
                .hosts()
                .iter()
                .filter(|h| !new.ring.hosts().contains(h))
                .cloned()
                .collect(),
        };
        if !change.is_empty() {
            tracing::info!(joined = ?change.joined, left = ?change.left,
                members = ?new.ring.hosts(), "conductor ring changed");
        }
        self.metrics().ring_members(new.ring.hosts().len());
        Ok(change)
    }

    /// Whether the ring of the node's group maps it to this conductor.
    pub fn owns(&self, node: &Node) -> bool {
        self.owner_of(node).as_deref() == Some(self.host())
    }

    /// The host the ring of the node's group maps it to; `None` when no live conductor
    /// serves that group.
    pub fn owner_of(&self, node: &Node) -> Option<String> {
        let view = self.membership().view();
        if node.conductor_group != self.settings().conductor_group {
            let ring = view.others.get(&node.conductor_group)?;
            return ring.owner(&node.uuid).map(str::to_string);
        }
        // Before the first reading of the table this conductor's group is just itself.
        Some(
            view.ring
                .owner(&node.uuid)
                .unwrap_or(self.host())
                .to_string(),
        )
    }

    /// The live conductor that owns `node`, when it is another one.
    pub fn other_owner(&self, node: &Node) -> Option<ConductorRecord> {
        let owner = self.owner_of(node)?;
        if owner == self.host() {
            return None;
        }
        let view = self.membership().view();
        view.live.iter().find(|c| c.hostname == owner).cloned()
    }

    /// Whether the conductors table names no other conductor, dead or alive (one conductor
    /// alone on its database: nothing to forward, every node is its own).
    pub fn only_conductor(&self) -> bool {
        let view = self.membership().view();
        view.dead.is_empty() && view.live.iter().all(|c| c.hostname == self.host())
    }

    /// Whether `host` is known to be dead (offline, or silent past `heartbeat_timeout`).
    pub fn is_dead(&self, host: &str) -> bool {
        self.membership().view().dead.contains(host)
    }

    /// The keepalive's second half: re-reads the membership; when a conductor left, takes its
    /// nodes over and recovers its orphaned reservations at once rather than on the next
    /// periodic run; when one joined, hands it its share (this conductor's copies of nodes it
    /// no longer owns stay until the new owner has regenerated its own).
    pub(super) async fn follow_membership(self: &Arc<Self>) {
        let change = match self.refresh_membership().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the conductors table");
                return;
            }
        };
        if change.left.is_empty() {
            return;
        }
        let mut seen = self.death_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get_or_insert_with(std::time::Instant::now);
        drop(seen);
        if self.settings().sync_local_state_interval.is_zero() {
            return;
        }
        let c = self.clone();
        self.tracker().spawn(async move {
            c.release_orphans().await;
            c.take_over_nodes().await;
        });
    }

    /// A take-over run ended with every node of this conductor regenerated here: closes the
    /// "death seen → all regenerated" measure.
    pub(super) fn take_over_finished(&self) {
        let started = self
            .death_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = started {
            let secs = t.elapsed().as_secs_f64();
            self.metrics().take_over_completed(secs);
            tracing::info!(
                seconds = secs,
                "take over after a conductor's death complete"
            );
        }
    }

    /// The live members of this conductor's group (this one included), sorted.
    pub fn ring_members(&self) -> Vec<String> {
        self.membership().view().ring.hosts().to_vec()
    }
}
