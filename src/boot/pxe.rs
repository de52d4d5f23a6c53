//! The `pxe` boot interface: the node's firmware PXE-boots a loader from the TFTP root —
//! PXELINUX (`pxelinux.0`) for BIOS, GRUB for UEFI — which finds the node's config by MAC:
//! `pxelinux.cfg/01-<mac>`, or for GRUB `grub.cfg-01-<mac>` next to its prefix and, through
//! the common `grub/grub.cfg`, `<mac>.conf`. Kernels and ramdisks are read over TFTP too,
//! relative to the tftp root (PXELINUX) or absolute in it (GRUB).

use super::layout::Layout;
use super::netboot::{Flavor, NetBootInterface};
use super::render::Renderer;
use super::{BootFilesError, NetBoot};

/// Marks [`NetBootInterface`] as the `pxe` interface.
#[derive(Debug)]
pub struct Pxe;

impl Flavor for Pxe {
    const KIND: NetBoot = NetBoot::Pxe;

    /// GRUB (UEFI) loads `grub/grub.cfg` under its prefix when no per-MAC file is there; that
    /// config sends it on to `/<mac>.conf`.
    fn refresh_root(renderer: &Renderer, layout: &Layout) -> Result<(), BootFilesError> {
        layout.write_grub_common(&renderer.render_grub_common()?)
    }
}

/// The `pxe` boot interface.
pub type PxeBoot = NetBootInterface<Pxe>;
