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
pub mod instance;
pub mod ipxe;
pub mod layout;
mod metrics;
pub mod netboot;
pub mod pxe;
pub mod render;
mod settings;
pub mod vmedia;

use std::path::PathBuf;

pub use crate::driver::boot::{BootError, BootInterface, RamdiskParams};
pub use crate::model::BootMode;
pub use metrics::BootMetrics;
pub use settings::PxeSettings;

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
