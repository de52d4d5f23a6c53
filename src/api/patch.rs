//! JSON Patch (RFC 6902 `add`, `replace`, `remove`) as Ironic applies it to nodes.
//!
//! The patch is applied to a JSON document of the node's writable fields; the caller converts
//! the result back and validates it, so a patch either applies completely or not at all.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::ApiError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    #[serde(default)]
    pub value: Option<Value>,
}

/// Applies `ops` in order to `doc`. `writable` lists the top-level fields a patch may touch;
/// `removed_value` gives what a removed top-level field becomes (e.g. `{}` for dict fields).
pub fn apply(
    doc: &mut Map<String, Value>,
    ops: &[PatchOp],
    writable: &[&str],
    removed_value: impl Fn(&str) -> Option<Value>,
) -> Result<(), ApiError> {
    for op in ops {
        let segments = parse_pointer(&op.path)?;
        let top = segments[0].as_str();
        if !writable.contains(&top) {
            return Err(ApiError::bad_request(format!(
                "'/{top}' cannot be updated; writable fields: {}",
                writable.join(", ")
            )));
        }
        match op.op.as_str() {
            "add" | "replace" => {
                let value = op.value.clone().ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "'{}' operation on {} needs a value",
                        op.op, op.path
                    ))
                })?;
                set(doc, &segments, value, op.op == "replace", &op.path)?;
            }
            "remove" => {
                if op.value.is_some() {
                    return Err(ApiError::bad_request(format!(
                        "'remove' operation on {} must not have a value",
                        op.path
                    )));
                }
                if segments.len() == 1 {
                    let replacement = removed_value(top).ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "'/{top}' is mandatory and cannot be removed"
                        ))
                    })?;
                    doc.insert(top.to_string(), replacement);
                } else {
                    remove(doc, &segments, &op.path)?;
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "patch operation {other:?} is not supported; use add, replace or remove"
                )));
            }
        }
    }
    Ok(())
}

/// Splits a JSON pointer (`/driver_info/a~1b`) into unescaped segments.
fn parse_pointer(path: &str) -> Result<Vec<String>, ApiError> {
    let rest = path.strip_prefix('/').ok_or_else(|| {
        ApiError::bad_request(format!("invalid patch path {path:?}: must start with '/'"))
    })?;
    let segments: Vec<String> = rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    if segments[0].is_empty() || segments.iter().skip(1).any(|s| s.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "invalid patch path {path:?}"
        )));
    }
    Ok(segments)
}

fn missing(path: &str) -> ApiError {
    ApiError::bad_request(format!(
        "can't remove or replace non-existent object {path:?}"
    ))
}

/// Walks to the container holding the last segment.
fn parent<'a>(
    doc: &'a mut Map<String, Value>,
    segments: &[String],
    path: &str,
) -> Result<&'a mut Value, ApiError> {
    let mut cur = doc.get_mut(&segments[0]).ok_or_else(|| missing(path))?;
    for seg in &segments[1..segments.len() - 1] {
        cur = match cur {
            Value::Object(m) => m.get_mut(seg).ok_or_else(|| missing(path))?,
            Value::Array(a) => {
                let i: usize = seg.parse().map_err(|_| missing(path))?;
                a.get_mut(i).ok_or_else(|| missing(path))?
            }
            _ => return Err(missing(path)),
        };
    }
    Ok(cur)
}

fn set(
    doc: &mut Map<String, Value>,
    segments: &[String],
    value: Value,
    must_exist: bool,
    path: &str,
) -> Result<(), ApiError> {
    if segments.len() == 1 {
        if must_exist && !doc.contains_key(&segments[0]) {
            return Err(missing(path));
        }
        doc.insert(segments[0].clone(), value);
        return Ok(());
    }
    let last = &segments[segments.len() - 1];
    match parent(doc, segments, path)? {
        Value::Object(m) => {
            if must_exist && !m.contains_key(last) {
                return Err(missing(path));
            }
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" && !must_exist {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| missing(path))?;
                match (must_exist, i.cmp(&a.len())) {
                    (true, std::cmp::Ordering::Less) => a[i] = value,
                    (false, std::cmp::Ordering::Less | std::cmp::Ordering::Equal) => {
                        a.insert(i, value)
                    }
                    _ => return Err(missing(path)),
                }
            }
        }
        Value::Null if !must_exist => {
            return Err(ApiError::bad_request(format!(
                "cannot add {path:?}: its parent is null"
            )));
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn remove(doc: &mut Map<String, Value>, segments: &[String], path: &str) -> Result<(), ApiError> {
    let last = &segments[segments.len() - 1];
    match parent(doc, segments, path)? {
        Value::Object(m) => m.remove(last).map(|_| ()).ok_or_else(|| missing(path)),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i < a.len() {
                a.remove(i);
                Ok(())
            } else {
                Err(missing(path))
            }
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops(v: Value) -> Vec<PatchOp> {
        serde_json::from_value(v).unwrap()
    }

    fn doc() -> Map<String, Value> {
        json!({"name": "n", "driver_info": {"a": 1, "list": [1, 2]}, "extra": {}})
            .as_object()
            .unwrap()
            .clone()
    }

    const W: &[&str] = &["name", "driver_info", "extra"];

    fn removed(f: &str) -> Option<Value> {
        match f {
            "name" => Some(Value::Null),
            "driver_info" | "extra" => Some(json!({})),
            _ => None,
        }
    }

    #[test]
    fn add_replace_remove() {
        let mut d = doc();
        apply(
            &mut d,
            &ops(json!([
                {"op": "add", "path": "/driver_info/b", "value": "x"},
                {"op": "replace", "path": "/driver_info/a", "value": 2},
                {"op": "add", "path": "/driver_info/list/-", "value": 3},
                {"op": "remove", "path": "/driver_info/list/0"},
                {"op": "add", "path": "/extra/a~1b", "value": true},
                {"op": "remove", "path": "/name"},
            ])),
            W,
            removed,
        )
        .unwrap();
        assert_eq!(
            Value::Object(d),
            json!({"name": null, "driver_info": {"a": 2, "b": "x", "list": [2, 3]}, "extra": {"a/b": true}})
        );
    }

    #[test]
    fn refusals() {
        let cases = [
            json!([{"op": "replace", "path": "/driver_info/zz", "value": 1}]),
            json!([{"op": "remove", "path": "/driver_info/zz"}]),
            json!([{"op": "add", "path": "/driver_info/zz/yy", "value": 1}]),
            json!([{"op": "add", "path": "/provision_state", "value": "active"}]),
            json!([{"op": "add", "path": "driver_info", "value": 1}]),
            json!([{"op": "add", "path": "/", "value": 1}]),
            json!([{"op": "add", "path": "/driver_info/a"}]),
            json!([{"op": "move", "path": "/name", "value": 1}]),
            json!([{"op": "remove", "path": "/driver_info/list/9"}]),
        ];
        for c in cases {
            let mut d = doc();
            assert!(apply(&mut d, &ops(c.clone()), W, removed).is_err(), "{c}");
        }
        let mut d = doc();
        let err = apply(
            &mut d,
            &ops(json!([{"op": "remove", "path": "/driver"}])),
            &["driver"],
            |_| None,
        )
        .unwrap_err();
        assert!(err.message.contains("mandatory"));
    }
}
