//! Command-line entry point: parse, load config, call the library. No logic lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ironboot::config::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "ironboot",
    version,
    about = "Boot and media service for bare-metal conductors",
    long_about = "ironboot renders and serves PXELINUX, GRUB and iPXE boot files over TFTP and HTTP, \
                  keeps an image cache, builds virtual media, and speaks an Ironic-compatible API \
                  (including the ironic-python-agent ramdisk endpoints).\n\n\
                  Configuration comes from an optional TOML file (--config), IRONBOOT_* environment \
                  variables (IRONBOOT_<SECTION>__<KEY>) and flags, in that order of precedence."
)]
struct Cli {
    /// TOML configuration file (optional; embedded defaults otherwise).
    #[arg(long, global = true, env = "IRONBOOT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: API, TFTP, HTTP and the conductor.
    Serve(ServeArgs),
    /// Validate or print the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Work with the image cache by hand: fetch (with progress), list, clean.
    Image(ImageCli),
    /// Build virtual media (floppy, ISO, GRUB EFI image) by hand, with the `[media]` settings.
    Media(ironboot::media::cli::MediaArgs),
    /// Publish built media where BMCs fetch it (local HTTP root or Swift), with `[vmedia]`.
    Publish(PublishCli),
    /// Build the deploy ramdisk: ironboot-agent, a Debian kernel and its NIC and disk drivers.
    Ramdisk(ironboot::ramdisk::cli::RamdiskArgs),
}

#[derive(Debug, Args)]
struct PublishCli {
    /// Data directory whose HTTP root the local publisher writes into.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    publish: ironboot::publish::cli::PublishArgs,
}

#[derive(Debug, Args)]
struct ImageCli {
    /// Data directory whose cache (`<data_dir>/cache`) to use.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    image: ironboot::images::cli::ImageArgs,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Directory holding the database, the TFTP and HTTP roots and the image cache.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API (management and ramdisk endpoints, /metrics, /healthz) [default: 127.0.0.1:6385].
    #[arg(long, value_name = "ADDR:PORT")]
    api_listen: Option<SocketAddr>,
    /// Address of the HTTP boot server [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// Address of the TFTP server [default: 0.0.0.0:69].
    #[arg(long, value_name = "ADDR:PORT")]
    tftp_listen: Option<SocketAddr>,
    /// Once every listener is bound, write their addresses here as JSON
    /// (`{"api": "127.0.0.1:6385", "http": ..., "tftp": ...}`); port 0 binds any free port.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration (file, environment, flags) without starting anything.
    Check(ServeArgs),
    /// Print the effective configuration as TOML, every derived value filled in.
    Show(ServeArgs),
}

fn overrides(args: &ServeArgs, log_json: bool) -> Overrides {
    Overrides {
        data_dir: args.data_dir.clone(),
        api_listen: args.api_listen,
        http_listen: args.http_listen,
        tftp_listen: args.tftp_listen,
        log_json,
    }
}

/// The configuration of a one-shot command (image, media, publish), with its logging set up.
fn load_for_cli(
    config_path: Option<&std::path::Path>,
    data_dir: Option<PathBuf>,
    log_json: bool,
) -> anyhow::Result<Config> {
    let overrides = Overrides {
        data_dir,
        log_json,
        ..Default::default()
    };
    let config = Config::load(config_path, &overrides)?;
    init_cli_logging(&config);
    config.warn_deprecated();
    Ok(config)
}

/// One-shot commands log warnings and errors only (progress goes to the terminal), unless
/// `RUST_LOG` asks for more.
fn init_cli_logging(config: &Config) {
    let mut log = config.log.clone();
    if std::env::var_os("RUST_LOG").is_none() {
        log.level = "warn".into();
    }
    ironboot::telemetry::init_logging(&log);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error message already names its cause; the anyhow chain would repeat it.
            eprintln!("ironboot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(config_path, &overrides(&args, cli.log_json))?;
            ironboot::telemetry::init_logging(&config.log);
            config.warn_deprecated();
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = tokio_util::sync::CancellationToken::new();
                ironboot::service::cancel_on_signals(shutdown.clone());
                ironboot::service::run(config, shutdown, args.ready_file.as_deref()).await
            })?;
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            let config = Config::load(config_path, &overrides(&args, cli.log_json))?;
            for d in &config.deprecations {
                eprintln!("warning: deprecated configuration: {d}");
            }
            if let ironboot::config::Auth::HttpBasic { user_file } = &config.auth {
                ironboot::api::auth::Htpasswd::load(user_file)?;
            }
            println!(
                "configuration OK: data_dir={} api={} http={} tftp={} ipa-api-url={} http_url={}",
                config.data_dir.display(),
                config.api.listen,
                config.http.listen,
                config.tftp.listen,
                config.api_public_url,
                config.http_url
            );
            Ok(())
        }
        Command::Image(args) => {
            let config = load_for_cli(config_path, args.data_dir.clone(), cli.log_json)?;
            let roots = [config.tftp_root.clone(), config.http_root.clone()];
            tokio::runtime::Runtime::new()?.block_on(ironboot::images::cli::run(
                &args.image,
                config.image_cache.clone(),
                &config.cache_dir,
                &roots,
            ))?;
            Ok(())
        }
        Command::Media(args) => {
            let config = load_for_cli(config_path, None, cli.log_json)?;
            ironboot::media::cli::run(args, config.media.clone())?;
            Ok(())
        }
        Command::Publish(args) => {
            let config = load_for_cli(config_path, args.data_dir.clone(), cli.log_json)?;
            let root_url = config
                .external_http_url
                .clone()
                .unwrap_or_else(|| config.http_url.clone());
            tokio::runtime::Runtime::new()?.block_on(ironboot::publish::cli::run(
                &args.publish,
                &config.vmedia,
                &config.http_root,
                root_url.trim_end_matches('/'),
            ))?;
            Ok(())
        }
        Command::Ramdisk(args) => {
            ironboot::ramdisk::cli::run(args)?;
            Ok(())
        }
        Command::Config(ConfigCommand::Show(args)) => {
            let config = Config::load(config_path, &overrides(&args, cli.log_json))?;
            print!("{}", config.to_toml());
            Ok(())
        }
    }
}
