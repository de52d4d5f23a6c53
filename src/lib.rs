//! ironboot: the boot and media service that runs on every bare-metal conductor host.
//!
//! Module map (see ARCHITECTURE.md for the data flow):
//! - [`boot`]: PXELINUX/GRUB/iPXE config rendering and the per-node layout of boot files.
//! - [`fsutil`]: atomic file placement shared by everything that writes served files.
//! - [`metrics`]: the Prometheus registry and conventions.
//! - [`serve`]: the TFTP and HTTP servers of the boot roots (read-only, confined).

pub mod boot;
pub mod fsutil;
pub mod metrics;
pub mod serve;
