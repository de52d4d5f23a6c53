//! Which clean steps run, and in which order.
//!
//! Automated cleaning runs the agent's `deploy` steps whose priority (after the operator's
//! overrides, `[deploy] erase_devices_priority` / `erase_devices_metadata_priority`) is above
//! zero, highest first. A manual clean runs the operator's steps in the order given, each
//! checked against the steps the agent offers: unknown steps and arguments the step does not
//! take fail the clean before anything runs. The operator's list is checked for shape before
//! the node moves at all ([`check_requested`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The interfaces a clean step may name (Ironic's API schema).
pub const STEP_INTERFACES: &[&str] = &[
    "bios",
    "deploy",
    "firmware",
    "management",
    "power",
    "raid",
    "vendor",
];

/// Keys a requested clean step may carry.
const STEP_KEYS: &[&str] = &[
    "interface",
    "step",
    "args",
    "order",
    "execute_on_child_nodes",
    "limit_child_node_execution",
];

/// One clean step: as the agent offers it, or as planned for this cleaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanStep {
    pub interface: String,
    pub step: String,
    #[serde(default)]
    pub priority: u32,
    #[serde(default)]
    pub abortable: bool,
    #[serde(default)]
    pub reboot_requested: bool,
    /// The arguments the step takes (offered steps only): name → `{"required": bool, ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argsinfo: Option<Map<String, Value>>,
    /// The arguments the step runs with (planned steps only).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub args: Map<String, Value>,
}

impl CleanStep {
    /// `interface.step`, as operators and `last_error` name it.
    pub fn name(&self) -> String {
        format!("{}.{}", self.interface, self.step)
    }

    /// The step as sent to the agent's `execute_clean_step`.
    pub fn for_agent(&self) -> Value {
        let mut v = serde_json::json!({
            "interface": self.interface, "step": self.step, "priority": self.priority,
            "abortable": self.abortable, "reboot_requested": self.reboot_requested,
        });
        if !self.args.is_empty() {
            v["args"] = Value::Object(self.args.clone());
        }
        v
    }
}

/// Priority overrides for automated cleaning (`[deploy]`); `None` keeps the agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanPriorities {
    pub erase_devices: Option<u32>,
    pub erase_devices_metadata: Option<u32>,
}

impl Default for CleanPriorities {
    /// ironboot's defaults, which are `[deploy]`'s: the metadata erase only.
    fn default() -> Self {
        crate::config::DeploySettings::default().clean_priorities()
    }
}

impl CleanPriorities {
    fn of(&self, step: &CleanStep) -> u32 {
        let set = match (step.interface.as_str(), step.step.as_str()) {
            ("deploy", "erase_devices") => self.erase_devices,
            ("deploy", "erase_devices_metadata") => self.erase_devices_metadata,
            _ => None,
        };
        set.unwrap_or(step.priority)
    }
}

/// How the agent's `erase_devices` erases (`[deploy]`), handed to it in the node's
/// `driver_internal_info` under the keys the agent reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseParams {
    /// Random passes of shred (`agent_erase_devices_iterations`).
    pub shred_random_overwrite_iterations: u32,
    /// A final pass of zeros (`agent_erase_devices_zeroize`).
    pub shred_final_overwrite_with_zeros: bool,
    /// Shred when a secure erase fails (`agent_continue_if_secure_erase_failed`).
    pub continue_if_disk_secure_erase_fails: bool,
    pub enable_ata_secure_erase: bool,
    pub enable_nvme_secure_erase: bool,
    /// Disks erased at once (`disk_erasure_concurrency`).
    pub disk_erasure_concurrency: u32,
    /// Skip read-only disks instead of failing (`agent_erase_skip_read_only`).
    pub erase_skip_read_only: bool,
}

impl Default for EraseParams {
    /// Ironic's defaults, which are `[deploy]`'s.
    fn default() -> Self {
        crate::config::DeploySettings::default().erase_params()
    }
}

impl EraseParams {
    /// The `driver_internal_info` keys (the agent's names) and values.
    pub fn agent_keys(&self) -> Vec<(&'static str, Value)> {
        let continue_shred = Value::Bool(self.continue_if_disk_secure_erase_fails);
        vec![
            (
                "agent_erase_devices_iterations",
                self.shred_random_overwrite_iterations.into(),
            ),
            (
                "agent_erase_devices_zeroize",
                self.shred_final_overwrite_with_zeros.into(),
            ),
            (
                "agent_continue_if_secure_erase_failed",
                continue_shred.clone(),
            ),
            // The older name, still read by older agents.
            ("agent_continue_if_ata_erase_failed", continue_shred),
            (
                "agent_enable_ata_secure_erase",
                self.enable_ata_secure_erase.into(),
            ),
            (
                "agent_enable_nvme_secure_erase",
                self.enable_nvme_secure_erase.into(),
            ),
            (
                "disk_erasure_concurrency",
                self.disk_erasure_concurrency.into(),
            ),
            (
                "agent_erase_skip_read_only",
                self.erase_skip_read_only.into(),
            ),
        ]
    }
}

/// Why no plan could be made (becomes the node's `last_error`, the node `clean failed`).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the agent returned an invalid result for get_clean_steps: {0}")]
    InvalidAgentResult(String),
    #[error("{0}")]
    Unsupported(String),
}

/// The steps in an agent's `get_clean_steps` result (`clean_steps`: hardware manager → list).
/// The agent has already de-duplicated them across its managers.
pub fn offered(result: &Value) -> Result<Vec<CleanStep>, PlanError> {
    let invalid = |m: &str| PlanError::InvalidAgentResult(m.to_string());
    let groups = result
        .get("clean_steps")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("no clean_steps object"))?;
    let mut steps: Vec<CleanStep> = Vec::new();
    for (manager, list) in groups {
        let list = list
            .as_array()
            .ok_or_else(|| invalid(&format!("the steps of {manager} are not a list")))?;
        for raw in list {
            for key in ["interface", "step", "priority"] {
                if raw.get(key).is_none_or(Value::is_null) {
                    return Err(invalid(&format!("a step of {manager} has no {key}: {raw}")));
                }
            }
            let step: CleanStep = serde_json::from_value(raw.clone())
                .map_err(|e| invalid(&format!("step {raw} of {manager}: {e}")))?;
            if !steps
                .iter()
                .any(|s| s.interface == step.interface && s.step == step.step)
            {
                steps.push(step);
            }
        }
    }
    Ok(steps)
}

/// Automated cleaning: the agent's `deploy` steps with a priority above zero after the
/// overrides, highest first (equal priorities keep the agent's order).
pub fn automated(offered: &[CleanStep], priorities: &CleanPriorities) -> Vec<CleanStep> {
    let mut plan: Vec<CleanStep> = offered
        .iter()
        .filter(|s| s.interface == "deploy")
        .map(|s| CleanStep {
            priority: priorities.of(s),
            args: Map::new(),
            argsinfo: None,
            ..s.clone()
        })
        .filter(|s| s.priority > 0)
        .collect();
    plan.sort_by_key(|s| std::cmp::Reverse(s.priority));
    plan
}

/// Manual cleaning: the operator's steps in their order, each matched with the step the agent
/// offers (its priority and abortable flag copied) and its arguments checked against the
/// step's `argsinfo`. Every problem is reported at once, joined by "; ".
pub fn manual(requested: &[Value], offered: &[CleanStep]) -> Result<Vec<CleanStep>, PlanError> {
    let mut plan = Vec::new();
    let mut errors = Vec::new();
    for req in requested {
        let field = |k: &str| req.get(k).and_then(Value::as_str).unwrap_or_default();
        let Some(known) = offered
            .iter()
            .find(|s| s.interface == field("interface") && s.step == field("step"))
        else {
            errors.push(format!("node does not support this clean step: {req}"));
            continue;
        };
        let args = req
            .get("args")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let info = known.argsinfo.clone().unwrap_or_default();
        let unexpected: Vec<&str> = args
            .keys()
            .filter(|k| !info.contains_key(*k))
            .map(String::as_str)
            .collect();
        if !unexpected.is_empty() {
            errors.push(format!(
                "clean step {req} has these unexpected arguments: {}",
                unexpected.join(", ")
            ));
        }
        let missing: Vec<&str> = info
            .iter()
            .filter(|(k, v)| {
                v.get("required").and_then(Value::as_bool) == Some(true) && !args.contains_key(*k)
            })
            .map(|(k, _)| k.as_str())
            .collect();
        if !missing.is_empty() {
            errors.push(format!(
                "clean step {req} is missing these required arguments: {}",
                missing.join(", ")
            ));
        }
        plan.push(CleanStep {
            args,
            argsinfo: None,
            ..known.clone()
        });
    }
    if !errors.is_empty() {
        return Err(PlanError::Unsupported(errors.join("; ")));
    }
    Ok(plan)
}

/// Checks the shape of a manual clean's steps (Ironic's API schema), before the node moves.
/// The message follows "Invalid clean_steps: ".
pub fn check_requested(steps: &[Value]) -> Result<(), String> {
    for step in steps {
        let Some(obj) = step.as_object() else {
            return Err(format!("{step} is not of type 'object'"));
        };
        if let Some(k) = obj.keys().find(|k| !STEP_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "Additional properties are not allowed ('{k}' was unexpected)"
            ));
        }
        match obj.get("interface") {
            None => return Err("'interface' is a required property".into()),
            Some(Value::String(i)) if STEP_INTERFACES.contains(&i.as_str()) => {}
            Some(other) => {
                return Err(format!(
                    "{other} is not one of {}",
                    serde_json::json!(STEP_INTERFACES)
                ));
            }
        }
        match obj.get("step") {
            None => return Err("'step' is a required property".into()),
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::String(_)) => return Err("'' should be non-empty".into()),
            Some(other) => return Err(format!("{other} is not of type 'string'")),
        }
        if let Some(args) = obj.get("args")
            && !args.is_object()
        {
            return Err(format!("{args} is not of type 'object'"));
        }
        if let Some(v) = obj.get("execute_on_child_nodes")
            && !v.is_boolean()
        {
            return Err(format!("{v} is not of type 'boolean'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ipa_result() -> Value {
        json!({
            "clean_steps": {
                "GenericHardwareManager": [
                    {"step": "erase_devices", "priority": 10, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "erase_pstore", "priority": 0, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                    {"step": "burnin_disk", "priority": 0, "interface": "deploy",
                     "reboot_requested": false, "abortable": true,
                     "argsinfo": {"runtime": {"description": "s", "required": false}}},
                    {"step": "delete_configuration", "priority": 0, "interface": "raid",
                     "reboot_requested": false, "abortable": true},
                ],
                "OtherManager": [
                    {"step": "erase_devices", "priority": 5, "interface": "deploy",
                     "reboot_requested": false, "abortable": true},
                ]
            },
            "hardware_manager_version": {"generic_hardware_manager": "1.2"}
        })
    }

    fn names(plan: &[CleanStep]) -> Vec<String> {
        plan.iter().map(CleanStep::name).collect()
    }

    #[test]
    fn offered_steps_are_flattened_once_each() {
        let steps = offered(&ipa_result()).unwrap();
        assert_eq!(steps.len(), 5);
        assert_eq!(steps[0].priority, 10, "the first manager's entry is kept");
        assert!(offered(&json!({"clean_steps": {"M": [{"step": "x"}]}})).is_err());
        assert!(offered(&json!({})).is_err());
    }

    #[test]
    fn automated_plan_applies_overrides_and_orders_by_priority() {
        let steps = offered(&ipa_result()).unwrap();
        let ironboot_default = CleanPriorities::default();
        assert_eq!(
            names(&automated(&steps, &ironboot_default)),
            ["deploy.erase_devices_metadata"]
        );
        let agent_order = CleanPriorities {
            erase_devices: None,
            erase_devices_metadata: None,
        };
        assert_eq!(
            names(&automated(&steps, &agent_order)),
            ["deploy.erase_devices_metadata", "deploy.erase_devices"]
        );
        let shred_first = CleanPriorities {
            erase_devices: Some(200),
            erase_devices_metadata: Some(0),
        };
        let plan = automated(&steps, &shred_first);
        assert_eq!(names(&plan), ["deploy.erase_devices"]);
        assert_eq!(plan[0].priority, 200);
        let none = CleanPriorities {
            erase_devices: Some(0),
            erase_devices_metadata: Some(0),
        };
        assert!(automated(&steps, &none).is_empty());
    }

    #[test]
    fn manual_plan_keeps_the_given_order_and_checks_steps_and_args() {
        let steps = offered(&ipa_result()).unwrap();
        let plan = manual(
            &[
                json!({"interface": "deploy", "step": "burnin_disk", "args": {"runtime": 5}}),
                json!({"interface": "deploy", "step": "erase_devices_metadata"}),
            ],
            &steps,
        )
        .unwrap();
        assert_eq!(
            names(&plan),
            ["deploy.burnin_disk", "deploy.erase_devices_metadata"]
        );
        assert_eq!(plan[0].for_agent()["args"], json!({"runtime": 5}));
        assert_eq!(
            plan[1].priority, 99,
            "priority copied from the agent's step"
        );

        let err = manual(
            &[
                json!({"interface": "deploy", "step": "no_such_step"}),
                json!({"interface": "deploy", "step": "erase_pstore", "args": {"x": 1}}),
            ],
            &steps,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node does not support this clean step") && err.contains("no_such_step"),
            "{err}"
        );
        assert!(err.contains("unexpected arguments: x"), "{err}");
        // A raid step is not a deploy step.
        assert!(
            manual(
                &[json!({"interface": "deploy", "step": "delete_configuration"})],
                &steps
            )
            .is_err()
        );
    }

    #[test]
    fn steps_that_need_a_reboot_keep_their_flag() {
        let mut steps = offered(&ipa_result()).unwrap();
        steps[1].reboot_requested = true;
        let plan = automated(&steps, &CleanPriorities::default());
        assert!(plan[0].reboot_requested);
        assert_eq!(plan[0].for_agent()["reboot_requested"], true);
    }

    #[test]
    fn requested_steps_are_checked_for_shape() {
        let ok = json!({"interface": "deploy", "step": "erase_devices", "args": {}});
        assert!(check_requested(&[ok]).is_ok());
        for (bad, says) in [
            (json!("erase"), "not of type 'object'"),
            (json!({"step": "x"}), "'interface' is a required"),
            (json!({"interface": "disk", "step": "x"}), "is not one of"),
            (json!({"interface": "deploy"}), "'step' is a required"),
            (json!({"interface": "deploy", "step": ""}), "non-empty"),
            (
                json!({"interface": "deploy", "step": 3}),
                "not of type 'string'",
            ),
            (
                json!({"interface": "deploy", "step": "x", "args": [1]}),
                "not of type 'object'",
            ),
            (
                json!({"interface": "deploy", "step": "x", "foo": 1}),
                "'foo' was unexpected",
            ),
        ] {
            let err = check_requested(std::slice::from_ref(&bad)).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
