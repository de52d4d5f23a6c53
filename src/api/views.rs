//! How nodes and ports look on the wire (Ironic's field names, links, masked secrets).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use crate::model::node::mask_secrets;
use crate::model::{Node, Port};

/// Every field a node document can carry (what `fields=` may ask for).
pub const NODE_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "driver",
    "driver_info",
    "driver_internal_info",
    "properties",
    "instance_info",
    "instance_uuid",
    "extra",
    "resource_class",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "last_error",
    "reservation",
    "conductor",
    "maintenance",
    "maintenance_reason",
    "fault",
    "console_enabled",
    "protected",
    "clean_step",
    "deploy_step",
    "boot_interface",
    "deploy_interface",
    "power_interface",
    "created_at",
    "updated_at",
    "provision_updated_at",
];

/// Fields of a node in a non-detailed list.
pub const NODE_SUMMARY_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "instance_uuid",
    "power_state",
    "provision_state",
    "maintenance",
];

pub const PORT_FIELDS: &[&str] = &[
    "uuid",
    "address",
    "node_uuid",
    "pxe_enabled",
    "extra",
    "local_link_connection",
    "physical_network",
    "portgroup_uuid",
    "internal_info",
    "created_at",
    "updated_at",
];

pub const PORT_SUMMARY_FIELDS: &[&str] = &["uuid", "address"];

/// Ironic's timestamp format (`2026-11-22T03:17:18.123456+00:00`).
pub fn timestamp(t: &DateTime<Utc>) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
}

fn opt_ts(t: &Option<DateTime<Utc>>) -> Value {
    t.as_ref().map(timestamp).unwrap_or(Value::Null)
}

fn links(base: &str, kind: &str, id: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{kind}/{id}"), "rel": "self"},
        {"href": format!("{base}/{kind}/{id}"), "rel": "bookmark"},
    ])
}

/// Parses `fields=a,b,c` against the allowed set.
pub fn parse_fields(raw: Option<&str>, allowed: &[&str]) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let fields: Vec<String> = raw
        .split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect();
    let bad: Vec<&String> = fields
        .iter()
        .filter(|f| !allowed.contains(&f.as_str()))
        .collect();
    if !bad.is_empty() {
        return Err(ApiError::bad_request(format!(
            "field(s) {} are not valid; valid fields: {}",
            bad.iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            allowed.join(", ")
        )));
    }
    Ok(Some(fields))
}

fn node_value(node: &Node, field: &str, host: &str) -> Value {
    let opt_str = |o: &Option<String>| o.clone().map(Value::String).unwrap_or(Value::Null);
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
        "provision_state" => json!(node.provision_state),
        "target_provision_state" => json!(node.target_provision_state),
        "power_state" => json!(node.power_state),
        "target_power_state" => json!(node.target_power_state),
        "last_error" => opt_str(&node.last_error),
        "reservation" => opt_str(&node.reservation),
        "conductor" => json!(node.conductor_affinity.as_deref().unwrap_or(host)),
        "maintenance" => json!(node.maintenance),
        "maintenance_reason" => opt_str(&node.maintenance_reason),
        "console_enabled" | "protected" => json!(false),
        "clean_step" | "deploy_step" => json!({}),
        "boot_interface" => json!(node.boot_interface),
        "deploy_interface" => json!(node.deploy_interface),
        "power_interface" => json!(node.power_interface),
        "created_at" => timestamp(&node.created_at),
        "updated_at" => opt_ts(&node.updated_at),
        "provision_updated_at" => opt_ts(&node.provision_updated_at),
        // instance_uuid, fault: ironboot has no compute service and no fault detection.
        _ => Value::Null,
    }
}

/// `configdrive` and password-like keys are never shown back (Ironic masks them too).
fn mask_instance_info(info: &Map<String, Value>) -> Map<String, Value> {
    let mut m = mask_secrets(info);
    if let Some(v) = m.get_mut("configdrive")
        && !v.is_null()
    {
        *v = json!("******");
    }
    m
}

/// A node document with `fields` (or every field), plus links.
pub fn node_json(node: &Node, fields: &[&str], base: &str, host: &str) -> Value {
    let mut m = Map::new();
    for f in fields {
        m.insert((*f).to_string(), node_value(node, f, host));
    }
    let id = node.uuid.to_string();
    m.insert("links".into(), links(base, "nodes", &id));
    if fields.len() == NODE_FIELDS.len() {
        m.insert("ports".into(), links(base, &format!("nodes/{id}"), "ports"));
        m.insert(
            "states".into(),
            links(base, &format!("nodes/{id}"), "states"),
        );
    }
    Value::Object(m)
}

/// `GET /v1/nodes/{id}/states`
pub fn node_states(node: &Node) -> Value {
    json!({
        "provision_state": node.provision_state,
        "target_provision_state": node.target_provision_state,
        "power_state": node.power_state,
        "target_power_state": node.target_power_state,
        "last_error": node.last_error,
        "provision_updated_at": opt_ts(&node.provision_updated_at),
        "console_enabled": false,
        "raid_config": {},
        "target_raid_config": {},
    })
}

fn port_value(port: &Port, field: &str) -> Value {
    match field {
        "uuid" => json!(port.uuid),
        "address" => json!(port.address.as_str()),
        "node_uuid" => json!(port.node_uuid),
        "pxe_enabled" => json!(port.pxe_enabled),
        "extra" => Value::Object(port.extra.clone()),
        "local_link_connection" | "internal_info" => json!({}),
        "created_at" => timestamp(&port.created_at),
        "updated_at" => opt_ts(&port.updated_at),
        // physical_network, portgroup_uuid: not modelled by ironboot.
        _ => Value::Null,
    }
}

pub fn port_json(port: &Port, fields: &[&str], base: &str) -> Value {
    let mut m = Map::new();
    for f in fields {
        m.insert((*f).to_string(), port_value(port, f));
    }
    m.insert("links".into(), links(base, "ports", &port.uuid.to_string()));
    Value::Object(m)
}
