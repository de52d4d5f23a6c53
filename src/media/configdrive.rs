//! Config drives from JSON: `{"meta_data": {...}, "user_data": ..., "network_data": {...},
//! "vendor_data": {...}}` (what python-ironicclient sends for `--config-drive` with a JSON file
//! or dict) becomes a `config-2` ISO, gzipped and base64-encoded as the agent expects.

use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Map, Value};

use super::{IsoSpec, MediaBuilder, MediaError, MediaFile};

/// Keys a JSON config drive may carry.
const KEYS: &[&str] = &["meta_data", "user_data", "network_data", "vendor_data"];

/// The files of the config drive, as OpenStack's `openstack/latest/` layout names them.
/// `meta_data.uuid` defaults to the node's uuid (cloud-init keys the instance on it).
pub fn files(
    spec: &Map<String, Value>,
    node_uuid: &uuid::Uuid,
) -> Result<Vec<MediaFile>, MediaError> {
    let invalid = |reason: String| MediaError::Setting {
        key: "configdrive",
        value: "(JSON)".into(),
        reason,
    };
    if let Some(bad) = spec.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown key {bad:?}; a JSON config drive takes {}",
            KEYS.join(", ")
        )));
    }
    let mut meta = match spec.get("meta_data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => return Err(invalid(format!("meta_data must be an object, not {other}"))),
    };
    meta.entry("uuid")
        .or_insert_with(|| Value::String(node_uuid.to_string()));
    let mut out = vec![MediaFile::bytes(
        "openstack/latest/meta_data.json",
        Value::Object(meta).to_string(),
    )];
    match spec.get("user_data") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            out.push(MediaFile::bytes("openstack/latest/user_data", s.clone()))
        }
        Some(v @ (Value::Object(_) | Value::Array(_))) => out.push(MediaFile::bytes(
            "openstack/latest/user_data",
            v.to_string(),
        )),
        Some(other) => {
            return Err(invalid(format!(
                "user_data must be a string, object or list, not {other}"
            )));
        }
    }
    for (key, file) in [
        ("network_data", "network_data.json"),
        ("vendor_data", "vendor_data.json"),
    ] {
        match spec.get(key) {
            None | Some(Value::Null) => {}
            Some(v @ Value::Object(_)) => out.push(MediaFile::bytes(
                format!("openstack/latest/{file}"),
                v.to_string(),
            )),
            Some(other) => return Err(invalid(format!("{key} must be an object, not {other}"))),
        }
    }
    Ok(out)
}

/// Builds the config drive ISO and returns it gzipped and base64-encoded (blocking: call
/// from `spawn_blocking`).
pub fn build_encoded(
    builder: &Arc<MediaBuilder>,
    spec: &Map<String, Value>,
    node_uuid: &uuid::Uuid,
) -> Result<String, MediaError> {
    let files = files(spec, node_uuid)?;
    let dir = tempfile::tempdir().map_err(|source| MediaError::Input {
        what: "temporary directory",
        path: std::env::temp_dir(),
        source,
    })?;
    let iso = dir.path().join("configdrive.iso");
    builder.build_iso(
        &IsoSpec {
            boot: None,
            files,
            publisher_id: None,
            label: None,
        },
        &iso,
        Default::default(),
    )?;
    let raw = std::fs::read(&iso).map_err(|source| MediaError::Input {
        what: "config drive image",
        path: iso.clone(),
        source,
    })?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw)
        .and_then(|_| gz.finish())
        .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
        .map_err(|source| MediaError::Input {
            what: "compressing the config drive",
            path: iso,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layout_and_refusals() {
        let uuid = uuid::Uuid::new_v4();
        let spec = json!({"meta_data": {"hostname": "h"}, "user_data": "#cloud-config\n", "network_data": {"links": []}});
        let f = files(spec.as_object().unwrap(), &uuid).unwrap();
        let names: Vec<&str> = f.iter().map(|m| m.dest.as_str()).collect();
        assert_eq!(
            names,
            [
                "openstack/latest/meta_data.json",
                "openstack/latest/user_data",
                "openstack/latest/network_data.json"
            ]
        );
        for bad in [
            json!({"metadata": {}}),
            json!({"meta_data": "x"}),
            json!({"user_data": 5}),
            json!({"network_data": []}),
        ] {
            assert!(files(bad.as_object().unwrap(), &uuid).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoded_drive_is_a_gzipped_config_2_iso() {
        use std::io::Read;
        let builder = Arc::new(MediaBuilder::new(Default::default()).unwrap());
        let uuid = uuid::Uuid::new_v4();
        let spec = json!({"meta_data": {"hostname": "h"}, "user_data": "hello"});
        let encoded = build_encoded(&builder, spec.as_object().unwrap(), &uuid).unwrap();
        let gz = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        let mut iso = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut iso)
            .unwrap();
        // Primary volume descriptor at sector 16: volume identifier at offset 40.
        let pvd = &iso[16 * 2048..17 * 2048];
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(
            std::str::from_utf8(&pvd[40..72]).unwrap().trim_end(),
            "config-2"
        );
        let text = String::from_utf8_lossy(&iso);
        assert!(text.contains(&uuid.to_string()) && text.contains("hello"));
    }
}
