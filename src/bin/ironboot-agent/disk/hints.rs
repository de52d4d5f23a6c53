//! Root device hints (`root_device` of a node), matched as Ironic documents them: `size` in
//! GiB with `==`/`!=`/`>=`/`<=`/`>`/`<` (default `==`), strings exactly (case-insensitive) or
//! with `s==`, `s!=`, `<in>` (substring) and `<or>` alternatives, `rotational` as a boolean,
//! `name` with or without `/dev/`.

use serde_json::{Map, Value};

use super::BlockDevice;

#[derive(Debug, Clone)]
enum Cond {
    /// Numeric comparison on GiB.
    Size(String, u64),
    Text(Vec<(String, String)>),
    Bool(bool),
}

/// Parsed hints, ready to match devices.
#[derive(Debug, Clone)]
pub struct Hints(Vec<(String, Cond)>);

const TEXT_KEYS: &[&str] = &[
    "name",
    "model",
    "vendor",
    "serial",
    "wwn",
    "wwn_with_extension",
    "wwn_vendor_extension",
    "hctl",
    "by_path",
];

fn text_cond(key: &str, raw: &str) -> Result<Cond, String> {
    let mut alternatives = Vec::new();
    let raw = raw.trim();
    let parts: Vec<&str> = match raw.strip_prefix("<or>") {
        Some(rest) => rest.split("<or>").map(str::trim).collect(),
        None => vec![raw],
    };
    for part in parts {
        let (op, value) = ["s==", "s!=", "<in>"]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|v| (op.to_string(), v.trim())))
            .unwrap_or(("s==".into(), part));
        if value.is_empty() {
            return Err(format!("{key}: empty value in {raw:?}"));
        }
        alternatives.push((op, value.to_ascii_lowercase()));
    }
    Ok(Cond::Text(alternatives))
}

fn size_cond(v: &Value) -> Result<Cond, String> {
    let raw = match v {
        Value::Number(n) => {
            return n
                .as_u64()
                .map(|n| Cond::Size("==".into(), n))
                .ok_or_else(|| format!("size {n} must be a whole number of GiB"));
        }
        Value::String(s) => s.trim(),
        other => return Err(format!("size {other} must be a number of GiB")),
    };
    let (op, num) = ["==", "!=", ">=", "<=", ">", "<"]
        .iter()
        .find_map(|op| raw.strip_prefix(op).map(|n| (op.to_string(), n.trim())))
        .unwrap_or(("==".into(), raw));
    num.parse().map(|n| Cond::Size(op, n)).map_err(|_| {
        format!(
            "size {raw:?} must be a whole number of GiB, optionally after ==, !=, >=, <=, > or <"
        )
    })
}

impl Hints {
    pub fn parse(hints: &Map<String, Value>) -> Result<Hints, String> {
        let mut out = Vec::new();
        for (key, value) in hints {
            let cond = match key.as_str() {
                "size" => size_cond(value)?,
                "rotational" => Cond::Bool(match value {
                    Value::Bool(b) => *b,
                    Value::String(s) => match s.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => true,
                        "false" | "0" | "no" | "off" => false,
                        _ => return Err(format!("rotational {s:?} is not a boolean")),
                    },
                    other => return Err(format!("rotational {other} is not a boolean")),
                }),
                k if TEXT_KEYS.contains(&k) => match value {
                    Value::String(s) => text_cond(k, s)?,
                    Value::Number(n) => text_cond(k, &n.to_string())?,
                    other => return Err(format!("{k} {other} must be a string")),
                },
                other => return Err(format!("unknown hint {other:?}")),
            };
            out.push((key.clone(), cond));
        }
        Ok(Hints(out))
    }

    fn field(dev: &BlockDevice, key: &str) -> Option<String> {
        match key {
            "name" => Some(dev.path.display().to_string()),
            "model" => dev.model.clone(),
            "vendor" => dev.vendor.clone(),
            "serial" => dev.serial.clone(),
            "wwn" | "wwn_with_extension" => dev.wwn.clone(),
            "hctl" => dev.hctl.clone(),
            _ => None,
        }
    }

    pub fn matches(&self, dev: &BlockDevice) -> bool {
        self.0.iter().all(|(key, cond)| match cond {
            Cond::Bool(b) => dev.rotational == *b,
            Cond::Size(op, gib) => {
                let have = dev.size >> 30;
                match op.as_str() {
                    "!=" => have != *gib,
                    ">=" => have >= *gib,
                    "<=" => have <= *gib,
                    ">" => have > *gib,
                    "<" => have < *gib,
                    _ => have == *gib,
                }
            }
            Cond::Text(alternatives) => {
                let Some(have) = Self::field(dev, key).map(|s| s.to_ascii_lowercase()) else {
                    return false;
                };
                alternatives.iter().any(|(op, want)| {
                    let want_name = if key == "name" && !want.starts_with("/dev/") {
                        format!("/dev/{want}")
                    } else {
                        want.clone()
                    };
                    let same = have == *want_name
                        || (key == "name" && have.rsplit('/').next() == Some(want.as_str()));
                    match op.as_str() {
                        "s!=" => !same,
                        "<in>" => have.contains(want.as_str()),
                        _ => same,
                    }
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dev(name: &str, gib: u64, serial: &str, rotational: bool) -> BlockDevice {
        BlockDevice {
            path: format!("/dev/{name}").into(),
            name: name.into(),
            size: gib << 30,
            sector: 512,
            model: Some("QEMU HARDDISK".into()),
            vendor: None,
            serial: Some(serial.into()),
            wwn: None,
            rotational,
            hctl: Some("0:0:0:0".into()),
        }
    }

    fn m(h: Value, d: &BlockDevice) -> bool {
        Hints::parse(h.as_object().unwrap()).unwrap().matches(d)
    }

    #[test]
    fn hints_match_like_ironic_documents() {
        let d = dev("vdb", 10, "TARGET-01", false);
        assert!(m(json!({"name": "/dev/vdb"}), &d));
        assert!(m(json!({"name": "vdb"}), &d));
        assert!(!m(json!({"name": "vda"}), &d));
        assert!(m(json!({"serial": "target-01", "size": 10}), &d));
        assert!(m(json!({"size": ">= 4"}), &d));
        assert!(!m(json!({"size": "< 4"}), &d));
        assert!(m(json!({"model": "<in> harddisk"}), &d));
        assert!(m(json!({"serial": "<or> a <or> TARGET-01"}), &d));
        assert!(m(json!({"serial": "s!= other"}), &d));
        assert!(m(json!({"rotational": false, "hctl": "0:0:0:0"}), &d));
        assert!(!m(json!({"rotational": "true"}), &d));
        assert!(
            !m(json!({"wwn": "0x5000"}), &d),
            "a missing field never matches"
        );
    }

    #[test]
    fn bad_hints_are_refused() {
        for h in [
            json!({"size": "big"}),
            json!({"colour": "red"}),
            json!({"rotational": "maybe"}),
            json!({"serial": ["a"]}),
        ] {
            assert!(Hints::parse(h.as_object().unwrap()).is_err(), "{h}");
        }
    }
}
