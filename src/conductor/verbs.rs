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
/// The clean step the agent is running (shown by the API's `clean_step`).
pub const CLEAN_STEP_KEY: &str = "clean_step";
/// Set (true) while the node reboots into a new agent for the next clean step.
pub const CLEANING_REBOOT_KEY: &str = "cleaning_reboot";

/// The rescue password in `instance_info` (the API shows `******`), and its hash for the agent.
pub const RESCUE_PASSWORD_KEY: &str = "rescue_password";
pub const HASHED_RESCUE_PASSWORD_KEY: &str = "hashed_rescue_password";

/// Removes both rescue passwords from the node (rescue done, aborted or torn down).
pub fn forget_rescue_password(node: &mut Node) {
    for key in [RESCUE_PASSWORD_KEY, HASHED_RESCUE_PASSWORD_KEY] {
        node.instance_info.remove(key);
    }
}

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
        let agent = iface == crate::conductor::inspection::AGENT;
        if agent && kind == InterfaceKind::Rescue {
            check_agent_rescue(node)?;
        }
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

/// The agent rescue interface boots the agent through the `direct` deploy interface (its agent
/// client), with `driver_info.rescue_kernel` + `rescue_ramdisk` when given (both or neither).
fn check_agent_rescue(node: &Node) -> Result<(), ConductorError> {
    if node.deploy_interface != "direct" {
        return Err(ConductorError::InvalidParameter(format!(
            "rescue_interface agent needs deploy_interface direct (node {} has {})",
            node.ident(),
            node.deploy_interface
        )));
    }
    let has = |k: &str| node.driver_info.get(k).is_some_and(|v| !v.is_null());
    if has("rescue_kernel") != has("rescue_ramdisk") {
        return Err(ConductorError::InvalidParameter(format!(
            "node {}: driver_info.rescue_kernel and rescue_ramdisk must be given together; \
             the rescue ramdisk configuration is ambiguous",
            node.ident()
        )));
    }
    Ok(())
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
            info.insert(RESCUE_PASSWORD_KEY.into(), Value::String(pw));
            info.insert(HASHED_RESCUE_PASSWORD_KEY.into(), Value::String(hashed));
        }
        Event::Inspect => {
            ctx.node.inspection_started_at = Some(crate::model::now());
            ctx.node.inspection_finished_at = None;
        }
        _ => {}
    }
}

/// The rescue password as the rescue ramdisk's login takes it: SHA-512 crypt (`$6$<salt>$...`,
/// 5000 rounds, a random 16-character salt), Ironic's `rescue_password_hash_algorithm`
/// `sha512`. Empty when no randomness is available (the verb then fails on the agent).
pub fn hash_password(pw: &str) -> String {
    const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut random = [0u8; 16];
    if getrandom::fill(&mut random).is_err() {
        return String::new();
    }
    let salt: String = random
        .iter()
        .map(|b| SALT_CHARS[usize::from(*b) % SALT_CHARS.len()] as char)
        .collect();
    match sha_crypt::sha512_crypt_b64(pw.as_bytes(), salt.as_bytes(), &Default::default()) {
        Ok(hash) => format!("$6${salt}${hash}"),
        Err(_) => String::new(),
    }
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

/// Forgets where a cleaning is: the agent session, the current step, a pending reboot (the
/// plan and the manual flag stay).
pub fn wipe_cleaning_progress(node: &mut Node) {
    crate::agent::AgentSession::wipe(node);
    let dii = &mut node.driver_internal_info;
    dii.remove(CLEAN_STEP_KEY);
    dii.remove(CLEANING_REBOOT_KEY);
}

/// Forgets one cleaning: its progress, the plan and the manual flag. Returns whether it was a
/// manual clean.
pub fn wipe_cleaning_info(node: &mut Node) -> bool {
    wipe_cleaning_progress(node);
    let dii = &mut node.driver_internal_info;
    dii.remove(CLEAN_STEPS_KEY);
    dii.remove(MANUAL_CLEAN_KEY)
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rescue_passwords_are_sha512_crypt_with_a_fresh_salt() {
        let a = super::hash_password("pw");
        let b = super::hash_password("pw");
        assert!(a.starts_with("$6$") && a.len() == 3 + 16 + 1 + 86, "{a}");
        assert_ne!(a, b, "a new salt each time");
        // The same salt gives the same hash (checked against openssl in agent_ipa_rescue).
        let salt = &a[3..19];
        let again = sha_crypt::sha512_crypt_b64(b"pw", salt.as_bytes(), &Default::default());
        assert_eq!(a, format!("$6${salt}${}", again.unwrap()));
    }
}
