//! Command-line entry point: parse, load config, call the library. No logic lives here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ironboot::images;

#[derive(Debug, Parser)]
#[command(
    name = "ironboot",
    version,
    about = "Boot and media service for bare-metal conductors"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The image cache (temporary wiring on the images branch; the lead folds it into the
    /// config-driven CLI).
    Image(ImageCli),
}

#[derive(Debug, clap::Args)]
struct ImageCli {
    /// The cache's own directory (`<data_dir>/cache`).
    #[arg(long, env = "IRONBOOT_CACHE_DIR")]
    cache_dir: PathBuf,
    /// TOML file holding the `[image_cache]` settings (without the section header).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// A directory served to nodes; the cache refuses to share it.
    #[arg(long = "served-root")]
    served_roots: Vec<PathBuf>,
    #[command(subcommand)]
    command: images::cli::ImageCommand,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Some(Command::Image(c)) => {
            let settings: images::CacheSettings = match &c.settings {
                Some(path) => toml::from_str(&std::fs::read_to_string(path)?)?,
                None => images::CacheSettings::default(),
            };
            let args = images::cli::ImageArgs { command: c.command };
            tokio::runtime::Runtime::new()?.block_on(images::cli::run(
                &args,
                settings,
                &c.cache_dir,
                &c.served_roots,
            ))?;
        }
        None => {}
    }
    Ok(())
}
