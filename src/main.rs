//! Command-line entry point: parse, load config, call the library. No logic lives here.

use clap::{Parser, Subcommand};

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
    /// Build virtual media (floppy, ISO, GRUB EFI image) by hand.
    Media(ironboot::media::cli::MediaArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Media(args)) => ironboot::media::cli::run(args)?,
        None => {}
    }
    Ok(())
}
