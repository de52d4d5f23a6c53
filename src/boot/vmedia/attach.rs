//! The BMC side: reaching the node's system, ejecting, inserting a published URL and checking
//! the BMC took it.

use crate::bmc::redfish::{Advised, DriverInfo, RedfishError, RedfishSystem};

use super::build::Built;
use super::error::{VmediaError, redact};

fn bmc(step: &'static str) -> impl FnOnce(RedfishError) -> VmediaError {
    move |e| VmediaError::Bmc {
        step,
        source: Advised::new(e),
    }
}

impl super::VirtualMediaBoot {
    pub(super) async fn connect(&self, info: &DriverInfo) -> Result<RedfishSystem, VmediaError> {
        self.config
            .redfish
            .connect(info)
            .await
            .map_err(bmc("cannot reach the node's system on its BMC"))
    }

    /// Connects, then ejects every medium when asked (a new preparation starts from empty
    /// slots, as Ironic's does; a take over replaces media slot by slot).
    pub(super) async fn connect_and_eject(
        &self,
        info: &DriverInfo,
        eject_all: bool,
    ) -> Result<RedfishSystem, VmediaError> {
        let system = self.connect(info).await?;
        if eject_all {
            eject_everything(&system).await?;
        }
        Ok(system)
    }

    /// Inserts `url` (where `built` was published) into the first slot that takes it and reads
    /// the slot back.
    pub(super) async fn insert(
        &self,
        system: &RedfishSystem,
        built: &Built,
        url: &str,
    ) -> Result<(), VmediaError> {
        let slot = system
            .insert_media(built.slot, url)
            .await
            .map_err(|e| match e {
                // The action (or its PATCH fallback) itself failed: most often the BMC cannot
                // fetch the URL.
                RedfishError::Status {
                    ref method,
                    ref path,
                    ..
                } if path.contains("InsertMedia") || method == "PATCH" => VmediaError::Insert {
                    what: built.what,
                    url: redact(url),
                    source: Advised::new(e),
                },
                other => bmc("cannot insert virtual media")(other),
            })?;
        if slot.holds(url) {
            return Ok(());
        }
        if slot.inserted == Some(true) {
            // Some BMCs report the URL rewritten (escaped, without credentials); the medium is
            // in, which is what matters.
            tracing::warn!(bmc = system.bmc(), slot = %slot.path, what = built.what,
                "the slot reports another image URL than the one inserted");
            return Ok(());
        }
        Err(VmediaError::NotHeld {
            bmc: system.bmc().to_string(),
            what: built.what,
            slot: slot.path,
            url: redact(url),
            image: slot.image.as_deref().map(redact),
            inserted: slot.inserted,
        })
    }
}

/// Ejects every loaded slot. A system without virtual media has nothing to eject.
pub(super) async fn eject_everything(system: &RedfishSystem) -> Result<(), VmediaError> {
    match system.eject_all().await {
        Ok(ejected) => {
            if !ejected.is_empty() {
                tracing::info!(
                    bmc = system.bmc(),
                    slots = ejected.len(),
                    "virtual media ejected"
                );
            }
            Ok(())
        }
        Err(RedfishError::NoVirtualMedia { .. }) => Ok(()),
        Err(e) => Err(bmc("cannot eject virtual media")(e)),
    }
}
