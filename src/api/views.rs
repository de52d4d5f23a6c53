//! Shared pieces of every document: timestamps, links; and how ports look on the wire at a
//! microversion (nodes: [`super::node_view`]).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::version::Version;
use crate::model::Port;

/// Every port field, with the microversion that introduced it.
pub const PORT_FIELDS: &[(&str, u32)] = &[
    ("uuid", 1),
    ("address", 1),
    ("node_uuid", 1),
    ("extra", 1),
    ("created_at", 1),
    ("updated_at", 1),
    ("internal_info", 18),
    ("pxe_enabled", 19),
    ("local_link_connection", 19),
    ("portgroup_uuid", 24),
    ("physical_network", 34),
    ("is_smartnic", 53),
    ("name", 88),
    ("description", 97),
    ("vendor", 100),
    ("category", 101),
    ("available_for_dynamic_portgroup", 111),
];

pub const PORT_SUMMARY_FIELDS: &[&str] = &["uuid", "address"];

/// The version that introduced port field `field`.
pub fn port_field_since(field: &str) -> Option<Version> {
    PORT_FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, v)| Version(*v))
}

/// Ironic's timestamp format (`2026-11-22T03:17:18.123456+00:00`).
pub fn timestamp(t: &DateTime<Utc>) -> Value {
    Value::String(t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
}

pub fn opt_ts(t: &Option<DateTime<Utc>>) -> Value {
    t.as_ref().map(timestamp).unwrap_or(Value::Null)
}

/// `self` and `bookmark` links of `{base}/v1/{kind}/{id}`.
pub fn links(base: &str, kind: &str, id: &str) -> Value {
    json!([
        {"href": format!("{base}/v1/{kind}/{id}"), "rel": "self"},
        {"href": format!("{base}/{kind}/{id}"), "rel": "bookmark"},
    ])
}

/// The names of `fields=a,b` (blanks dropped).
pub fn field_names(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(|f| f.trim().to_string())
        .filter(|f| !f.is_empty())
        .collect()
}

/// Parses and checks `fields=a,b` against a resource's field table (`since`: the version a
/// field appeared in, `None` for no such field): `fields` itself (1.8+) or a field newer than
/// `version` is refused with 406 before anything else, as Ironic does, an unknown one with 400.
pub fn parse_versioned_fields(
    raw: Option<&str>,
    version: Version,
    since: fn(&str) -> Option<Version>,
) -> Result<Option<Vec<String>>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    if version < Version(8) {
        return Err(ApiError::not_acceptable());
    }
    let fields = field_names(raw);
    if fields
        .iter()
        .any(|f| since(f).is_some_and(|since| version < since))
    {
        return Err(ApiError::not_acceptable());
    }
    if let Some(bad) = fields.iter().find(|f| since(f).is_none()) {
        return Err(ApiError::bad_request(format!(
            "Field {bad} is not a valid field."
        )));
    }
    Ok(Some(fields))
}

/// Parses and checks `fields=a,b` for ports (see [`parse_versioned_fields`]).
pub fn parse_port_fields(
    raw: Option<&str>,
    version: Version,
) -> Result<Option<Vec<String>>, ApiError> {
    parse_versioned_fields(raw, version, port_field_since)
}

fn port_value(port: &Port, field: &str) -> Value {
    let opt_str = |o: &Option<String>| o.clone().map(Value::String).unwrap_or(Value::Null);
    match field {
        "uuid" => json!(port.uuid),
        "address" => json!(port.address.as_str()),
        "node_uuid" => json!(port.node_uuid),
        "pxe_enabled" => json!(port.pxe_enabled),
        "extra" => Value::Object(port.extra.clone()),
        "local_link_connection" => Value::Object(port.local_link_connection.clone()),
        "internal_info" => Value::Object(port.internal_info.clone()),
        "physical_network" => opt_str(&port.physical_network),
        "is_smartnic" => json!(port.is_smartnic),
        "name" => opt_str(&port.name),
        "description" => opt_str(&port.description),
        "vendor" => opt_str(&port.vendor),
        "category" => opt_str(&port.category),
        "available_for_dynamic_portgroup" => json!(port.available_for_dynamic_portgroup),
        "created_at" => timestamp(&port.created_at),
        "updated_at" => opt_ts(&port.updated_at),
        // portgroup_uuid: ironboot has no port groups.
        _ => Value::Null,
    }
}

/// A port document at `version`: `fields` (checked), or every field of the version.
pub fn port_json(port: &Port, fields: Option<&[String]>, version: Version, base: &str) -> Value {
    let mut m = Map::new();
    match fields {
        Some(f) => {
            for f in f {
                m.insert(f.clone(), port_value(port, f));
            }
        }
        None => {
            for (f, since) in PORT_FIELDS {
                if version >= Version(*since) {
                    m.insert((*f).to_string(), port_value(port, f));
                }
            }
        }
    }
    m.insert("links".into(), links(base, "ports", &port.uuid.to_string()));
    Value::Object(m)
}
