//! ironboot: the boot and media service that runs on every bare-metal conductor host.
//!
//! Module map (see ARCHITECTURE.md for the data flow):
//! - [`model`]: nodes, ports, provision states and transitions (pure, no I/O).
//! - [`store`]: the `Store` trait and its embedded SQLite implementation.
//! - [`conductor`]: reservations, provisioning actions, periodic tasks.
//! - [`agent`]: ironic-python-agent client (commands, pinned TLS) and agent tokens.
//! - [`driver`]: what boot, power and management interfaces see (the node context) and promise.
//! - [`boot`], [`bmc`]: boot, power and management interfaces the conductor drives; `boot` also
//!   renders PXELINUX/GRUB/iPXE configs and lays out the per-node boot files.
//! - [`config`]: file + environment + flags → validated `Config`.
//! - [`api`]: the Ironic-compatible HTTP API.
//! - [`service`]: `ironboot serve` — wiring, listeners, signals.
//! - [`serve`]: the TFTP and HTTP servers of the boot roots (read-only, confined).
//! - [`fsutil`]: atomic file placement shared by everything that writes served files.
//! - [`metrics`]: the Prometheus registry and conventions.
//! - [`images`]: the image cache (download once, verify, hard-link everywhere, evict safely).
//! - [`media`]: virtual media builders (FAT floppy with parameters.txt, ESP, El Torito ISOs).
//! - [`publish`]: where built virtual media live for BMCs: local web root or Swift temp URLs.
//! - [`ramdisk`]: the deploy ramdisk with `ironboot-agent` (`ironboot ramdisk build`).

pub mod agent;
pub mod api;
pub mod bmc;
pub mod boot;
pub mod conductor;
pub mod config;
pub mod driver;
pub mod error_chain;
pub mod fsutil;
pub mod images;
pub mod media;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod ramdisk;
pub mod serve;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
