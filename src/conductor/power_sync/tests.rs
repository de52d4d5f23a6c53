//! The sync's rules against a scripted power interface: which nodes are read, what is
//! recorded or forced, failures in a row ending in maintenance, and a node that changes or is
//! taken while its state is read. `tests/it/ipmi_hardware.rs` runs it against ipmi_sim.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::conductor::{ConductorMetrics, ConductorSettings, Interfaces};
use crate::driver::PowerInterface;
use crate::model::{HardwareType, ProvisionState};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// The machines behind the nodes: what each reads as, and what was asked of them.
#[derive(Default)]
struct Hardware {
    state: HashMap<Uuid, Result<PowerState, String>>,
    /// Nodes whose power actions "succeed" without effect (something powers them back).
    stubborn: Vec<Uuid>,
    sets: Vec<(Uuid, PowerState)>,
    /// When set, every read waits for a permit (to act while a read is under way).
    gate: Option<Arc<Semaphore>>,
}

/// Registered as `script` (which `fake-hardware` nodes may use).
#[derive(Clone, Default)]
struct Scripted(Arc<Mutex<Hardware>>);

impl Scripted {
    fn set(&self, node: Uuid, state: Result<PowerState, &str>) {
        self.0
            .lock()
            .unwrap()
            .state
            .insert(node, state.map_err(String::from));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HwError(String);

#[async_trait]
impl PowerInterface for Scripted {
    fn name(&self) -> &'static str {
        "script"
    }

    fn validate(&self, _ctx: &NodeContext) -> Result<(), PowerError> {
        Ok(())
    }

    async fn get_power_state(&self, ctx: &mut NodeContext) -> Result<PowerState, PowerError> {
        let gate = self.0.lock().unwrap().gate.clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        ctx.record_fake_call("read");
        let read = self.0.lock().unwrap().state.get(&ctx.node.uuid).cloned();
        read.unwrap_or(Ok(PowerState::Off)).map_err(|e| {
            PowerError::failed("script", "read the power state of", &ctx.node, HwError(e))
        })
    }

    async fn set_power_state(
        &self,
        ctx: &mut NodeContext,
        target: PowerState,
    ) -> Result<(), PowerError> {
        let mut hw = self.0.lock().unwrap();
        let uuid = ctx.node.uuid;
        hw.sets.push((uuid, target));
        if !hw.stubborn.contains(&uuid) {
            hw.state.insert(uuid, Ok(target));
        }
        ctx.node.power_state = Some(target);
        Ok(())
    }
}

/// Waits until `n` reads wait at `gate` (each holds a clone while it waits; the test and the
/// hardware hold two more).
async fn wait_for_readers(gate: &Arc<Semaphore>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(gate) - 2 < n {
        assert!(Instant::now() < deadline, "{n} reads never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Lab {
    conductor: Arc<Conductor>,
    store: Arc<dyn Store>,
    hw: Scripted,
    sync: PowerSync,
    registry: crate::metrics::Registry,
}

async fn lab(tweak: impl FnOnce(&mut ConductorSettings)) -> Lab {
    let mut settings = ConductorSettings {
        power_state_sync_max_retries: 2,
        ..ConductorSettings::default()
    };
    tweak(&mut settings);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let hw = Scripted::default();
    let mut interfaces = Interfaces::with_fakes();
    interfaces.add_power(Arc::new(hw.clone()));
    let mut registry = crate::metrics::Registry::default();
    let conductor = Conductor::new(
        store.clone(),
        "c1".into(),
        settings,
        interfaces,
        ConductorMetrics::register(&mut registry),
        "http://127.0.0.1:6385".into(),
        crate::config::AgentSettings::default(),
        CancellationToken::new(),
    );
    Lab {
        conductor,
        store,
        hw,
        sync: PowerSync::default(),
        registry,
    }
}

impl Lab {
    /// A `script`-powered node in `state` with `power` recorded.
    async fn node(&self, state: ProvisionState, power: Option<PowerState>) -> Node {
        let mut n = Node::new(
            Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        );
        n.power_interface = "script".into();
        n.provision_state = state;
        n.target_provision_state = crate::model::state::target_of(state);
        n.power_state = power;
        self.store.create_node(&n).await.unwrap();
        self.get(n.uuid).await
    }

    async fn get(&self, uuid: Uuid) -> Node {
        self.store.get_node(&NodeIdent::Uuid(uuid)).await.unwrap()
    }

    async fn run(&self) -> BTreeMap<Uuid, SyncOutcome> {
        self.conductor.sync_power_states(&self.sync).await.outcomes
    }
}

#[tokio::test]
async fn the_record_follows_the_hardware_for_nodes_in_scope_only() {
    let lab = lab(|_| {}).await;
    use PowerState::{Off, On};
    let changed = lab.node(ProvisionState::Available, Some(Off)).await;
    let same = lab.node(ProvisionState::Active, Some(On)).await;
    let unknown = lab.node(ProvisionState::Manageable, None).await;
    let failed = lab.node(ProvisionState::DeployFailed, Some(On)).await;
    // Out of scope: each would read as a change.
    let deploying = lab.node(ProvisionState::Deploying, Some(On)).await;
    let waiting = lab.node(ProvisionState::DeployWait, Some(On)).await;
    let enroll = lab.node(ProvisionState::Enroll, Some(On)).await;
    let mut maintenance = lab.node(ProvisionState::Available, Some(On)).await;
    maintenance.maintenance = true;
    lab.store.save_node(&maintenance).await.unwrap();
    let mut pending = lab.node(ProvisionState::Available, Some(On)).await;
    pending.target_power_state = Some(Off);
    lab.store.save_node(&pending).await.unwrap();
    let reserved = lab.node(ProvisionState::Available, Some(On)).await;
    lab.store
        .reserve_node(&NodeIdent::Uuid(reserved.uuid), "c2")
        .await
        .unwrap();
    // A fake-hardware node with the fake interface: its record is its hardware.
    let mut fake = Node::new(
        Uuid::new_v4(),
        HardwareType::find("fake-hardware").unwrap(),
        crate::model::now(),
    );
    fake.provision_state = ProvisionState::Available;
    fake.power_state = Some(On);
    lab.store.create_node(&fake).await.unwrap();
    let fake = lab.get(fake.uuid).await;
    // ... and one with no record has nothing to learn from it: it keeps none (not read).
    let mut fake_unknown = fake.clone();
    fake_unknown.uuid = Uuid::new_v4();
    fake_unknown.name = None;
    fake_unknown.power_state = None;
    lab.store.create_node(&fake_unknown).await.unwrap();
    let fake_unknown = lab.get(fake_unknown.uuid).await;

    lab.hw.set(changed.uuid, Ok(On));
    lab.hw.set(same.uuid, Ok(On));
    lab.hw.set(failed.uuid, Ok(Off));
    // `unknown` reads as off (the default).

    let outcomes = lab.run().await;
    let expected: BTreeMap<Uuid, SyncOutcome> = [
        (changed.uuid, SyncOutcome::Recorded),
        (same.uuid, SyncOutcome::InSync),
        (unknown.uuid, SyncOutcome::Recorded),
        (failed.uuid, SyncOutcome::Recorded),
        (fake.uuid, SyncOutcome::InSync),
    ]
    .into();
    assert_eq!(outcomes, expected);
    assert_eq!(lab.get(changed.uuid).await.power_state, Some(On));
    assert_eq!(lab.get(unknown.uuid).await.power_state, Some(Off));
    assert_eq!(lab.get(failed.uuid).await.power_state, Some(Off));
    // Reads leave no trace in the node (the fake interfaces record every call).
    assert_eq!(lab.get(same.uuid).await, same);
    assert_eq!(lab.get(fake.uuid).await, fake);
    assert_eq!(lab.get(fake_unknown.uuid).await, fake_unknown);
    for n in [&deploying, &waiting, &enroll, &maintenance, &pending] {
        assert_eq!(lab.get(n.uuid).await.power_state, Some(On));
    }
    // Nothing was powered.
    assert!(lab.hw.0.lock().unwrap().sets.is_empty());

    let text = crate::metrics::encode(&lab.registry);
    for want in [
        r#"ironboot_power_sync_nodes_total{outcome="recorded"} 3"#,
        r#"ironboot_power_sync_nodes_total{outcome="in_sync"} 2"#,
        "ironboot_power_sync_run_duration_seconds_count 1",
        "ironboot_power_sync_failing_nodes 0",
    ] {
        assert!(text.contains(want), "{want} missing in\n{text}");
    }
}

#[tokio::test]
async fn failed_reads_in_a_row_put_the_node_in_maintenance_with_the_error() {
    let lab = lab(|s| s.power_state_sync_max_retries = 2).await;
    let silent = lab.node(ProvisionState::Active, Some(PowerState::On)).await;
    let flaky = lab.node(ProvisionState::Active, Some(PowerState::On)).await;
    let error = "BMC 10.0.0.9:623 did not answer `power status`";
    lab.hw.set(silent.uuid, Err(error));
    lab.hw.set(flaky.uuid, Err(error));
    for _ in 0..2 {
        let outcomes = lab.run().await;
        assert_eq!(outcomes[&silent.uuid], SyncOutcome::ReadFailed);
        assert_eq!(outcomes[&flaky.uuid], SyncOutcome::ReadFailed);
    }
    assert_eq!(
        lab.get(silent.uuid).await,
        silent,
        "failures below the limit change nothing"
    );
    let text = crate::metrics::encode(&lab.registry);
    assert!(
        text.contains("ironboot_power_sync_failing_nodes 2"),
        "{text}"
    );

    // A good read resets the count.
    lab.hw.set(flaky.uuid, Ok(PowerState::On));
    let outcomes = lab.run().await;
    assert_eq!(outcomes[&silent.uuid], SyncOutcome::Maintenance);
    assert_eq!(outcomes[&flaky.uuid], SyncOutcome::InSync);

    let n = lab.get(silent.uuid).await;
    assert!(n.maintenance);
    assert_eq!(n.power_state, None, "the power state is unknown");
    let reason = n.maintenance_reason.unwrap();
    assert!(reason.contains("failed 3 times in a row"), "{reason}");
    assert!(
        reason.contains("power_state_sync_max_retries = 2"),
        "{reason}"
    );
    assert!(reason.contains(error), "{reason}");
    assert_eq!(n.last_error.as_deref(), Some(reason.as_str()));
    assert_eq!(n.provision_state, ProvisionState::Active);

    // In maintenance it is no longer read; the other node needs three new failures.
    lab.hw.set(flaky.uuid, Err(error));
    for _ in 0..2 {
        let outcomes = lab.run().await;
        assert!(!outcomes.contains_key(&silent.uuid));
        assert_eq!(outcomes[&flaky.uuid], SyncOutcome::ReadFailed);
    }
    assert!(!lab.get(flaky.uuid).await.maintenance);
}

#[tokio::test]
async fn forcing_puts_the_hardware_back_and_gives_up_when_it_does_not_hold() {
    let lab = lab(|s| {
        s.force_power_state_during_sync = true;
        s.power_state_sync_max_retries = 1;
    })
    .await;
    let held = lab.node(ProvisionState::Active, Some(PowerState::On)).await;
    let stubborn = lab
        .node(ProvisionState::Available, Some(PowerState::Off))
        .await;
    let unknown = lab.node(ProvisionState::Manageable, None).await;
    lab.hw.set(held.uuid, Ok(PowerState::Off));
    lab.hw.set(stubborn.uuid, Ok(PowerState::On));
    lab.hw.set(unknown.uuid, Ok(PowerState::On));
    lab.hw.0.lock().unwrap().stubborn.push(stubborn.uuid);

    let outcomes = lab.run().await;
    assert_eq!(outcomes[&held.uuid], SyncOutcome::Forced);
    assert_eq!(outcomes[&stubborn.uuid], SyncOutcome::Forced);
    // Nothing recorded to go back to: what the hardware says is recorded.
    assert_eq!(outcomes[&unknown.uuid], SyncOutcome::Recorded);
    assert_eq!(
        lab.get(unknown.uuid).await.power_state,
        Some(PowerState::On)
    );
    let sets = lab.hw.0.lock().unwrap().sets.clone();
    assert_eq!(
        sets.iter()
            .filter(|(u, _)| *u == held.uuid)
            .collect::<Vec<_>>(),
        [&(held.uuid, PowerState::On)]
    );
    assert_eq!(lab.get(held.uuid).await.power_state, Some(PowerState::On));

    let outcomes = lab.run().await;
    assert_eq!(outcomes[&held.uuid], SyncOutcome::InSync);
    assert_eq!(outcomes[&stubborn.uuid], SyncOutcome::Maintenance);
    let n = lab.get(stubborn.uuid).await;
    assert!(n.maintenance);
    assert_eq!(n.power_state, Some(PowerState::On), "what it is, recorded");
    let reason = n.maintenance_reason.unwrap();
    assert!(
        reason.contains("is power on but ironboot recorded power off"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_node_taken_or_changed_during_the_read_is_left_to_the_next_run() {
    let lab = lab(|_| {}).await;
    let taken = lab
        .node(ProvisionState::Available, Some(PowerState::Off))
        .await;
    let changed = lab
        .node(ProvisionState::Available, Some(PowerState::Off))
        .await;
    lab.hw.set(taken.uuid, Ok(PowerState::On));
    lab.hw.set(changed.uuid, Ok(PowerState::On));
    let gate = Arc::new(Semaphore::new(0));
    lab.hw.0.lock().unwrap().gate = Some(gate.clone());

    let lab = Arc::new(lab);
    let running = {
        let lab = lab.clone();
        tokio::spawn(async move { lab.run().await })
    };
    wait_for_readers(&gate, 2).await;
    // The reads are under way without the nodes' reservations: an operation can take one...
    let task = lab
        .conductor
        .reserve(&NodeIdent::Uuid(taken.uuid))
        .await
        .expect("the sync must not hold the node while it reads");
    // ...and the operator can change the other.
    let mut edited = lab.get(changed.uuid).await;
    edited.extra.insert("rack".into(), serde_json::json!("r7"));
    lab.store.save_node(&edited).await.unwrap();
    gate.add_permits(2);
    let outcomes = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes[&taken.uuid], SyncOutcome::Skipped);
    assert_eq!(outcomes[&changed.uuid], SyncOutcome::Skipped);
    lab.conductor.release(task).await;
    assert_eq!(lab.get(taken.uuid).await.power_state, Some(PowerState::Off));
    assert_eq!(
        lab.get(changed.uuid).await.power_state,
        Some(PowerState::Off)
    );

    // The next run records both.
    lab.hw.0.lock().unwrap().gate = None;
    let outcomes = lab.run().await;
    assert_eq!(outcomes[&taken.uuid], SyncOutcome::Recorded);
    assert_eq!(outcomes[&changed.uuid], SyncOutcome::Recorded);
}

#[tokio::test]
async fn reads_run_side_by_side_up_to_the_worker_limit() {
    let lab = lab(|s| s.sync_power_state_workers = 3).await;
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(
            lab.node(ProvisionState::Available, Some(PowerState::Off))
                .await,
        );
    }
    let gate = Arc::new(Semaphore::new(0));
    lab.hw.0.lock().unwrap().gate = Some(gate.clone());
    let lab = Arc::new(lab);
    let running = {
        let lab = lab.clone();
        tokio::spawn(async move { lab.run().await })
    };
    // Three reads wait at the gate at once; the other two have not started.
    wait_for_readers(&gate, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(Arc::strong_count(&gate) - 2, 3, "reads waiting at once");
    gate.add_permits(5);
    let outcomes = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcomes.len(), 5);
    assert!(outcomes.values().all(|o| *o == SyncOutcome::InSync));
}
