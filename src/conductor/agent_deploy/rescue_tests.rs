//! Rescue through a scripted fake agent: the hash handed over, a refusing agent, abort in
//! `rescue wait`, and the checks before the node moves.

use serde_json::{Value, json};

use super::tests::{MAC, Script, fake_agent, hb, lab, settled};
use crate::conductor::verbs::VerbArgs;
use crate::conductor::{Conductor, ConductorError};
use crate::model::{MacAddress, Node, PowerState, ProvisionState};
use crate::store::{NodeIdent, Store};
use std::sync::Arc;

/// The lab's node, `active` with the agent rescue interface.
async fn active(store: &Arc<dyn Store>, n: &Node) {
    let mut node = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    node.provision_state = ProvisionState::Active;
    node.rescue_interface = "agent".into();
    store.save_node(&node).await.unwrap();
}

async fn rescue(c: &Arc<Conductor>, n: &Node) -> Result<(), ConductorError> {
    let args = VerbArgs {
        rescue_password: Some("pw".into()),
        ..Default::default()
    };
    c.provision_with(&NodeIdent::Uuid(n.uuid), "rescue", None, args)
        .await
}

/// Rescue until `rescue wait`; the token the agent's lookup gets.
async fn in_rescue_wait(c: &Arc<Conductor>, store: &Arc<dyn Store>, n: &Node) -> String {
    rescue(c, n).await.unwrap();
    let node = settled(store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::RescueWait,
        "{:?}",
        node.last_error
    );
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(
        calls.find("boot.clean_up_instance") < calls.find("boot.prepare_ramdisk"),
        "{calls}"
    );
    let hashed = node.instance_info["hashed_rescue_password"]
        .as_str()
        .unwrap();
    assert!(hashed.starts_with("$6$"), "{hashed}");
    let (_, token) = c
        .lookup(&[MacAddress::parse(MAC).unwrap()], None)
        .await
        .unwrap();
    token
}

#[tokio::test]
async fn the_agent_gets_the_password_hash_and_the_node_is_rescued() {
    let (c, store, n, _dir) = lab().await;
    active(&store, &n).await;
    let script = Script::default();
    let url = fake_agent(script.clone()).await;
    let token = in_rescue_wait(&c, &store, &n).await;
    let hashed = settled(&store, n.uuid).await.instance_info["hashed_rescue_password"].clone();
    c.heartbeat(&NodeIdent::Uuid(n.uuid), hb(&url, &token))
        .await
        .unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(
        node.provision_state,
        ProvisionState::Rescue,
        "{:?}",
        node.last_error
    );
    let params = script.params.lock().unwrap()["rescue.finalize_rescue"].clone();
    assert_eq!(params, json!({"rescue_password": hashed, "hashed": true}));
    for k in ["rescue_password", "hashed_rescue_password"] {
        assert!(!node.instance_info.contains_key(k), "{k} left");
    }
    assert!(!node.driver_internal_info.contains_key("agent_secret_token"));
    let calls = node.driver_internal_info["fake_calls"].to_string();
    assert!(calls.ends_with("\"boot.clean_up_ramdisk\"]"), "{calls}");
}

#[tokio::test]
async fn an_agent_that_refuses_the_password_fails_the_rescue() {
    let (c, store, n, _dir) = lab().await;
    active(&store, &n).await;
    let script = Script::default();
    *script.rescue_fails.lock().unwrap() = true;
    let url = fake_agent(script.clone()).await;
    let token = in_rescue_wait(&c, &store, &n).await;
    c.heartbeat(&NodeIdent::Uuid(n.uuid), hb(&url, &token))
        .await
        .unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::RescueFailed);
    let err = node.last_error.unwrap_or_default();
    assert!(
        err.contains("Agent returned bad result for command finalize_rescue"),
        "{err}"
    );
}

#[tokio::test]
async fn abort_in_rescue_wait_drops_the_passwords_and_powers_off() {
    let (c, store, n, _dir) = lab().await;
    active(&store, &n).await;
    in_rescue_wait(&c, &store, &n).await;
    c.provision(&NodeIdent::Uuid(n.uuid), "abort", None)
        .await
        .unwrap();
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::RescueFailed);
    assert_eq!(
        node.last_error.as_deref(),
        Some("Rescue was aborted by request.")
    );
    assert_eq!(node.power_state, Some(PowerState::Off));
    assert!(!node.instance_info.contains_key("hashed_rescue_password"));
}

#[tokio::test]
async fn rescue_is_refused_before_the_node_moves() {
    let (c, store, n, _dir) = lab().await;
    active(&store, &n).await;
    let mut node = store.get_node(&NodeIdent::Uuid(n.uuid)).await.unwrap();
    node.driver_info
        .insert("rescue_kernel".into(), Value::String("http://x/k".into()));
    store.save_node(&node).await.unwrap();
    let err = rescue(&c, &n).await.unwrap_err().to_string();
    assert!(err.contains("ambiguous"), "{err}");
    node.driver_info.remove("rescue_kernel");
    node.deploy_interface = "fake".into();
    store.save_node(&node).await.unwrap();
    let err = rescue(&c, &n).await.unwrap_err().to_string();
    assert!(err.contains("needs deploy_interface direct"), "{err}");
    let node = settled(&store, n.uuid).await;
    assert_eq!(node.provision_state, ProvisionState::Active);
    assert!(!node.instance_info.contains_key("rescue_password"));
}
