//! Management interfaces: which device a node boots from.
//!
//! The conductor sets the boot device before it powers a node on, as Ironic does: the boot
//! interface says which one it prepared ([`BootTarget`]), the management interface applies it.

use async_trait::async_trait;

use super::NodeContext;

/// Boot devices with Ironic's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootDevice {
    Pxe,
    Disk,
    Cdrom,
    Bios,
    Floppy,
}

impl BootDevice {
    pub const ALL: [BootDevice; 5] = [
        BootDevice::Pxe,
        BootDevice::Disk,
        BootDevice::Cdrom,
        BootDevice::Bios,
        BootDevice::Floppy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BootDevice::Pxe => "pxe",
            BootDevice::Disk => "disk",
            BootDevice::Cdrom => "cdrom",
            BootDevice::Bios => "bios",
            BootDevice::Floppy => "floppy",
        }
    }

    pub fn parse(s: &str) -> Option<BootDevice> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for BootDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boot device and whether it holds for every boot (`persistent`) or the next one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootTarget {
    pub device: BootDevice,
    pub persistent: bool,
}

impl BootTarget {
    /// The next boot only (the deploy ramdisk).
    pub fn once(device: BootDevice) -> BootTarget {
        BootTarget {
            device,
            persistent: false,
        }
    }

    /// Every boot from now on (the instance).
    pub fn persistent(device: BootDevice) -> BootTarget {
        BootTarget {
            device,
            persistent: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("management interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    #[error(
        "management interface {interface} cannot boot node {node} from {device}: supported: {supported}"
    )]
    UnsupportedDevice {
        interface: &'static str,
        node: String,
        device: BootDevice,
        supported: String,
    },
    #[error("management interface {interface} failed to {action} node {node}: {source}")]
    Failed {
        interface: &'static str,
        action: &'static str,
        node: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ManagementError {
    /// A failure of `action` caused by `source`.
    pub fn failed(
        interface: &'static str,
        action: &'static str,
        node: &crate::model::Node,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> ManagementError {
        ManagementError::Failed {
            interface,
            action,
            node: node.ident(),
            source: source.into(),
        }
    }
}

/// What the conductor asks of a management interface.
#[async_trait]
pub trait ManagementInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks `driver_info` has what this interface needs, without touching the hardware.
    fn validate(&self, ctx: &NodeContext) -> Result<(), ManagementError>;
    /// The devices this interface can set for the node.
    fn supported_boot_devices(&self, ctx: &NodeContext) -> Vec<BootDevice>;
    /// The device the node boots from, when the hardware says.
    async fn get_boot_device(
        &self,
        ctx: &mut NodeContext,
    ) -> Result<Option<BootTarget>, ManagementError>;
    async fn set_boot_device(
        &self,
        ctx: &mut NodeContext,
        target: BootTarget,
    ) -> Result<(), ManagementError>;
}
