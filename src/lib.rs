//! ironboot: the boot and media service that runs on every bare-metal conductor host.
//!
//! Module map (see ARCHITECTURE.md for the data flow):
//! - [`fsutil`]: atomic file placement shared by everything that writes served files.
//! - [`metrics`]: the Prometheus registry and conventions.
//! - [`images`]: the image cache (download once, verify, hard-link everywhere, evict safely).

pub mod fsutil;
pub mod images;
pub mod metrics;
