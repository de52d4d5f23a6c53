//! One command at a time per BMC, and a pause between commands: BMCs have few session slots
//! and small CPUs, and answer a burst of sessions with "insufficient resources" or not at all.
//!
//! A BMC is its `address:port`, not the address alone: VirtualBMC and ipmi_sim serve one
//! node per port on a shared address, and Ironic's own key (the address) would serialise them
//! all. The registry is shared by every node of the process (one per [`super::Ipmitool`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::Instant;

/// Entries kept before idle ones are pruned.
const PRUNE_ABOVE: usize = 256;

#[derive(Debug, Default)]
struct Slot {
    /// When the last command to this BMC finished.
    last_end: Option<Instant>,
}

#[derive(Debug, Default)]
pub(crate) struct BmcRegistry {
    slots: Mutex<HashMap<String, Arc<AsyncMutex<Slot>>>>,
}

/// The right to talk to one BMC; the next holder waits for it, then for the interval.
pub(crate) struct BmcTurn {
    slot: OwnedMutexGuard<Slot>,
    interval: Duration,
}

impl BmcRegistry {
    /// Waits until no other command runs against `bmc` and `interval` has passed since the
    /// last one ended.
    pub(crate) async fn acquire(&self, bmc: &str, interval: Duration) -> BmcTurn {
        let slot = {
            // A poisoned map only means another thread panicked while inserting: the map
            // itself is still consistent, so keep using it.
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() > PRUNE_ABOVE {
                slots.retain(|_, s| busy_or_recent(s, interval));
            }
            Arc::clone(slots.entry(bmc.to_string()).or_default())
        };
        let mut turn = BmcTurn {
            slot: slot.lock_owned().await,
            interval,
        };
        turn.pause().await;
        turn
    }
}

/// Still needed: someone holds or waits for it, or its interval has not run out.
fn busy_or_recent(slot: &Arc<AsyncMutex<Slot>>, interval: Duration) -> bool {
    if Arc::strong_count(slot) > 1 {
        return true;
    }
    match slot.try_lock() {
        Ok(s) => s.last_end.is_some_and(|t| t.elapsed() < interval),
        Err(_) => true,
    }
}

impl BmcTurn {
    /// Records that a command just ended (the interval counts from here).
    pub(crate) fn command_ended(&mut self) {
        self.slot.last_end = Some(Instant::now());
    }

    /// Sleeps until the interval since the last command has passed.
    pub(crate) async fn pause(&mut self) {
        if let Some(end) = self.slot.last_end {
            tokio::time::sleep_until(end + self.interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_at_a_time_with_the_interval_between() {
        let reg = Arc::new(BmcRegistry::default());
        let interval = Duration::from_millis(200);
        let start = Instant::now();
        let mut first = reg.acquire("10.0.0.1:623", interval).await;

        let reg2 = Arc::clone(&reg);
        let second = tokio::spawn(async move {
            let _turn = reg2.acquire("10.0.0.1:623", interval).await;
            Instant::now()
        });
        // Another BMC is not held up.
        let _other = reg.acquire("10.0.0.1:624", interval).await;
        assert!(start.elapsed() < Duration::from_millis(150));

        tokio::time::sleep(Duration::from_millis(300)).await;
        first.command_ended();
        let released = Instant::now();
        drop(first);
        let got = second.await.unwrap();
        assert!(got - released >= interval, "{:?}", got - released);
    }

    #[tokio::test]
    async fn idle_entries_are_pruned() {
        let reg = BmcRegistry::default();
        let interval = Duration::from_millis(1);
        for i in 0..=PRUNE_ABOVE + 1 {
            let mut t = reg.acquire(&format!("h{i}:623"), interval).await;
            t.command_ended();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _t = reg.acquire("new:623", interval).await;
        assert!(reg.slots.lock().unwrap().len() < 10);
    }
}
