//! The `ipxe` boot interface: the node's firmware runs iPXE (its NIC's ROM, or `undionly.kpxe`
//! / `snponly.efi` chain-loaded over TFTP), which DHCP points at `<http_url>/boot.ipxe`. That
//! script tries `pxelinux.cfg/<mac with dashes>` for every NIC until one exists; the node's
//! script then downloads kernel and ramdisk from `<http_url>/<node uuid>/` over HTTP.

use super::layout::Layout;
use super::netboot::{Flavor, NetBootInterface};
use super::render::Renderer;
use super::{BootFilesError, NetBoot};

/// Marks [`NetBootInterface`] as the `ipxe` interface.
#[derive(Debug)]
pub struct Ipxe;

impl Flavor for Ipxe {
    const KIND: NetBoot = NetBoot::Ipxe;

    /// Every iPXE client starts at `boot.ipxe`.
    fn refresh_root(renderer: &Renderer, layout: &Layout) -> Result<(), BootFilesError> {
        layout.write_boot_ipxe(&renderer.render_boot_ipxe()?)?;
        Ok(())
    }
}

/// The `ipxe` boot interface.
pub type IpxeBoot = NetBootInterface<Ipxe>;
