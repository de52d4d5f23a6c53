//! ironboot's black-box tests: one binary (one link) with a module per capability.
//!
//! Run one capability with `cargo test --test it <module>::`, e.g.
//! `cargo test --test it qemu_boot::`. Peer policy and shared helpers: [`support`].

mod support;

mod agent_client;
mod agent_ipa;
mod agent_ipa_clean;
mod agent_ipa_inspect;
mod agent_ipa_rescue;
mod api;
mod boot_serving;
mod e2e_deploy;
mod faults;
mod hostile;
mod image_cache;
mod ipmi_client;
mod ipmi_hardware;
mod ironic_parity;
mod ironicclient;
mod layers;
mod media;
mod multi_conductor;
mod publish;
mod qemu_boot;
mod redfish_client;
mod store_backends;
mod vmedia;
mod vmedia_faults;
mod vmedia_ipa;
mod vmedia_ipa_lifecycle;
mod vmedia_take_over;
