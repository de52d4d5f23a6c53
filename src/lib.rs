//! ironboot: the boot and media service that runs on every bare-metal conductor host.
//!
//! Module map (see ARCHITECTURE.md for the data flow):
//! - [`fsutil`]: atomic file placement shared by everything that writes served files.
//! - [`metrics`]: the Prometheus registry and conventions.
//! - [`media`]: virtual media builders (FAT floppy with parameters.txt, ESP, El Torito ISOs).

pub mod fsutil;
pub mod media;
pub mod metrics;
