//! `standby.*`: writing an image (the legacy `prepare_image`; the deploy step `write_image`
//! shares its code), reading back the partition UUIDs, flushing, and powering off or
//! rebooting the machine.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Map, Value};

use super::{Kind, RestError, Spec, no_validation};
use crate::agent::Agent;
use crate::system::PowerAction;

pub static SPECS: &[Spec] = &[
    Spec {
        extension: "standby",
        name: "prepare_image",
        kind: Kind::Async,
        required: &["image_info"],
        optional: Some(&["configdrive"]),
        validate: validate_prepare_image,
        run: |agent, p| prepare_image(agent, p).boxed(),
    },
    Spec {
        extension: "standby",
        name: "get_partition_uuids",
        kind: Kind::Sync,
        required: &[],
        optional: Some(&[]),
        validate: no_validation,
        run: |agent, _| async move { Ok(Value::Object(agent.partition_uuids())) }.boxed(),
    },
    Spec {
        extension: "standby",
        name: "sync",
        kind: Kind::Sync,
        required: &[],
        optional: Some(&[]),
        validate: no_validation,
        run: |_, _| {
            async move {
                super::blocking("sync", || {
                    crate::system::sync();
                    Ok(Value::Null)
                })
                .await
            }
            .boxed()
        },
    },
    Spec {
        extension: "standby",
        name: "power_off",
        kind: Kind::Async,
        required: &[],
        optional: Some(&[]),
        validate: no_validation,
        run: |agent, _| power(agent, PowerAction::Off).boxed(),
    },
    Spec {
        extension: "standby",
        name: "run_image",
        kind: Kind::Async,
        required: &[],
        optional: Some(&[]),
        validate: no_validation,
        run: |agent, _| power(agent, PowerAction::Reboot).boxed(),
    },
];

fn validate_prepare_image(_: &Agent, p: &Map<String, Value>) -> Result<(), RestError> {
    super::write::ImageInfo::parse(p.get("image_info")).map(|_| ())
}

async fn prepare_image(agent: Arc<Agent>, p: Map<String, Value>) -> Result<Value, RestError> {
    let configdrive = p.get("configdrive").filter(|v| !v.is_null()).cloned();
    super::write::prepare_image(&agent, p.get("image_info"), configdrive)
        .await
        .map(Value::String)
}

/// Flushes the disks, lets the answer to the command leave, then powers off or reboots. The
/// command stays `RUNNING`: the machine goes down before it could end.
async fn power(agent: Arc<Agent>, action: PowerAction) -> Result<Value, RestError> {
    super::blocking("sync", || {
        crate::system::sync();
        Ok(())
    })
    .await?;
    tracing::info!(?action, "disks flushed; going down in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    crate::system::power(agent.settings.power, action);
    // Only reached when the power action could not be carried out.
    Err(RestError::execution(format!(
        "the machine did not {action:?} (see the agent log)"
    )))
}
