//! `ironboot image fetch|list|clean`: the cache from the command line.
//!
//! Wiring in `main.rs`: a subcommand `Image(images::cli::ImageArgs)` whose handler calls
//! [`run`] with the `[image_cache]` settings, `<data_dir>/cache` and the served roots.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use super::cache::{ImageCache, ImageKind, ImageRequest};
use super::error::Result;
use super::format::ImageFormat;
use super::settings::CacheSettings;
use crate::fsutil::human_bytes;
use crate::metrics::Registry;

#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Download an image into the cache (or find it there), verify it, optionally link it.
    Fetch(FetchArgs),
    /// List the cached images.
    List,
    /// Evict unused images (TTL, then oldest first down to the size cap).
    Clean(CleanArgs),
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// http://, https://, file:// URL or absolute path.
    pub url: String,
    /// `algo:value`, a bare md5/sha256/sha512 value, or the URL of a checksums file.
    #[arg(long)]
    pub checksum: Option<String>,
    /// Hard-link (or copy across filesystems) the cached image to this path.
    #[arg(long)]
    pub dest: Option<PathBuf>,
    /// Fail unless the image has this format.
    #[arg(long)]
    pub format: Option<ImageFormat>,
    /// A kernel, ramdisk or boot ISO: skip format inspection and conversion.
    #[arg(long)]
    pub boot_file: bool,
}

#[derive(Debug, clap::Args)]
pub struct CleanArgs {
    /// Also evict unused images until this many bytes are freed.
    #[arg(long)]
    pub reclaim: Option<u64>,
}

/// Opens the cache and runs one `image` subcommand, printing to stdout.
pub async fn run(
    args: &ImageArgs,
    settings: CacheSettings,
    cache_dir: &Path,
    served_roots: &[PathBuf],
) -> Result<()> {
    let cache = ImageCache::open(settings, cache_dir, served_roots, &mut Registry::default())?;
    let mut out = std::io::stdout().lock();
    match &args.command {
        ImageCommand::Fetch(a) => fetch(&cache, a, &mut out).await,
        ImageCommand::List => list(&cache, &mut out).await,
        ImageCommand::Clean(a) => clean(&cache, a, &mut out).await,
    }
}

async fn fetch(cache: &ImageCache, args: &FetchArgs, out: &mut impl Write) -> Result<()> {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        // The template is a constant that indicatif accepts; fall back to the default if not.
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let progress_bar = bar.clone();
    let req = ImageRequest {
        checksum: args.checksum.clone(),
        expected_format: args.format,
        kind: if args.boot_file {
            ImageKind::BootFile
        } else {
            ImageKind::Instance
        },
        progress: Some(Arc::new(move |done, total| {
            if let Some(t) = total {
                progress_bar.set_length(t);
            }
            progress_bar.set_position(done);
        })),
        ..ImageRequest::new(&args.url)
    };
    let result = cache.fetch(&req).await;
    bar.finish_and_clear();
    let image = result?;
    if let Some(dest) = &args.dest {
        cache.place(&image, dest).await?;
    }
    let format = match (image.format, image.converted) {
        (Some(f), true) => format!("{f} (converted)"),
        (Some(f), false) => f.to_string(),
        (None, _) => "not inspected (boot file)".into(),
    };
    let lines = [
        format!("{}", image.path.display()),
        format!("  source   {}", image.href),
        format!(
            "  size     {} ({} bytes)",
            human_bytes(image.size),
            image.size
        ),
        format!("  format   {format}"),
        format!("  sha256   {}", image.sha256()),
        format!(
            "  from     {}",
            if image.downloaded {
                "download"
            } else {
                "cache"
            }
        ),
    ];
    let mut text = lines.join("\n");
    if let Some(dest) = &args.dest {
        text.push_str(&format!("\n  linked   {}", dest.display()));
    }
    let _ = writeln!(out, "{text}");
    Ok(())
}

async fn list(cache: &ImageCache, out: &mut impl Write) -> Result<()> {
    let images = cache.list().await?;
    let total: u64 = images.iter().map(|i| i.disk_bytes).sum();
    let _ = writeln!(
        out,
        "{:<48} {:>10} {:<8} {:>5} {:<20} SOURCE",
        "MASTER", "ON DISK", "FORMAT", "LINKS", "LAST USED"
    );
    for i in &images {
        let last_used = chrono::DateTime::<chrono::Utc>::from(i.last_used)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let (format, href) = match &i.meta {
            Some(m) => (
                m.format.map_or("-".to_string(), |f| f.to_string()),
                m.href.as_str(),
            ),
            None => ("-".into(), "(no-store, in use)"),
        };
        let _ = writeln!(
            out,
            "{:<48} {:>10} {:<8} {:>5} {:<20} {href}",
            i.name,
            human_bytes(i.disk_bytes),
            format,
            i.links - 1,
            last_used
        );
    }
    let _ = writeln!(
        out,
        "{} image(s), {} in {}",
        images.len(),
        human_bytes(total),
        cache.dir().display()
    );
    Ok(())
}

async fn clean(cache: &ImageCache, args: &CleanArgs, out: &mut impl Write) -> Result<()> {
    let report = cache.clean_up(args.reclaim).await?;
    for name in &report.removed {
        let _ = writeln!(out, "evicted {name}");
    }
    let _ = writeln!(
        out,
        "evicted {} image(s), freed {}; {} remain in {}",
        report.removed.len(),
        human_bytes(report.freed_bytes),
        human_bytes(report.remaining_bytes),
        cache.dir().display()
    );
    Ok(())
}
