//! Node fields as clients write them (create bodies and patched documents): Ironic's schema
//! (types, lengths, string booleans), its version gating (406 for a field newer than the request)
//! and the conversion into the [`Node`].

use serde_json::{Map, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::node_view::field_since;
use super::version::Version;
use crate::model::node::validate_name;
use crate::model::{Fields, HardwareType, InterfaceKind, Node};

/// How a writable field is typed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A string (never null).
    Str,
    /// A string or null, with a maximum length.
    OptStr(Option<usize>),
    /// An object or null (null = `{}`).
    Object,
    /// A boolean, a boolean string (`"false"`, `"on"`, ...) or null.
    Bool,
    /// A UUID string or null.
    Uuid,
    /// An interface name or null (null = the hardware type's default).
    Interface(InterfaceKind),
}

/// Fields a create body may carry (Ironic's node schema).
const CREATE_FIELDS: &[&str] = &[
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "boot_mode",
    "chassis_uuid",
    "conductor_group",
    "console_enabled",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "firmware_interface",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "management_interface",
    "maintenance",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "properties",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "secure_boot",
    "shard",
    "storage_interface",
    "uuid",
    "vendor_interface",
];

/// Fields a JSON Patch may change (Ironic's `PATCH_ALLOWED_FIELDS`).
pub const PATCH_FIELDS: &[&str] = &[
    "automated_clean",
    "bios_interface",
    "boot_interface",
    "chassis_uuid",
    "conductor_group",
    "console_interface",
    "deploy_interface",
    "description",
    "disable_power_off",
    "driver",
    "driver_info",
    "extra",
    "firmware_interface",
    "inspect_interface",
    "instance_info",
    "instance_name",
    "instance_uuid",
    "lessee",
    "maintenance",
    "management_interface",
    "name",
    "network_data",
    "network_interface",
    "owner",
    "parent_node",
    "power_interface",
    "properties",
    "protected",
    "protected_reason",
    "raid_interface",
    "rescue_interface",
    "resource_class",
    "retired",
    "retired_reason",
    "shard",
    "storage_interface",
    "vendor_interface",
];

/// Longest `description` Ironic stores.
const DESCRIPTION_MAX: usize = 4096;

fn kind_of(field: &str) -> Kind {
    if let Some(k) = InterfaceKind::from_field(field) {
        return Kind::Interface(k);
    }
    match field {
        "driver" => Kind::Str,
        "driver_info" | "extra" | "instance_info" | "properties" | "network_data" => Kind::Object,
        "automated_clean" | "console_enabled" | "disable_power_off" | "maintenance"
        | "protected" | "retired" | "secure_boot" => Kind::Bool,
        "uuid" | "instance_uuid" | "chassis_uuid" => Kind::Uuid,
        "description" => Kind::OptStr(Some(DESCRIPTION_MAX)),
        "resource_class" => Kind::OptStr(Some(80)),
        "parent_node" => Kind::OptStr(Some(36)),
        "instance_name" => Kind::OptStr(Some(255)),
        _ => Kind::OptStr(None),
    }
}

fn schema_error(detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Schema error for node: {detail}"))
}

/// Ironic's string booleans.
pub fn parse_bool(field: &str, v: &Value) -> Result<Option<bool>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Ok(Some(true)),
            "0" | "f" | "false" | "off" | "n" | "no" => Ok(Some(false)),
            _ => Err(ApiError::bad_request(format!(
                "Invalid {field}: Unrecognized value '{s}', acceptable values are: '0', '1', \
                 'f', 'false', 'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'"
            ))),
        },
        other => Err(schema_error(format!(
            "{other} is not of type 'string', 'boolean', 'null'"
        ))),
    }
}

/// Checks one field's JSON type and length (the schema), before anything is changed.
fn check_type(field: &str, v: &Value) -> Result<(), ApiError> {
    match (kind_of(field), v) {
        (Kind::Str, Value::String(_)) => Ok(()),
        (Kind::Str, other) => Err(schema_error(format!("{other} is not of type 'string'"))),
        (Kind::Object, Value::Null | Value::Object(_)) => Ok(()),
        (Kind::Object, other) => Err(schema_error(format!(
            "{other} is not of type 'object', 'null'"
        ))),
        (Kind::Bool, _) => parse_bool(field, v).map(|_| ()),
        (Kind::Uuid, Value::Null) => Ok(()),
        (Kind::Uuid, Value::String(s)) if Uuid::parse_str(s).is_ok() => Ok(()),
        (Kind::Uuid, other) => Err(ApiError::bad_request(format!(
            "Expected UUID for {field}: {}",
            other
                .as_str()
                .map(String::from)
                .unwrap_or(other.to_string())
        ))),
        (Kind::OptStr(_) | Kind::Interface(_), Value::Null) => Ok(()),
        (Kind::OptStr(max), Value::String(s)) => match max {
            Some(max) if s.chars().count() > max => Err(schema_error(format!("'{s}' is too long"))),
            _ => Ok(()),
        },
        (Kind::Interface(_), Value::String(_)) => Ok(()),
        (_, other) => Err(schema_error(format!(
            "{other} is not of type 'string', 'null'"
        ))),
    }
}

/// The empty value of a field: giving it below the field's version is not an error.
fn is_empty_value(field: &str, v: &Value) -> bool {
    match field {
        "conductor_group" => v.is_null() || v == &Value::String(String::new()),
        _ => v.is_null(),
    }
}

/// Checks a create body against the schema and `version`; returns its fields.
pub fn check_create(body: Value, version: Version) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(body) = body else {
        return Err(schema_error(format!("{body} is not of type 'object'")));
    };
    if let Some(extra) = body.keys().find(|k| !CREATE_FIELDS.contains(&k.as_str())) {
        return Err(schema_error(format!(
            "Additional properties are not allowed ('{extra}' was unexpected)"
        )));
    }
    if !body.contains_key("driver") {
        return Err(schema_error("'driver' is a required property"));
    }
    for (k, v) in &body {
        check_type(k, v)?;
    }
    for (k, v) in &body {
        if field_since(k).is_some_and(|since| version < since) && !is_empty_value(k, v) {
            return Err(ApiError::not_acceptable());
        }
    }
    Ok(body)
}

/// Whether a patch gives a (non-empty) value to a field newer than `version`.
pub fn patch_gated(field: &str, value: Option<&Value>, version: Version) -> bool {
    // Ironic refuses any value given to such a field (a `remove` carries none).
    field_since(field).is_some_and(|since| version < since) && value.is_some()
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

fn object(v: &Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

/// Writes one checked field into `node`. `hw` is the node's (possibly new) hardware type.
pub fn set_field(
    node: &mut Node,
    hw: &HardwareType,
    field: &str,
    v: &Value,
) -> Result<(), ApiError> {
    check_type(field, v)?;
    if let Some(kind) = InterfaceKind::from_field(field) {
        let name = opt_string(v).unwrap_or_else(|| hw.interfaces(kind).default.to_string());
        node.set_interface(kind, name);
        return Ok(());
    }
    let uuid = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
    let flag = |v: &Value| parse_bool(field, v);
    match field {
        "uuid" => {
            if let Some(u) = uuid(v) {
                node.uuid = u;
            }
        }
        "name" => {
            let name = opt_string(v);
            if let Some(n) = &name {
                validate_name(n).map_err(|_| {
                    ApiError::bad_request(format!("Cannot use invalid name '{n}' for a node"))
                })?;
            }
            node.name = name;
        }
        "driver" => node.driver = opt_string(v).unwrap_or_default(),
        "driver_info" => node.driver_info = object(v),
        "properties" => node.properties = object(v),
        "instance_info" => node.instance_info = object(v),
        "extra" => node.extra = object(v),
        "network_data" => node.network_data = object(v),
        "resource_class" => node.resource_class = opt_string(v),
        "description" => node.description = opt_string(v),
        "owner" => node.owner = opt_string(v),
        "lessee" => node.lessee = opt_string(v),
        "shard" => node.shard = opt_string(v),
        "instance_name" => node.instance_name = opt_string(v),
        // Checked against the registered conductors by the caller (it needs the store).
        "conductor_group" => node.conductor_group = opt_string(v).unwrap_or_default(),
        "retired_reason" => node.retired_reason = opt_string(v),
        "protected_reason" => node.protected_reason = opt_string(v),
        "maintenance_reason" => node.maintenance_reason = opt_string(v),
        "boot_mode" => node.boot_mode = opt_string(v),
        "instance_uuid" => node.instance_uuid = uuid(v),
        "automated_clean" => node.automated_clean = flag(v)?,
        "maintenance" => node.maintenance = flag(v)?.unwrap_or(false),
        "retired" => node.retired = flag(v)?.unwrap_or(false),
        "protected" => node.protected = flag(v)?.unwrap_or(false),
        "disable_power_off" => node.disable_power_off = flag(v)?.unwrap_or(false),
        "secure_boot" => node.secure_boot = flag(v)?,
        "chassis_uuid" => {
            if let Some(c) = v.as_str() {
                // ironboot keeps no chassis, so none can be found (Ironic's answer to an
                // unknown chassis).
                return Err(ApiError::bad_request(format!(
                    "Chassis {c} could not be found."
                )));
            }
        }
        // console_enabled: ironboot has no consoles; parent_node is resolved by the caller.
        _ => {}
    }
    Ok(())
}
