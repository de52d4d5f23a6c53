//! The `direct` step machine against a scripted fake agent: the paths a real agent cannot be
//! made to take on demand (failed steps, busy agents, unexpected answers), plus the heartbeat
//! and lookup rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::*;
use crate::conductor::ramdisk::Heartbeat;
use crate::conductor::{Conductor, ConductorError, ConductorMetrics, Interfaces};
use crate::config::ConductorSettings;
use crate::model::{HardwareType, MacAddress, Node, Port, ProvisionState};
use crate::store::sqlite::SqliteStore;
use crate::store::{NodeIdent, Store, StoreError};

pub(super) const MAC: &str = "52:54:00:aa:bb:01";

/// What the fake agent answers: its command list and the POST answers by command name.
#[derive(Clone, Default)]
pub(super) struct Script {
    pub(super) listed: Arc<Mutex<Value>>,
    pub(super) posted: Arc<Mutex<Vec<String>>>,
    pub(super) busy: Arc<Mutex<bool>>,
    /// The parameters of every POST, by command name (the last one kept).
    pub(super) params: Arc<Mutex<std::collections::BTreeMap<String, Value>>>,
    /// `rescue.finalize_rescue` answers FAILED.
    pub(super) rescue_fails: Arc<Mutex<bool>>,
    /// What `get_partition_uuids` returns; Null: a whole-disk image's MBR disk id.
    partition_uuids: Arc<Mutex<Value>>,
}

async fn fake_post(
    State(s): State<Script>,
    axum::Json(cmd): axum::Json<Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let name = cmd["name"].as_str().unwrap_or_default().to_string();
    s.posted.lock().unwrap().push(name.clone());
    s.params
        .lock()
        .unwrap()
        .insert(name.clone(), cmd["params"].clone());
    if *s.busy.lock().unwrap() {
        return (
            axum::http::StatusCode::CONFLICT,
            axum::Json(json!({"faultstring": "Agent is busy"})),
        )
            .into_response();
    }
    let short = name.split('.').nth(1).unwrap_or_default();
    let (status, result) = match short {
        "get_deploy_steps" => (
            "SUCCEEDED",
            json!({"deploy_steps": {"Fake": []},
            "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
        ),
        "get_clean_steps" => (
            "SUCCEEDED",
            json!({"clean_steps": {"Fake": [
                {"step": "erase_devices", "priority": 10, "interface": "deploy",
                 "reboot_requested": false, "abortable": true},
                {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                 "reboot_requested": false, "abortable": true},
                {"step": "erase_pstore", "priority": 0, "interface": "deploy",
                 "reboot_requested": false, "abortable": true},
                {"step": "reboot_me", "priority": 0, "interface": "deploy",
                 "reboot_requested": true, "abortable": false}]},
            "hardware_manager_version": {"generic_hardware_manager": "1.2"}}),
        ),
        "finalize_rescue" if *s.rescue_fails.lock().unwrap() => ("FAILED", Value::Null),
        "finalize_rescue" => ("SUCCEEDED", Value::Null),
        "get_partition_uuids" => {
            let uuids = s.partition_uuids.lock().unwrap().clone();
            if uuids.is_null() {
                ("SUCCEEDED", json!({"root uuid": "0x1234abcd"}))
            } else {
                ("SUCCEEDED", uuids)
            }
        }
        _ => ("RUNNING", Value::Null),
    };
    axum::Json(
        json!({"id": "x", "command_name": short, "command_status": status,
                      "command_error": null, "command_result": result}),
    )
    .into_response()
}

async fn fake_list(State(s): State<Script>) -> axum::Json<Value> {
    axum::Json(json!({"commands": s.listed.lock().unwrap().clone()}))
}

pub(super) async fn fake_agent(script: Script) -> String {
    let app = Router::new()
        .route("/v1/commands/", post(fake_post).get(fake_list))
        .with_state(script);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// A conductor with the `direct` deploy over a scripted agent; the returned directory holds
/// the HTTP root and the (unused: the agent downloads directly) image cache.
pub(super) async fn lab() -> (Arc<Conductor>, Arc<dyn Store>, Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let mut reg = crate::metrics::Registry::default();
    let settings = AgentSettings {
        require_tls: false,
        image_download_source: ImageDownloadSource::Direct,
        post_deploy_get_power_state_retries: 1,
        post_deploy_get_power_state_retry_interval: Duration::ZERO,
        max_command_attempts: 1,
        ..Default::default()
    };
    let mut interfaces = Interfaces::with_fakes();
    register(
        &mut interfaces,
        AgentDeployConfig {
            settings: settings.clone(),
            clean_priorities: Default::default(),
            erase_params: Default::default(),
            api_url: "http://127.0.0.1:6385".into(),
            http_url: "http://127.0.0.1:8080".into(),
            http_root: dir.path().join("httpboot"),
            cache: Arc::new(
                crate::images::ImageCache::open(
                    Default::default(),
                    &dir.path().join("cache"),
                    &[],
                    &mut reg,
                )
                .unwrap(),
            ),
            media: Arc::new(crate::media::MediaBuilder::new(Default::default()).unwrap()),
        },
        AgentMetrics::register(&mut reg),
    );
    let c = Conductor::new(
        store.clone(),
        "c1".into(),
        ConductorSettings::default(),
        interfaces,
        ConductorMetrics::register(&mut reg),
        "http://127.0.0.1:6385".into(),
        settings,
        CancellationToken::new(),
    );
    let mut n = Node::new(
        Uuid::new_v4(),
        HardwareType::find("fake-hardware").unwrap(),
        crate::model::now(),
    );
    n.deploy_interface = "direct".into();
    n.provision_state = ProvisionState::Available;
    n.instance_info = json!({"image_source": "http://images/disk.raw", "image_disk_format": "raw",
        "image_checksum": format!("sha256:{}", "ab".repeat(32))})
    .as_object()
    .unwrap()
    .clone();
    store.create_node(&n).await.unwrap();
    store
        .create_port(&Port::new(
            Uuid::new_v4(),
            n.uuid,
            MacAddress::parse(MAC).unwrap(),
            crate::model::now(),
        ))
        .await
        .unwrap();
    (c, store, n, dir)
}

pub(super) async fn settled(store: &Arc<dyn Store>, uuid: Uuid) -> Node {
    for _ in 0..300 {
        let n = store.get_node(&NodeIdent::Uuid(uuid)).await.unwrap();
        if n.reservation.is_none() {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node stayed reserved");
}

/// Deploys until `wait call-back` and looks the node up as the agent would: returns the token.
async fn booted(c: &Arc<Conductor>, store: &Arc<dyn Store>, n: &Node) -> String {
    c.provision(&NodeIdent::Uuid(n.uuid), "active", None)
        .await
        .unwrap();
    let node = settled(store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::DeployWait,
        "{:?}",
        node.last_error
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(
        calls.contains("boot.prepare_ramdisk:ipa-api-url=http://127.0.0.1:6385"),
        "{calls}"
    );
    let (_, token) = c
        .lookup(&[MacAddress::parse(MAC).unwrap()], None)
        .await
        .unwrap();
    assert_eq!(token.len(), 43);
    let (_, again) = c.lookup(&[], Some(n.uuid)).await.unwrap();
    assert_eq!(again, "******", "the token is handed out once");
    token
}

pub(super) fn hb(url: &str, token: &str) -> Heartbeat {
    Heartbeat {
        callback_url: url.into(),
        agent_token: Some(token.into()),
        agent_version: Some("13.0.0".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failed_write_image_fails_the_deploy_with_the_agents_details() {
    let (c, store, n, _dir) = lab().await;
    let script = Script::default();
    let url = fake_agent(script.clone()).await;
    let token = booted(&c, &store, &n).await;
    let id = NodeIdent::Uuid(n.uuid);

    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::DeployWait);
    assert_eq!(node.driver_internal_info["deploy_step_index"], 0);
    assert_eq!(
        node.driver_internal_info["hardware_manager_version"],
        json!({"generic_hardware_manager": "1.2"})
    );
    assert_eq!(
        *script.posted.lock().unwrap(),
        ["deploy.get_deploy_steps", "deploy.execute_deploy_step"]
    );

    // Still running: nothing moves, the heartbeat counts as progress.
    *script.listed.lock().unwrap() = json!([
        {"command_name": "get_deploy_steps", "command_status": "SUCCEEDED"},
        {"command_name": "execute_deploy_step", "command_status": "RUNNING"}]);
    let before = node.provision_updated_at;
    tokio::time::sleep(Duration::from_millis(5)).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::DeployWait);
    assert!(node.provision_updated_at > before);

    *script.listed.lock().unwrap() = json!([
        {"command_name": "get_deploy_steps", "command_status": "SUCCEEDED"},
        {"command_name": "execute_deploy_step", "command_status": "FAILED",
         "command_error": {"type": "ImageChecksumError", "code": 500, "message": "m",
                           "details": "Image failed to verify against checksum"}}]);
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::DeployFailed);
    let err = node.last_error.unwrap_or_default();
    assert!(
        err.contains("ImageChecksumError: Image failed to verify against checksum"),
        "{err}"
    );
    assert!(
        !node.driver_internal_info.contains_key("agent_secret_token"),
        "token wiped"
    );
    assert_eq!(node.power_state, Some(crate::model::PowerState::Off));
}

#[tokio::test]
async fn a_finished_write_image_completes_the_deploy() {
    let (c, store, n, _dir) = lab().await;
    let script = Script::default();
    let url = fake_agent(script.clone()).await;
    let token = booted(&c, &store, &n).await;
    let id = NodeIdent::Uuid(n.uuid);
    // A busy agent at the first heartbeat: nothing is lost, the next heartbeat starts over.
    *script.busy.lock().unwrap() = true;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::DeployWait);
    assert!(!node.driver_internal_info.contains_key("deploy_step_index"));
    *script.busy.lock().unwrap() = false;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    settled(&store, n.uuid).await;

    *script.listed.lock().unwrap() = json!([
        {"command_name": "get_deploy_steps", "command_status": "SUCCEEDED"},
        {"command_name": "execute_deploy_step", "command_status": "SUCCEEDED",
         "command_result": {"deploy_step": {"step": "write_image", "interface": "deploy"}}}]);
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::Active,
        "{:?}",
        node.last_error
    );
    assert_eq!(
        node.driver_internal_info["root_uuid_or_disk_id"],
        "0x1234abcd"
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(
        calls.contains("boot.prepare_instance:disk=0x1234abcd"),
        "{calls}"
    );
    let posted = script.posted.lock().unwrap().clone();
    assert!(
        posted.ends_with(&[
            "standby.get_partition_uuids".into(),
            "standby.power_off".into()
        ]),
        "{posted:?}"
    );
    assert_eq!(node.power_state, Some(crate::model::PowerState::On));
    for k in [
        "agent_secret_token",
        "agent_url",
        "deploy_step_index",
        "agent_image_info",
    ] {
        assert!(!node.driver_internal_info.contains_key(k), "{k} left");
    }
}

#[tokio::test]
async fn a_partition_image_without_a_root_uuid_fails_the_deploy_and_says_why() {
    let (c, store, mut n, _dir) = lab().await;
    for (k, v) in [
        ("kernel", json!("http://images/vmlinuz")),
        ("ramdisk", json!("http://images/initrd")),
        ("root_mb", json!(64)),
    ] {
        n.instance_info.insert(k.into(), v);
    }
    let n = store.save_node(&n).await.unwrap();
    let script = Script::default();
    // What an agent without a udev database reports: lsblk knows no filesystem UUID.
    *script.partition_uuids.lock().unwrap() = json!({"root uuid": "", "partitions": {}});
    let url = fake_agent(script.clone()).await;
    let token = booted(&c, &store, &n).await;
    let id = NodeIdent::Uuid(n.uuid);
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    settled(&store, n.uuid).await;
    *script.listed.lock().unwrap() = json!([
        {"command_name": "get_deploy_steps", "command_status": "SUCCEEDED"},
        {"command_name": "execute_deploy_step", "command_status": "SUCCEEDED",
         "command_result": {"deploy_step": {"step": "write_image", "interface": "deploy"}}}]);
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::DeployFailed);
    let err = node.last_error.unwrap_or_default();
    assert!(
        err.contains("no root partition UUID") && err.contains("udev"),
        "{err}"
    );
    assert!(
        !node
            .driver_internal_info
            .contains_key("root_uuid_or_disk_id"),
        "nothing recorded"
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(!calls.contains("boot.prepare_instance"), "{calls}");
    assert!(!node.driver_internal_info.contains_key("agent_secret_token"));
    assert_eq!(node.power_state, Some(crate::model::PowerState::Off));
}

#[tokio::test]
async fn heartbeats_are_checked_before_anything_is_recorded() {
    let (c, store, n, _dir) = lab().await;
    let url = fake_agent(Script::default()).await;
    let token = booted(&c, &store, &n).await;
    let id = NodeIdent::Uuid(n.uuid);
    let invalid = |r: Result<(), ConductorError>| match r {
        Err(ConductorError::InvalidParameter(m)) => m,
        other => panic!("{other:?}"),
    };
    let m = invalid(c.heartbeat(&id, hb(&url, "wrong")).await);
    assert!(m.contains("Invalid or missing agent token"), "{m}");
    let mut missing = hb(&url, &token);
    missing.agent_token = None;
    assert!(invalid(c.heartbeat(&id, missing).await).contains("required"));
    // Locked without a recorded agent: 409 so the agent retries soon.
    let held = c.reserve(&id).await.unwrap();
    let r = c.heartbeat(&id, hb(&url, &token)).await;
    assert!(
        matches!(r, Err(ConductorError::Store(StoreError::NodeLocked { .. }))),
        "{r:?}"
    );
    c.release(held).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    settled(&store, n.uuid).await;
    // The callback URL may not change within one agent session.
    let m = invalid(c.heartbeat(&id, hb("http://127.0.0.1:1", &token)).await);
    assert!(m.contains("callback_url"), "{m}");
    // A node in a state without lookup is invisible.
    let mut other = n.clone();
    other.uuid = Uuid::new_v4();
    other.name = None;
    other.provision_state = ProvisionState::Active;
    store.create_node(&other).await.unwrap();
    assert!(matches!(
        c.lookup(&[], Some(other.uuid)).await,
        Err(ConductorError::Store(StoreError::NodeNotFound(_)))
    ));
}

#[tokio::test]
async fn tls_is_required_by_default() {
    let (c, store, n, _dir) = lab().await;
    let token = booted(&c, &store, &n).await;
    // A conductor with the default settings refuses a plain-http callback.
    let strict = Conductor::new(
        store.clone(),
        "c2".into(),
        ConductorSettings::default(),
        Interfaces::with_fakes(),
        ConductorMetrics::default(),
        "http://127.0.0.1:6385".into(),
        AgentSettings::default(),
        CancellationToken::new(),
    );
    let r = strict
        .heartbeat(
            &NodeIdent::Uuid(n.uuid),
            hb("http://127.0.0.1:9999", &token),
        )
        .await;
    assert!(
        matches!(&r, Err(ConductorError::InvalidParameter(m)) if m.contains("require_tls")),
        "{r:?}"
    );
}
