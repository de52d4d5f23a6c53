//! What a node has published, kept in `driver_internal_info.vmedia` so that any conductor —
//! this one after a restart, or another one taking the node over — can republish it under the
//! same names and remove all of it at clean up.
//!
//! Names are opaque: `<kind>-<id>.<ext>` with a random id per preparation, so a URL reveals
//! neither the node nor the agent token the medium carries, and cannot be guessed from
//! either. The id lives under `name_secret`, a key the API masks as it masks every
//! secret-looking key; what kinds were published (and where) is plain.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::Node;
use crate::publish::{Backend, ObjectName};

/// The `driver_internal_info` key of the record.
pub const KEY: &str = "vmedia";

/// A medium a node can have published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// The deploy ISO ironboot built (the agent's parameters on its kernel command line), or
    /// the operator's `deploy_iso` republished as it is.
    DeployIso,
    /// The FAT image with `parameters.txt` (floppy or USB stick).
    ConfigFloppy,
    /// The instance boot ISO of a partition image or a ramdisk deploy.
    BootIso,
}

impl MediaKind {
    fn prefix(self) -> &'static str {
        match self {
            MediaKind::DeployIso => "deploy",
            MediaKind::ConfigFloppy => "config",
            MediaKind::BootIso => "boot",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            MediaKind::DeployIso | MediaKind::BootIso => "iso",
            MediaKind::ConfigFloppy => "img",
        }
    }

    /// Whether it belongs to the ramdisk boot (as opposed to the instance's).
    pub fn is_ramdisk(self) -> bool {
        matches!(self, MediaKind::DeployIso | MediaKind::ConfigFloppy)
    }
}

/// One published medium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub kind: MediaKind,
    pub backend: Backend,
}

/// The node's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// The random id in every published name (hex, 32 characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name_secret: String,
    #[serde(default)]
    pub published: Vec<Entry>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the system random source for a media name: {0}")]
pub struct NameError(String);

impl MediaRecord {
    /// The record in `node`, or an empty one (a damaged record is treated as empty: its names
    /// cannot be rebuilt anyway).
    pub fn read(node: &Node) -> MediaRecord {
        node.driver_internal_info
            .get(KEY)
            .and_then(|v| serde_json::from_value::<MediaRecord>(v.clone()).ok())
            .filter(MediaRecord::is_valid_secret)
            .unwrap_or_default()
    }

    /// Writes the record into `node`; an empty one removes the key.
    pub fn write(&self, node: &mut Node) {
        if self.name_secret.is_empty() && self.published.is_empty() {
            node.driver_internal_info.remove(KEY);
            return;
        }
        if let Ok(v) = serde_json::to_value(self) {
            node.driver_internal_info.insert(KEY.to_string(), v);
        }
    }

    /// A record with a new random id and nothing published: a new preparation.
    pub fn fresh() -> Result<MediaRecord, NameError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| NameError(e.to_string()))?;
        Ok(MediaRecord {
            name_secret: hex::encode(bytes),
            published: Vec::new(),
        })
    }

    /// The name `kind` is published under.
    pub fn name(&self, kind: MediaKind) -> ObjectName {
        // Invariant: the prefix and extension are fixed ASCII words and the id is hex
        // (`fresh` makes it so, and `read` drops a record whose id is anything else), so the
        // name always passes ObjectName's checks.
        ObjectName::new(&format!(
            "{}-{}.{}",
            kind.prefix(),
            self.name_secret,
            kind.extension()
        ))
        .unwrap_or_else(|_| unreachable!("media names are built from safe characters"))
    }

    /// The ISO publisher id (and `ir_pub_id`) of a built ISO: stable for the node, the kind
    /// and this preparation, so rebuilding from the same inputs gives the same bytes, yet
    /// not derivable into the name.
    pub fn publisher_id(&self, node: Uuid, kind: MediaKind) -> String {
        let seed = format!(
            "ironboot-vmedia:{node}:{}:{}",
            kind.prefix(),
            self.name_secret
        );
        Uuid::new_v5(&Uuid::NAMESPACE_OID, seed.as_bytes()).to_string()
    }

    /// The entry of `kind`, when published.
    pub fn entry(&self, kind: MediaKind) -> Option<Entry> {
        self.published.iter().copied().find(|e| e.kind == kind)
    }

    /// Records `kind` as published on `backend` (replacing an earlier entry of that kind).
    pub fn add(&mut self, kind: MediaKind, backend: Backend) {
        self.published.retain(|e| e.kind != kind);
        self.published.push(Entry { kind, backend });
    }

    /// Forgets `kind` (after it was unpublished).
    pub fn remove(&mut self, kind: MediaKind) {
        self.published.retain(|e| e.kind != kind);
    }

    fn is_valid_secret(&self) -> bool {
        self.name_secret.len() == 32 && self.name_secret.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;

    fn node() -> Node {
        Node::new(
            Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        )
    }

    #[test]
    fn names_are_opaque_and_stable() {
        let mut n = node();
        let mut r = MediaRecord::fresh().unwrap();
        assert!(r.is_valid_secret());
        let iso = r.name(MediaKind::DeployIso);
        assert!(iso.as_str().starts_with("deploy-") && iso.as_str().ends_with(".iso"));
        assert!(!iso.as_str().contains(&n.uuid.to_string()));
        assert_eq!(
            r.name(MediaKind::ConfigFloppy).as_str(),
            format!("config-{}.img", r.name_secret)
        );
        assert_ne!(
            MediaRecord::fresh().unwrap().name(MediaKind::DeployIso),
            iso
        );
        r.add(MediaKind::DeployIso, Backend::Local);
        r.add(MediaKind::DeployIso, Backend::Swift);
        assert_eq!(r.published.len(), 1);
        r.write(&mut n);
        let back = MediaRecord::read(&n);
        assert_eq!(back, r);
        assert_eq!(
            back.entry(MediaKind::DeployIso).unwrap().backend,
            Backend::Swift
        );
        // Stable publisher ids per node, kind and preparation.
        let id = r.publisher_id(n.uuid, MediaKind::DeployIso);
        assert_eq!(id, back.publisher_id(n.uuid, MediaKind::DeployIso));
        assert_ne!(id, r.publisher_id(n.uuid, MediaKind::BootIso));
        // The API masks the id; the kinds stay readable.
        let masked = crate::model::node::mask_secrets(&n.driver_internal_info);
        assert_eq!(masked[KEY]["name_secret"], "******");
        assert_eq!(masked[KEY]["published"][0]["kind"], "deploy_iso");
        r.remove(MediaKind::DeployIso);
        MediaRecord::default().write(&mut n);
        assert!(!n.driver_internal_info.contains_key(KEY));
    }

    #[test]
    fn a_damaged_record_reads_as_empty() {
        let mut n = node();
        n.driver_internal_info
            .insert(KEY.into(), serde_json::json!({"published": "nope"}));
        assert_eq!(MediaRecord::read(&n), MediaRecord::default());
        n.driver_internal_info.insert(
            KEY.into(),
            serde_json::json!({"name_secret": "../../etc", "published": []}),
        );
        assert_eq!(MediaRecord::read(&n), MediaRecord::default());
    }
}
