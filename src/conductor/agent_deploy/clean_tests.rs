//! Cleaning through a scripted fake agent: the plan, step after step on heartbeats, a failed
//! step named in `last_error`, a manual clean's unknown step, and abort in `clean wait`.

use serde_json::{Value, json};

use super::tests::{MAC, Script, fake_agent, hb, lab, settled};
use crate::conductor::Conductor;
use crate::model::{MacAddress, Node, PowerState, ProvisionState};
use crate::store::{NodeIdent, Store};
use std::sync::Arc;

/// Puts the lab's node in `manageable`.
async fn manageable(store: &Arc<dyn Store>, n: &Node) {
    let mut node = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    node.provision_state = ProvisionState::Manageable;
    store.save_node(&node).await.unwrap();
}

/// After a verb that boots the agent: the node waits in `clean wait`; returns the token.
/// A manageable node and a scripted agent ready to answer it (not yet booted).
async fn manageable_with_agent() -> (
    Arc<Conductor>,
    Arc<dyn Store>,
    Node,
    tempfile::TempDir,
    Script,
    String,
    NodeIdent,
) {
    let (c, store, n, dir) = lab().await;
    manageable(&store, &n).await;
    let script = Script::default();
    let url = fake_agent(script.clone()).await;
    let id = NodeIdent::Uuid(n.uuid);
    (c, store, n, dir, script, url, id)
}

async fn in_clean_wait(c: &Arc<Conductor>, store: &Arc<dyn Store>, n: &Node) -> String {
    let node = settled(store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::CleanWait,
        "{:?}",
        node.last_error
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(
        calls.contains("boot.prepare_ramdisk:ipa-api-url="),
        "{calls}"
    );
    let (_, token) = c
        .lookup(&[MacAddress::parse(MAC).unwrap()], None)
        .await
        .unwrap();
    token
}

fn listed(script: &Script, commands: Value) {
    *script.listed.lock().unwrap() = commands;
}

fn clean_step_status(status: &str) -> Value {
    json!([{"command_name": "get_clean_steps", "command_status": "SUCCEEDED"},
           {"command_name": "execute_clean_step", "command_status": status,
            "command_error": if status == "FAILED" {
                json!({"type": "BlockDeviceEraseError", "code": 500, "message": "m",
                       "details": "wipefs failed on /dev/sda"})
            } else { Value::Null }}])
}

#[tokio::test]
async fn provide_runs_the_automated_plan_and_ends_available() {
    let (c, store, n, _dir, script, url, id) = manageable_with_agent().await;
    c.provision(&id, "provide", None).await.unwrap();
    let token = in_clean_wait(&c, &store, &n).await;

    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanWait);
    let dii = &node.driver_internal_info;
    // The default priorities: erase_devices (10) is disabled by ironboot's default, priority
    // 0 steps never run automatically.
    assert_eq!(dii["clean_steps"].as_array().unwrap().len(), 1, "{dii:?}");
    assert_eq!(dii["clean_steps"][0]["step"], "erase_devices_metadata");
    assert_eq!(dii["clean_step_index"], 0);
    assert_eq!(dii["clean_step"]["step"], "erase_devices_metadata");
    let view = crate::api::node_view::node_value(
        &node,
        "clean_step",
        Some("c1"),
        crate::api::version::MAX,
    );
    assert_eq!(
        view["step"], "erase_devices_metadata",
        "the API shows the running step"
    );
    // How erase_devices would erase, for the agent (Ironic's defaults).
    assert_eq!(dii["agent_erase_devices_iterations"], 1);
    assert_eq!(dii["agent_erase_devices_zeroize"], true);
    assert_eq!(dii["agent_continue_if_secure_erase_failed"], false);
    assert_eq!(dii["disk_erasure_concurrency"], 4);
    assert_eq!(
        *script.posted.lock().unwrap(),
        ["clean.get_clean_steps", "clean.execute_clean_step"]
    );

    listed(&script, clean_step_status("RUNNING"));
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    assert_eq!(
        settled(&store, n.uuid).await.provision_state,
        ProvisionState::CleanWait
    );

    listed(&script, clean_step_status("SUCCEEDED"));
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::Available,
        "{:?}",
        node.last_error
    );
    assert_eq!(node.power_state, Some(PowerState::Off));
    for k in [
        "clean_steps",
        "clean_step",
        "clean_step_index",
        "agent_url",
        "agent_secret_token",
        "agent_cached_clean_steps",
    ] {
        assert!(!node.driver_internal_info.contains_key(k), "{k} left");
    }
    assert!(
        node.driver_internal_info["fake_calls"]
            .to_string()
            .contains("boot.clean_up_ramdisk")
    );
}

#[tokio::test]
async fn a_node_that_opts_out_of_automated_cleaning_goes_straight_to_available() {
    let (c, store, n, _dir) = lab().await;
    let mut node = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    node.provision_state = ProvisionState::Manageable;
    node.automated_clean = Some(false);
    store.save_node(&node).await.unwrap();
    c.provision(&NodeIdent::Uuid(n.uuid), "provide", None)
        .await
        .unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::Available);
    let calls = node.driver_internal_info.get("fake_calls");
    assert!(
        !calls.is_some_and(|c| c.to_string().contains("prepare_ramdisk")),
        "no agent booted: {calls:?}"
    );
}

#[tokio::test]
async fn a_manual_clean_runs_steps_in_order_and_a_failed_step_is_named() {
    let (c, store, n, _dir, script, url, id) = manageable_with_agent().await;
    let steps = vec![
        json!({"interface": "deploy", "step": "erase_pstore"}),
        json!({"interface": "deploy", "step": "erase_devices_metadata"}),
    ];
    c.provision_with(
        &id,
        "clean",
        None,
        crate::conductor::verbs::VerbArgs {
            clean_steps: Some(steps),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let token = in_clean_wait(&c, &store, &n).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.driver_internal_info["clean_step"]["step"], "erase_pstore",
        "the operator's order, not the priorities"
    );
    listed(&script, clean_step_status("SUCCEEDED"));
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanWait);
    assert_eq!(node.driver_internal_info["clean_step_index"], 1);
    assert_eq!(
        script.posted.lock().unwrap().len(),
        3,
        "the second step was sent"
    );

    listed(&script, clean_step_status("FAILED"));
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanFailed);
    let err = node.last_error.unwrap_or_default();
    assert!(
        err.contains("Clean step deploy.erase_devices_metadata failed")
            && err.contains("wipefs failed on /dev/sda"),
        "{err}"
    );
    assert!(!node.driver_internal_info.contains_key("clean_steps"));
    assert!(!node.driver_internal_info.contains_key("agent_secret_token"));

    // clean failed → manage → manageable, as in Ironic.
    c.provision(&id, "manage", None).await.unwrap();
    assert_eq!(
        settled(&store, n.uuid).await.provision_state,
        ProvisionState::Manageable
    );
}

#[tokio::test]
async fn a_manual_clean_with_a_step_the_agent_lacks_fails_before_running_anything() {
    let (c, store, n, _dir, script, url, id) = manageable_with_agent().await;
    let args = crate::conductor::verbs::VerbArgs {
        clean_steps: Some(vec![json!({"interface": "deploy", "step": "no_such_step"})]),
        ..Default::default()
    };
    c.provision_with(&id, "clean", None, args).await.unwrap();
    let token = in_clean_wait(&c, &store, &n).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanFailed);
    let err = node.last_error.unwrap_or_default();
    assert!(
        err.contains("node does not support this clean step") && err.contains("no_such_step"),
        "{err}"
    );
    assert_eq!(*script.posted.lock().unwrap(), ["clean.get_clean_steps"]);
}

#[tokio::test]
async fn bad_clean_steps_are_refused_before_the_node_moves() {
    let (c, store, n, _dir) = lab().await;
    manageable(&store, &n).await;
    let id = NodeIdent::Uuid(n.uuid);
    for bad in [
        json!({"interface": "deploy"}),
        json!({"interface": "disk", "step": "x"}),
        json!({"interface": "deploy", "step": "x", "args": "a=1"}),
    ] {
        let args = crate::conductor::verbs::VerbArgs {
            clean_steps: Some(vec![bad.clone()]),
            ..Default::default()
        };
        let err = c
            .provision_with(&id, "clean", None, args)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("Invalid clean_steps: "),
            "{bad}: {err}"
        );
        let node = settled(&store, n.uuid).await;
        assert_eq!(node.provision_state, ProvisionState::Manageable);
        assert!(!node.driver_internal_info.contains_key("clean_steps"));
    }
}

#[tokio::test]
async fn abort_in_clean_wait_names_the_running_step() {
    let (c, store, n, _dir, _script, url, id) = manageable_with_agent().await;
    c.provision(&id, "provide", None).await.unwrap();
    let token = in_clean_wait(&c, &store, &n).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    settled(&store, n.uuid).await;
    c.provision(&id, "abort", None).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanFailed);
    assert_eq!(
        node.last_error.as_deref(),
        Some(
            "By request, the clean operation was aborted during or after the completion of \
             step \"deploy.erase_devices_metadata\""
        )
    );
    assert_eq!(node.power_state, Some(PowerState::Off));
    assert!(!node.driver_internal_info.contains_key("clean_step"));
    assert!(!node.driver_internal_info.contains_key("agent_secret_token"));
}

#[tokio::test]
async fn a_step_that_asks_for_a_reboot_continues_on_the_new_agent() {
    let (c, store, n, _dir, script, url, id) = manageable_with_agent().await;
    let args = crate::conductor::verbs::VerbArgs {
        clean_steps: Some(vec![
            json!({"interface": "deploy", "step": "reboot_me"}),
            json!({"interface": "deploy", "step": "erase_devices_metadata"}),
        ]),
        ..Default::default()
    };
    c.provision_with(&id, "clean", None, args).await.unwrap();
    let token = in_clean_wait(&c, &store, &n).await;
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    settled(&store, n.uuid).await;
    listed(&script, clean_step_status("SUCCEEDED"));
    c.heartbeat(&id, hb(&url, &token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::CleanWait);
    let dii = &node.driver_internal_info;
    assert_eq!(dii["cleaning_reboot"], true);
    assert!(!dii.contains_key("agent_url") && !dii.contains_key("agent_secret_token"));
    assert!(
        dii["fake_calls"]
            .to_string()
            .contains("power.set_power_state:rebooting"),
        "{}",
        dii["fake_calls"]
    );
    assert_eq!(
        script.posted.lock().unwrap().len(),
        2,
        "nothing sent meanwhile"
    );

    // The rebooted agent: a new lookup (a new token), a new callback URL.
    let new_url = fake_agent(script.clone()).await;
    let (_, new_token) = c
        .lookup(&[MacAddress::parse(MAC).unwrap()], None)
        .await
        .unwrap();
    assert_ne!(new_token, token);
    listed(&script, json!([]));
    c.heartbeat(&id, hb(&new_url, &new_token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::CleanWait,
        "{:?}",
        node.last_error
    );
    assert_eq!(node.driver_internal_info["clean_step_index"], 1);
    assert!(!node.driver_internal_info.contains_key("cleaning_reboot"));
    assert_eq!(
        script.posted.lock().unwrap().last().map(String::as_str),
        Some("clean.execute_clean_step")
    );
    listed(&script, clean_step_status("SUCCEEDED"));
    c.heartbeat(&id, hb(&new_url, &new_token)).await.unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::Manageable,
        "{:?}",
        node.last_error
    );
}
