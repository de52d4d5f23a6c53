//! The provision verbs served by a node's optional interfaces: inspection (inspect interface),
//! manual cleaning (clean steps), rescue and unrescue (rescue interface).
//!
//! ironboot implements the `fake` interfaces of these kinds, with Ironic's `fake` semantics:
//! record the call and succeed at once. A `no-*` interface is the kind's absence, refused before
//! anything changes. A manual clean of a node whose deploy interface cleans through the agent
//! (`direct`) runs there instead (`agent_deploy::clean_steps`); these functions check and stage
//! its steps.

use serde_json::Value;

use super::{ConductorError, Task};
use crate::driver::NodeContext;
use crate::model::{Event, InterfaceKind, Node};

/// Where the clean steps of a manual clean wait for the background part; once the agent has
/// listed its steps, the plan of the cleaning (manual or automated).
pub const CLEAN_STEPS_KEY: &str = "clean_steps";
/// Set (true) while a manual clean runs: its steps are the operator's, run in the given order,
/// and it ends in `manageable` (Ironic's key for steps given rather than generated).
pub const MANUAL_CLEAN_KEY: &str = "declarative_cleaning";

/// What a verb needs besides the node.
#[derive(Debug, Clone, Default)]
pub struct VerbArgs {
    pub clean_steps: Option<Vec<Value>>,
    pub rescue_password: Option<String>,
}

/// Why a background verb failed (becomes the node's `last_error`).
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    #[error("clean step {step} of interface {interface} is not supported by node {node}")]
    UnknownCleanStep {
        node: String,
        interface: String,
        step: String,
    },
}

/// The kind whose interface serves `event`, for the verbs of this module.
fn kind_of(event: Event) -> Option<InterfaceKind> {
    match event {
        Event::Inspect => Some(InterfaceKind::Inspect),
        Event::Rescue | Event::Unrescue => Some(InterfaceKind::Rescue),
        _ => None,
    }
}

/// Checks, before the first transition, that the node can do `event` with `args`.
pub fn check(node: &Node, event: Event, args: &VerbArgs) -> Result<(), ConductorError> {
    if let Some(kind) = kind_of(event) {
        let iface = node.interface(kind);
        if iface.starts_with("no-") {
            return Err(ConductorError::InvalidParameter(format!(
                "Driver {} does not support {} (disabled or not implemented).",
                node.driver,
                kind.as_str()
            )));
        }
        let agent = event == Event::Inspect && iface == crate::conductor::inspection::AGENT;
        if iface != "fake" && !agent {
            return Err(ConductorError::Unsupported(format!(
                "{} through the {iface} {} interface is not supported by ironboot yet",
                event.as_str(),
                kind.as_str()
            )));
        }
    }
    match event {
        Event::Clean if args.clean_steps.as_ref().is_none_or(Vec::is_empty) => {
            Err(ConductorError::InvalidParameter(
                "\"clean_steps\" is required when setting target provision state to clean".into(),
            ))
        }
        Event::Clean => crate::conductor::clean_plan::check_requested(
            args.clean_steps.as_deref().unwrap_or_default(),
        )
        .map_err(|m| ConductorError::InvalidParameter(format!("Invalid clean_steps: {m}"))),
        Event::Rescue if args.rescue_password.as_deref().is_none_or(str::is_empty) => {
            Err(ConductorError::InvalidParameter(
                "A non-empty \"rescue_password\" is required when setting target provision \
                 state to rescue"
                    .into(),
            ))
        }
        _ => Ok(()),
    }
}

/// Records what the background part needs, in the same save as the first transition.
pub fn stage(ctx: &mut NodeContext, event: Event, args: VerbArgs) {
    match event {
        Event::Clean => {
            let steps = args.clean_steps.unwrap_or_default();
            let dii = &mut ctx.node.driver_internal_info;
            dii.insert(CLEAN_STEPS_KEY.into(), Value::Array(steps));
            dii.insert(MANUAL_CLEAN_KEY.into(), Value::Bool(true));
        }
        Event::Rescue => {
            let pw = args.rescue_password.unwrap_or_default();
            let hashed = hash_password(&pw);
            let info = &mut ctx.node.instance_info;
            info.insert("rescue_password".into(), Value::String(pw));
            info.insert("hashed_rescue_password".into(), Value::String(hashed));
        }
        Event::Inspect => {
            ctx.node.inspection_started_at = Some(crate::model::now());
            ctx.node.inspection_finished_at = None;
        }
        _ => {}
    }
}

/// A salted SHA-256 of the rescue password, as a rescue ramdisk would be given it.
fn hash_password(pw: &str) -> String {
    use sha2::Digest;
    let salt = uuid::Uuid::new_v4().simple().to_string();
    let digest = sha2::Sha256::digest(format!("{salt}{pw}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("$sha256${salt}${hex}")
}

/// The background part: the event that ends the verb, or why it failed.
pub async fn run(task: &mut Task, event: Event) -> Result<Event, VerbError> {
    match event {
        Event::Inspect => {
            task.record_fake_call("inspect.inspect_hardware");
            // Ironic keeps only the finish time of a completed inspection.
            task.node.inspection_started_at = None;
            task.node.inspection_finished_at = Some(crate::model::now());
            Ok(Event::Done)
        }
        Event::Clean => {
            let steps = task
                .node
                .driver_internal_info
                .remove(CLEAN_STEPS_KEY)
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            task.node.driver_internal_info.remove(MANUAL_CLEAN_KEY);
            // ironboot's interfaces offer no manual clean steps yet: any step named fails the
            // clean, as an unknown step fails it in Ironic.
            if let Some(step) = steps.first() {
                let field = |k: &str| step.get(k).and_then(Value::as_str).unwrap_or("?");
                return Err(VerbError::UnknownCleanStep {
                    node: task.node.uuid.to_string(),
                    interface: field("interface").to_string(),
                    step: field("step").to_string(),
                });
            }
            // A manual clean ends where it started.
            Ok(Event::Manage)
        }
        Event::Rescue => {
            task.record_fake_call("rescue.rescue");
            Ok(Event::Done)
        }
        Event::Unrescue => {
            // The rescue password stays in instance_info (as in Ironic) until tear down.
            task.record_fake_call("rescue.unrescue");
            Ok(Event::Done)
        }
        _ => Ok(Event::Done),
    }
}

/// Forgets one cleaning: the agent session, the plan, the current step and the manual flag.
/// Returns whether it was a manual clean.
pub fn wipe_cleaning_info(node: &mut Node) -> bool {
    crate::agent::AgentSession::wipe(node);
    let dii = &mut node.driver_internal_info;
    dii.remove(CLEAN_STEPS_KEY);
    dii.remove("clean_step");
    dii.remove(MANUAL_CLEAN_KEY)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}
