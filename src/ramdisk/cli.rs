//! `ironboot ramdisk build`: the deploy kernel and ramdisk with `ironboot-agent`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{BuildRequest, RamdiskError, build};

/// Build the deploy ramdisk (ironboot-agent).
#[derive(Debug, Args)]
pub struct RamdiskArgs {
    #[command(subcommand)]
    pub command: RamdiskCommand,
}

#[derive(Debug, Subcommand)]
pub enum RamdiskCommand {
    /// Write agent.kernel and agent.initramfs into a directory.
    Build(BuildArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Kernel: a bzImage (modules from --modules or /lib/modules/<release>) or a
    /// linux-image-*.deb. Default: Debian's linux-image-amd64, installed or fetched with apt.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Module tree of the kernel given with --kernel (.../lib/modules/<release>).
    #[arg(long, value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// The ironboot-agent binary (default: the one next to this program). A statically
    /// linked agent is packed alone; a dynamic one brings its loader and libraries.
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,
    /// Another kernel module to pack (repeatable), besides NIC, disk and virtio drivers.
    #[arg(long = "module", value_name = "NAME")]
    pub modules_extra: Vec<String>,
    /// Pack only the --module list (e.g. just virtio for a VM ramdisk).
    #[arg(long)]
    pub only_modules: bool,
    /// Where downloaded kernel packages are kept.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// CA certificates the agent trusts for https image URLs.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub ca_bundle: PathBuf,
    /// Output directory.
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

/// `$XDG_CACHE_HOME/ironboot/ramdisk`, `~/.cache/ironboot/ramdisk`, or under /var/cache.
pub fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("ironboot/ramdisk")
}

fn default_agent() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ironboot-agent")))
        .unwrap_or_else(|| PathBuf::from("ironboot-agent"))
}

/// Runs the command; progress goes to stderr, the report to stdout.
pub fn run(args: RamdiskArgs) -> Result<(), RamdiskError> {
    let RamdiskCommand::Build(a) = args.command;
    let req = BuildRequest {
        kernel: a.kernel,
        modules_dir: a.modules,
        agent: a.agent.unwrap_or_else(default_agent),
        output: a.output,
        cache_dir: a.cache.unwrap_or_else(default_cache),
        only_modules: a.only_modules.then(|| a.modules_extra.clone()),
        extra_modules: a.modules_extra,
        ca_bundle: Some(a.ca_bundle),
    };
    let started = std::time::Instant::now();
    let report = build(&req, &mut |msg| eprintln!("ironboot: {msg}"))?;
    println!(
        "kernel      {} ({}, from {})",
        report.kernel.display(),
        report.release,
        report.kernel_origin
    );
    println!(
        "initramfs   {} ({} bytes, {} bytes unpacked, sha256 {})",
        report.initramfs.display(),
        report.initramfs_bytes,
        report.content_bytes,
        report.initramfs_sha256
    );
    println!("modules     {} packed", report.modules.len());
    if !report.missing_modules.is_empty() {
        println!("not found   {}", report.missing_modules.join(" "));
    }
    if report.libraries.is_empty() {
        println!("agent       statically linked");
    } else {
        println!(
            "agent       dynamically linked; packed {}",
            report.libraries.join(" ")
        );
    }
    println!("built in    {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
