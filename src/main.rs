//! Command-line entry point: parse, load config, call the library. No logic lives here.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "ironboot",
    version,
    about = "Boot and media service for bare-metal conductors"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
