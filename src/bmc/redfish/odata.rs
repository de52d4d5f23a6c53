//! Reading Redfish documents: links (`{"@odata.id": ...}`), collection members and
//! `@Redfish.AllowableValues` annotations.

use serde_json::Value;

/// The path of the link `key` holds (`doc[key]["@odata.id"]`).
pub(crate) fn link(doc: &Value, key: &str) -> Option<String> {
    doc.get(key)
        .and_then(|l| l.get("@odata.id"))
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

/// The paths of a list of links (`Members`, `Links.ManagedBy`).
pub(crate) fn links(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `doc["<property>@Redfish.AllowableValues"]`, when the BMC lists them.
pub(crate) fn allowable(doc: &Value, property: &str) -> Option<Vec<String>> {
    doc.get(format!("{property}@Redfish.AllowableValues"))
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
}

/// Two paths name the same resource (a trailing slash does not matter).
pub(crate) fn same_path(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The last segment of a path: a resource's id in its collection.
pub(crate) fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

pub(crate) fn string(doc: &Value, key: &str) -> Option<String> {
    doc.get(key).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_members_and_annotations() {
        let doc = json!({
            "VirtualMedia": {"@odata.id": "/redfish/v1/Managers/1/VirtualMedia"},
            "Empty": {"@odata.id": ""},
            "Members": [{"@odata.id": "/a"}, {"x": 1}, {"@odata.id": "/b"}],
            "ResetType@Redfish.AllowableValues": ["On", "ForceOff", 3],
        });
        assert_eq!(
            link(&doc, "VirtualMedia").as_deref(),
            Some("/redfish/v1/Managers/1/VirtualMedia")
        );
        assert_eq!(link(&doc, "Empty"), None);
        assert_eq!(link(&doc, "Missing"), None);
        assert_eq!(links(doc.get("Members")), vec!["/a", "/b"]);
        assert!(links(doc.get("Nope")).is_empty());
        assert_eq!(
            allowable(&doc, "ResetType"),
            Some(vec!["On".to_string(), "ForceOff".to_string()])
        );
        assert_eq!(allowable(&doc, "Other"), None);
        assert!(same_path("/redfish/v1/Systems/1/", "/redfish/v1/Systems/1"));
        assert_eq!(last_segment("/redfish/v1/Systems/abc/"), "abc");
    }
}
