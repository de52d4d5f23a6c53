//! Checks ironboot's published OpenAPI document (`GET /v1/openapi.json`) against what the server
//! answers: every request of the parity corpus is replayed against ironboot alone, and each
//! answer must be documented (path, method, status) and match the documented body schema.
//!
//! The schema check covers the subset of JSON Schema the document uses: `$ref`, `type` with
//! `nullable`, `properties`, `additionalProperties`, `required` and `items`.

use serde_json::Value;

/// Finds the documented operation for `method` `path` (literal segments beat `{params}`).
pub fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let segs: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &Value)> = None;
    for (template, item) in doc["paths"].as_object()? {
        let tsegs: Vec<&str> = template.split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut literal = 0;
        let fits = tsegs.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') {
                !s.is_empty()
            } else {
                literal += usize::from(t == s);
                t == s
            }
        });
        let Some(op) = item.get(method.to_ascii_lowercase()) else {
            continue;
        };
        if fits && best.is_none_or(|(l, _)| literal > l) {
            best = Some((literal, op));
        }
    }
    best.map(|(_, op)| op)
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .map(|s| resolve(doc, s))
            .unwrap_or(&Value::Null),
        None => schema,
    }
}

/// Problems of `v` against `schema` (empty: it conforms).
pub fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let schema = resolve(doc, schema);
    let mut problems = Vec::new();
    if v.is_null() {
        if schema.get("type").is_some() && schema["nullable"] != Value::Bool(true) {
            problems.push(format!("{at}: null where {} is required", schema["type"]));
        }
        return problems;
    }
    let ok_type = match schema.get("type").and_then(Value::as_str) {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("boolean") => v.is_boolean(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some(_) => false,
    };
    if !ok_type {
        problems.push(format!("{at}: {v} is not of type {}", schema["type"]));
        return problems;
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            problems.extend(check(doc, items, x, &format!("{at}/{i}")));
        }
    }
    if let Some(m) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema["required"].as_array().into_iter().flatten() {
            if let Some(k) = req.as_str().filter(|k| !m.contains_key(*k)) {
                problems.push(format!("{at}: required {k} is missing"));
            }
        }
        for (k, x) in m {
            match (
                props.and_then(|p| p.get(k)),
                schema.get("additionalProperties"),
            ) {
                (Some(s), _) => problems.extend(check(doc, s, x, &format!("{at}/{k}"))),
                (None, Some(Value::Bool(false))) => {
                    problems.push(format!("{at}: {k} is not documented"))
                }
                (None, Some(extra)) if extra.is_object() => {
                    problems.extend(check(doc, extra, x, &format!("{at}/{k}")))
                }
                _ => {}
            }
        }
    }
    problems
}

/// Problems of one answer against the document.
pub fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
    // A `next` link is absolute: its path is what the document describes.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    let Some(op) = operation(doc, method, path) else {
        // Any path the document does not describe is the router's 404 (or 405 for a method a
        // described path does not have), as its info says.
        return match status {
            404 | 405 => vec![],
            _ => vec![format!(
                "{method} {path} is not documented (answered {status})"
            )],
        };
    };
    let Some(resp) = op["responses"].get(status.to_string()) else {
        return vec![format!(
            "{method} {path}: status {status} is not documented"
        )];
    };
    match resp.pointer("/content/application~1json/schema") {
        Some(schema) if !body.is_null() => check(doc, schema, body, ""),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_checker_finds_what_is_wrong() {
        let doc = json!({
            "paths": {"/v1/x/{id}": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/X"}}}}}}}},
            "components": {"schemas": {"X": {"type": "object", "properties": {"a": {"type": "string", "nullable": true}, "b": {"type": "boolean"}}, "required": ["b"], "additionalProperties": false}}},
        });
        assert!(conforms(&doc, "GET", "/v1/x/1", 200, &json!({"a": null, "b": true})).is_empty());
        assert_eq!(
            conforms(&doc, "GET", "/v1/x/1", 200, &json!({"b": null, "c": 1})).len(),
            2
        );
        assert_eq!(conforms(&doc, "GET", "/v1/x/1", 404, &json!({})).len(), 1);
        assert_eq!(conforms(&doc, "POST", "/v1/x/1", 200, &json!({})).len(), 1);
        assert_eq!(conforms(&doc, "GET", "/v1/y", 200, &json!({})).len(), 1);
    }
}
