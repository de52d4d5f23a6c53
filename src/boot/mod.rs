//! Network boot: render PXELINUX, GRUB and iPXE configs and lay them out per node.
//!
//! [`render`] turns a plain [`render::BootContext`] into the text of a node's config (or the
//! `boot.ipxe` chain script); [`layout`] puts that text, the deploy and instance kernels and the
//! per-MAC links where firmware looks for them. Neither knows about the node model or the
//! database: the conductor (through its boot interfaces) builds the inputs and calls them.

pub mod layout;
pub mod render;
mod settings;

use std::path::PathBuf;

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
    type Err = BootError;
    fn from_str(s: &str) -> Result<Self, BootError> {
        match s {
            "pxe" => Ok(NetBoot::Pxe),
            "ipxe" => Ok(NetBoot::Ipxe),
            other => Err(BootError::Unsupported(format!(
                "boot interface {other:?} (expected \"pxe\" or \"ipxe\")"
            ))),
        }
    }
}

/// Firmware boot mode of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BootMode {
    Bios,
    Uefi,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Bios => "bios",
            BootMode::Uefi => "uefi",
        }
    }
}

impl std::str::FromStr for BootMode {
    type Err = BootError;
    fn from_str(s: &str) -> Result<Self, BootError> {
        match s {
            "bios" => Ok(BootMode::Bios),
            "uefi" => Ok(BootMode::Uefi),
            other => Err(BootError::Unsupported(format!(
                "boot mode {other:?} (expected \"bios\" or \"uefi\")"
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
    type Err = BootError;
    /// Accepts Ironic's `cpu_arch` spellings (`x86_64`, `amd64`, `aarch64`, `arm64`).
    fn from_str(s: &str) -> Result<Self, BootError> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(BootError::Unsupported(format!(
                "cpu architecture {other:?} (expected x86_64 or aarch64)"
            ))),
        }
    }
}

/// Everything that can go wrong while rendering or laying out boot files.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
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

impl BootError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        BootError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(field: &str, value: &str, reason: impl Into<String>) -> Self {
        BootError::InvalidValue {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
