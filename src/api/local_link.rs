//! `local_link_connection` of a port: which switch port the NIC is cabled to, checked against
//! Ironic's schemas (a managed link names `port_id` and `switch_id`, a Smart NIC `port_id` and
//! `hostname`, an OVN VTEP link both `vtep-*` switches, an unmanaged one only its type).

use serde_json::Value;

use super::error::ApiError;
use crate::model::{Fields, MacAddress};

const KEYS: &[&str] = &[
    "port_id",
    "switch_id",
    "hostname",
    "switch_info",
    "network_type",
    "vtep-logical-switch",
    "vtep-physical-switch",
];

fn invalid(llc: &Fields, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Schema error for local_link_connection: {} is not valid: {why}",
        Value::Object(llc.clone())
    ))
}

/// Checks `llc` and normalises `switch_id` (a MAC address, lower case, or a 16-hex-digit
/// OpenFlow datapath ID).
pub fn check(llc: &mut Fields) -> Result<(), ApiError> {
    if llc.is_empty() {
        return Ok(());
    }
    if let Some(k) = llc.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(llc, &format!("unknown key {k:?}")));
    }
    if llc.values().any(|v| !v.is_string()) {
        return Err(invalid(llc, "every value must be a string"));
    }
    let has = |k: &str| llc.contains_key(k);
    match llc.get("network_type").and_then(Value::as_str) {
        None | Some("managed" | "unmanaged") => {}
        Some(_) => return Err(invalid(llc, "network_type is managed or unmanaged")),
    }
    if has("vtep-logical-switch") != has("vtep-physical-switch") {
        return Err(invalid(llc, "vtep switches go together"));
    }
    let unmanaged = llc.get("network_type").and_then(Value::as_str) == Some("unmanaged");
    let complete = unmanaged
        || (has("port_id") && (has("switch_id") || has("hostname") || has("vtep-logical-switch")));
    if !complete {
        return Err(invalid(
            llc,
            "port_id and switch_id (or hostname) are required",
        ));
    }
    if let Some(id) = llc.get("switch_id").and_then(Value::as_str) {
        let normal = normalise_switch_id(id).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Expected a MAC address or OpenFlow datapath ID but received {id}."
            ))
        })?;
        llc.insert("switch_id".into(), Value::String(normal));
    }
    Ok(())
}

fn normalise_switch_id(id: &str) -> Option<String> {
    if let Ok(mac) = MacAddress::parse(id) {
        return Some(mac.as_str().to_string());
    }
    let hex: String = id.chars().filter(|c| *c != ':').collect();
    (hex.len() == 16 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> Fields {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn schemas_and_switch_ids() {
        let mut ok = f(json!({"port_id": "p1", "switch_id": "0A:1B:2C:3D:4E:5F"}));
        check(&mut ok).unwrap();
        assert_eq!(ok["switch_id"], "0a:1b:2c:3d:4e:5f");
        check(&mut f(json!({"network_type": "unmanaged"}))).unwrap();
        check(&mut f(json!({"port_id": "p", "hostname": "h"}))).unwrap();
        check(&mut Fields::new()).unwrap();
        for bad in [
            json!({"switch_id": "0a:1b:2c:3d:4e:5f"}),
            json!({"port_id": "p", "switch_id": "0a:1b:2c:3d:4e:5f", "color": "red"}),
            json!({"port_id": "p", "switch_id": "not-a-mac"}),
            json!({"port_id": "p", "switch_id": "0a:1b:2c:3d:4e:5f", "network_type": "x"}),
        ] {
            assert!(check(&mut f(bad.clone())).is_err(), "{bad}");
        }
    }
}
