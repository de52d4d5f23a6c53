//! What one render of a node's config knows.

use uuid::Uuid;

use crate::boot::{Arch, BootFilesError, BootMode, NetBoot};

use super::params::{validate_disk_id, validate_root_uuid};
use super::*;

/// A kernel and ramdisk pair, as locations the firmware's loader understands: paths relative
/// to the tftp root for PXELINUX, absolute paths in the server root for GRUB, URLs for iPXE.
/// `layout::Layout::image_locations` computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePair {
    pub kernel: String,
    pub ramdisk: String,
}

/// Everything a node's config is rendered from. Plain data, independent of the node model.
#[derive(Debug, Clone)]
pub struct BootContext {
    pub node_uuid: Uuid,
    pub interface: NetBoot,
    pub boot_mode: BootMode,
    pub arch: Arch,
    /// The entry `default` selects.
    pub entry: Entry,
    /// Deploy kernel and ramdisk; needed for [`Entry::Deploy`].
    pub deploy: Option<ImagePair>,
    /// Deploy ramdisk command line: configured defaults, node params, `ipa-api-url`, ...
    pub deploy_params: KernelParams,
    /// Instance kernel and ramdisk; needed for the partition and ramdisk entries.
    pub instance: Option<ImagePair>,
    /// Extra command line of the instance entries (`ramdisk_kernel_arguments`, ...).
    pub instance_params: KernelParams,
    /// Root filesystem UUID of a partition image; needed for [`Entry::BootPartition`].
    pub root_uuid: Option<String>,
    /// Disk identifier of a whole-disk image; PXELINUX then chains that disk's MBR.
    pub disk_id: Option<String>,
}

impl BootContext {
    /// Checks that the selected entry has its inputs and that every value is safe to render.
    pub(super) fn validate(&self) -> Result<(), BootFilesError> {
        let entry = self.entry.label();
        match self.entry {
            Entry::Deploy if self.deploy.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the deploy kernel and ramdisk",
                });
            }
            Entry::BootPartition | Entry::BootRamdisk if self.instance.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the instance kernel and ramdisk",
                });
            }
            Entry::BootPartition if self.root_uuid.is_none() => {
                return Err(BootFilesError::MissingInput {
                    entry,
                    what: "the root filesystem uuid",
                });
            }
            _ => {}
        }
        if let Some(d) = &self.deploy {
            validate_location("deploy_kernel", &d.kernel)?;
            validate_location("deploy_ramdisk", &d.ramdisk)?;
        }
        if let Some(i) = &self.instance {
            validate_location("kernel", &i.kernel)?;
            validate_location("ramdisk", &i.ramdisk)?;
        }
        if let Some(r) = &self.root_uuid {
            validate_root_uuid(r)?;
        }
        if let Some(d) = &self.disk_id {
            validate_disk_id(d)?;
        }
        Ok(())
    }
}

/// The name iPXE gives a downloaded image: the last path segment of its URL, which the
/// kernel's EFI stub needs as `initrd=<name>` to find the initrd under UEFI.
pub(super) fn image_name(location: &str) -> &str {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/').next().unwrap_or(path)
}
