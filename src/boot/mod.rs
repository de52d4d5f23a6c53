//! Boot interfaces: make a node boot something (the deploy ramdisk, then its instance).
//!
//! Chosen per node by `boot_interface`. `fake` records what it was asked and changes nothing;
//! [`pxe`] (PXELINUX/GRUB over TFTP) and [`ipxe`] (iPXE over HTTP) render the node's boot
//! config and lay out its files, sharing everything but their root in [`netboot`].
//!
//! The network boot building blocks live here too, independent of the node model:
//! [`render`] turns a plain [`render::BootContext`] into the text of a node's PXELINUX, GRUB
//! or iPXE config (or the `boot.ipxe` chain script); [`layout`] puts that text, the deploy
//! and instance kernels and the per-MAC links where firmware looks for them.

pub mod fake;
pub mod ipxe;
pub mod layout;
mod metrics;
pub mod netboot;
pub mod pxe;
pub mod render;
mod settings;

use std::path::PathBuf;

use crate::conductor::task::{Task, TaskFuture};

pub use crate::model::BootMode;
pub use metrics::BootMetrics;
pub use settings::PxeSettings;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("boot interface {interface}: driver_info is missing or invalid: {reason}")]
    InvalidDriverInfo {
        interface: &'static str,
        reason: String,
    },
    /// Node input other than driver_info (instance_info, properties, ports) is unusable.
    #[error("boot interface {interface}: {reason}")]
    InvalidNode {
        interface: &'static str,
        reason: String,
    },
    #[error("boot interface {interface} failed for node {node}: {reason}")]
    Failed {
        interface: &'static str,
        node: String,
        reason: String,
    },
}

/// What the conductor asks of a boot interface. Every method leaves the node's boot files in a
/// consistent state: either the old set or the new one, never a mix a node could fetch.
pub trait BootInterface: Send + Sync {
    fn name(&self) -> &'static str;
    /// Checks the node has what this interface needs (deploy kernel/ramdisk, ports, ...),
    /// without changing anything. Async because ports live in the store.
    fn validate<'a>(&'a self, task: &'a Task) -> TaskFuture<'a, (), BootError>;
    /// Prepares the node to boot the deploy ramdisk, handing it `ramdisk_params`
    /// (`ipa-api-url=...` and friends) on its kernel command line.
    fn prepare_ramdisk<'a>(
        &'a self,
        task: &'a mut Task,
        ramdisk_params: &'a [(String, String)],
    ) -> TaskFuture<'a, (), BootError>;
    /// Removes what `prepare_ramdisk` created.
    fn clean_up_ramdisk<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Prepares the node to boot its instance (local disk, or a partition image's kernel).
    fn prepare_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Removes what `prepare_instance` created.
    fn clean_up_instance<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
    /// Regenerates this conductor's copy of the node's boot files after another conductor died.
    fn take_over<'a>(&'a self, task: &'a mut Task) -> TaskFuture<'a, (), BootError>;
}

/// The network boot interfaces this module serves (Ironic's `pxe` and `ipxe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetBoot {
    /// Firmware PXE over TFTP: PXELINUX for BIOS, GRUB for UEFI; files under the tftp root.
    Pxe,
    /// iPXE over HTTP: `boot.ipxe` chains a per-node script; files under the http root.
    Ipxe,
}

impl NetBoot {
    pub fn as_str(self) -> &'static str {
        match self {
            NetBoot::Pxe => "pxe",
            NetBoot::Ipxe => "ipxe",
        }
    }
}

impl std::str::FromStr for NetBoot {
    type Err = BootFilesError;
    fn from_str(s: &str) -> Result<Self, BootFilesError> {
        match s {
            "pxe" => Ok(NetBoot::Pxe),
            "ipxe" => Ok(NetBoot::Ipxe),
            other => Err(BootFilesError::Unsupported(format!(
                "boot interface {other:?} (expected \"pxe\" or \"ipxe\")"
            ))),
        }
    }
}

/// CPU architecture of a node, as far as boot files differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = BootFilesError;
    /// Accepts Ironic's `cpu_arch` spellings (`x86_64`, `amd64`, `aarch64`, `arm64`).
    fn from_str(s: &str) -> Result<Self, BootFilesError> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(BootFilesError::Unsupported(format!(
                "cpu architecture {other:?} (expected x86_64 or aarch64)"
            ))),
        }
    }
}

/// Everything that can go wrong while rendering or laying out boot files.
#[derive(Debug, thiserror::Error)]
pub enum BootFilesError {
    /// A value that would end up in a boot config is not acceptable there.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: String,
        value: String,
        reason: String,
    },
    /// The selected entry needs an input the caller did not give.
    #[error("entry {entry} needs {what}, which was not given")]
    MissingInput {
        entry: &'static str,
        what: &'static str,
    },
    /// A combination (boot mode, architecture, interface) that has no config format.
    #[error("unsupported {0}")]
    Unsupported(String),
    /// A template failed to load, compile or render.
    #[error("template {name}: {detail}")]
    Template { name: String, detail: String },
    /// A file operation under a boot root failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BootFilesError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        BootFilesError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &str, value: &str, reason: impl Into<String>) -> Self {
        BootFilesError::InvalidValue {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
