//! `ironboot media ...`: build floppies, ISOs and the GRUB EFI image by hand.
//!
//! Settings come from the `[media]` section of the configuration (`--config`,
//! `IRONBOOT_MEDIA__*`), optionally overridden by `--grub-efi`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::{
    BootSpec, BuildOptions, BuildReport, FloppySpec, IsoSpec, MediaBuilder, MediaError, MediaFile,
    MediaSettings, esp,
};

/// Build virtual media by hand (what the conductor builds for vmedia boots).
#[derive(Debug, Args)]
pub struct MediaArgs {
    #[command(subcommand)]
    pub command: MediaCommand,
    /// Prebuilt GRUB EFI binary for the ESP (overrides the `grub_efi` setting).
    #[arg(long, global = true, value_name = "FILE")]
    pub grub_efi: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// FAT floppy image with parameters.txt (label ir-vfd-dev).
    Floppy(FloppyArgs),
    /// ISO 9660 image: bootable with --kernel/--ramdisk, else data-only (e.g. a config drive).
    Iso(IsoArgs),
    /// The GRUB EFI binary ironboot puts into ESPs, to prebuild once for the grub_efi setting.
    GrubEfi(GrubEfiArgs),
}

#[derive(Debug, Args)]
pub struct FloppyArgs {
    /// A parameters.txt line, in order (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Extra file; DEST defaults to SRC's file name at the root (repeatable).
    #[arg(long = "file", value_name = "SRC[:DEST]", value_parser = parse_optional_dest)]
    pub files: Vec<(PathBuf, Option<String>)>,
    /// Image size in KiB (default: the floppy_size_kib setting, 1440).
    #[arg(long)]
    pub size_kib: Option<u32>,
    /// Volume label (default: the floppy_label setting, ir-vfd-dev).
    #[arg(long)]
    pub label: Option<String>,
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct IsoArgs {
    /// Kernel for /vmlinuz; makes the ISO bootable.
    #[arg(long, requires = "ramdisk")]
    pub kernel: Option<PathBuf>,
    /// Ramdisk for /initrd.
    #[arg(long, requires = "kernel")]
    pub ramdisk: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "", requires = "kernel")]
    pub append: String,
    /// BIOS El Torito entry (isolinux). Without --bios and --uefi, both are written.
    #[arg(long, requires = "kernel")]
    pub bios: bool,
    /// UEFI El Torito entry (ESP with GRUB).
    #[arg(long, requires = "kernel")]
    pub uefi: bool,
    /// Also boot as a disk: isohybrid MBR (BIOS) and GPT with the ESP (UEFI).
    #[arg(long, requires = "kernel")]
    pub hybrid: bool,
    /// ISO publisher; also added to the command line as ir_pub_id=ID.
    #[arg(long, value_name = "ID")]
    pub publisher_id: Option<String>,
    /// File to put on the ISO (repeatable).
    #[arg(long = "inject", value_name = "SRC:ISO_PATH", value_parser = parse_required_dest)]
    pub inject: Vec<(PathBuf, String)>,
    /// Volume label (default: config-2 with files under openstack/, else VMEDIA_BOOT_ISO).
    #[arg(long)]
    pub label: Option<String>,
    /// Print the image's SHA-256.
    #[arg(long)]
    pub sha256: bool,
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct GrubEfiArgs {
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Images smaller than this build too fast for a progress bar to be worth drawing.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

/// Runs one `ironboot media` command and prints what it wrote.
pub fn run(args: MediaArgs, settings: MediaSettings) -> Result<(), MediaError> {
    let settings = apply_grub_efi(settings, args.grub_efi)?;
    match args.command {
        MediaCommand::Floppy(a) => {
            let spec = FloppySpec {
                params: a.params,
                files: a
                    .files
                    .into_iter()
                    .map(|(src, dest)| {
                        let dest = dest.unwrap_or_else(|| file_name(&src));
                        MediaFile::host(dest, src)
                    })
                    .collect(),
                size_kib: a.size_kib,
                label: a.label,
            };
            let report = MediaBuilder::new(settings)?.build_floppy(&spec, &a.output)?;
            print_report(&report);
        }
        MediaCommand::Iso(a) => {
            let builder = MediaBuilder::new(settings)?;
            let output = a.output.clone();
            let sha256 = a.sha256;
            let spec = iso_spec(a);
            let bar: OnceLock<ProgressBar> = OnceLock::new();
            let progress = |done: u64, total: u64| {
                let bar = bar.get_or_init(|| new_bar(total));
                bar.set_position(done);
            };
            let result = builder.build_iso(
                &spec,
                &output,
                BuildOptions {
                    sha256,
                    progress: Some(&progress),
                },
            );
            if let Some(bar) = bar.get() {
                bar.finish_and_clear();
            }
            print_report(&result?);
        }
        MediaCommand::GrubEfi(a) => {
            let size = esp::write_grub_efi(&settings, &a.output)?;
            println!("wrote {} ({size} bytes)", a.output.display());
        }
    }
    Ok(())
}

fn iso_spec(a: IsoArgs) -> IsoSpec {
    let boot = match (a.kernel, a.ramdisk) {
        (Some(kernel), Some(ramdisk)) => {
            let both = !a.bios && !a.uefi;
            Some(BootSpec {
                kernel,
                ramdisk,
                cmdline: a.append,
                bios: a.bios || both,
                uefi: a.uefi || both,
                hybrid: a.hybrid,
            })
        }
        _ => None,
    };
    IsoSpec {
        boot,
        files: a
            .inject
            .into_iter()
            .map(|(src, dest)| MediaFile::host(dest, src))
            .collect(),
        publisher_id: a.publisher_id,
        label: a.label,
    }
}

/// `--grub-efi` overrides the `[media] grub_efi` setting.
fn apply_grub_efi(
    mut settings: MediaSettings,
    grub_efi: Option<PathBuf>,
) -> Result<MediaSettings, MediaError> {
    if let Some(path) = grub_efi {
        // The settings want absolute paths; a command line may give a relative one.
        let absolute = std::path::absolute(&path).map_err(|source| MediaError::Input {
            what: "GRUB EFI image",
            path,
            source,
        })?;
        settings.grub_efi = Some(absolute);
    }
    Ok(settings)
}

fn new_bar(total: u64) -> ProgressBar {
    if total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    // The template is a constant known to parse; fall back to the default style regardless.
    let style = ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}

fn print_report(report: &BuildReport) {
    let mut line = format!(
        "wrote {} ({} bytes) in {:.3} s",
        report.path.display(),
        report.size,
        report.elapsed.as_secs_f64()
    );
    if let Some(sha) = &report.sha256 {
        line.push_str(&format!(", sha256 {sha}"));
    }
    println!("{line}");
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
}

fn file_name(src: &Path) -> String {
    src.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

fn parse_optional_dest(s: &str) -> Result<(PathBuf, Option<String>), String> {
    match s.split_once(':') {
        Some((src, dest)) if !src.is_empty() && !dest.is_empty() => {
            Ok((src.into(), Some(dest.to_owned())))
        }
        Some(_) => Err(format!("{s:?} is not SRC[:DEST]")),
        None => Ok((s.into(), None)),
    }
}

fn parse_required_dest(s: &str) -> Result<(PathBuf, String), String> {
    match parse_optional_dest(s)? {
        (src, Some(dest)) => Ok((src, dest)),
        (_, None) => Err(format!("{s:?} is not SRC:ISO_PATH")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        media: Top,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Top {
        Media(MediaArgs),
    }

    fn parse(args: &[&str]) -> Result<MediaArgs, clap::Error> {
        let mut argv = vec!["ironboot", "media"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| match c.media {
            Top::Media(m) => m,
        })
    }

    #[test]
    fn floppy_arguments() {
        let args = parse(&[
            "floppy",
            "--param",
            "ipa-api-url=http://x:6385",
            "--param",
            "a=b=c",
            "--file",
            "/tmp/n.json:openstack/n.json",
            "--file",
            "/etc/hostname",
            "--size-kib",
            "100",
            "-o",
            "f.img",
        ])
        .unwrap();
        let MediaCommand::Floppy(f) = args.command else {
            panic!()
        };
        assert_eq!(f.params[1], ("a".into(), "b=c".into()));
        assert_eq!(
            f.files[0],
            (
                PathBuf::from("/tmp/n.json"),
                Some("openstack/n.json".into())
            )
        );
        assert_eq!(f.files[1], (PathBuf::from("/etc/hostname"), None));
        assert!(parse(&["floppy", "--param", "novalue", "-o", "f"]).is_err());
    }

    #[test]
    fn iso_defaults_to_both_firmwares_and_data_only_without_kernel() {
        let spec = |args: &str| {
            let mut argv = vec!["iso"];
            argv.extend(args.split(' '));
            match parse(&argv).unwrap().command {
                MediaCommand::Iso(a) => iso_spec(a),
                other => panic!("{other:?}"),
            }
        };
        let boot = spec("--kernel k --ramdisk r --append a=1 -o x.iso")
            .boot
            .unwrap();
        assert!(boot.bios && boot.uefi && !boot.hybrid);
        assert_eq!(boot.cmdline, "a=1");
        let boot = spec("--kernel k --ramdisk r --uefi -o x.iso").boot.unwrap();
        assert!(!boot.bios && boot.uefi);
        let data = spec("--inject m.json:openstack/latest/meta_data.json -o cd.iso");
        assert!(data.boot.is_none());
        assert_eq!(data.label(), "config-2");

        assert!(parse(&["iso", "--kernel", "k", "-o", "x"]).is_err());
        assert!(parse(&["iso", "--bios", "-o", "x"]).is_err());
        assert!(parse(&["iso", "--inject", "nodest", "-o", "x"]).is_err());
    }
}
