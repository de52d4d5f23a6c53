//! ironboot: the boot and media service that runs on every bare-metal conductor host.
//!
//! Module map (see ARCHITECTURE.md for the data flow):
//! - [`fsutil`]: atomic file placement shared by everything that writes served files.
//! - [`metrics`]: the Prometheus registry and conventions.
//! - [`publish`]: where built virtual media live for BMCs: local web root or Swift temp URLs.

pub mod fsutil;
pub mod metrics;
pub mod publish;
