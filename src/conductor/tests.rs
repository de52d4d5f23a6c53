//! Conductor behaviour that needs no HTTP: restarts, reservations, callback timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::model::{HardwareType, Node, ProvisionState};
use crate::store::sqlite::SqliteStore;

async fn conductor(settings: ConductorSettings) -> (Arc<Conductor>, Arc<dyn Store>) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let mut reg = crate::metrics::Registry::default();
    let c = Conductor::new(
        store.clone(),
        "c1".into(),
        settings,
        Interfaces::with_fakes(),
        ConductorMetrics::register(&mut reg),
        "http://127.0.0.1:6385".into(),
        crate::config::AgentSettings::default(),
        CancellationToken::new(),
    );
    (c, store)
}

async fn node_in(store: &Arc<dyn Store>, state: ProvisionState) -> Node {
    let mut n = Node::new(
        Uuid::new_v4(),
        HardwareType::find("fake-hardware").unwrap(),
        crate::model::now(),
    );
    n.provision_state = state;
    n.target_provision_state = crate::model::state::target_of(state);
    store.create_node(&n).await.unwrap();
    n
}

async fn settle(store: &Arc<dyn Store>, uuid: Uuid) -> Node {
    for _ in 0..200 {
        let n = store.get_node(&NodeIdent::Uuid(uuid)).await.unwrap();
        if n.reservation.is_none() {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node {uuid} stayed reserved");
}

#[tokio::test]
async fn start_fails_nodes_stuck_in_transient_states_and_clears_old_reservations() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let deploying = node_in(&store, ProvisionState::Deploying).await;
    let deleting = node_in(&store, ProvisionState::Deleting).await;
    let waiting = node_in(&store, ProvisionState::DeployWait).await;
    let reserved = node_in(&store, ProvisionState::Cleaning).await;
    store
        .reserve_node(&NodeIdent::Uuid(reserved.uuid), "c1")
        .await
        .unwrap();

    c.start().await.unwrap();

    let d = store
        .get_node(&NodeIdent::Uuid(deploying.uuid))
        .await
        .unwrap();
    assert_eq!(d.provision_state, ProvisionState::DeployFailed);
    assert!(
        d.last_error
            .unwrap()
            .contains("restarted while the node was deploying")
    );
    assert_eq!(
        store
            .get_node(&NodeIdent::Uuid(deleting.uuid))
            .await
            .unwrap()
            .provision_state,
        ProvisionState::Error
    );
    // Waiting states survive a restart: the agent keeps heartbeating.
    assert_eq!(
        store
            .get_node(&NodeIdent::Uuid(waiting.uuid))
            .await
            .unwrap()
            .provision_state,
        ProvisionState::DeployWait
    );
    let r = store
        .get_node(&NodeIdent::Uuid(reserved.uuid))
        .await
        .unwrap();
    assert!(r.reservation.is_none(), "our stale reservation is released");
    assert_eq!(r.provision_state, ProvisionState::CleanFailed);
    assert!(store.list_conductors().await.unwrap()[0].online);
    c.shutdown(Duration::from_secs(1)).await;
    assert!(!store.list_conductors().await.unwrap()[0].online);
}

#[tokio::test]
async fn callback_timeout_fails_only_late_unreserved_waiting_nodes() {
    let settings = ConductorSettings {
        deploy_callback_timeout: std::time::Duration::from_secs(60),
        clean_callback_timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    };
    let (c, store) = conductor(settings).await;
    let mut cleaning = node_in(&store, ProvisionState::CleanWait).await;
    cleaning.provision_updated_at = Some(crate::model::now() - chrono::Duration::seconds(120));
    cleaning.power_state = Some(crate::model::PowerState::On);
    store.save_node(&cleaning).await.unwrap();
    let mut late = node_in(&store, ProvisionState::DeployWait).await;
    late.provision_updated_at = Some(crate::model::now() - chrono::Duration::seconds(120));
    late.power_state = Some(crate::model::PowerState::On);
    store.save_node(&late).await.unwrap();
    let mut fresh = node_in(&store, ProvisionState::DeployWait).await;
    fresh.provision_updated_at = Some(crate::model::now());
    store.save_node(&fresh).await.unwrap();
    let mut busy = node_in(&store, ProvisionState::DeployWait).await;
    busy.provision_updated_at = late.provision_updated_at;
    store.save_node(&busy).await.unwrap();
    store
        .reserve_node(&NodeIdent::Uuid(busy.uuid), "other")
        .await
        .unwrap();

    c.check_callback_timeouts().await;

    let cl = settle(&store, cleaning.uuid).await;
    assert_eq!(cl.provision_state, ProvisionState::CleanFailed);
    assert!(
        cl.last_error.as_deref().unwrap().contains("clean wait"),
        "{:?}",
        cl.last_error
    );
    assert_eq!(cl.power_state, Some(crate::model::PowerState::Off));
    let l = settle(&store, late.uuid).await;
    assert_eq!(l.provision_state, ProvisionState::DeployFailed);
    assert!(
        l.last_error
            .as_deref()
            .unwrap()
            .contains("timeout reached while waiting for callback"),
        "{:?}",
        l.last_error
    );
    assert_eq!(
        l.power_state,
        Some(crate::model::PowerState::Off),
        "powered off after the failure"
    );
    assert_eq!(
        store
            .get_node(&NodeIdent::Uuid(fresh.uuid))
            .await
            .unwrap()
            .provision_state,
        ProvisionState::DeployWait
    );
    assert_eq!(
        store
            .get_node(&NodeIdent::Uuid(busy.uuid))
            .await
            .unwrap()
            .provision_state,
        ProvisionState::DeployWait
    );
}

#[tokio::test]
async fn a_locked_node_refuses_a_second_action() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let n = node_in(&store, ProvisionState::Available).await;
    let id = NodeIdent::Uuid(n.uuid);
    let held = c.reserve(&id).await.unwrap();
    let err = c.provision(&id, "active", None).await.unwrap_err();
    assert!(
        matches!(err, ConductorError::Store(StoreError::NodeLocked { .. })),
        "{err}"
    );
    c.release(held).await;
    c.provision(&id, "active", None).await.unwrap();
    assert_eq!(
        settle(&store, n.uuid).await.provision_state,
        ProvisionState::Active
    );
}

#[tokio::test]
async fn shutdown_refuses_new_operations() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let n = node_in(&store, ProvisionState::Available).await;
    c.shutdown(Duration::from_millis(100)).await;
    let err = c
        .provision(&NodeIdent::Uuid(n.uuid), "active", None)
        .await
        .unwrap_err();
    assert!(matches!(err, ConductorError::ShuttingDown));
    let after = settle(&store, n.uuid).await;
    assert_eq!(
        after.provision_state,
        ProvisionState::Available,
        "nothing moved"
    );
}

#[tokio::test]
async fn active_nodes_of_another_conductor_are_taken_over() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut theirs = node_in(&store, ProvisionState::Active).await;
    theirs.conductor_affinity = Some("dead-conductor".into());
    store.save_node(&theirs).await.unwrap();
    let mut ours = node_in(&store, ProvisionState::Active).await;
    ours.conductor_affinity = Some("c1".into());
    store.save_node(&ours).await.unwrap();
    let available = node_in(&store, ProvisionState::Available).await;

    c.take_over_nodes().await;

    let t = store.get_node(&NodeIdent::Uuid(theirs.uuid)).await.unwrap();
    assert_eq!(t.conductor_affinity.as_deref(), Some("c1"));
    assert!(
        t.driver_internal_info["fake_calls"]
            .to_string()
            .contains("boot.take_over")
    );
    assert!(t.reservation.is_none());
    let o = store.get_node(&NodeIdent::Uuid(ours.uuid)).await.unwrap();
    assert!(
        o.driver_internal_info.get("fake_calls").is_none(),
        "already ours: untouched"
    );
    let a = store
        .get_node(&NodeIdent::Uuid(available.uuid))
        .await
        .unwrap();
    assert!(
        a.conductor_affinity.is_none(),
        "only active nodes are taken over"
    );
}

#[tokio::test]
async fn waiting_nodes_of_another_conductor_are_taken_over_too() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut waiting = node_in(&store, ProvisionState::DeployWait).await;
    waiting.conductor_affinity = Some("dead-conductor".into());
    store.save_node(&waiting).await.unwrap();
    let mut cleaning = node_in(&store, ProvisionState::CleanWait).await;
    cleaning.conductor_affinity = None;
    store.save_node(&cleaning).await.unwrap();
    let mut inspecting = node_in(&store, ProvisionState::InspectWait).await;
    inspecting.conductor_affinity = Some("dead-conductor".into());
    store.save_node(&inspecting).await.unwrap();
    let mut rescuing = node_in(&store, ProvisionState::RescueWait).await;
    rescuing.conductor_affinity = Some("dead-conductor".into());
    store.save_node(&rescuing).await.unwrap();
    let failed = node_in(&store, ProvisionState::DeployFailed).await;

    c.take_over_nodes().await;

    // Each ramdisk boot is rebuilt with the parameters its agent was booted with.
    let callback = "ipa-inspection-callback-url=http://127.0.0.1:6385/v1/continue_inspection";
    for (uuid, inspection) in [
        (waiting.uuid, false),
        (cleaning.uuid, false),
        (inspecting.uuid, true),
        (rescuing.uuid, false),
    ] {
        let n = store.get_node(&NodeIdent::Uuid(uuid)).await.unwrap();
        assert_eq!(n.conductor_affinity.as_deref(), Some("c1"));
        let calls = n.driver_internal_info["fake_calls"].to_string();
        assert!(calls.contains("boot.take_over:"), "{calls}");
        // (The fake deploy interface has no ramdisk parameters of its own.)
        assert_eq!(calls.contains(callback), inspection, "{calls}");
    }
    let f = store.get_node(&NodeIdent::Uuid(failed.uuid)).await.unwrap();
    assert!(f.conductor_affinity.is_none(), "failed nodes boot nothing");
}

#[tokio::test]
async fn a_failed_deploy_is_powered_off_and_its_ramdisk_boot_removed() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let n = node_in(&store, ProvisionState::Deploying).await;
    let mut task = c.reserve(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    c.fail_node(&mut task, Event::Fail, "the BMC refused".into())
        .await;
    c.release(task).await;
    let after = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    assert_eq!(after.provision_state, ProvisionState::DeployFailed);
    assert_eq!(after.last_error.as_deref(), Some("the BMC refused"));
    let calls = after.driver_internal_info["fake_calls"].to_string();
    let off = calls.find("power.set_power_state:power off").unwrap();
    let clean = calls.find("boot.clean_up_ramdisk").unwrap();
    assert!(off < clean, "{calls}");
}

#[tokio::test]
async fn the_conductor_preparing_a_deploy_owns_its_boot() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut n = node_in(&store, ProvisionState::Available).await;
    n.conductor_affinity = Some("previous-owner".into());
    store.save_node(&n).await.unwrap();
    let mut task = c.reserve(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    task.process_event(Event::Deploy).await.unwrap();
    assert_eq!(task.node.conductor_affinity.as_deref(), Some("c1"));
    c.release(task).await;
}

#[test]
fn follow_up_failures_with_a_known_cause_are_not_repeated() {
    #[derive(Debug, thiserror::Error)]
    #[error("power interface failed: {0}")]
    struct Outer(#[source] std::io::Error);
    let cause = std::io::Error::other("BMC b: GET / answered 503");
    let message = "deploy failed: BMC b: GET / answered 503";
    assert_eq!(
        super::follow_up("powering off", &Outer(cause), message),
        "powering off failed for the same reason"
    );
    let other = Outer(std::io::Error::other("BMC c: refused"));
    assert_eq!(
        super::follow_up("powering off", &other, message),
        "powering off failed: power interface failed: BMC c: refused"
    );
}

#[tokio::test]
async fn agent_inspection_stores_the_inventory_sets_properties_and_adds_ports() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut n = node_in(&store, ProvisionState::Manageable).await;
    n.inspect_interface = "agent".into();
    store.save_node(&n).await.unwrap();
    let known = crate::model::MacAddress::parse("52:54:00:00:00:01").unwrap();
    let mut port =
        crate::model::Port::new(Uuid::new_v4(), n.uuid, known.clone(), crate::model::now());
    port.pxe_enabled = false;
    store.create_port(&port).await.unwrap();
    let id = NodeIdent::Uuid(n.uuid);
    c.provision(&id, "inspect", None).await.unwrap();
    let node = settle(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::InspectWait,
        "{:?}",
        node.last_error
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(
        calls.contains("ipa-inspection-callback-url=http://127.0.0.1:6385/v1/continue_inspection"),
        "{calls}"
    );

    // Not a node waiting for inspection, or no such MAC: the same "not found".
    let report = serde_json::json!({
        "inventory": {
            "cpu": {"architecture": "x86_64", "count": 4},
            "memory": {"physical_mb": 2048},
            "disks": [{"name": "/dev/vda", "size": 21_474_836_480u64}],
            "interfaces": [
                {"name": "eth0", "mac_address": "52:54:00:00:00:01"},
                {"name": "eth1", "mac_address": "52:54:00:00:00:02"}],
        },
        "boot_interface": "01-52-54-00-00-00-01",
        "logs": "H4sI...",
    });
    let report = report.as_object().unwrap().clone();
    let stranger = crate::model::MacAddress::parse("52:54:00:99:99:99").unwrap();
    assert!(
        c.continue_inspection(inspection_report(&[stranger], None, &report), false)
            .await
            .is_err()
    );

    // A report carrying a token must carry the node's (one handed over on virtual media,
    // say): another is refused with the heartbeat's words, and the node still waits.
    let mut waiting = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    let mut session = crate::agent::AgentSession::read(&waiting);
    session.agent_secret_token = Some("handed-over".into());
    session.write(&mut waiting);
    store.save_node(&waiting).await.unwrap();
    let with_token = |t: &str| {
        let mut r = inspection_report(std::slice::from_ref(&known), None, &report);
        r.agent_token = Some(t.into());
        r
    };
    let err = c
        .continue_inspection(with_token("guessed"), true)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Invalid or missing agent token received.");
    let still = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    assert_eq!(still.provision_state, ProvisionState::InspectWait);
    assert!(still.reservation.is_none());

    // The right one: taken; the 1.84 answer masks a token the agent already holds.
    let (got, token) = c
        .continue_inspection(with_token("handed-over"), true)
        .await
        .unwrap();
    assert_eq!(got.uuid, n.uuid);
    assert_eq!(token.as_deref(), Some(crate::agent::token::MASK));
    let node = settle(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::Manageable,
        "{:?}",
        node.last_error
    );
    assert_eq!(node.properties["cpu_arch"], "x86_64");
    assert_eq!(node.properties["memory_mb"], 2048);
    assert_eq!(node.properties["local_gb"], 19);
    assert!(node.inspection_finished_at.is_some() && node.inspection_started_at.is_none());
    assert_eq!(node.power_state, Some(crate::model::PowerState::Off));
    let ports = store.list_ports(&PortQuery::of_node(n.uuid)).await.unwrap();
    let pxe: Vec<(String, bool)> = ports
        .iter()
        .map(|p| (p.address.as_str().to_string(), p.pxe_enabled))
        .collect();
    assert_eq!(pxe.len(), 2, "{pxe:?}");
    assert!(
        pxe.contains(&("52:54:00:00:00:01".into(), true)),
        "the booting NIC: {pxe:?}"
    );
    assert!(
        pxe.contains(&("52:54:00:00:00:02".into(), false)),
        "{pxe:?}"
    );
    let record = store.get_inventory(n.uuid).await.unwrap().unwrap();
    assert_eq!(record.inventory["cpu"]["count"], 4);
    assert!(record.plugin_data.get("logs").is_none(), "logs not stored");
    assert_eq!(record.plugin_data["boot_interface"], "01-52-54-00-00-00-01");

    // A second report for a node no longer waiting: not found, nothing changes.
    let again = serde_json::json!({"inventory": {"interfaces": []}});
    assert!(
        c.continue_inspection(
            inspection_report(&[known], None, again.as_object().unwrap()),
            false
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn an_inventory_without_an_architecture_fails_the_inspection() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut n = node_in(&store, ProvisionState::Manageable).await;
    n.inspect_interface = "agent".into();
    store.save_node(&n).await.unwrap();
    c.provision(&NodeIdent::Uuid(n.uuid), "inspect", None)
        .await
        .unwrap();
    settle(&store, n.uuid).await;
    let report = serde_json::json!({"inventory": {"cpu": {}, "interfaces": [
        {"name": "eth0", "mac_address": "52:54:00:00:00:07"}]}});
    // At 1.84 the answer carries a new token, as a first lookup's would.
    let (_, token) = c
        .continue_inspection(
            inspection_report(&[], Some(n.uuid), report.as_object().unwrap()),
            true,
        )
        .await
        .unwrap();
    assert_eq!(token.map(|t| t.len()), Some(43));
    let node = settle(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::InspectFailed);
    assert_eq!(
        node.last_error.as_deref(),
        Some("Failed to finish inspection: the inventory has no cpu.architecture")
    );
    assert!(store.get_inventory(n.uuid).await.unwrap().is_none());
}

#[tokio::test]
async fn discovery_enrolls_an_unknown_machine_with_its_ports_and_inventory() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let report = serde_json::json!({
        "inventory": {
            "cpu": {"architecture": "aarch64"},
            "memory": {"physical_mb": 1024},
            "disks": [{"name": "/dev/nvme0n1", "size": 8_589_934_592u64}],
            "interfaces": [{"name": "enp1s0", "mac_address": "52:54:00:ab:cd:01"}],
        },
        "boot_interface": "52:54:00:ab:cd:01",
    });
    let report = report.as_object().unwrap().clone();
    let mac = crate::model::MacAddress::parse("52:54:00:ab:cd:01").unwrap();
    let uuid = c
        .discover(std::slice::from_ref(&mac), "fake-hardware", report.clone())
        .await
        .unwrap();
    let node = store.get_node(&NodeIdent::Uuid(uuid)).await.unwrap();
    assert_eq!(node.provision_state, ProvisionState::Enroll);
    assert_eq!(node.driver, "fake-hardware");
    assert_eq!(node.properties["cpu_arch"], "aarch64");
    assert_eq!(node.properties["local_gb"], 7);
    let ports = store.list_ports(&PortQuery::of_node(uuid)).await.unwrap();
    assert_eq!(ports.len(), 1);
    assert!(ports[0].pxe_enabled);
    let record = store.get_inventory(uuid).await.unwrap().unwrap();
    assert_eq!(record.plugin_data["auto_discovered"], true);
    // The same machine again: it is known now, so it is not enrolled twice.
    assert!(c.discover(&[mac], "fake-hardware", report).await.is_err());
    assert_eq!(
        store.list_nodes(&NodeQuery::default()).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn abort_in_inspect_wait_fails_the_inspection_and_powers_off() {
    let (c, store) = conductor(ConductorSettings::default()).await;
    let mut n = node_in(&store, ProvisionState::Manageable).await;
    n.inspect_interface = "agent".into();
    store.save_node(&n).await.unwrap();
    let id = NodeIdent::Uuid(n.uuid);
    c.provision(&id, "inspect", None).await.unwrap();
    assert_eq!(
        settle(&store, n.uuid).await.provision_state,
        ProvisionState::InspectWait
    );
    c.provision(&id, "abort", None).await.unwrap();
    let node = settle(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::InspectFailed);
    assert_eq!(
        node.last_error.as_deref(),
        Some("Inspection was aborted by request.")
    );
    assert_eq!(node.power_state, Some(crate::model::PowerState::Off));
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(calls.contains("boot.clean_up_ramdisk"), "{calls}");
    // A report arriving now is refused: the node no longer waits.
    let report = serde_json::json!({"inventory": {"cpu": {"architecture": "x86_64"},
        "interfaces": [{"name": "eth0", "mac_address": "52:54:00:00:00:09"}]}});
    assert!(
        c.continue_inspection(
            inspection_report(&[], Some(n.uuid), report.as_object().unwrap()),
            false
        )
        .await
        .is_err()
    );
    c.provision(&id, "manage", None).await.unwrap();
    assert_eq!(
        settle(&store, n.uuid).await.provision_state,
        ProvisionState::Manageable
    );
}

fn inspection_report(
    addresses: &[crate::model::MacAddress],
    node_uuid: Option<uuid::Uuid>,
    data: &serde_json::Map<String, serde_json::Value>,
) -> crate::conductor::inspection::InspectionReport {
    crate::conductor::inspection::InspectionReport {
        addresses: addresses.to_vec(),
        node_uuid,
        agent_token: None,
        data: data.clone(),
    }
}
