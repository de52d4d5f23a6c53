//! `ironboot publish`: put a built file where BMCs fetch it (or take it away) by hand, with the
//! `[vmedia]` settings the service uses, and print the URL a BMC would be given.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{ObjectName, PublishMetrics, PublishSettings, Publisher, Publishers, Result};
use crate::metrics::Registry;

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(subcommand)]
    pub command: PublishCommand,
    /// Backend to use instead of `[vmedia] publisher` (`local` or `swift`).
    #[arg(long, global = true, value_name = "BACKEND")]
    pub publisher: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PublishCommand {
    /// Publish FILE as NAME (e.g. boot-<node uuid>.iso) and print the URL for the BMC.
    Put {
        file: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Remove NAME (a name that is already gone is fine).
    Remove {
        #[arg(long)]
        name: String,
    },
    /// Tell whether NAME is published.
    Exists {
        #[arg(long)]
        name: String,
    },
}

/// Runs one command; `http_root` and `root_url` are the data directory's HTTP root and the
/// URL BMCs reach it on (`[deploy] external_http_url`, else `http_url`).
pub async fn run(
    args: &PublishArgs,
    settings: &PublishSettings,
    http_root: &Path,
    root_url: &str,
) -> Result<()> {
    let publishers = Publishers::new(
        settings,
        http_root,
        root_url,
        PublishMetrics::register(&mut Registry::default()),
    )?;
    let publisher = publishers.select(args.publisher.as_deref())?;
    match &args.command {
        PublishCommand::Put { file, name } => {
            let published = publisher.publish(file, &ObjectName::new(name)?).await?;
            println!("{}", published.url);
        }
        PublishCommand::Remove { name } => publisher.unpublish(&ObjectName::new(name)?).await?,
        PublishCommand::Exists { name } => {
            let found = publisher.exists(&ObjectName::new(name)?).await?;
            println!("{}", if found { "published" } else { "not published" });
        }
    }
    Ok(())
}
