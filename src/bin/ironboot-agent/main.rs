//! `ironboot-agent`: a small agent for the deploy ramdisk that speaks the ironic-python-agent
//! (IPA) protocol as ironboot's `direct` deploy drives it, so the conductor cannot tell it
//! from IPA: lookup and heartbeats with the agent token and auto-TLS, and the command API
//! (`/v1/commands/`) with the deploy, clean, standby, image and log extensions.
//!
//! Two ways to run it:
//! - as PID 1 of the ramdisk `ironboot ramdisk build` makes (`/init` is this binary): it
//!   mounts the pseudo filesystems, loads the kernel modules listed in the ramdisk, brings the
//!   NICs up with DHCP ([`init`]), then runs the agent with the kernel command line's
//!   `ipa-*` parameters; every local disk is a candidate install target;
//! - as an ordinary process (tests, development): parameters from `--cmdline-file` and flags;
//!   it only ever touches the `--disk` paths it is given, and "power off" ends the process.
//!
//! Module map: [`settings`] (parameters), [`vmedia`] (the `ir-vfd-dev` floppy), [`ironic`]
//! (lookup, heartbeat), [`heartbeat`], [`tls`] (auto-TLS), [`api`] (command API), [`commands`]
//! (the extensions), [`disk`] (devices, hints, partition tables, writing, erasing),
//! [`download`] (images and checksums), [`system`] (power), [`logbuf`] (the log kept for
//! `log.collect_system_logs`).

mod agent;
mod api;
mod commands;
mod disk;
mod download;
mod heartbeat;
mod init;
mod ironic;
mod logbuf;
mod settings;
mod system;
mod tls;
mod vmedia;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line flags for running outside a ramdisk; the ramdisk passes everything on the
/// kernel command line instead.
#[derive(Debug, Parser)]
#[command(
    name = "ironboot-agent",
    version,
    about = "IPA-protocol deploy agent of ironboot's ramdisk"
)]
pub struct Cli {
    /// Read `ipa-*` parameters from this file instead of /proc/cmdline.
    #[arg(long, value_name = "FILE")]
    pub cmdline_file: Option<PathBuf>,
    /// `ipa-api-url` (overrides the command line).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// Install target(s) the agent may write, instead of the machine's disks (files or block
    /// devices). Outside a ramdisk the agent touches nothing else.
    #[arg(long = "disk", value_name = "PATH")]
    pub disks: Vec<PathBuf>,
    /// The machine's MAC address(es) for lookup, instead of /sys/class/net.
    #[arg(long = "mac", value_name = "MAC")]
    pub macs: Vec<String>,
    /// Treat every local disk as a candidate install target, as in the ramdisk (without it,
    /// and not running as PID 1, only `--disk` paths are used).
    #[arg(long)]
    pub ramdisk: bool,
    /// Address of the command API (`ipa-listen-host`:`ipa-listen-port`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// `ipa-advertise-host`.
    #[arg(long, value_name = "IP")]
    pub advertise_host: Option<std::net::IpAddr>,
    /// `ipa-advertise-port`.
    #[arg(long, value_name = "PORT")]
    pub advertise_port: Option<u16>,
    /// Serve plain HTTP and send no certificate (IPA's `--noenable_auto_tls`).
    #[arg(long)]
    pub no_tls: bool,
}

fn main() -> ExitCode {
    if std::process::id() == 1 {
        // The ramdisk's init: never returns (it powers the machine off or reboots).
        init::run_as_pid1();
    }
    let cli = Cli::parse();
    let logs = logbuf::install(false);
    let settings = match settings::Settings::for_process(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ironboot-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ironboot-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(agent::run(settings, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "agent stopped");
            eprintln!("ironboot-agent: {e}");
            ExitCode::FAILURE
        }
    }
}
