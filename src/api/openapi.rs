//! `GET /v1/openapi.json`: an OpenAPI 3.0 description of the API this server answers.
//!
//! Built from the same field tables the views use (node, port, allocation fields), so a field
//! added there is described here. The parity test replays its corpus against ironboot and checks
//! every answer against this document (status documented for the path and method, body of the
//! documented shape), which keeps routes and statuses honest too.

use serde_json::{Map, Value, json};

use super::node_view::NODE_FIELDS;
use super::version::{MAX, MIN};
use super::views::PORT_FIELDS;
use crate::model::InterfaceKind;

/// The JSON type of a node, port or allocation field.
fn field_schema(field: &str) -> Value {
    if InterfaceKind::from_field(field).is_some() {
        return json!({"type": "string"});
    }
    match field {
        "driver_info"
        | "driver_internal_info"
        | "properties"
        | "instance_info"
        | "extra"
        | "clean_step"
        | "deploy_step"
        | "service_step"
        | "raid_config"
        | "target_raid_config"
        | "network_data"
        | "local_link_connection"
        | "internal_info" => {
            json!({"type": "object"})
        }
        "traits" | "candidate_nodes" => json!({"type": "array", "items": {"type": "string"}}),
        "maintenance"
        | "console_enabled"
        | "protected"
        | "retired"
        | "disable_power_off"
        | "pxe_enabled"
        | "is_smartnic"
        | "available_for_dynamic_portgroup" => {
            json!({"type": "boolean"})
        }
        "automated_clean" | "secure_boot" => json!({"type": "boolean", "nullable": true}),
        "uuid" | "driver" | "address" | "node_uuid" | "created_at" | "conductor_group"
        | "state" => json!({"type": "string"}),
        // Everything else is a string that may be null (names, states, reasons, timestamps).
        _ => json!({"type": "string", "nullable": true}),
    }
}

fn link_list() -> Value {
    json!({"type": "array", "items": {"$ref": "#/components/schemas/Link"}})
}

/// An object schema with `fields`, each optional (a version or `fields=` may leave it out),
/// plus `links` and any `extra` link lists; nothing else.
fn object_of(fields: &[&str], links: &[&str]) -> Value {
    let mut props = Map::new();
    for f in fields {
        props.insert((*f).to_string(), field_schema(f));
    }
    for l in links {
        props.insert((*l).to_string(), link_list());
    }
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

const ALLOCATION_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "node_uuid",
    "state",
    "last_error",
    "resource_class",
    "traits",
    "candidate_nodes",
    "extra",
    "owner",
    "created_at",
    "updated_at",
];

fn collection(key: &str, item: &str) -> Value {
    json!({
        "type": "object",
        "properties": {
            key: {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
            "next": {"type": "string"},
        },
        "required": [key],
        "additionalProperties": false,
    })
}

fn schemas() -> Value {
    let node_fields: Vec<&str> = NODE_FIELDS.iter().map(|(f, _)| *f).collect();
    let port_fields: Vec<&str> = PORT_FIELDS.iter().map(|(f, _)| *f).collect();
    json!({
        "Link": {
            "type": "object",
            "properties": {"href": {"type": "string"}, "rel": {"type": "string"}, "type": {"type": "string"}},
            "required": ["href", "rel"],
        },
        "Error": {
            "type": "object",
            "description": "error_message holds a JSON document: {faultcode, faultstring, debuginfo} from a controller, {code, title, description} from routing and version negotiation",
            "properties": {"error_message": {"type": "string"}, "faultcode": {"type": "string"}, "faultstring": {"type": "string"}},
        },
        "Node": object_of(&node_fields, &["links", "ports", "states", "portgroups", "volume"]),
        "NodeList": collection("nodes", "Node"),
        "NodeStates": {"type": "object"},
        "Port": object_of(&port_fields, &["links"]),
        "PortList": collection("ports", "Port"),
        "Allocation": object_of(ALLOCATION_FIELDS, &["links"]),
        "AllocationList": collection("allocations", "Allocation"),
        "Traits": {"type": "object", "properties": {"traits": {"type": "array", "items": {"type": "string"}}}, "required": ["traits"], "additionalProperties": false},
        "Validation": {"type": "object", "additionalProperties": {"type": "object", "properties": {"result": {"type": "boolean", "nullable": true}, "reason": {"type": "string"}}, "required": ["result"]}},
        "BootDevice": {"type": "object", "properties": {"boot_device": {"type": "string", "nullable": true}, "persistent": {"type": "boolean", "nullable": true}}, "required": ["boot_device", "persistent"], "additionalProperties": false},
        "SupportedBootDevices": {"type": "object", "properties": {"supported_boot_devices": {"type": "array", "items": {"type": "string"}}}, "required": ["supported_boot_devices"], "additionalProperties": false},
        "Driver": {"type": "object", "properties": {"name": {"type": "string"}, "hosts": {"type": "array", "items": {"type": "string"}}, "type": {"type": "string"}, "links": link_list(), "properties": link_list()}, "required": ["links"]},
        "DriverList": collection("drivers", "Driver"),
        "Conductor": {"type": "object", "properties": {"hostname": {"type": "string"}, "conductor_group": {"type": "string"}, "alive": {"type": "boolean"}, "drivers": {"type": "array", "items": {"type": "string"}}, "created_at": {"type": "string"}, "updated_at": {"type": "string"}, "links": link_list()}, "additionalProperties": false},
        "ConductorList": collection("conductors", "Conductor"),
        "Object": {"type": "object"},
    })
}

/// `(path, method, documented statuses, schema of the 2xx body or None)`.
type Op = (
    &'static str,
    &'static str,
    &'static [u16],
    Option<&'static str>,
);

/// Every operation, with the statuses it answers. 400/404/405/406/409 bodies are `Error`.
const OPERATIONS: &[Op] = &[
    ("/", "get", &[200, 406], Some("Object")),
    ("/", "post", &[200, 406], Some("Object")),
    ("/v1", "get", &[200, 406], Some("Object")),
    ("/v1/openapi.json", "get", &[200], Some("Object")),
    ("/v1/nodes", "get", &[200, 400, 404, 406], Some("NodeList")),
    ("/v1/nodes", "post", &[201, 400, 406, 409], Some("Node")),
    ("/v1/nodes", "delete", &[400], None),
    (
        "/v1/nodes/detail",
        "get",
        &[200, 400, 404, 406],
        Some("NodeList"),
    ),
    (
        "/v1/nodes/validate",
        "get",
        &[200, 400, 404, 409],
        Some("Validation"),
    ),
    ("/v1/nodes/validate", "post", &[400], None),
    (
        "/v1/nodes/{node}",
        "get",
        &[200, 400, 404, 406],
        Some("Node"),
    ),
    (
        "/v1/nodes/{node}",
        "patch",
        &[200, 400, 404, 406, 409],
        Some("Node"),
    ),
    ("/v1/nodes/{node}", "delete", &[204, 400, 404, 409], None),
    ("/v1/nodes/{node}", "post", &[400], None),
    (
        "/v1/nodes/{node}/states",
        "get",
        &[200, 400, 404],
        Some("NodeStates"),
    ),
    (
        "/v1/nodes/{node}/states/provision",
        "put",
        &[202, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/states/power",
        "put",
        &[202, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/states/boot_mode",
        "put",
        &[202, 400, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/states/secure_boot",
        "put",
        &[202, 400, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/states/console",
        "get",
        &[200, 400, 404],
        Some("Object"),
    ),
    (
        "/v1/nodes/{node}/maintenance",
        "put",
        &[202, 400, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/maintenance",
        "delete",
        &[202, 400, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/traits",
        "get",
        &[200, 400, 404, 406],
        Some("Traits"),
    ),
    (
        "/v1/nodes/{node}/traits",
        "put",
        &[204, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/traits",
        "delete",
        &[204, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/traits/{trait}",
        "put",
        &[204, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/traits/{trait}",
        "delete",
        &[204, 400, 404, 406, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/ports",
        "get",
        &[200, 400, 404, 406],
        Some("PortList"),
    ),
    (
        "/v1/nodes/{node}/ports/detail",
        "get",
        &[200, 400, 404, 406],
        Some("PortList"),
    ),
    (
        "/v1/nodes/{node}/validate",
        "get",
        &[200, 400, 404, 409],
        Some("Validation"),
    ),
    ("/v1/nodes/{node}/validate", "post", &[400], None),
    (
        "/v1/nodes/{node}/management/boot_device",
        "get",
        &[200, 400, 404, 409],
        Some("BootDevice"),
    ),
    (
        "/v1/nodes/{node}/management/boot_device",
        "put",
        &[204, 400, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/management/boot_device/supported",
        "get",
        &[200, 400, 404, 409],
        Some("SupportedBootDevices"),
    ),
    (
        "/v1/nodes/{node}/management/inject_nmi",
        "put",
        &[400, 404],
        None,
    ),
    (
        "/v1/nodes/{node}/management/indicators",
        "get",
        &[200, 404],
        Some("Object"),
    ),
    (
        "/v1/nodes/{node}/allocation",
        "get",
        &[200, 404, 406],
        Some("Allocation"),
    ),
    (
        "/v1/nodes/{node}/allocation",
        "delete",
        &[204, 404, 409],
        None,
    ),
    (
        "/v1/nodes/{node}/volume",
        "get",
        &[200, 404],
        Some("Object"),
    ),
    (
        "/v1/nodes/{node}/volume/{kind}",
        "get",
        &[200, 404],
        Some("Object"),
    ),
    (
        "/v1/nodes/{node}/{subresource}",
        "get",
        &[200, 400, 404],
        Some("Object"),
    ),
    ("/v1/ports", "get", &[200, 400, 404, 406], Some("PortList")),
    (
        "/v1/ports",
        "post",
        &[201, 400, 404, 406, 409],
        Some("Port"),
    ),
    (
        "/v1/ports/detail",
        "get",
        &[200, 400, 404, 406],
        Some("PortList"),
    ),
    (
        "/v1/ports/{port}",
        "get",
        &[200, 400, 404, 406],
        Some("Port"),
    ),
    (
        "/v1/ports/{port}",
        "patch",
        &[200, 400, 404, 406, 409],
        Some("Port"),
    ),
    ("/v1/ports/{port}", "delete", &[204, 400, 404, 409], None),
    (
        "/v1/allocations",
        "get",
        &[200, 400, 404, 406],
        Some("AllocationList"),
    ),
    (
        "/v1/allocations",
        "post",
        &[201, 400, 405, 406, 409],
        Some("Allocation"),
    ),
    (
        "/v1/allocations/{allocation}",
        "get",
        &[200, 400, 404, 406],
        Some("Allocation"),
    ),
    (
        "/v1/allocations/{allocation}",
        "patch",
        &[200, 400, 404, 405, 406],
        Some("Allocation"),
    ),
    (
        "/v1/allocations/{allocation}",
        "delete",
        &[204, 404, 409],
        None,
    ),
    ("/v1/drivers", "get", &[200, 400, 406], Some("DriverList")),
    (
        "/v1/drivers/{driver}",
        "get",
        &[200, 404, 406],
        Some("Driver"),
    ),
    (
        "/v1/drivers/{driver}/properties",
        "get",
        &[200, 404],
        Some("Object"),
    ),
    (
        "/v1/conductors",
        "get",
        &[200, 400, 404],
        Some("ConductorList"),
    ),
    (
        "/v1/conductors/{conductor}",
        "get",
        &[200, 400, 404],
        Some("Conductor"),
    ),
    ("/v1/events", "post", &[204, 400, 404], None),
    ("/v1/shards", "get", &[200, 404], Some("Object")),
    ("/v1/volume", "get", &[200, 404], Some("Object")),
    ("/v1/{collection}", "get", &[200, 404], Some("Object")),
    ("/v1/{collection}", "post", &[404, 405], None),
    ("/v1/{collection}/{id}", "get", &[200, 404], Some("Object")),
    ("/v1/{collection}/{id}", "patch", &[404, 405], None),
    ("/v1/{collection}/{id}", "delete", &[404, 405], None),
    ("/v1/{collection}/{id}/{sub}", "get", &[404], None),
    ("/v1/lookup", "get", &[200, 400, 404, 409], Some("Object")),
    ("/v1/heartbeat/{node}", "post", &[202, 400, 404, 409], None),
    (
        "/v1/continue_inspection",
        "post",
        &[202, 400, 404, 409, 413],
        Some("Object"),
    ),
];

/// The operations, for the test that checks live answers against them.
pub fn operations() -> &'static [Op] {
    OPERATIONS
}

fn operation(statuses: &[u16], schema: Option<&str>) -> Value {
    let mut responses = Map::new();
    for s in statuses {
        let body = if *s < 300 {
            schema.map(|name| format!("#/components/schemas/{name}"))
        } else {
            Some("#/components/schemas/Error".to_string())
        };
        let mut r = json!({"description": format!("HTTP {s}")});
        if let Some(reference) = body {
            r["content"] = json!({"application/json": {"schema": {"$ref": reference}}});
        }
        responses.insert(s.to_string(), r);
    }
    let version = json!({
        "name": "X-OpenStack-Ironic-API-Version",
        "in": "header",
        "required": false,
        "schema": {"type": "string"},
        "description": format!("1.N between {MIN} and {MAX}, or latest; absent = {MIN}"),
    });
    json!({"parameters": [version], "responses": responses})
}

/// The document.
pub fn document() -> Value {
    let mut schemas = schemas();
    // An allocation has no node until one is picked.
    schemas["Allocation"]["properties"]["node_uuid"]["nullable"] = json!(true);
    let mut paths = Map::new();
    for (path, method, statuses, schema) in OPERATIONS {
        let entry = paths
            .entry((*path).to_string())
            .or_insert_with(|| json!({}));
        entry[*method] = operation(statuses, *schema);
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            entry["parameters"] = Value::Array(params);
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ironboot: Ironic-compatible bare metal API",
            "version": MAX.to_string(),
            "description": "The OpenStack Ironic v1 API as ironboot answers it (microversions 1.1 to the version above); see docs/api.md. Any path or method not listed here is answered 404 (or 405) by the router, in Ironic's {code, title, description} error shape.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_paths_are_unique() {
        let doc = document();
        let text = doc.to_string();
        for name in text
            .split("#/components/schemas/")
            .skip(1)
            .map(|s| s.split('"').next().unwrap_or(""))
        {
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for (path, method, _, _) in OPERATIONS {
            assert!(seen.insert((path, method)), "{method} {path} twice");
        }
        assert_eq!(doc["openapi"], "3.0.3");
    }
}
