//! How a node looks on the wire at a microversion: Ironic's field names, the version each field
//! appeared in (older versions never see newer fields), masked secrets, and links.

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::version::Version;
use super::views::{links, opt_ts, timestamp};
use crate::model::node::mask_secrets;
use crate::model::{InterfaceKind, Node, ProvisionState};

/// Every node field, with the microversion that introduced it (Ironic's gating).
pub const NODE_FIELDS: &[(&str, u32)] = &[
    ("uuid", 1),
    ("created_at", 1),
    ("updated_at", 1),
    ("chassis_uuid", 1),
    ("console_enabled", 1),
    ("driver", 1),
    ("driver_info", 1),
    ("extra", 1),
    ("instance_info", 1),
    ("instance_uuid", 1),
    ("last_error", 1),
    ("maintenance", 1),
    ("maintenance_reason", 1),
    ("power_state", 1),
    ("properties", 1),
    ("provision_state", 1),
    ("provision_updated_at", 1),
    ("reservation", 1),
    ("target_power_state", 1),
    ("target_provision_state", 1),
    ("driver_internal_info", 3),
    ("name", 5),
    ("inspection_finished_at", 6),
    ("inspection_started_at", 6),
    ("clean_step", 7),
    ("raid_config", 12),
    ("target_raid_config", 12),
    ("network_interface", 20),
    ("resource_class", 21),
    ("boot_interface", 31),
    ("console_interface", 31),
    ("deploy_interface", 31),
    ("inspect_interface", 31),
    ("management_interface", 31),
    ("power_interface", 31),
    ("raid_interface", 31),
    ("vendor_interface", 31),
    ("storage_interface", 33),
    ("traits", 37),
    ("rescue_interface", 38),
    ("bios_interface", 40),
    ("fault", 42),
    ("deploy_step", 44),
    ("conductor_group", 46),
    ("automated_clean", 47),
    ("protected", 48),
    ("protected_reason", 48),
    ("conductor", 49),
    ("owner", 50),
    ("description", 51),
    ("allocation_uuid", 52),
    ("retired", 61),
    ("retired_reason", 61),
    ("lessee", 65),
    ("network_data", 66),
    ("boot_mode", 75),
    ("secure_boot", 75),
    ("shard", 82),
    ("parent_node", 83),
    ("firmware_interface", 86),
    ("service_step", 87),
    ("disable_power_off", 95),
    ("instance_name", 104),
    ("health", 109),
];

/// Fields of a node in a list without `detail` or `fields`.
pub const NODE_SUMMARY_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
];

/// The version that introduced `field`, if it is a node field.
pub fn field_since(field: &str) -> Option<Version> {
    NODE_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| Version(*v))
}

/// Every field visible at `version`.
pub fn fields_at(version: Version) -> Vec<&'static str> {
    NODE_FIELDS
        .iter()
        .filter(|(_, v)| version >= Version(*v))
        .map(|(f, _)| *f)
        .collect()
}

/// Which fields a node document shows.
#[derive(Debug, Clone)]
pub enum Shown {
    /// Every field of the version, plus the sub-resource links.
    All,
    /// The list summary.
    Summary,
    /// What `fields=` asked for (already checked).
    Only(Vec<String>),
}

/// Parses and checks `fields=a,b` for nodes: a field newer than `version` is refused with 406
/// (before anything else, as Ironic does), an unknown one with 400.
pub fn parse_fields(raw: Option<&str>, version: Version) -> Result<Option<Vec<String>>, ApiError> {
    super::views::parse_versioned_fields(raw, version, field_since)
}

/// The provision state as a client of `version` knows it.
fn provision_state_at(node: &Node, version: Version) -> Value {
    match node.provision_state {
        // Before 1.2 an available node had no state.
        ProvisionState::Available if version < Version(2) => Value::Null,
        ProvisionState::InspectWait if version < Version(39) => json!("inspecting"),
        s => json!(s),
    }
}

pub fn node_value(node: &Node, field: &str, host: Option<&str>, version: Version) -> Value {
    let opt_str = |o: &Option<String>| o.clone().map(Value::String).unwrap_or(Value::Null);
    if let Some(kind) = InterfaceKind::from_field(field) {
        return json!(node.interface(kind));
    }
    match field {
        "uuid" => json!(node.uuid),
        "name" => opt_str(&node.name),
        "driver" => json!(node.driver),
        "driver_info" => Value::Object(mask_secrets(&node.driver_info)),
        "driver_internal_info" => Value::Object(mask_secrets(&node.driver_internal_info)),
        "properties" => Value::Object(node.properties.clone()),
        "instance_info" => Value::Object(mask_instance_info(&node.instance_info)),
        "extra" => Value::Object(node.extra.clone()),
        "resource_class" => opt_str(&node.resource_class),
        "provision_state" => provision_state_at(node, version),
        "target_provision_state" => json!(node.target_provision_state),
        "power_state" => json!(node.power_state),
        "target_power_state" => json!(node.target_power_state),
        "last_error" => opt_str(&node.last_error),
        "reservation" => opt_str(&node.reservation),
        // `host`: the node's conductor on the hash ring, as the caller found it (none when no
        // live conductor serves the node's group).
        "conductor" => host.map_or(Value::Null, |h| Value::String(h.to_string())),
        "maintenance" => json!(node.maintenance),
        "maintenance_reason" => opt_str(&node.maintenance_reason),
        "console_enabled" => json!(false),
        "disable_power_off" => json!(node.disable_power_off),
        "protected" => json!(node.protected),
        "protected_reason" => opt_str(&node.protected_reason),
        "retired" => json!(node.retired),
        "retired_reason" => opt_str(&node.retired_reason),
        // The clean step the agent runs (recorded by cleaning through the agent).
        "clean_step" => node
            .driver_internal_info
            .get("clean_step")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({})),
        "deploy_step" | "service_step" => json!({}),
        "traits" => {
            let mut t = node.traits.clone();
            t.sort();
            json!(t)
        }
        "instance_uuid" => json!(node.instance_uuid),
        "allocation_uuid" => json!(node.allocation_uuid),
        "automated_clean" => json!(node.automated_clean),
        "conductor_group" => json!(node.conductor_group),
        "description" => opt_str(&node.description),
        "owner" => opt_str(&node.owner),
        "lessee" => opt_str(&node.lessee),
        "network_data" => Value::Object(node.network_data.clone()),
        "raid_config" => Value::Object(node.raid_config.clone()),
        "target_raid_config" => Value::Object(node.target_raid_config.clone()),
        "boot_mode" => opt_str(&node.boot_mode),
        "secure_boot" => json!(node.secure_boot),
        "shard" => opt_str(&node.shard),
        "parent_node" => json!(node.parent_node),
        "instance_name" => opt_str(&node.instance_name),
        "inspection_started_at" => opt_ts(&node.inspection_started_at),
        "inspection_finished_at" => opt_ts(&node.inspection_finished_at),
        "created_at" => timestamp(&node.created_at),
        "updated_at" => opt_ts(&node.updated_at),
        "provision_updated_at" => opt_ts(&node.provision_updated_at),
        // chassis_uuid: ironboot has no chassis. fault, health: no fault detection or health
        // monitoring yet.
        _ => Value::Null,
    }
}

/// `configdrive`, `image_url` and password-like keys are never shown back (Ironic masks them).
fn mask_instance_info(info: &Map<String, Value>) -> Map<String, Value> {
    let mut m = mask_secrets(info);
    for key in ["configdrive", "image_url"] {
        if let Some(v) = m.get_mut(key)
            && !v.is_null()
            && v != &json!("")
        {
            *v = json!("******");
        }
    }
    m
}

/// A node document at `version`, with links under `base`.
pub fn node_json(
    node: &Node,
    shown: &Shown,
    version: Version,
    base: &str,
    host: Option<&str>,
) -> Value {
    let mut m = Map::new();
    let all;
    let names: Vec<&str> = match shown {
        Shown::All => {
            all = fields_at(version);
            all.clone()
        }
        Shown::Summary => NODE_SUMMARY_FIELDS
            .iter()
            .copied()
            .filter(|f| field_since(f).is_some_and(|since| version >= since))
            .collect(),
        Shown::Only(f) => f.iter().map(String::as_str).collect(),
    };
    for f in names {
        m.insert(f.to_string(), node_value(node, f, host, version));
    }
    let id = node.uuid.to_string();
    m.insert("links".into(), links(base, "nodes", &id));
    if matches!(shown, Shown::All) {
        let sub = format!("nodes/{id}");
        m.insert("ports".into(), links(base, &sub, "ports"));
        for (name, since) in [("states", 14), ("portgroups", 24), ("volume", 32)] {
            if version >= Version(since) {
                m.insert(name.into(), links(base, &sub, name));
            }
        }
    }
    Value::Object(m)
}

/// `GET /v1/nodes/{id}/states` at `version`.
pub fn node_states(node: &Node, version: Version) -> Value {
    let mut doc = json!({
        "provision_state": provision_state_at(node, version),
        "target_provision_state": node.target_provision_state,
        "power_state": node.power_state,
        "target_power_state": node.target_power_state,
        "last_error": node.last_error,
        "provision_updated_at": opt_ts(&node.provision_updated_at),
        "console_enabled": false,
    });
    if version >= Version(12) {
        doc["raid_config"] = Value::Object(node.raid_config.clone());
        doc["target_raid_config"] = Value::Object(node.target_raid_config.clone());
    }
    if version >= Version(75) {
        doc["boot_mode"] = json!(node.boot_mode);
        doc["secure_boot"] = json!(node.secure_boot);
    }
    doc
}
