//! `/v1/drivers`: the hardware types this conductor serves, their interfaces and properties.

use axum::extract::{Path, State};
use serde_json::{Map, Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::QueryParams;
use super::links::Base;
use super::version::Version;
use crate::model::{HardwareType, InterfaceKind};

/// The version that introduced each interface kind's `default_*`/`enabled_*` keys.
fn kind_since(kind: InterfaceKind) -> Version {
    Version(match kind {
        InterfaceKind::Storage => 33,
        InterfaceKind::Rescue => 38,
        InterfaceKind::Bios => 40,
        InterfaceKind::Firmware => 86,
        _ => 30,
    })
}

fn driver_json(st: &AppState, hw: &HardwareType, detail: bool, v: Version, base: &str) -> Value {
    let name = hw.name;
    let mut d = json!({
        "name": name,
        "hosts": [st.conductor.host()],
        "links": [
            {"href": format!("{base}/v1/drivers/{name}"), "rel": "self"},
            {"href": format!("{base}/drivers/{name}"), "rel": "bookmark"},
        ],
    });
    if v >= Version(14) {
        d["properties"] = json!([
            {"href": format!("{base}/v1/drivers/{name}/properties"), "rel": "self"},
            {"href": format!("{base}/drivers/{name}/properties"), "rel": "bookmark"},
        ]);
    }
    if v >= Version(30) {
        d["type"] = json!("dynamic");
        if detail {
            for kind in InterfaceKind::ALL
                .into_iter()
                .filter(|k| v >= kind_since(*k))
            {
                let set = hw.interfaces(kind);
                let enabled = st.conductor.interfaces().enabled(kind, set.enabled);
                let default = enabled.contains(&set.default).then_some(set.default);
                d[format!("default_{}_interface", kind.as_str())] = json!(default);
                d[format!("enabled_{}_interfaces", kind.as_str())] = json!(enabled);
            }
        }
    }
    d
}

/// Keeps only `fields` (1.77+), refusing unknown ones.
fn only_fields(doc: Value, fields: Option<String>) -> Result<Value, ApiError> {
    let (Some(fields), Value::Object(m)) = (fields, &doc) else {
        return Ok(doc);
    };
    let mut out = Map::new();
    if let Some(l) = m.get("links") {
        out.insert("links".into(), l.clone());
    }
    for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let v = m
            .get(f)
            .ok_or_else(|| ApiError::bad_request(format!("Field {f} is not a valid field.")))?;
        out.insert(f.to_string(), v.clone());
    }
    Ok(Value::Object(out))
}

fn find(name: &str) -> Result<&'static HardwareType, ApiError> {
    HardwareType::find(name).ok_or_else(|| {
        ApiError::not_found(format!(
            "Could not find the following driver(s) or hardware type(s): {name}."
        ))
    })
}

pub async fn list(
    State(st): State<AppState>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["type", "detail", "fields"])?;
    let detail = q.bool("detail")?.unwrap_or(false);
    let fields = q.fields();
    if fields.is_some() && detail {
        return Err(ApiError::bad_request(
            "Can not specify ?detail=True and fields in the same request.",
        ));
    }
    if (q.get("detail").is_some() || q.get("type").is_some()) && version < Version(30) {
        return Err(ApiError::not_acceptable());
    }
    if fields.is_some() && version < Version(77) {
        return Err(ApiError::not_acceptable());
    }
    let types: &[HardwareType] = match q.get("type") {
        None | Some("dynamic") => crate::model::HARDWARE_TYPES,
        Some("classic") => &[],
        Some(_) => {
            return Err(ApiError::bad_request(
                "\"type\" filter must be one of \"classic\" or \"dynamic\", if specified.",
            ));
        }
    };
    let drivers = types
        .iter()
        .map(|hw| only_fields(driver_json(&st, hw, detail, version, &base), fields.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(axum::Json(json!({ "drivers": drivers })))
}

pub async fn show(
    State(st): State<AppState>,
    Path(name): Path<String>,
    version: Version,
    Base(base): Base,
    q: QueryParams,
) -> Result<axum::Json<Value>, ApiError> {
    q.only(&["fields"])?;
    let fields = q.fields();
    if fields.is_some() && version < Version(77) {
        return Err(ApiError::not_acceptable());
    }
    let hw = find(&name)?;
    let doc = driver_json(&st, hw, true, version, &base);
    Ok(axum::Json(only_fields(doc, fields)?))
}

/// `GET /v1/drivers/{name}/properties`: the `driver_info` keys the type's interfaces read.
/// ironboot's `fake` interfaces read none; the network boot and agent deploy interfaces read the
/// deploy ramdisk.
pub async fn properties(Path(name): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let hw = find(&name)?;
    let mut props = Map::new();
    if hw.deploy.default == "direct" || hw.boot.default != "fake" {
        props.insert(
            "deploy_kernel".into(),
            json!("URL or path of the deploy kernel. Required."),
        );
        props.insert(
            "deploy_ramdisk".into(),
            json!("URL or path of the deploy ramdisk. Required."),
        );
    }
    Ok(axum::Json(Value::Object(props)))
}
