//! `clean.*` and `deploy.*`: the step lists and step execution. The agent has one "hardware
//! manager"; its version is what the conductor sends back (`clean_version` /
//! `deploy_version`) to prove the steps it runs are the ones it listed.

use std::sync::Arc;

use futures_util::FutureExt;
use serde_json::{Map, Value, json};

use super::{Kind, RestError, Spec, no_validation};
use crate::agent::Agent;

/// The manager's class name (the key of the step lists) and version entry.
pub const MANAGER_CLASS: &str = "IronbootHardwareManager";
pub const MANAGER_NAME: &str = "ironboot_hardware_manager";
pub const MANAGER_VERSION: &str = "1.0";

pub fn manager_versions() -> Value {
    json!({ MANAGER_NAME: MANAGER_VERSION })
}

fn step(name: &str, priority: u32, abortable: bool) -> Value {
    json!({"step": name, "priority": priority, "interface": "deploy",
           "reboot_requested": false, "abortable": abortable})
}

fn clean_steps() -> Value {
    json!([
        step("erase_devices", 10, true),
        step("erase_devices_metadata", 99, true)
    ])
}

fn deploy_steps() -> Value {
    let mut write = step("write_image", 0, false);
    write["argsinfo"] = json!({
        "image_info": {"description": "Information about the image to write", "required": true},
        "configdrive": {"description": "Config drive (gzip+base64 or URL)", "required": false},
    });
    json!([step("erase_devices_metadata", 0, false), write])
}

pub static SPECS: &[Spec] = &[
    Spec {
        extension: "clean",
        name: "get_clean_steps",
        kind: Kind::Sync,
        required: &["node", "ports"],
        optional: Some(&[]),
        validate: no_validation,
        run: |agent, p| async move { get_steps(&agent, &p, "clean") }.boxed(),
    },
    Spec {
        extension: "clean",
        name: "execute_clean_step",
        kind: Kind::Async,
        required: &["step", "node", "ports"],
        optional: None,
        validate: no_validation,
        run: |agent, p| execute_step(agent, p, "clean").boxed(),
    },
    Spec {
        extension: "deploy",
        name: "get_deploy_steps",
        kind: Kind::Sync,
        required: &["node", "ports"],
        optional: Some(&[]),
        validate: no_validation,
        run: |agent, p| async move { get_steps(&agent, &p, "deploy") }.boxed(),
    },
    Spec {
        extension: "deploy",
        name: "execute_deploy_step",
        kind: Kind::Async,
        required: &["step", "node", "ports"],
        optional: None,
        validate: validate_deploy_step,
        run: |agent, p| execute_step(agent, p, "deploy").boxed(),
    },
];

fn get_steps(agent: &Agent, params: &Map<String, Value>, kind: &str) -> Result<Value, RestError> {
    agent.cache_node(params.get("node"));
    let steps = if kind == "clean" {
        clean_steps()
    } else {
        deploy_steps()
    };
    Ok(json!({
        format!("{kind}_steps"): { MANAGER_CLASS: steps },
        "hardware_manager_version": manager_versions(),
    }))
}

/// `write_image` needs a valid `image_info` before it is accepted (IPA's validator).
fn validate_deploy_step(_: &Agent, params: &Map<String, Value>) -> Result<(), RestError> {
    let step = params.get("step").and_then(Value::as_object);
    if step.and_then(|s| s.get("step")).and_then(Value::as_str) == Some("write_image") {
        let info = step
            .and_then(|s| s.get("args"))
            .and_then(|a| a.get("image_info"))
            .or_else(|| params.get("image_info"));
        super::write::ImageInfo::parse(info)?;
    }
    Ok(())
}

async fn execute_step(
    agent: Arc<Agent>,
    mut params: Map<String, Value>,
    kind: &'static str,
) -> Result<Value, RestError> {
    let node = params.remove("node");
    agent.cache_node(node.as_ref());
    params.remove("ports");
    let given_version = params
        .remove(&format!("{kind}_version"))
        .unwrap_or(Value::Null);
    if !given_version.is_null() && given_version != manager_versions() {
        return Err(RestError::version_mismatch(
            &manager_versions(),
            &given_version,
        ));
    }
    let step = params.remove("step").unwrap_or(Value::Null);
    let Some(name) = step.get("step").and_then(Value::as_str) else {
        let msg = format!("Malformed {kind}_step, no \"step\" key: {step}");
        return Err(if kind == "clean" {
            RestError::cleaning(msg)
        } else {
            RestError::deployment(msg)
        });
    };
    // The step's own arguments join the remaining parameters (IPA's kwargs).
    if let Some(args) = step.get("args").and_then(Value::as_object) {
        params.extend(args.clone());
    }
    let result = dispatch(&agent, name, params).await.map_err(|e| {
        if kind == "clean" {
            RestError::cleaning(format!("Error performing clean_step {name}: {e}"))
        } else {
            e
        }
    })?;
    Ok(json!({ format!("{kind}_result"): result, format!("{kind}_step"): step }))
}

/// Runs one step by name.
async fn dispatch(
    agent: &Arc<Agent>,
    name: &str,
    args: Map<String, Value>,
) -> Result<Value, RestError> {
    match name {
        "erase_devices_metadata" => super::write::erase_devices(agent, true).await,
        "erase_devices" => super::write::erase_devices(agent, false).await,
        "write_image" => {
            let info = args.get("image_info");
            let configdrive = args.get("configdrive").filter(|v| !v.is_null()).cloned();
            let message = super::write::prepare_image(agent, info, configdrive).await?;
            Ok(json!({"result": format!("prepare_image: {message}")}))
        }
        other => Err(RestError::method_not_found(other)),
    }
}
