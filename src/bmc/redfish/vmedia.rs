//! Virtual media of a system: the slots, found under the System or, failing that, under the
//! Managers that manage it (iLO 5 keeps them under `/redfish/v1/Managers/1/VirtualMedia`);
//! inserting an image URL into the first slot that takes the medium, ejecting, and reading
//! each slot's state back so callers can check what the BMC holds.
//!
//! Insert and eject use the slot's `VirtualMedia.InsertMedia` / `EjectMedia` actions, and
//! fall back to PATCHing `Image` and `Inserted` on the slot where the actions are missing or
//! answer 405 or 501 (older firmware).

use std::fmt;

use reqwest::Method;
use serde_json::{Value, json};
use tracing::{debug, info};

use super::error::RedfishError;
use super::odata;
use super::system::RedfishSystem;

/// The medium to insert, by the slot `MediaTypes` that take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An ISO: a slot with `CD` or `DVD`.
    Cd,
    /// A floppy image: a slot with `Floppy` or `USBStick` (where the BMC has no floppy drive
    /// the image is presented as a USB stick).
    Floppy,
    /// A disk image for a USB stick: a slot with `USBStick`.
    UsbStick,
}

impl MediaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Cd => "CD",
            MediaKind::Floppy => "Floppy",
            MediaKind::UsbStick => "USBStick",
        }
    }

    /// Whether a slot with these `MediaTypes` takes this medium.
    pub fn fits(self, media_types: &[String]) -> bool {
        let accepted: &[&str] = match self {
            MediaKind::Cd => &["CD", "DVD"],
            MediaKind::Floppy => &["Floppy", "USBStick"],
            MediaKind::UsbStick => &["USBStick"],
        };
        media_types
            .iter()
            .any(|t| accepted.iter().any(|a| t.eq_ignore_ascii_case(a)))
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One virtual media slot, as the BMC reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualMediaSlot {
    /// The slot's `@odata.id`.
    pub path: String,
    pub media_types: Vec<String>,
    /// `Image`: the URL the BMC holds (`None` when empty or null).
    pub image: Option<String>,
    pub inserted: Option<bool>,
    pub write_protected: Option<bool>,
    insert_action: Option<String>,
    eject_action: Option<String>,
}

impl VirtualMediaSlot {
    pub(crate) fn parse(path: &str, doc: &Value) -> Self {
        let action = |name: &str| {
            doc.get("Actions")
                .and_then(|a| a.get(name))
                .and_then(|a| odata::string(a, "target"))
                .filter(|t| !t.is_empty())
        };
        VirtualMediaSlot {
            path: odata::string(doc, "@odata.id").unwrap_or_else(|| path.to_string()),
            media_types: doc
                .get("MediaTypes")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            image: odata::string(doc, "Image").filter(|i| !i.is_empty()),
            inserted: doc.get("Inserted").and_then(Value::as_bool),
            write_protected: doc.get("WriteProtected").and_then(Value::as_bool),
            insert_action: action("#VirtualMedia.InsertMedia"),
            eject_action: action("#VirtualMedia.EjectMedia"),
        }
    }

    /// Something is in the slot (inserted, or an image still attached).
    pub fn is_loaded(&self) -> bool {
        self.inserted == Some(true) || self.image.is_some()
    }

    /// The slot holds `url` and does not say it is ejected.
    pub fn holds(&self, url: &str) -> bool {
        self.image.as_deref() == Some(url) && self.inserted != Some(false)
    }

    fn describe(&self) -> String {
        format!("{} [{}]", self.path, self.media_types.join(", "))
    }
}

impl RedfishSystem {
    /// Every virtual media slot of the system, each read now.
    pub async fn virtual_media(&self) -> Result<Vec<VirtualMediaSlot>, RedfishError> {
        let members = self.media_members().await?;
        let mut slots = Vec::with_capacity(members.len());
        for path in members {
            slots.push(self.read_slot(&path).await?);
        }
        Ok(slots)
    }

    /// The members of the first non-empty VirtualMedia collection: the System's, then each
    /// Manager's (`Links.ManagedBy`, else every Manager of the service).
    async fn media_members(&self) -> Result<Vec<String>, RedfishError> {
        let system = self.document().await?;
        let mut searched: Vec<String> = Vec::new();
        let mut candidates: Vec<String> =
            odata::link(&system, "VirtualMedia").into_iter().collect();
        let mut managers = odata::links(system.get("Links").and_then(|l| l.get("ManagedBy")));
        if managers.is_empty()
            && let Some(collection) = odata::link(&self.root, "Managers")
        {
            managers = odata::links(self.t.get(&collection).await?.get("Members"));
        }
        let mut next_manager = managers.into_iter();
        loop {
            let collection = match candidates.pop() {
                Some(c) => c,
                None => match next_manager.next() {
                    Some(m) => {
                        searched.push(m.clone());
                        candidates.extend(odata::link(&self.t.get(&m).await?, "VirtualMedia"));
                        continue;
                    }
                    None => break,
                },
            };
            if searched.iter().any(|s| odata::same_path(s, &collection)) {
                continue;
            }
            searched.push(collection.clone());
            let members = odata::links(self.t.get(&collection).await?.get("Members"));
            if !members.is_empty() {
                return Ok(members);
            }
        }
        if searched.is_empty() {
            searched.push(self.path.clone());
        }
        Err(RedfishError::NoVirtualMedia {
            bmc: self.t.bmc.clone(),
            system: self.path.clone(),
            searched,
        })
    }

    /// A slot's state, read now.
    pub async fn read_slot(&self, path: &str) -> Result<VirtualMediaSlot, RedfishError> {
        Ok(VirtualMediaSlot::parse(path, &self.t.get(path).await?))
    }

    /// Inserts the image at `url` (write-protected) into the first slot that takes `kind`,
    /// after ejecting whatever any such slot holds (BMCs differ on replacing media in
    /// place). Returns the slot as read back afterwards: check [`VirtualMediaSlot::holds`].
    pub async fn insert_media(
        &self,
        kind: MediaKind,
        url: &str,
    ) -> Result<VirtualMediaSlot, RedfishError> {
        let slots = self.virtual_media().await?;
        let fitting: Vec<&VirtualMediaSlot> =
            slots.iter().filter(|s| kind.fits(&s.media_types)).collect();
        let Some(slot) = fitting.first().copied() else {
            return Err(RedfishError::NoMediaSlot {
                bmc: self.t.bmc.clone(),
                system: self.path.clone(),
                kind: kind.to_string(),
                slots: slots.iter().map(VirtualMediaSlot::describe).collect(),
            });
        };
        for loaded in fitting.iter().filter(|s| s.is_loaded()) {
            self.eject_slot(loaded).await?;
        }
        let body = json!({"Image": url, "Inserted": true, "WriteProtected": true});
        self.act(slot.insert_action.as_deref(), &slot.path, &body, &body)
            .await?;
        info!(bmc = %self.t.bmc, slot = %slot.path, %kind, "virtual media inserted");
        self.read_slot(&slot.path).await
    }

    /// Ejects every slot that takes `kind` and holds something; returns them as read back.
    pub async fn eject_media(
        &self,
        kind: MediaKind,
    ) -> Result<Vec<VirtualMediaSlot>, RedfishError> {
        self.eject_where(|s| kind.fits(&s.media_types)).await
    }

    /// Ejects every slot that holds something (clean up); returns them as read back. Every
    /// slot is tried; the first failure is returned after the others.
    pub async fn eject_all(&self) -> Result<Vec<VirtualMediaSlot>, RedfishError> {
        self.eject_where(|_| true).await
    }

    async fn eject_where(
        &self,
        pick: impl Fn(&VirtualMediaSlot) -> bool,
    ) -> Result<Vec<VirtualMediaSlot>, RedfishError> {
        let mut first_error = None;
        let mut ejected = Vec::new();
        for slot in self.virtual_media().await? {
            if !pick(&slot) || !slot.is_loaded() {
                continue;
            }
            match self.eject_slot(&slot).await {
                Ok(()) => ejected.push(self.read_slot(&slot.path).await?),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ejected),
        }
    }

    async fn eject_slot(&self, slot: &VirtualMediaSlot) -> Result<(), RedfishError> {
        self.act(
            slot.eject_action.as_deref(),
            &slot.path,
            &json!({}),
            &json!({"Image": null, "Inserted": false}),
        )
        .await?;
        info!(bmc = %self.t.bmc, slot = %slot.path, "virtual media ejected");
        Ok(())
    }

    /// POSTs `action_body` to the action, or PATCHes `patch_body` onto the slot where the
    /// action is missing or not implemented.
    async fn act(
        &self,
        action: Option<&str>,
        slot: &str,
        action_body: &Value,
        patch_body: &Value,
    ) -> Result<(), RedfishError> {
        if let Some(target) = action {
            match self.t.post(target, action_body).await {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.status(), Some(405 | 501)) => {
                    debug!(bmc = %self.t.bmc, %slot, error = %e, "action refused; trying PATCH");
                }
                Err(e) => return Err(e),
            }
        }
        self.t
            .call(Method::PATCH, slot, Some(patch_body), None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(doc: Value) -> VirtualMediaSlot {
        VirtualMediaSlot::parse("/fallback", &doc)
    }

    #[test]
    fn slots_parse_with_their_actions() {
        let s = slot(json!({
            "@odata.id": "/redfish/v1/Managers/1/VirtualMedia/2",
            "MediaTypes": ["CD", "DVD"],
            "Image": "http://10.0.0.1/boot.iso",
            "Inserted": true,
            "WriteProtected": true,
            "Actions": {
                "#VirtualMedia.InsertMedia": {"target": "/redfish/v1/Managers/1/VirtualMedia/2/Actions/VirtualMedia.InsertMedia"},
                "#VirtualMedia.EjectMedia": {"target": ""},
            }
        }));
        assert_eq!(s.path, "/redfish/v1/Managers/1/VirtualMedia/2");
        assert!(s.is_loaded());
        assert!(s.holds("http://10.0.0.1/boot.iso"));
        assert!(!s.holds("http://10.0.0.1/other.iso"));
        assert!(s.insert_action.as_deref().unwrap().ends_with("InsertMedia"));
        assert_eq!(s.eject_action, None);

        // iLO-style empty slot: Image null, no actions (PATCH only), no @odata.id.
        let s =
            slot(json!({"MediaTypes": ["Floppy", "USBStick"], "Image": null, "Inserted": false}));
        assert_eq!(s.path, "/fallback");
        assert!(!s.is_loaded());
        assert_eq!(s.insert_action, None);
        // Ejected but the BMC still reports the old URL: still counts as loaded.
        let s = slot(json!({"Image": "http://x/y", "Inserted": false}));
        assert!(s.is_loaded());
        assert!(!s.holds("http://x/y"));
    }

    #[test]
    fn slot_selection_by_media_types() {
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(MediaKind::Cd.fits(&types(&["CD", "DVD"])));
        assert!(MediaKind::Cd.fits(&types(&["DVD"])));
        assert!(!MediaKind::Cd.fits(&types(&["Floppy", "USBStick"])));
        assert!(MediaKind::Floppy.fits(&types(&["Floppy"])));
        assert!(MediaKind::Floppy.fits(&types(&["USBStick"])));
        assert!(MediaKind::Floppy.fits(&types(&["usbstick"])));
        assert!(!MediaKind::UsbStick.fits(&types(&["Floppy"])));
        assert!(!MediaKind::Cd.fits(&[]));

        // iLO 5 lists the floppy/USB slot first and the CD second: a CD goes to the second.
        let slots = [
            slot(json!({"@odata.id": "/1", "MediaTypes": ["Floppy", "USBStick"]})),
            slot(json!({"@odata.id": "/2", "MediaTypes": ["CD", "DVD"]})),
        ];
        let first = |k: MediaKind| {
            slots
                .iter()
                .find(|s| k.fits(&s.media_types))
                .map(|s| s.path.as_str())
        };
        assert_eq!(first(MediaKind::Cd), Some("/2"));
        assert_eq!(first(MediaKind::Floppy), Some("/1"));
        assert_eq!(slots[1].describe(), "/2 [CD, DVD]");
    }
}
