//! Rendering boot configs from minijinja templates.
//!
//! A node's config is rendered whole from a [`BootContext`], with every entry whose inputs are
//! known and `default` pointing at the selected [`Entry`]; switching a node from `deploy` to an
//! instance entry is a new render written over the old file (atomically, by `layout`), never
//! an edit of the rendered text.
//!
//! Template selection: the format follows the interface and boot mode (`pxe` + BIOS =
//! PXELINUX, `pxe` + UEFI = GRUB, `ipxe` = iPXE script). For a format `F` the renderer looks
//! for `F-<arch>-<mode>.j2`, `F-<arch>.j2` and `F.j2`, first among the files of
//! `[pxe] template_dir`, then among the compiled-in templates of `templates/`.
//!
//! Everything that reaches a template from a node (kernel parameters, image locations, root
//! uuid, disk id) is validated first against a conservative character set: no whitespace or
//! control characters, no quotes, no `$`, `;`, `|`, `{`, `}`, `#`, `\` — nothing that PXELINUX,
//! GRUB's or iPXE's script syntax, or minijinja, would read as more than a word.

//!
//! - [`params`]: kernel parameters and every other node value that reaches a config, validated;
//! - [`context`]: what one render knows ([`BootContext`]);
//! - [`templates`]: which template renders it, compiled-in or overridden ([`Renderer`]).

mod context;
mod params;
mod templates;
#[cfg(test)]
mod tests;

pub use context::{BootContext, ImagePair};
pub use params::{KernelParam, KernelParams, validate_location};
pub use templates::Renderer;

use super::{Arch, BootFilesError, BootMode, NetBoot};

/// The boot entry a node's config selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// The deploy ramdisk (ironic-python-agent).
    Deploy,
    /// Hand the boot back to the local disk.
    BootWholeDisk,
    /// Instance kernel and ramdisk with `root=UUID=<root uuid>`.
    BootPartition,
    /// Instance kernel and ramdisk as the running system (`root=/dev/ram0`).
    BootRamdisk,
}

impl Entry {
    /// The label used in the configs (Ironic's names).
    pub fn label(self) -> &'static str {
        match self {
            Entry::Deploy => "deploy",
            Entry::BootWholeDisk => "boot_whole_disk",
            Entry::BootPartition => "boot_partition",
            Entry::BootRamdisk => "boot_ramdisk",
        }
    }
}

/// The config format a node's firmware reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigFormat {
    Pxelinux,
    Grub,
    Ipxe,
}

impl ConfigFormat {
    /// The format for an interface, boot mode and architecture; PXELINUX and iPXE's BIOS
    /// builds only exist for x86.
    pub fn select(interface: NetBoot, mode: BootMode, arch: Arch) -> Result<Self, BootFilesError> {
        match (interface, mode, arch) {
            (_, BootMode::Bios, Arch::Aarch64) => Err(BootFilesError::Unsupported(format!(
                "boot mode bios on {} (aarch64 boots UEFI only)",
                arch.as_str()
            ))),
            (NetBoot::Pxe, BootMode::Bios, _) => Ok(ConfigFormat::Pxelinux),
            (NetBoot::Pxe, BootMode::Uefi, _) => Ok(ConfigFormat::Grub),
            (NetBoot::Ipxe, _, _) => Ok(ConfigFormat::Ipxe),
        }
    }

    fn family(self) -> &'static str {
        match self {
            ConfigFormat::Pxelinux => "pxelinux",
            ConfigFormat::Grub => "grub",
            ConfigFormat::Ipxe => "ipxe",
        }
    }
}
