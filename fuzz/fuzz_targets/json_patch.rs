//! JSON Patch as Ironic applies it: any document and patch either applies or is refused
//! with a 4xx; a patch that applies touches only writable top-level fields.
#![no_main]

use ironboot::api::patch::{PatchOp, apply};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

const WRITABLE: &[&str] = &["extra", "driver_info", "instance_info", "name"];

fuzz_target!(|data: &[u8]| {
    let Ok(ops) = serde_json::from_slice::<Vec<PatchOp>>(data) else {
        return;
    };
    let mut doc: Map<String, Value> = json!({
        "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7bcaaa00",
        "name": "n1",
        "extra": {"a": [1, 2, {"b": null}]},
        "driver_info": {"deploy_kernel": "http://x/k"},
        "instance_info": {},
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let before = doc.clone();
    match apply(&mut doc, &ops, WRITABLE, |k| {
        (k != "name").then(|| json!({}))
    }) {
        Ok(()) => {
            for (k, v) in &before {
                if !WRITABLE.contains(&k.as_str()) {
                    assert_eq!(doc.get(k), Some(v), "read-only field {k} changed");
                }
            }
            for k in doc.keys() {
                assert!(
                    before.contains_key(k) || WRITABLE.contains(&k.as_str()),
                    "{k} added"
                );
            }
        }
        Err(e) => assert!(e.status.is_client_error(), "{e}"),
    }
});
